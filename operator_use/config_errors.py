"""Configuration errors in plain words: each problem names its key (`llm.model`), where it was set (the
config file or the OPERATOR_* variable) and what is wrong, with "did you mean" for a misspelt key.

pydantic's own messages ("Extra inputs are not permitted", "Input should be ...") speak about Python
types; people editing a YAML file need the key and the fix.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .config_model import FieldProblem
from .security.redact import strip_url_credentials

Segment = str | int

# Keys whose values are never repeated in a message.
_SECRET_WORDS = ("key", "token", "secret", "password", "passwd")
# Where a section or a list belongs, a text is most often a token or key put one level too high
# (`channels: {telegram: "123:AA..."}`, `llm: sk-...`): only its type is named.
_CONTAINER_KINDS = frozenset(
    {"list_type", "tuple_type", "set_type", "dict_type", "model_type", "model_attributes_type"}
)


def describe(
    exc: ValidationError,
    root: type[BaseModel],
    *,
    file: Path,
    file_data: Mapping[str, Any],
    env: Mapping[str, str],
    given: Mapping[str, Any] | None = None,
    prefix: str = "OPERATOR_",
    delimiter: str = "__",
    source: str = "the settings given to load_config",
) -> str:
    """One message for all the problems, grouped by where they were set; `source` names where the `given`
    settings came from."""
    by_source: dict[str, dict[str, list[str]]] = {}
    for err in exc.errors():
        path, parent, message = _problem(err, root)
        variable = _variable(path, env, prefix, delimiter)
        if given and _has(given, path):  # load_config(**overrides): an embedding program's own settings
            where = source
            shown = _dotted(path) or "(the whole configuration)"
            if err["type"] == "extra_forbidden":
                message = "unknown setting" + _suggestion(path, parent, None, prefix, delimiter)
        elif variable is not None:
            where = "OPERATOR_* environment variables"
            shown = f"{variable} ({_dotted(path) or 'the whole configuration'})"
            if err["type"] == "extra_forbidden":
                message = "unknown setting" + _suggestion(path, parent, variable, prefix, delimiter)
        else:
            where = str(file) if _has(file_data, path) else f"{file} or OPERATOR_* environment variables"
            shown = _dotted(path) or "(the whole configuration)"
            if err["type"] == "extra_forbidden":
                message = "unknown setting" + _suggestion(path, parent, None, prefix, delimiter)
        lines = by_source.setdefault(where, {}).setdefault(shown, [])
        if message not in lines:
            lines.append(message)
    out = []
    for where, problems in by_source.items():
        out.append(f"Invalid configuration in {where}:")
        # Several messages for one key come from the alternatives of a union (a list, or "*"): any would do.
        out += [f"  {key}: {'; or '.join(messages)}" for key, messages in problems.items()]
    # A URL's user:password@ (llm.base_url...) is never repeated, wherever the value was quoted.
    return strip_url_credentials("\n".join(out))


def unknown_variable(name: str, fields: Sequence[str], prefix: str = "OPERATOR_", delimiter: str = "__") -> str:
    """The message for an OPERATOR_* variable that names no top-level setting at all."""
    head = name[len(prefix) :].split(delimiter)[0].lower()
    close = difflib.get_close_matches(head, fields, n=1, cutoff=0.6)
    hint = f"did you mean {prefix}{close[0].upper()}?" if close else "the settings are " + ", ".join(fields)
    return (
        f"{name}: not an operator-use setting ({hint}); OPERATOR_* variables are read as settings, "
        f"e.g. OPERATOR_LLM__MODEL for llm.model: rename or unset it"
    )


# --- one problem ---------------------------------------------------------------------------------


def _problem(err: ErrorDetails, root: type[BaseModel]) -> tuple[list[Segment], type[BaseModel] | None, str]:
    kind = err["type"]
    path, parent = _walk(root, err["loc"], extra=kind == "extra_forbidden")
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, FieldProblem):
        path = [*path, cause.field]
        return path, parent, strip_url_credentials(cause.message)
    # One alternative of a union ("a list, or '*'"): pydantic ends its location with the member's type, a tag
    # _walk leaves out of the key path.
    loc = err["loc"]
    member = bool(loc) and isinstance(loc[-1], str) and (not path or path[-1] != loc[-1])
    return path, parent, _message(kind, err, ctx, secret=_is_secret(path), member=member)


def _message(kind: str, err: ErrorDetails, ctx: Mapping[str, Any], *, secret: bool, member: bool = False) -> str:
    value = err.get("input")
    got = "" if secret else f" (got {_show(value)})"
    if kind in _CONTAINER_KINDS and isinstance(value, str):
        got = " (got text)"
    if kind == "extra_forbidden":
        return "unknown setting"
    if kind == "missing":
        return "is required"
    if kind in ("literal_error", "enum"):
        choices = _choices(str(ctx.get("expected", "")))
        # A text where a union also takes a list or a section may be a token put there: not repeated.
        shown = "this value" if secret or (member and isinstance(value, str)) else _show(value)
        if len(choices) == 1:
            return f'{shown} is not "{choices[0]}"'
        return f"{shown} is not one of {', '.join(choices)}"
    bounds = {
        "greater_than_equal": ("must be at least", "ge"),
        "greater_than": ("must be more than", "gt"),
        "less_than_equal": ("must be at most", "le"),
        "less_than": ("must be less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        # A number from a variable arrives as text: "0" would read as if it were quoted in the file.
        shown = "" if secret else f" (got {value if isinstance(value, str) and len(value) <= 60 else _show(value)})"
        bound = ctx.get(key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"{words} {bound}{shown}"
    simple = {
        "int_parsing": "must be a whole number",
        "int_type": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "finite_number": "must be a finite number",
        "bool_parsing": "must be true or false",
        "bool_type": "must be true or false",
        "string_type": "must be text",
        "string_unicode": "must be text",
        "list_type": "must be a list",
        "tuple_type": "must be a list",
        "set_type": "must be a list",
        "path_type": "must be a path",
        "dict_type": "must be a section of settings (key: value lines)",
        "model_type": "must be a section of settings (key: value lines)",
        "model_attributes_type": "must be a section of settings (key: value lines)",
    }
    if kind in simple:
        return simple[kind] + got
    if kind in ("too_short", "too_long", "string_too_short", "string_too_long"):
        at = "at least" if "short" in kind else "at most"
        count = ctx.get("min_length" if "short" in kind else "max_length")
        unit = "character(s)" if kind.startswith("string") else "item(s)"
        return f"must have {at} {count} {unit}{got}"
    if kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        return str(cause) if cause is not None else _plain(err["msg"])
    return _plain(err["msg"]) + got


def _plain(msg: str) -> str:
    msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
    return msg.replace("Input should be", "must be").replace("input should be", "must be")


def _choices(expected: str) -> list[str]:
    # ctx["expected"] reads "'off', 'when_spoken' or 'always'" (numbers unquoted).
    found = re.findall(r"'((?:[^'\\]|\\.)*)'|\b(\d+(?:\.\d+)?)\b", expected)
    return [a or b for a, b in found] or [expected]


def _show(value: Any) -> str:
    if isinstance(value, str):
        # Before shortening: a URL cut inside its user:password@ would no longer be recognised.
        text = json.dumps(strip_url_credentials(value), ensure_ascii=False)
        return text if len(text) <= 60 else text[:57] + '..."'
    if isinstance(value, Mapping):
        return "a section of settings"
    if isinstance(value, (list, tuple)):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_secret(path: Sequence[Segment]) -> bool:
    return any(isinstance(s, str) and any(w in s.lower() for w in _SECRET_WORDS) for s in path)


def _dotted(path: Sequence[Segment]) -> str:
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else str(seg))
    return out


# --- where in the models ---------------------------------------------------------------------------


def _members(tp: Any) -> list[Any]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(tp) for m in _members(arg)]
    if origin is Annotated:
        return _members(get_args(tp)[0])
    return [tp]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _walk(
    root: type[BaseModel], loc: Sequence[Segment], *, extra: bool
) -> tuple[list[Segment], type[BaseModel] | None]:
    """The key path of an error location (without pydantic's union-member tags such as "list[str]") and the
    model that holds its last key (for suggestions)."""
    path: list[Segment] = []
    parent: type[BaseModel] | None = None
    current: list[Any] = [root]
    for i, seg in enumerate(loc):
        last = i == len(loc) - 1
        candidates = [m for t in current for m in _members(t)]
        models = [c for c in candidates if _is_model(c)]
        if isinstance(seg, int):
            sequences = [c for c in candidates if get_origin(c) in (list, tuple, set, frozenset)]
            path.append(seg)
            parent = None
            current = [get_args(s)[0] for s in sequences if get_args(s)]
            continue
        owner = next((m for m in models if seg in m.model_fields), None)
        if owner is not None:
            path.append(seg)
            parent = owner
            current = [owner.model_fields[seg].annotation]
            continue
        mappings = [c for c in candidates if get_origin(c) in (dict, Mapping)]
        if mappings:
            if seg == "[key]":
                continue
            path.append(seg)
            parent = None
            current = [get_args(m)[1] for m in mappings if len(get_args(m)) == 2]
            continue
        if last and extra:
            path.append(seg)
            parent = models[0] if models else None
            current = []
            continue
        # A union member's tag ("list[str]", "literal['*']"): not a key.
    return path, parent


def _names(model: type[BaseModel]) -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        names.append(name)
        if isinstance(field.alias, str) and field.alias != name:
            names.append(field.alias)
    return names


def _suggestion(
    path: list[Segment], parent: type[BaseModel] | None, variable: str | None, prefix: str, delimiter: str
) -> str:
    if parent is None or not path or not isinstance(path[-1], str):
        return ""
    names = _names(parent)
    close = difflib.get_close_matches(path[-1].lower(), names, n=1, cutoff=0.6)
    if not close:
        return "; the settings here are " + ", ".join(names) if len(names) <= 30 else ""
    if variable is not None:
        # The variable spells the path (rather than holding it in a JSON value): suggest the variable's name.
        parts = variable[len(prefix) :].split(delimiter)
        if len(parts) >= len(path) and [p.lower() for p in parts[: len(path)]] == [str(s).lower() for s in path]:
            parts[len(path) - 1] = close[0].upper()
            return f"; did you mean {prefix}{delimiter.join(parts)}?"
    return f'; did you mean "{close[0]}"?'


# --- which source ----------------------------------------------------------------------------------


def _variable(path: list[Segment], env: Mapping[str, str], prefix: str, delimiter: str) -> str | None:
    """The OPERATOR_* variable that set this key: the variable for the key itself, or one for a section
    above it whose JSON value holds the key."""
    keys = []
    for seg in path:
        if not isinstance(seg, str):
            break
        keys.append(seg)
    names = {k.upper(): k for k in env}
    for n in range(len(keys), 0, -1):
        name = names.get((prefix + delimiter.join(keys[:n])).upper())
        if name is None:
            continue
        if n == len(path) or _has(_json(env[name]), path[n:]):
            return name
    if keys and len(keys) == len(path):
        # An unknown section with keys below it: OPERATOR_CHANNELS__TELEGARM__TOKEN for channels.telegarm.
        below = (prefix + delimiter.join(keys) + delimiter).upper()
        deeper = sorted(name for upper, name in names.items() if upper.startswith(below))
        if deeper:
            return deeper[0]
    return None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _has(data: Any, path: Sequence[Segment]) -> bool:
    for seg in path:
        if isinstance(seg, int):
            if not (isinstance(data, list) and -len(data) <= seg < len(data)):
                return False
            data = data[seg]
        else:
            if not (isinstance(data, Mapping) and seg in data):
                return False
            data = data[seg]
    return True
