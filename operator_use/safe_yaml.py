"""YAML written by hand, read with limits.

`yaml.safe_load` builds no arbitrary objects but trusts the document's size: an alias repeats what its anchor
names each time it is used, so a few hundred bytes of anchors that alias each other nine times over (the
"billion laughs") stand for 10^9 values, and whatever walks the result (our null-dropping, pydantic) takes
minutes and all the memory. An alias may also name the value that contains it (a loop), and nesting without
end overflows the stack. `load` measures the composed document before building anything and refuses those.
"""

from __future__ import annotations

from typing import Any

import yaml

# Values after expanding aliases: a real configuration has a few hundred.
MAX_VALUES = 100_000
MAX_DEPTH = 64


class YAMLRefused(ValueError):
    """The document is valid YAML we will not build; the message says why."""


class _Loader(yaml.SafeLoader):
    max_values = MAX_VALUES
    max_depth = MAX_DEPTH

    def compose_document(self) -> Any:
        node = super().compose_document()
        _check(node, self.max_values, self.max_depth)
        return node


def load(text: str, *, max_values: int = MAX_VALUES, max_depth: int = MAX_DEPTH) -> Any:
    """Like `yaml.safe_load`; raises `yaml.YAMLError` for bad YAML and `YAMLRefused` past a limit."""
    loader = _Loader(text)
    loader.max_values, loader.max_depth = max_values, max_depth
    try:
        return loader.get_single_data()
    except RecursionError:  # the composer recurses per level, before our depth check sees the node
        raise YAMLRefused(f"it is nested more than {max_depth} levels deep") from None
    except YAMLRefused:
        raise
    except (AttributeError, TypeError, ValueError, OverflowError) as exc:
        # PyYAML's constructors let these escape for a malformed tagged value ("!!timestamp x", "!!float x").
        mark = getattr(loader, "get_mark", lambda: None)()
        where = f" near line {mark.line + 1}" if mark is not None else ""
        raise YAMLRefused(f"a value{where} could not be read ({type(exc).__name__}: {exc})") from None
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check(root: yaml.Node, max_values: int, max_depth: int) -> None:
    """Expanded size and depth of the node graph (aliases are shared nodes), each node visited once; no
    recursion, so a deep document cannot overflow the stack here."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values once expanded, depth)
    open_nodes: set[int] = set()  # the current path from the root: meeting one again is a loop
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        if leaving:
            open_nodes.discard(key)
            parts = [measured[id(child)] for child in _children(node)]
            size = 1 + sum(s for s, _ in parts)
            depth = 1 + max((d for _, d in parts), default=0)
            if size > max_values:
                raise YAMLRefused(
                    f"it expands to more than {max_values} values: aliases (*name) repeat what "
                    f"their anchor names each time they are used (line {node.start_mark.line + 1})"
                )
            if depth > max_depth:
                raise YAMLRefused(f"it is nested more than {max_depth} levels deep (line {node.start_mark.line + 1})")
            measured[key] = (size, depth)
        elif key in open_nodes:
            raise YAMLRefused(f"the value anchored at line {node.start_mark.line + 1} contains an alias to itself")
        elif key not in measured:
            if isinstance(node, yaml.ScalarNode):
                _check_text(node)
                measured[key] = (1, 1)
                continue
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))


def _check_text(node: yaml.ScalarNode) -> None:
    # A "\ud800" escape in a double-quoted string makes text no UTF-8 encoder takes: it would fail later.
    try:
        node.value.encode("utf-8")
    except UnicodeEncodeError:
        raise YAMLRefused(
            f"line {node.start_mark.line + 1} has text that is not valid Unicode "
            "(a lone surrogate escape such as \\ud800)"
        ) from None
