import re

import pytest

from operator_use.gateway.splitting import (
    balanced,
    find_fences,
    fit,
    last_paragraph_break,
    measure,
    safe_cut,
    split_first,
    split_markdown,
)


def squash(s: str) -> str:
    return re.sub(r"\s+", "", s)


def strip_fence_lines(chunks: list[str]) -> str:
    """Concatenate chunks without any fence line (the splitter may add close/reopen fences)."""
    lines = [ln for c in chunks for ln in c.split("\n") if not re.match(r"^\s*(```|~~~)", ln)]
    return squash("\n".join(lines))


def prose(n_paragraphs: int, words: int = 60, seed: int = 0) -> list[str]:
    out = []
    for p in range(n_paragraphs):
        sentence = " ".join(f"w{seed}-{p}-{i}" for i in range(words))
        out.append(sentence.replace("-9 ", "-9. ", 3))
    return out


def test_short_text_is_one_chunk():
    assert split_markdown("hello", 10) == ["hello"]
    assert split_markdown("   \n", 10) == []


def test_prefers_paragraph_boundary():
    text = "a" * 30 + "\n\n" + "b" * 30 + "\n" + "c" * 30
    chunks = split_markdown(text, 70)
    assert chunks[0] == "a" * 30 + "\n\n" + "b" * 30 or chunks[0] == "a" * 30
    assert all(len(c) <= 70 for c in chunks)
    assert squash("".join(chunks)) == squash(text)


def test_paragraph_then_line_then_sentence_then_word():
    # paragraph break in the second half wins over a later line break
    text = "x" * 40 + "\n\n" + "y" * 20 + "\n" + "z" * 60
    assert split_first(text, 80)[0] == "x" * 40
    # no paragraph break: line break
    text = "x" * 40 + "\n" + "y" * 60
    assert split_first(text, 80) == ("x" * 40, "y" * 60)
    # no line break: end of sentence
    text = "First sentence here, long enough to count. Second one is rather long " + "q" * 40
    head, tail = split_first(text, 60)
    assert head == "First sentence here, long enough to count."
    assert tail.startswith("Second")
    # only spaces: a word boundary
    text = "alpha beta gamma delta epsilon zeta"
    head, tail = split_first(text, 20)
    assert head == "alpha beta gamma" and tail == "delta epsilon zeta"


def test_hard_cut_without_boundaries():
    text = "x" * 250
    chunks = split_markdown(text, 100)
    assert chunks == ["x" * 100, "x" * 100, "x" * 50]


def test_never_cuts_inside_code_block():
    code = "```python\n" + "\n".join(f"line_{i} = {i}" for i in range(30)) + "\n```"
    text = "intro paragraph\n\n" + code + "\n\noutro paragraph"
    chunks = split_markdown(text, len(code) + 5)
    assert all(balanced(c) for c in chunks)
    assert any(code in c for c in chunks)  # the block travelled whole
    assert squash("".join(chunks)) == squash(text)


def test_10000_chars_with_code_block_at_4096():
    paragraphs = prose(30, words=40)
    code = "```js\n" + "\n".join(f"const v{i} = compute({i}); // step {i}" for i in range(40)) + "\n```"
    mid = len(paragraphs) // 2
    text = "\n\n".join([*paragraphs[:mid], code, *paragraphs[mid:]])
    assert len(text) > 9_000
    chunks = split_markdown(text, 4096)
    assert len(chunks) >= 3
    assert all(len(c) <= 4096 for c in chunks)
    assert all(balanced(c) for c in chunks)
    assert squash("".join(chunks)) == squash(text)
    assert any(code in c for c in chunks)


def test_oversized_code_block_is_closed_and_reopened():
    body = "\n".join(f"print('row {i}')" for i in range(400))
    text = "Here is the script:\n\n```python\n" + body + "\n```\n\nDone."
    chunks = split_markdown(text, 1000)
    assert len(chunks) > 3
    for c in chunks:
        assert len(c) <= 1000
        assert balanced(c), c[-80:]
    # every chunk but the first and last starts by reopening with the same info string
    for c in chunks[1:-1]:
        assert c.startswith("```python\n")
    assert strip_fence_lines(chunks) == strip_fence_lines([text])


