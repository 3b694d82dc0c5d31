"""The legacy endpoints' request schema: enums, ranges and per-model rules.

The enum lists and ranges ship as data (``data/ideogram_schema.json``),
extracted from Ideogram's OpenAPI spec; a test compares them with the spec so
that drift is caught. The models here are the request schemas that
`pipeline.endpoints` gives its legacy ops; the same rules serve manifest
validation (a request the API would reject with 400 is rejected at
`validate` time) and the fake server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

from pipeline.shipped_schema import ShippedSchema, StrictRequest

SCHEMA = ShippedSchema("ideogram_schema.json", shown_values=12)


def schema_data() -> dict[str, Any]:
    """The enum lists, ranges and per-op field lists shipped with the package."""
    return SCHEMA.data


enum_values = SCHEMA.enum_values
value_range = SCHEMA.value_range
DEFAULT_MODEL: str = schema_data()["default_model"]
MAX_SOURCE_BYTES: int = schema_data()["max_image_bytes"]

Model = Annotated[StrictStr, SCHEMA.one_of("model")]
AspectRatio = Annotated[StrictStr, SCHEMA.one_of("aspect_ratio")]
StyleType = Annotated[StrictStr, SCHEMA.one_of("style_type")]
MagicPromptOption = Annotated[StrictStr, SCHEMA.one_of("magic_prompt_option")]
MagicPromptVersion = Annotated[StrictStr, SCHEMA.one_of("magic_prompt_version")]
Resolution = Annotated[StrictStr, SCHEMA.one_of("resolution")]
PalettePreset = Annotated[StrictStr, SCHEMA.one_of("color_palette_preset")]
DescribeModelVersion = Annotated[StrictStr, SCHEMA.one_of("describe_model_version")]
NumImages = Annotated[StrictInt, SCHEMA.within("num_images")]
Seed = Annotated[StrictInt, SCHEMA.within("seed")]
Percent = Annotated[StrictInt, Field(ge=1, le=100)]
ColorHex = Annotated[StrictStr, Field(pattern=schema_data()["color_hex_pattern"])]
_CW_LOW, _CW_HIGH = schema_data()["ranges"]["color_weight"]
_PM_LOW, _PM_HIGH = schema_data()["ranges"]["color_palette_members"]


class PaletteMember(StrictRequest):
    """One colour of an explicit palette."""

    color_hex: ColorHex
    color_weight: Annotated[StrictFloat | StrictInt, Field(ge=_CW_LOW, le=_CW_HIGH)] | None = None


class ColorPalette(StrictRequest):
    """A palette given by preset name or by members, never both."""

    name: PalettePreset | None = None
    members: Annotated[list[PaletteMember], Field(min_length=_PM_LOW, max_length=_PM_HIGH)] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ColorPalette:
        if (self.name is None) == (self.members is None):
            raise ValueError("give exactly one of `name` (a preset) or `members`")
        return self


def _models(key: str) -> frozenset[str]:
    return frozenset(schema_data()["model_rules"][key])


class ImageRequest(StrictRequest):
    """`image_request` of generate (Ideogram's `ImageRequest`)."""

    prompt: StrictStr | None = None
    aspect_ratio: AspectRatio | None = None
    model: Model | None = None
    magic_prompt_option: MagicPromptOption | None = None
    magic_prompt_version: MagicPromptVersion | None = None
    seed: Seed | None = None
    style_type: StyleType | None = None
    negative_prompt: StrictStr | None = None
    num_images: NumImages | None = None
    resolution: Resolution | None = None
    color_palette: ColorPalette | None = None


class RemixRequest(ImageRequest):
    """`image_request` of remix (Ideogram's `InitialImageRequest`)."""

    image_weight: Percent | None = None


class UpscaleRequest(StrictRequest):
    """`image_request` of upscale (Ideogram's `UpscaleInitialImageRequest`)."""

    prompt: StrictStr | None = None
    resemblance: Percent | None = None
    detail: Percent | None = None
    magic_prompt_option: MagicPromptOption | None = None
    magic_prompt_version: MagicPromptVersion | None = None
    num_images: NumImages | None = None
    seed: Seed | None = None


class DescribeRequest(StrictRequest):
    """The form fields of describe besides the image."""

    describe_model_version: DescribeModelVersion | None = None


def legacy_model_rules(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Rules across fields of generate and remix that the schema states in prose.

    ``aspect_ratio`` and ``resolution`` exclude each other; ``negative_prompt``,
    ``style_type``, ``color_palette`` and ``resolution`` exist only on some models.
    """
    model = params.get("model") or DEFAULT_MODEL
    if not isinstance(model, str):
        return []
    problems: list[tuple[str, str]] = []
    if params.get("aspect_ratio") is not None and params.get("resolution") is not None:
        problems.append(("resolution", "`aspect_ratio` and `resolution` cannot be combined"))
    allowed = {
        "negative_prompt": model in _models("negative_prompt"),
        "style_type": model not in _models("style_type_not"),
        "color_palette": model not in _models("color_palette_not"),
        "resolution": model in _models("resolution"),
    }
    for field, ok in allowed.items():
        if params.get(field) is not None and not ok:
            problems.append((field, f"not available for model {model}"))
    return problems


_VALUE_ERROR = re.compile(r"^(Value error|Assertion failed), ")


def clean_message(msg: str, kind: str) -> str:
    """A pydantic error message as a user reads it."""
    if kind == "extra_forbidden":
        return "not a field this op takes"
    return _VALUE_ERROR.sub("", msg)


def legacy_model(params: Mapping[str, Any]) -> str:
    """The model a generate or remix request runs on (the API default when unset)."""
    model = params.get("model")
    return str(model) if model else DEFAULT_MODEL


def num_images(params: Mapping[str, Any]) -> int:
    """How many images a request asks for (1 when unset)."""
    value = params.get("num_images")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 1
