"""The Ideogram 4.0 endpoints' request schema: enums, ranges, rules, price tiers, the JSON prompt.

The enum lists, ranges and defaults ship as data (``data/ideogram_v4_schema.json``),
extracted from Ideogram's OpenAPI spec of 2026-07, and so does the schema of
the structured prompt, ``V4JsonPrompt``, with its ``$ref``s inlined; a test
compares them with that spec so that drift is caught.

The models here are the request schemas of the V4 ops in the endpoint catalog
(`pipeline.endpoints`), in a manifest's names: ``prompt`` is what generate and
remix send as ``text_prompt`` (the catalog renames it on the wire). A
``json_prompt`` is checked against ``V4JsonPrompt`` with `jsonschema`, more
strictly than the spec in one way: a key the schema does not name is refused
(with a "did you mean"), as everywhere in a manifest, rather than sent to be
ignored. The same rules serve manifest validation and the fake server.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import StrictBool, StrictInt, StrictStr

from pipeline.shipped_schema import ShippedSchema, StrictRequest
from pipeline.suggestions import did_you_mean

if TYPE_CHECKING:  # jsonschema is imported when a JSON prompt is checked (a run needs none)
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError as SchemaError

Problems = list[tuple[str, str]]


SCHEMA = ShippedSchema("ideogram_v4_schema.json")


def schema_data() -> dict[str, Any]:
    """The V4 enum lists, defaults, ranges and the JSON prompt's schema shipped with the package."""
    return SCHEMA.data


enum_values = SCHEMA.enum_values
value_range = SCHEMA.value_range


DEFAULT_SPEED: str = schema_data()["defaults"]["rendering_speed"]
#: rendering speeds the V4 endpoints answer with 400 ("FLASH is coming soon")
REFUSED_SPEEDS: frozenset[str] = frozenset(schema_data()["refused_rendering_speeds"])
#: the JSON prompt's key whose text stands for the whole prompt (`{description}`, a log line)
JSON_PROMPT_SUMMARY: str = schema_data()["json_prompt"]["summary"]


def json_prompt_example() -> dict[str, Any]:
    """A valid JSON prompt (the spec's example): what a stage's ``"{json_prompt}"`` is checked as."""
    example: dict[str, Any] = copy.deepcopy(schema_data()["json_prompt"]["example"])
    return example


RenderingSpeed = Annotated[StrictStr, SCHEMA.one_of("rendering_speed")]
Resolution = Annotated[StrictStr, SCHEMA.one_of("resolution")]
ImageToImageResolution = Annotated[StrictStr, SCHEMA.one_of("resolution_image_to_image")]
MagicPromptOption = Annotated[StrictStr, SCHEMA.one_of("magic_prompt_option")]
Seed = Annotated[StrictInt, SCHEMA.within("seed")]
ImageWeight = Annotated[StrictInt, SCHEMA.within("image_weight")]


class GenerateRequest(StrictRequest):
    """The fields of ``/v1/ideogram-v4/generate`` (``GenerateImageRequestV4``).

    ``prompt`` goes as ``text_prompt``; exactly one of it and ``json_prompt``.
    The spec types ``seed`` as any integer; it is held to the range of the
    seeds the API answers with.
    """

    prompt: StrictStr | None = None
    json_prompt: dict[str, Any] | None = None
    seed: Seed | None = None
    magic_prompt_system_prompt_config_id: StrictStr | None = None
    custom_model_uri: StrictStr | None = None
    resolution: Resolution | None = None
    rendering_speed: RenderingSpeed | None = None
    enable_copyright_detection: StrictBool | None = None


class RemixRequest(StrictRequest):
    """The fields of ``/v1/ideogram-v4/remix`` (``RemixImageRequestV4``) besides the image."""

    prompt: StrictStr | None = None
    image_weight: ImageWeight | None = None
    resolution: Resolution | None = None
    rendering_speed: RenderingSpeed | None = None
    enable_copyright_detection: StrictBool | None = None


class ImageToImageRequest(StrictRequest):
    """The fields of ``/v1/ideogram-v4/image-to-image`` (``GenerateImageRequestV4Im2Im``) but the image."""

    prompt: StrictStr | None = None
    seed: Seed | None = None
    magic_prompt_option: MagicPromptOption | None = None
    magic_prompt_system_prompt_config_id: StrictStr | None = None
    resolution: ImageToImageResolution | None = None
    rendering_speed: RenderingSpeed | None = None
    enable_copyright_detection: StrictBool | None = None


