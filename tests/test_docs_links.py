"""The documentation holds together: every relative link, anchor and image in README.md and docs/**/*.md
leads somewhere that exists, the configuration reference names every setting, and the README stays a
front page that states the test command CI runs.

Anchors follow GitHub's heading slugs: the heading's text (markdown formatting dropped), lowercased,
every character but letters, digits, '_', '-' and spaces removed, spaces turned into '-'; a repeated slug
gets -1, -2... External http(s) links are not fetched.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 150

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^\s{0,3}(#{1,6})(?:\s+(.*?))?(?:\s+#+)?\s*$")
_SETEXT = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target "title") and ![alt](target); the text may hold one level of brackets ([![img](a)](b)).
_LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^\s)>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HTML_ATTR = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']*)[\"']", re.IGNORECASE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None:
            if (
                match
                and match.group(1)[0] == fence[0]
                and len(match.group(1)) >= len(fence)
                and not line.strip(fence[0] + " \t")
            ):
                fence = None
        else:
            yield number, line


def plain_heading_text(raw: str) -> str:
    """A heading as GitHub shows it: images dropped, links to their text, code spans to their content,
    HTML tags removed."""
    pieces = []
    last = 0
    for span in _CODE_SPAN.finditer(raw):  # a code span's text is shown as it is, "<name>" included
        pieces.append(_strip_markup(raw[last : span.start()]))
        pieces.append(span.group(2).strip())
        last = span.end()
    pieces.append(_strip_markup(raw[last:]))
    return "".join(pieces)


def _strip_markup(text: str) -> str:
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"<[^>]+>", "", text)


def slug(heading: str) -> str:
    text = plain_heading_text(heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings(text: str) -> list[tuple[int, str]]:
    """(level, raw text) of every ATX and setext heading outside code blocks."""
    found: list[tuple[int, str]] = []
    previous = ""
    for _, line in prose_lines(text):
        atx = _ATX.match(line)
        setext = _SETEXT.match(line)
        if atx:
            found.append((len(atx.group(1)), atx.group(2) or ""))
            previous = ""
            continue
        if setext and previous.strip() and not _is_block_start(previous):
            found.append((1 if setext.group(1)[0] == "=" else 2, previous.strip()))
            previous = ""
            continue
        previous = line
    return found


def _is_block_start(line: str) -> bool:
    # A line that cannot be a setext heading's text: list items, quotes, tables, indented code.
    return bool(re.match(r"^(\s{4,}|\s*([-*+>|]|\d+[.)])\s)", line)) or line.lstrip().startswith("|")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, raw in headings(text):
        base = slug(raw)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def link_targets(text: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, target, is an image) of every link outside code."""
    for number, line in prose_lines(text):
        bare = _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        for match in _LINK.finditer(bare):
            yield number, match.group(3), match.group(1) == "!"
            # An image inside a link's text ([![alt](img)](target)) is a link of its own.
            for inner in _LINK.finditer(match.group(2)):
                yield number, inner.group(3), inner.group(1) == "!"
        ref = _REF_DEF.match(bare)
        if ref:
            yield number, ref.group(1), False
        for match in _HTML_ATTR.finditer(bare):
            yield number, match.group(1), bare[match.start() : match.start() + 4].lower() == "<img"


def problems(files: list[Path], root: Path = ROOT) -> list[str]:
    """Every broken relative link, anchor or image in `files`, as 'file:line: reason'."""
    anchor_cache: dict[Path, set[str]] = {}

    def anchors_of(path: Path) -> set[str]:
        if path not in anchor_cache:
            anchor_cache[path] = anchors(path.read_text(encoding="utf-8"))
        return anchor_cache[path]

    found: list[str] = []
    for source in files:
        where = source.relative_to(root)
        for number, target, image in link_targets(source.read_text(encoding="utf-8")):
            if not target:
                found.append(f"{where}:{number}: empty link target")
                continue
            if _SCHEME.match(target):
                continue  # http(s), mailto...: not fetched
            path_part, _, anchor = target.partition("#")
            dest = (source.parent / path_part).resolve() if path_part else source
            if not dest.is_relative_to(root.resolve()):
                found.append(f"{where}:{number}: {target} leaves the repository")
                continue
            if not dest.exists():
                found.append(f"{where}:{number}: {'image' if image else 'link'} {target}: {path_part} does not exist")
                continue
            if image and not dest.is_file():
                found.append(f"{where}:{number}: image {target} is not a file")
                continue
            if anchor:
                if dest.suffix != ".md" or not dest.is_file():
                    found.append(f"{where}:{number}: {target}: anchors are checked in markdown files only")
                elif anchor not in anchors_of(dest):
                    found.append(
                        f"{where}:{number}: {target}: no heading #{anchor} in {dest.relative_to(root.resolve())}"
                    )
    return found


# --- the documentation of this repository ---


def test_every_relative_link_anchor_and_image_resolves() -> None:
    files = doc_files()
    assert len(files) > 10, files  # README and the docs/ pages were all found
    assert problems(files) == []


