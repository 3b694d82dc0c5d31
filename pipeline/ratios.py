"""Aspect ratios written as people write them (`16:9`), in each op's own spelling.

Ideogram spells one ratio differently per API generation: `ASPECT_16_9` for
the legacy endpoints, `16x9` for Ideogram 3.0. A manifest may write `16:9`
anywhere a ratio goes (a job's fields, `defaults`, `matrix` values, prompts
file columns); `normalise_ratios` turns it into the spelling the op's own
schema takes. Nothing here names an op: the spelling is found by asking the
op's request model which candidate it accepts (the enum in its JSON schema
when it has one, else by validating the candidate), so an op added to the
catalog later is served as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.errors import PydanticUserError

from pipeline import endpoints

#: request fields that hold an aspect ratio
RATIO_FIELDS = ("aspect_ratio",)
_WRITTEN = re.compile(r"^\s*(\d{1,3})\s*:\s*(\d{1,3})\s*$")


def candidates(width: str, height: str) -> tuple[str, ...]:
    """The spellings the provider's schemas use for ``width``:``height``."""
    return (f"ASPECT_{width}_{height}", f"{width}x{height}", f"{width}:{height}")


def normalise_ratios(op: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with each `W:H` ratio in ``op``'s spelling (changed in place, and returned).

    A ratio the op does not take is left as written, for validation to refuse
    with the op's list of ratios.
    """
    for name in RATIO_FIELDS:
        value = params.get(name)
        if isinstance(value, str) and ":" in value:
            model = endpoints.endpoint(op).request
            if name in model.model_fields:
                params[name] = spelled(model, name, value)
    return params


def normalised_copy(op: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` with ratios in ``op``'s spelling."""
    return normalise_ratios(op, dict(params))


@cache
def spelled(model: type[BaseModel], field: str, value: str) -> str:
    """``value`` (`16:9`) as ``model``'s ``field`` spells it, or unchanged if it takes none of them."""
    match = _WRITTEN.match(value)
    if match is None:
        return value
    allowed = _enum_of(model, field)
    for candidate in candidates(*match.groups()):
        if candidate in allowed if allowed is not None else _accepts(model, field, candidate):
            return candidate
    return value


def _enum_of(model: type[BaseModel], field: str) -> frozenset[str] | None:
    """The values of ``field``'s enum in the model's JSON schema, when the schema states them."""
    try:
        schema = model.model_json_schema()
    except PydanticUserError:  # a model whose schema cannot be written: validate candidates instead
        return None
    prop = schema.get("properties", {}).get(field, {})
    for part in [prop, *prop.get("anyOf", [])]:
        ref = part.get("$ref", "")
        if ref.startswith("#/$defs/"):
            part = schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
        if "enum" in part:
            return frozenset(str(v) for v in part["enum"])
        if "const" in part:
            return frozenset({str(part["const"])})
    return None


def _accepts(model: type[BaseModel], field: str, value: str) -> bool:
    """Whether ``model`` takes ``value`` for ``field`` (errors of other fields do not count)."""
    try:
        model.model_validate({field: value})
    except ValidationError as exc:
        return not any(err["loc"][:1] == (field,) for err in exc.errors(include_url=False))
    return True