class DescribeRequest(StrictRequest):
    """The form fields of ``/v1/ideogram-v4/describe`` (``DescribeRequestV4``) besides the image."""

    include_tags: StrictBool | None = None
    include_style_descriptions: StrictBool | None = None
    include_bbox: StrictBool | None = None


def describe_flag(params: Mapping[str, Any], name: str) -> bool:
    """An ``include_*`` flag of a describe request, the API's default when unset."""
    value = params.get(name)
    return bool(schema_data()["defaults"][name] if value is None else value)


def rules(params: Mapping[str, Any], _files: Mapping[str, int]) -> Problems:
    """Rules of a V4 request the schema states in prose: no FLASH; a JSON prompt as ``V4JsonPrompt``."""
    problems: Problems = []
    speed = params.get("rendering_speed")
    if speed in REFUSED_SPEEDS:
        allowed = ", ".join(s for s in enum_values("rendering_speed") if s not in REFUSED_SPEEDS)
        problems.append(("rendering_speed", f"{speed} is not available for Ideogram 4.0 yet: use {allowed}"))
    value = params.get("json_prompt")
    if isinstance(value, dict):
        for where, message in json_prompt_problems(value):
            problems.append((f"json_prompt.{where}" if where else "json_prompt", message))
    return problems


def speed(params: Mapping[str, Any]) -> str:
    """The rendering speed a request runs at (the API default when unset)."""
    value = params.get("rendering_speed")
    return value if isinstance(value, str) else DEFAULT_SPEED


def tier(params: Mapping[str, Any], _files: Mapping[str, int]) -> str:
    """The price tier of a V4 request: its rendering speed."""
    return speed(params)


# --- the JSON prompt ----------------------------------------------------------------------------


@cache
def _validator() -> Draft202012Validator:
    """A validator of ``V4JsonPrompt`` that also refuses keys the schema does not name."""
    from jsonschema import Draft202012Validator

    schema = _closed(copy.deepcopy(schema_data()["json_prompt"]["schema"]))
    return Draft202012Validator(schema)


def _closed(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object that lists its properties."""
    if isinstance(schema, dict):
        for value in schema.values():
            _closed(value)
        if "properties" in schema:
            schema.setdefault("additionalProperties", False)
    elif isinstance(schema, list):
        for item in schema:
            _closed(item)
    return schema


def json_prompt_problems(value: Any) -> Problems:
    """Every problem of a JSON prompt, as (dotted path within it, message); none when it is valid."""
    found: dict[tuple[str, str], None] = {}  # a `required` error comes once per missing key, each naming all
    for error in sorted(_validator().iter_errors(value), key=lambda e: list(map(str, e.absolute_path))):
        found.update(dict.fromkeys(_explained(error)))
    return list(found)


def _explained(error: SchemaError) -> Iterator[tuple[str, str]]:
    """One schema error as problems a user can act on (the matching branch of an element's oneOf)."""
    where = tuple(error.absolute_path)
    instance = error.instance
    schema: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    listed = error.validator_value if isinstance(error.validator_value, list) else []
    if error.validator == "oneOf" and isinstance(instance, dict):
        branches: list[Mapping[str, Any]] = listed
        key = schema.get("discriminator", {}).get("propertyName", "type")
        kinds = [tuple(b.get("properties", {}).get(key, {}).get("enum", ())) for b in branches]
        chosen = [i for i, kind in enumerate(kinds) if instance.get(key) in kind]
        if chosen:
            for sub in error.context or ():
                if sub.schema_path and sub.schema_path[0] == chosen[0]:
                    yield from _explained(sub)
            return
        allowed = ", ".join(k for kind in kinds for k in kind)
        given = instance.get(key)
        if given is None:
            yield _dotted(where), f"`{key}` is required ({allowed})"
        else:
            yield _dotted((*where, key)), f"{given!r} is not one of {allowed}"
        return
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = list(schema.get("properties", {}))
        for name in instance:
            if name not in known:
                yield _dotted((*where, name)), "unknown key" + did_you_mean(str(name), known)
        return
    if error.validator == "required" and isinstance(instance, dict):
        for name in listed:
            if name not in instance:
                yield _dotted(where), f"`{name}` is required"
        return
    yield _dotted(where), error.message


def _dotted(path: Sequence[Any]) -> str:
    return ".".join(str(part) for part in path)