def test_the_checker_reports_each_kind_of_broken_link(tmp_path: Path) -> None:
    (tmp_path / "docs" / "images").mkdir(parents=True)
    (tmp_path / "docs" / "images" / "shot.png").write_bytes(b"\x89PNG")
    (tmp_path / "docs" / "guide.md").write_text(
        "# Guide\n\n## Set up: the `token` (required)\n\n## Notes\n\n## Notes\n\nSetext heading\n---\n",
        encoding="utf-8",
    )
    (tmp_path / "README.md").write_text(
        "# Project\n\n"
        "[ok](docs/guide.md#set-up-the-token-required) [dup](docs/guide.md#notes-1)\n"
        "[setext](docs/guide.md#setext-heading) "
        "[self](#project) ![shot](docs/images/shot.png) [web](https://example.com/missing) [dir](docs)\n"
        "[missing file](docs/nope.md)\n"
        "[missing anchor](docs/guide.md#notes-2)\n"
        "![missing image](docs/images/gone.png)\n"
        "[missing own anchor](#nowhere)\n"
        "`[in code](docs/nope.md)`\n\n"
        "```md\n[in a fence](docs/nope.md)\n```\n\n"
        "[ref]: docs/also-missing.md\n"
        '<img src="docs/images/absent.png">\n',
        encoding="utf-8",
    )
    found = problems(doc_files(tmp_path), tmp_path)
    assert [line.split(":")[1] for line in found] == ["5", "6", "7", "8", "15", "16"], found
    assert "docs/nope.md does not exist" in found[0]
    assert "no heading #notes-2" in found[1]
    assert found[2].startswith("README.md:7: image docs/images/gone.png")
    assert "no heading #nowhere in README.md" in found[3]


def test_heading_slugs_follow_githubs_rules() -> None:
    assert slug("Security: approvals, pairing, users") == "security-approvals-pairing-users"
    assert slug("`channels.telegram`") == "channelstelegram"
    assert slug("`channels.<name>`: settings every channel has") == "channelsname-settings-every-channel-has"
    assert slug("The agent's own secrets") == "the-agents-own-secrets"
    assert slug("max_tokens and [a link](x.md)") == "max_tokens-and-a-link"
    assert slug("Ünïcode — kept") == "ünïcode--kept"
    assert anchors("# A\n## A\n### A\n```\n# A\n```\n") == {"a", "a-1", "a-2"}


def test_readme_is_a_front_page_stating_the_ci_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert "make test" in commands  # what CI runs...
    assert "make test" in readme  # ...is what the README tells people to run
    lines = readme.count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move reference material into docs/"


# --- the configuration reference names every setting ---


def setting_paths(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Dotted path of every leaf setting of `model` (nested models walked, dicts and lists are leaves)."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from setting_paths(annotation, path + ".")
        else:
            yield path


def documented(path: str, sections: list[tuple[str, set[str]]]) -> bool:
    """Whether a section whose heading names a prefix of `path` (in a code span; `<name>` matches any one
    key; no code span: the top level) shows the rest of the path in a code span, or the start of one."""
    parts = path.split(".")
    for prefix, spans in sections:
        head = prefix.split(".") if prefix else []
        if len(head) >= len(parts) or any(
            h != p and not re.fullmatch(r"<\w+>", h) for h, p in zip(head, parts[: len(head)], strict=True)
        ):
            continue
        rest = ".".join(parts[len(head) :])
        if any(span == rest or span.startswith(rest + ".") for span in spans):
            return True
    return False


def reference_sections(text: str) -> list[tuple[str, set[str]]]:
    """(the first code span of the heading, or "", code spans in the body) of each section."""
    sections: list[tuple[str, set[str]]] = []
    for _, line in prose_lines(text):
        heading = _ATX.match(line)
        if heading:
            spans = [m.group(2).strip() for m in _CODE_SPAN.finditer(heading.group(2) or "")]
            sections.append((spans[0] if spans else "", set()))
        elif sections:
            sections[-1][1].update(m.group(2).strip() for m in _CODE_SPAN.finditer(line))
    return sections


def test_configuration_reference_names_every_setting() -> None:
    from operator_use.config import Config

    sections = reference_sections((ROOT / "docs" / "configuration.md").read_text(encoding="utf-8"))
    paths = list(setting_paths(Config))
    assert "channels.telegram.token" in paths and "voice.stt.model" in paths
    missing = [p for p in paths if not documented(p, sections)]
    assert missing == [], f"settings missing from docs/configuration.md: {missing}"


def test_the_coverage_check_notices_a_missing_setting() -> None:
    class Inner(BaseModel):
        depth: int = 1
        width: int = 2

    class Outer(BaseModel):
        inner: Inner = Inner()
        name: str = ""

    sections = reference_sections("# Ref\n\n| `name` | |\n\n## `inner`\n\n| `depth` | 1 |\n")
    assert [p for p in setting_paths(Outer) if not documented(p, sections)] == ["inner.width"]
