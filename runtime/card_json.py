"""A model card's JSON, read from files anyone can edit: nesting bounded before ``json.loads``
could recurse, values checked to be what JSON holds, and every problem one ``CardError``
line (short reprs, no line breaks). The sidecars of engines are read the same way."""

from __future__ import annotations

import json
import re
import reprlib
from typing import Any

MAX_DEPTH = 64  # JSON nesting levels of a whole card (exports write 5)


class CardError(ValueError):
    """A card that is missing, malformed or describes an impossible model."""


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_object(text: str, origin: str, what: str = "card") -> dict[str, Any]:
    """``text`` parsed as one JSON object, or one CardError line starting with ``origin``.
    Nesting deeper than MAX_DEPTH is refused before parsing: json.loads recurses once per
    level, and a hostile file 50 000 levels deep would otherwise end in a RecursionError."""
    if not isinstance(text, str):
        raise CardError(f"{origin}: a {what} is JSON text, got {type(text).__name__}")
    depth, member = json_depth(text)
    if depth > MAX_DEPTH:
        where = f"the {what}'s JSON" if member is None else f"{what} field {key_name(member)}"
        raise CardError(f"{origin}: {where} nests more than {MAX_DEPTH} levels deep")
    try:
        data = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        raise CardError(f"{origin}: not valid JSON: {one_line(exc)}") from None
    if not isinstance(data, dict):
        raise CardError(f"{origin}: a {what} is a JSON object, got {json_type(data)}")
    return data


_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)  # a string or a bracket


def json_depth(text: str, stop: int = MAX_DEPTH) -> tuple[int, str | None]:
    """How deeply ``text`` nests JSON arrays and objects (brackets inside strings do not
    count), and the member of the root object where it is deepest (None: not in one), found
    without parsing and without recursion; counting stops once past ``stop``."""
    depth = deepest = 0
    last = member = deepest_member = None  # raw string tokens directly inside the root object
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token[0] == '"':
            if depth == 1:
                last = token
        elif token in "[{":
            if depth == 1:
                member = last  # the key of a member is the root's last string before its value
            depth += 1
            if depth > deepest:
                deepest, deepest_member = depth, member
                if deepest > stop:
                    break
        else:
            depth -= 1
    if deepest_member is None or not text.lstrip().startswith("{"):
        return deepest, None
    try:
        return deepest, str(json.loads(deepest_member))
    except ValueError:
        return deepest, None


def check_json_value(value: Any, name: str) -> None:
    """``value`` is what JSON can hold (str keys; tuples count as arrays), nested so the card
    stays within MAX_DEPTH (the card itself is level 1). Iterative: any depth, even a cycle,
    is an error, never a RecursionError."""
    stack: list[tuple[Any, int]] = [(value, 2)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            if depth > MAX_DEPTH:
                raise CardError(f"card field {name} nests more than {MAX_DEPTH} levels deep")
            if isinstance(item, dict):
                if not all(isinstance(k, str) for k in item):
                    raise CardError(f"card field {name} has an object key that is not a string")
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
        elif not isinstance(item, (str, int, float, type(None))):
            raise CardError(f"card field {name} holds a {type(item).__name__}, which JSON cannot")


class _ShortRepr(reprlib.Repr):
    """Short reprs with tuples shown as the JSON arrays they were read from."""

    def repr_tuple(self, x: tuple[Any, ...], level: int) -> str:
        return self.repr_list(list(x), level)


_SHORT = _ShortRepr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 60, 60


def shown(value: Any) -> str:
    """``value`` for a one-line message: repr'd (so no line breaks), cut short."""
    try:
        return _SHORT.repr(value)
    except ValueError:  # an int too long to print
        return f"a {type(value).__name__}"


def key_name(key: str) -> str:
    """A key for a message: as is when it looks like a field name, else repr'd and cut short."""
    return key if key.isidentifier() and len(key) <= 40 else shown(key)


def json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number" if is_number(value) else type(value).__name__)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
