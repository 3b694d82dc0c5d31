"""Text from a table cell as the value of a request field: `42` for a seed, `true` for a flag.

A CSV holds text only. Each request field's type is read from its op's
request model (so an op added to the catalog later is served as it is) and
the cell converted to it; a cell that does not convert is a `ValueError`
whose message is shown to the user beside the file, line and column.
"""

from __future__ import annotations

import json
import re
import types
from enum import Enum
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

#: how a cell's text becomes a field's value
INT, FLOAT, NUMBER, BOOL, TEXT, JSON = "int", "float", "number", "bool", "text", "json"

_INT = re.compile(r"^[-+]?[0-9]+$")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


@cache
def field_kinds(model: type[BaseModel]) -> dict[str, str]:
    """How each field of a request model takes a cell: int, float, number, bool, text or json."""
    return {name: _kind(_types(info.annotation)) for name, info in model.model_fields.items()}


def _kind(found: set[str]) -> str:
    if TEXT in found:
        return TEXT
    if found == {INT}:
        return INT
    if found == {BOOL}:
        return BOOL
    if found and found <= {INT, FLOAT}:
        return FLOAT if found == {FLOAT} else NUMBER
    return JSON


def _types(annotation: Any) -> set[str]:
    """The plain types an annotation admits, unwrapping Annotated, unions, Literal and Enum."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _types(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return set().union(*(_types(arg) for arg in get_args(annotation) if arg is not type(None)))
    if origin is Literal:
        return set().union(*(_types(type(value)) for value in get_args(annotation)))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return set().union(*(_types(type(member.value)) for member in annotation))
    if annotation is bool:
        return {BOOL}
    if annotation is int:
        return {INT}
    if annotation is float:
        return {FLOAT}
    if annotation is str:
        return {TEXT}
    return {JSON}


def convert(kind: str, text: str) -> Any:
    """The value of a cell's text for a field of ``kind``; `ValueError` (shown to the user) if none."""
    if kind == TEXT:
        return text
    if kind in (INT, NUMBER) and _INT.match(text):
        return int(text)
    if kind == INT:
        raise ValueError(f"{text!r} is not a whole number")
    if kind in (FLOAT, NUMBER):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
    if kind == BOOL:
        word = text.lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError(f"{text!r} is not true or false (true/false, yes/no, 1/0)")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON ({getattr(exc, 'msg', exc)}); write this field as a JSON value") from None
