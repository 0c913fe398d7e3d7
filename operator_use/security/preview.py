"""What an approval request shows: the exact call, in a form where no part of it can hide.

The person approving must see what will run, so the command is never rewritten, cut or joined into one
line. It goes into a fenced code block as it is, with its real newlines (a second command after a
newline, even one that seems to be inside a comment, stays on its own visible line, or shows as `\\n`
where the chat has no lines), and only what cannot be seen is escaped:

- control characters (ESC sequences, CR, NUL...; newline and tab stay as they are), bidi overrides and
  isolates, zero-width and other invisible or unusual space characters (Unicode's default ignorables),
  unassigned and private-use code points become `\\x1b`, `\\r`, `\\u202e`..., and then every backslash is
  doubled, so each escape reads one way only;
- a run of three or more backticks, which would end the code block on Discord and Slack (their only
  fence is three backticks), has its backticks shown as `\\x60`;
- on a chat that shows a message as one line (`Capabilities.multiline` false: Twitch), newlines, tabs and
  spaces become `\\n`, `\\t` and `␣` (a `␣` of the command `\\u2423`): nothing collapses, and a space
  at the cut between two messages still shows.

Other tools show their arguments as indented JSON (compact on a one-line chat), whose own escapes (`\\n`,
`\\"`, `\\u202e`) are already unambiguous. Warning lines above the block say what to look at: several
lines, command substitution, escaped characters, a long call the chat may split into several messages (it is
never cut here).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from ..messages import ToolCall

# Past this many characters a call is announced as long: the chat shows it whole, maybe over several messages.
LONG_CHARS = 300

# Unicode's Default_Ignorable_Code_Point property (DerivedCoreProperties.txt, Unicode 16.0): what renderers
# show as nothing, whatever its category, with the code points reserved for more of the same.
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# Blank glyphs outside it: BRAILLE PATTERN BLANK, KHITAN SMALL SCRIPT FILLER, MUSICAL SYMBOL NULL NOTEHEAD.
_BLANK = (0x2800, 0x16FE4, 0x1D159)
_INVISIBLE = frozenset({*(n for lo, hi in _DEFAULT_IGNORABLE for n in range(lo, hi + 1)), *_BLANK})
# Cc controls, Cf format (bidi, zero-width), Cs lone surrogates, Co private use (a box in some fonts, nothing
# in others), Cn unassigned (in Python's Unicode database: nothing to draw, or newer than it), Zl/Zp separators.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_UNNAMED = {"Cc": "control character", "Cn": "unassigned", "Co": "private use", "Cs": "surrogate"}
# The marks of a one-line chat: whitespace it would collapse, and the mark for a space itself.
VISIBLE_SPACE = "\u2423"  # ␣ OPEN BOX
_ONE_LINE = {"\n": "\\n", "\t": "\\t", " ": VISIBLE_SPACE, VISIBLE_SPACE: "\\u2423"}
_CONTROL_NAMES = {
    0x00: "NUL",
    0x07: "BELL",
    0x08: "BACKSPACE",
    0x0B: "VERTICAL TAB",
    0x0C: "FORM FEED",
    0x0D: "CARRIAGE RETURN",
    0x1B: "ESCAPE",
    0x7F: "DELETE",
    0x85: "NEXT LINE",
}
_BACKTICK_RUN = re.compile(r"`{3,}")
_SUBSTITUTION = re.compile(r"\$\(|`|[<>]\(")
_MAX_NAMED = 6  # kinds of hidden characters named in the warning


def is_hidden(ch: str) -> bool:
    """A character that shows as nothing, as something else, or moves the text around it."""
    if ch in "\n\t":
        return False
    cat = unicodedata.category(ch)
    return cat in _HIDDEN_CATEGORIES or (cat == "Zs" and ch != " ") or ord(ch) in _INVISIBLE


def _name(ch: str) -> str:
    return unicodedata.name(ch, "") or _CONTROL_NAMES.get(ord(ch)) or _UNNAMED.get(unicodedata.category(ch), "unnamed")


def _escape(ch: str) -> str:
    n = ord(ch)
    if ch == "\r":
        return "\\r"
    if n < 0x100:
        return f"\\x{n:02x}"
    return f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _json_escape(ch: str) -> str:
    n = ord(ch)
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000  # JSON spells a character past the BMP as a surrogate pair
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"


def _run_positions(text: str) -> set[int]:
    return {i for m in _BACKTICK_RUN.finditer(text) for i in range(m.start(), m.end())}


def escape_command(command: str, one_line: bool = False) -> str:
    """The command as shown: unchanged unless it holds hidden characters, a run of three backticks or, for a
    one-line chat, whitespace."""
    runs = _run_positions(command)
    marks = _ONE_LINE if one_line else {}
    if not runs and not any(ch in marks or is_hidden(ch) for ch in command):
        return command
    out = []
    for i, ch in enumerate(command):
        if ch == "\\":
            out.append("\\\\")
        elif i in runs:
            out.append("\\x60")
        elif ch in marks:
            out.append(marks[ch])
        elif is_hidden(ch):
            out.append(_escape(ch))
        else:
            out.append(ch)
    return "".join(out)


def escape_json(value: Any, indent: int | None = 2, one_line: bool = False) -> str:
    """JSON; hidden characters and backtick runs (inside strings) as JSON escapes. For a one-line chat:
    compact, and the spaces (then all inside strings) as `␣`."""
    if one_line:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
        text = text.replace(VISIBLE_SPACE, "\\u2423").replace(" ", VISIBLE_SPACE)
    else:
        text = json.dumps(value, ensure_ascii=False, indent=indent, default=str)
    runs = _run_positions(text)
    return "".join("\\u0060" if i in runs else _json_escape(ch) if is_hidden(ch) else ch for i, ch in enumerate(text))


def code_block(body: str) -> str:
    """A fenced block the body cannot close: the fence is longer than any backtick run in it."""
    longest = max((len(m.group()) for m in re.finditer(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{body}\n{fence}"


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def _redact_all(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_all(v, redact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_all(v, redact) for v in value]
    return value


def _one_line_warning(texts: list[str], where: str) -> list[str]:
    shown = [
        f"{what} as `{mark}`"
        for ch, what, mark in (
            ("\n", "newlines", "\\n"),
            ("\t", "tabs", "\\t"),
            (" ", "spaces", VISIBLE_SPACE),
            (VISIBLE_SPACE, f"its own {VISIBLE_SPACE}", "\\u2423"),
        )
        if any(ch in t for t in texts)
    ]
    return [f"⚠ This chat shows a message on one line: in {where}, " + ", ".join(shown) + "."] if shown else []


def _hidden_warnings(texts: list[str], escape: Callable[[str], str] = _escape) -> list[str]:
    counts: dict[str, int] = {}
    for text in texts:
        for ch in text:
            if is_hidden(ch):
                counts[ch] = counts.get(ch, 0) + 1
    lines = []
    if counts:
        kinds = [
            f"U+{ord(ch):04X} {_name(ch)}" + (f" ×{n}" if n > 1 else "") + f" as `{escape(ch)}`"
            for ch, n in counts.items()
        ]
        more = len(kinds) - _MAX_NAMED
        named = ", ".join(kinds[:_MAX_NAMED]) + (f" and {more} more kinds" if more > 0 else "")
        lines.append(f"⚠ Hidden or control characters, shown escaped: {named}.")
    if any(_BACKTICK_RUN.search(t) for t in texts):
        lines.append(f"⚠ Runs of three or more backticks, shown escaped as `{escape('`')}`.")
    return lines


def render(call: ToolCall, redact: Callable[[str], str] | None = None, *, one_line: bool = False) -> str:
    """Warning lines and the code block(s) of an approval request (markdown; the gateway formats it).
    `one_line`: for a chat that shows a message as one line (`Capabilities.multiline` false)."""
    args = dict(call.arguments)
    masked = False
    if redact is not None:  # the chat sees the call: configured secrets stay masked
        clean = _redact_all(args, redact)
        masked, args = clean != args, clean
    command = args.pop("command", None)
    lines: list[str] = []
    blocks: list[str] = []
    if isinstance(command, str):
        shown = escape_command(command, one_line)
        body_lines = command.rstrip("\n").count("\n") + 1
        if body_lines > 1:
            lines.append(
                f"⚠ {body_lines} lines: a newline starts another command, even after a # comment. Read every line."
            )
        if _SUBSTITUTION.search(command):
            lines.append("⚠ Command substitution ($(…), backticks or <(…)): the commands inside run too.")
        if one_line:
            lines += _one_line_warning([command], "the command")
        lines += _hidden_warnings([command])
        if shown != command and "\\" in command:
            lines.append("Backslashes of the command are shown doubled (`\\\\`).")
        if len(command) > LONG_CHARS:
            lines.append(
                f"⚠ Long command: {len(command)} characters, shown whole; the chat may split it "
                "over several messages. Read to the end."
            )
        blocks.append(code_block(shown))
        if (
            args
            and all(v is None or isinstance(v, (bool, int, float)) for v in args.values())
            and all(re.fullmatch(r"\w+", k) for k in args)
        ):
            blocks.append("Other arguments: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in args.items()))
        elif args:
            blocks.append("Other arguments:\n" + code_block(escape_json(args, indent=None, one_line=one_line)))
            lines += _one_line_warning(_strings(args), "the other arguments") if one_line else []
            lines += [
                w.replace("⚠ ", "⚠ In the other arguments: ", 1)
                for w in _hidden_warnings(_strings(args), escape=_json_escape)
            ]
    else:
        if command is not None:
            args = {"command": command, **args}
        shown = escape_json(args, one_line=one_line)
        lines += _one_line_warning(_strings(args), "the arguments' strings") if one_line else []
        lines += _hidden_warnings(_strings(args), escape=_json_escape)
        if len(shown) > LONG_CHARS:
            lines.append(
                f"⚠ Long arguments: {len(shown)} characters, shown whole; the chat may split them "
                "over several messages. Read to the end."
            )
        blocks.append(code_block(shown))
    if masked:
        lines.append("Configured secrets are shown as [REDACTED].")
    return "\n".join([*lines, *blocks])