def test_code_block_with_one_huge_line():
    text = "~~~\n" + "z" * 3000 + "\n~~~"
    chunks = split_markdown(text, 1000)
    assert all(len(c) <= 1000 and balanced(c) for c in chunks)
    assert all(c.startswith("~~~") for c in chunks)
    assert strip_fence_lines(chunks) == "z" * 3000


def test_unclosed_fence_while_streaming_is_one_block_to_the_end():
    text = "text\n\n```py\nx = 1\n\ny = 2"
    fences = find_fences(text)
    assert len(fences) == 1 and not fences[0].closed and fences[0].end == len(text)
    # the blank line inside the open block is not a paragraph break
    assert last_paragraph_break(text) == 4


def test_safe_cut_returns_zero_inside_code_only():
    text = "```\n" + "a b c\n" * 50 + "```"
    assert safe_cut(text, 60) == 0
    assert safe_cut("short", 60) == 5


def test_tilde_and_longer_fences():
    text = "````md\n```\ninner\n```\n````\n\nafter"
    fences = find_fences(text)
    assert len(fences) == 1 and fences[0].closed and fences[0].marker == "````"


@pytest.mark.parametrize("limit", [50, 120, 333, 1000])
def test_property_all_content_kept(limit):
    paragraphs = prose(12, words=25, seed=limit)
    code = "```\n" + "\n".join(f"code {i}" for i in range(60)) + "\n```"
    text = "\n\n".join([*paragraphs[:5], code, *paragraphs[5:]])
    chunks = split_markdown(text, limit)
    assert all(len(c) <= limit for c in chunks)
    assert all(balanced(c) for c in chunks)
    assert strip_fence_lines(chunks) == strip_fence_lines([text])


def _reference_break(text: str) -> int:
    """Brute force: the newline before the last complete blank line outside code, with text before it."""
    fences = find_fences(text)
    best, pos = 0, 0
    for line in text.split("\n")[:-1]:  # complete lines only
        i = pos - 1
        if pos > 0 and not line.strip(" \t") and text[:i].strip() and all(i <= f.start or i >= f.end for f in fences):
            best = i
        pos += len(line) + 1
    return best


def test_paragraph_tracker_matches_full_scan():
    from operator_use.gateway.splitting import ParagraphTracker

    text = (
        "\n\nintro line\nmore\n\n\n```py\na = 1\n\nb = 2\n```\n\nafter  \n \t\n"
        "~~~~\n~~~\nx\n\n~~~~\nlast para\n\n`` `not a fence\n\nend"
    )
    tracker = ParagraphTracker()
    for i in range(len(text) + 1):
        incremental = tracker.update(text[:i])
        assert incremental == last_paragraph_break(text[:i]) == _reference_break(text[:i]), repr(text[:i])


# --- lengths in the platform's unit ---


def test_measure_counts_as_each_platform_does():
    text = "añ😀👨‍👩‍👧"  # ASCII, a 2-byte letter, an astral emoji, a ZWJ family (3 astral + 2 ZWJ)
    assert measure(text, "chars") == 8
    assert measure(text, "utf16") == 1 + 1 + 2 + (3 * 2 + 2)
    assert measure(text, "bytes") == 1 + 2 + 4 + (3 * 4 + 2 * 3)
    assert fit("😀" * 10, 7, "utf16") == 3 and fit("abc", 7, "utf16") == 3 and fit("😀", 1, "utf16") == 1


@pytest.mark.parametrize("unit", ["utf16", "bytes"])
def test_split_markdown_keeps_every_chunk_within_the_limit_in_units(unit):
    paragraphs = [" ".join(f"😀w{p}-{i}🚀" for i in range(40)) for p in range(8)]
    code = "```\n" + "\n".join(f"print('🎉 {i}')" for i in range(60)) + "\n```"
    text = "\n\n".join([*paragraphs[:4], code, *paragraphs[4:]])
    chunks = split_markdown(text, 500, unit)
    assert len(chunks) > measure(text, unit) // 500
    assert all(measure(c, unit) <= 500 for c in chunks)
    assert all(balanced(c) for c in chunks)
    assert strip_fence_lines(chunks) == strip_fence_lines([text])
