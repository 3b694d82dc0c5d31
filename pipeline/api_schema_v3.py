"""The Ideogram 3.0 endpoints' request schema: enums, ranges, cross-field rules, price tiers.

The enum lists and ranges ship as data (``data/ideogram_v3_schema.json``),
extracted from Ideogram's OpenAPI spec of 2026-07; a test compares them with
that spec so that drift is caught. ``color_palette`` is the legacy schema's
palette (`pipeline.api_schema.ColorPalette`), which the 2026-07 spec still
uses unchanged.

The models here are the request schemas of the V3 ops in the endpoint
catalog (`pipeline.endpoints`): the API's own flat fields with its own
spellings (``aspect_ratio: 16x9``, ``magic_prompt``, ``rendering_speed``).
Files (the main image, masks, reference sets) are not fields: the catalog
lists them as file roles, and the rules below see how many of each a request
sends. The same rules serve manifest validation and the fake server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, StrictBool, StrictInt, StrictStr

from pipeline.api_schema import ColorPalette
from pipeline.shipped_schema import ShippedSchema, StrictRequest

#: the file roles whose presence changes the price (character reference pricing)
CHARACTER_ROLE = "character_reference_images"
STYLE_REFERENCES = "style_reference_images"
#: the tier prefix of a request with a character reference
CHARACTER_TIER = "CHARACTER"


SCHEMA = ShippedSchema("ideogram_v3_schema.json")


def schema_data() -> dict[str, Any]:
    """The V3 enum lists, defaults, ranges and limits shipped with the package."""
    return SCHEMA.data


enum_values = SCHEMA.enum_values
value_range = SCHEMA.value_range


DEFAULT_SPEED: str = schema_data()["defaults"]["rendering_speed"]
DEFAULT_UPSCALE: str = schema_data()["defaults"]["upscale_factor"]
MAX_IMAGE_BYTES: int = schema_data()["max_image_bytes"]
MAX_REFERENCE_SET_BYTES: int = schema_data()["max_reference_set_bytes"]
MAX_CHARACTER_REFERENCES: int = schema_data()["max_character_references"]
TRANSPARENT_REFUSED_SPEEDS: frozenset[str] = frozenset(schema_data()["transparent_refused_rendering_speeds"])


RenderingSpeed = Annotated[StrictStr, SCHEMA.one_of("rendering_speed")]
AspectRatio = Annotated[StrictStr, SCHEMA.one_of("aspect_ratio")]
Resolution = Annotated[StrictStr, SCHEMA.one_of("resolution")]
StyleType = Annotated[StrictStr, SCHEMA.one_of("style_type")]
StylePreset = Annotated[StrictStr, SCHEMA.one_of("style_preset")]
MagicPrompt = Annotated[StrictStr, SCHEMA.one_of("magic_prompt")]
UpscaleFactor = Annotated[StrictStr, SCHEMA.one_of("upscale_factor")]
NumImages = Annotated[StrictInt, SCHEMA.within("num_images")]
Seed = Annotated[StrictInt, SCHEMA.within("seed")]
ImageWeight = Annotated[StrictInt, SCHEMA.within("image_weight")]
StyleCode = Annotated[StrictStr, Field(pattern=schema_data()["patterns"]["style_code"])]


class _Prompted(StrictRequest):
    """Fields every prompted V3 op takes."""

    prompt: StrictStr | None = None
    magic_prompt: MagicPrompt | None = None
    magic_prompt_system_prompt_config_id: StrictStr | None = None
    num_images: NumImages | None = None
    seed: Seed | None = None
    rendering_speed: RenderingSpeed | None = None


class _Styled(_Prompted):
    """Style fields of generate, remix and edit (not reframe or replace-background)."""

    style_type: StyleType | None = None
    style_preset: StylePreset | None = None
    style_codes: list[StyleCode] | None = None
    color_palette: ColorPalette | None = None
    custom_model_uri: StrictStr | None = None


class GenerateRequest(_Styled):
    """The fields of ``/v1/ideogram-v3/generate`` (``GenerateImageRequestV3``) besides files."""

    resolution: Resolution | None = None
    aspect_ratio: AspectRatio | None = None
    negative_prompt: StrictStr | None = None
    enable_copyright_detection: StrictBool | None = None


class RemixRequest(_Styled):
    """The fields of ``/v1/ideogram-v3/remix`` (``RemixImageRequestV3``) besides files."""

    image_weight: ImageWeight | None = None
    resolution: Resolution | None = None
    aspect_ratio: AspectRatio | None = None
    negative_prompt: StrictStr | None = None


class EditRequest(_Styled):
    """The fields of ``/v1/ideogram-v3/inpaint`` and ``edit`` (``EditImageRequestV3``) besides files."""


class ReframeRequest(StrictRequest):
    """The fields of ``/v1/ideogram-v3/reframe`` (``ReframeImageRequestV3``) besides the image."""

    resolution: Resolution | None = None
    num_images: NumImages | None = None
    seed: Seed | None = None
    rendering_speed: RenderingSpeed | None = None
    style_preset: StylePreset | None = None
    color_palette: ColorPalette | None = None
    style_codes: list[StyleCode] | None = None


class ReplaceBackgroundRequest(_Prompted):
    """The fields of ``/v1/ideogram-v3/replace-background`` besides files."""

    style_preset: StylePreset | None = None
    color_palette: ColorPalette | None = None
    style_codes: list[StyleCode] | None = None


class TransparentRequest(_Prompted):
    """The fields of ``/v1/ideogram-v3/generate-transparent`` (``GenerateTransparentImageRequestV3``)."""

    upscale_factor: UpscaleFactor | None = None
    aspect_ratio: AspectRatio | None = None
    negative_prompt: StrictStr | None = None
    custom_model_uri: StrictStr | None = None


Problems = list[tuple[str, str]]


def rules(params: Mapping[str, Any], files: Mapping[str, int]) -> Problems:
    """Rules across the fields and files of a V3 request that the schema states in prose.

    ``aspect_ratio`` and ``resolution`` exclude each other; ``style_codes``
    excludes ``style_reference_images`` and ``style_type``. (How many files of
    each role, and their sizes, are the catalog's file roles' business.)
    """
    problems: Problems = []
    if params.get("aspect_ratio") is not None and params.get("resolution") is not None:
        problems.append(("resolution", "`aspect_ratio` and `resolution` cannot be combined"))
    if params.get("style_codes") is not None:
        if files.get(STYLE_REFERENCES):
            problems.append(("style_codes", f"`style_codes` cannot be combined with `{STYLE_REFERENCES}`"))
        if params.get("style_type") is not None:
            problems.append(("style_codes", "`style_codes` cannot be combined with `style_type`"))
    return problems


def transparent_rules(params: Mapping[str, Any], files: Mapping[str, int]) -> Problems:
    """The V3 rules, and the rendering speeds a transparent background refuses (FLASH)."""
    problems = rules(params, files)
    speed = params.get("rendering_speed")
    if speed in TRANSPARENT_REFUSED_SPEEDS:
        allowed = ", ".join(s for s in enum_values("rendering_speed") if s not in TRANSPARENT_REFUSED_SPEEDS)
        message = f"{speed} is not available with a transparent background: use {allowed}"
        problems.append(("rendering_speed", message))
    return problems


def speed(params: Mapping[str, Any]) -> str:
    """The rendering speed a request runs at (the API default when unset)."""
    value = params.get("rendering_speed")
    return value if isinstance(value, str) else DEFAULT_SPEED


def tier(params: Mapping[str, Any], files: Mapping[str, int]) -> str:
    """The price tier: the rendering speed, or ``CHARACTER_<speed>`` with a character reference."""
    if files.get(CHARACTER_ROLE):
        return character_tier(speed(params))
    return speed(params)


def character_tier(rendering_speed: str) -> str:
    """The tier of ``rendering_speed`` with a character reference."""
    return f"{CHARACTER_TIER}_{rendering_speed}"


def transparent_tier(params: Mapping[str, Any], _files: Mapping[str, int]) -> str:
    """The price tier of a transparent request: its speed, and ``_X2``/``_X4`` when it upscales."""
    factor = params.get("upscale_factor")
    base = speed(params)
    return base if factor in (None, DEFAULT_UPSCALE) else upscaled_tier(base, str(factor))


def upscaled_tier(rendering_speed: str, factor: str) -> str:
    """The tier of ``rendering_speed`` with an ``upscale_factor`` other than X1."""
    return f"{rendering_speed}_{factor}"
