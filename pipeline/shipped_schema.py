"""An API schema shipped as package data: its enum lists and ranges as pydantic field types.

Each of `pipeline.api_schema` (legacy), `pipeline.api_schema_v3` and
`pipeline.api_schema_v4` ships the parts of Ideogram's OpenAPI spec it
checks requests against as a JSON file in ``pipeline/data``; this reads one
and turns its enums and ranges into the checks their request models use,
with the same messages everywhere.
"""

from __future__ import annotations

import json
from functools import cached_property
from importlib import resources
from typing import Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class ShippedSchema:
    """``pipeline/data/<file_name>``: ``enums`` (name → values) and ``ranges`` (name → [min, max])."""

    def __init__(self, file_name: str, *, shown_values: int = 16) -> None:
        self.file_name = file_name
        #: how many allowed values an "is not one of" message lists before "..."
        self.shown_values = shown_values

    @cached_property
    def data(self) -> dict[str, Any]:
        """The file's content, read once."""
        text = resources.files("pipeline").joinpath(f"data/{self.file_name}").read_text("utf-8")
        data: dict[str, Any] = json.loads(text)
        return data

    def enum_values(self, name: str) -> tuple[str, ...]:
        """The allowed values of one enum (``rendering_speed``, ``aspect_ratio``, ...)."""
        return tuple(self.data["enums"][name])

    def value_range(self, name: str) -> tuple[int, int]:
        """The inclusive (min, max) of a numeric field."""
        low, high = self.data["ranges"][name]
        return int(low), int(high)

    def one_of(self, name: str) -> AfterValidator:
        """A check that a string is one of the enum's values: ``Annotated[StrictStr, one_of(name)]``."""
        allowed = self.enum_values(name)
        more = ", ..." if len(allowed) > self.shown_values else ""
        shown = ", ".join(allowed[: self.shown_values]) + more

        def check(value: str) -> str:
            if value not in allowed:
                raise ValueError(f"{value!r} is not one of {shown}")
            return value

        return AfterValidator(check)

    def within(self, name: str) -> Any:
        """The field's inclusive range as constraints: ``Annotated[StrictInt, within(name)]``."""
        low, high = self.value_range(name)
        return Field(ge=low, le=high)


class StrictRequest(BaseModel):
    """A request model: unknown fields refused, values frozen once checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)
