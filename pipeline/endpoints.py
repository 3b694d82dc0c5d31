"""The endpoint catalog: every op ideobatch can call, as data (STYLE 11).

One `Endpoint` per op names its paths in both dialects, how its body is
encoded, its request fields and their schema (a pydantic model built from
the provider's OpenAPI data), the files it sends (the main image, a mask,
reference lists), what it returns, and how it is priced. Validation,
`defaults` merging, expansion, the wire encoder, the client, pricing, `plan`,
the runner and the fake server all read an op from here; adding an op is
adding an entry (and its tests).

`CATALOG` is read at call time through `endpoint()` and `ops()`, so a test
can serve a made-up op by patching it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError

from pipeline import api_schema, api_schema_v3, api_schema_v4

#: (field path, message) problems of one request
Problems = list[tuple[str, str]]
#: how many files of each role a request sends, by part name (the main image not counted)
FileCounts = Mapping[str, int]
Rules = Callable[[Mapping[str, Any], FileCounts], Problems]
Tier = Callable[[Mapping[str, Any], FileCounts], "str | None"]

MAX_FILE_BYTES = api_schema.MAX_SOURCE_BYTES


class Encoding(StrEnum):
    """How a call's body is written."""

    #: Ideogram's legacy endpoints: JSON ``{"image_request": {...}}`` (the proxy also takes
    #: ``"image_file": "<url>"`` beside it); multipart with an ``image_request`` JSON part and
    #: an ``image_file`` part; an op without `Endpoint.wrapped` fields (describe) sends its
    #: fields flat beside the image
    LEGACY = "legacy"
    #: Ideogram 3.0 and 4.0: flat fields; multipart with repeated parts for lists and JSON
    #: parts for objects; JSON when the call sends no file
    FLAT = "flat"


class Returns(StrEnum):
    """What a successful call gives back."""

    IMAGES = "images"
    DESCRIPTIONS = "descriptions"


@dataclass(frozen=True)
class FileRole:
    """A file field of a request besides the main image (a mask, a reference list)."""

    #: the part name on the wire, and the key in a manifest
    name: str
    #: a list of files (repeated parts) rather than one
    many: bool = False
    required: bool = False
    #: most files a list may hold
    max_files: int | None = None
    #: largest size of the file, or of the list's files together
    max_bytes: int = MAX_FILE_BYTES
    #: each file goes with one file of this role (or the main image's part name), in order:
    #: as many files, each of the same width and height (a mask and its image)
    pairs_with: str | None = None

    @property
    def per_image(self) -> bool:
        """A single file given per main image (a mask), rather than a list shared by a job's calls."""
        return not self.many


@dataclass(frozen=True)
class Structured:
    """A structured prompt: an object a describe op answers with and a generate op takes (V4's JSON prompt).

    A describe op whose `Endpoint.answer` is one gives its object to its
    `then:` stages: a stage field written ``"{<name>}"`` becomes the object
    (`pipeline.structured`).
    """

    #: the answer's key, the request field that takes it, and the stages' ``{placeholder}``
    name: str
    #: the object's key whose text stands for the whole (``{description}`` of a stage)
    summary: str
    #: a valid object: what a stage's ``"{<name>}"`` is checked as at validate time
    example: Callable[[], dict[str, Any]]


def _no_rules(_params: Mapping[str, Any], _files: FileCounts) -> Problems:
    return []


def _no_tier(_params: Mapping[str, Any], _files: FileCounts) -> str | None:
    return None


@dataclass(frozen=True)
class Endpoint:
    """One op of the API: where it is, how it is spoken, what it takes, gives and costs."""

    op: str
    #: path under the native base URL (``https://api.ideogram.ai``)
    native_path: str
    #: path under the proxy's base URL (``https://crazyrouter.com``)
    proxy_path: str
    encoding: Encoding
    #: the request's fields and their schema (extra fields are refused)
    request: type[BaseModel]
    returns: Returns = Returns.IMAGES
    #: the main image's part name (one job per image); None: the op takes no image
    image: str | None = None
    #: other files the request sends
    files: tuple[FileRole, ...] = ()
    #: request fields that must be given
    required: tuple[str, ...] = ()
    #: rules across fields that the schema states in prose
    rules: Rules = _no_rules
    #: the price tier a request runs on (legacy: its model), for prices and `plan`
    tier: Tier = _no_tier
    #: USD per billed unit, by tier
    prices: Mapping[str | None, Decimal] = field(default_factory=dict)
    #: billed per output image (else once per call)
    per_image: bool = True
    #: tiers whose price is not confirmed by the provider (`plan` marks them)
    estimated: frozenset[str | None] = frozenset()
    #: legacy encoding: the fields go in an ``image_request`` object
    wrapped: bool = True
    #: the proxy path is documented by the proxy (else inferred from the native one)
    proxy_confirmed: bool = True
    #: the fake server's output size relative to the main image (an upscale doubles it)
    output_scale: int = 1
    #: the status the provider documents for a missing or wrong key on this op
    unauthorized_status: int = 401
    #: the main image must be square (the API refuses others with 400)
    square_image: bool = False
    #: produces PNGs with an alpha channel (RGBA); an image that is not one is a bad image
    transparent: bool = False
    #: request fields sent under the API's own name (V4 generate's ``prompt`` is ``text_prompt``)
    wire_names: Mapping[str, str] = field(default_factory=dict)
    #: groups of request fields of which exactly one is given (``prompt`` or ``json_prompt``)
    one_of: tuple[tuple[str, ...], ...] = ()
    #: a describe op whose answer is one structured object (recorded as its JSON text), not texts
    answer: Structured | None = None
    #: request fields that take a structured object (a stage may fill one from its parent's answer)
    structured: tuple[Structured, ...] = ()

    @property
    def fields(self) -> frozenset[str]:
        """The request fields this op takes (not counting files)."""
        return frozenset(self.request.model_fields)

    @property
    def wire_fields(self) -> frozenset[str]:
        """The request fields by the names the API reads (`wire_names` applied)."""
        return frozenset(self.wire_names.get(name, name) for name in self.fields)

    def to_wire(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A request's fields under the names the API reads."""
        return {self.wire_names.get(name, name): value for name, value in params.items()}

    def from_wire(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A request read off the wire under the names a manifest uses (the inverse of `to_wire`)."""
        ours = {wire: name for name, wire in self.wire_names.items()}
        return {ours.get(name, name): value for name, value in params.items()}

    def structured_field(self, name: str) -> Structured | None:
        """The structured prompt request field ``name`` takes, if it takes one."""
        return next((s for s in self.structured if s.name == name), None)

    @property
    def file_names(self) -> frozenset[str]:
        """The names of the files it sends besides the main image."""
        return frozenset(role.name for role in self.files)

    @property
    def per_image_roles(self) -> tuple[str, ...]:
        """The roles given one file per main image (a mask), in catalog order."""
        return tuple(role.name for role in self.files if role.per_image)

    @property
    def makes_images(self) -> bool:
        """Whether a successful call returns images (else descriptions)."""
        return self.returns is Returns.IMAGES

    def role(self, name: str) -> FileRole:
        """The file role called ``name`` (KeyError if the op has none)."""
        for role in self.files:
            if role.name == name:
                return role
        raise KeyError(name)

    def check(
        self, params: Mapping[str, Any], *, need_required: bool = True, files: FileCounts | None = None
    ) -> Problems:
        """Problems of one request: schema (enums, ranges, unknown fields), rules, required fields.

        ``files`` counts the files of each role the request sends (the main
        image aside): with it, the file roles' counts are checked too (required,
        at most `FileRole.max_files`, as many as the role they pair with).
        ``need_required=False`` skips the required-field check, for the fixed
        part of a job whose prompts come from a file.
        """
        problems: Problems = []
        try:
            self.request.model_validate(dict(params))
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                problems.append((_loc(err["loc"]), api_schema.clean_message(err["msg"], err["type"])))
        problems.extend(self.rules(params, files or {}))
        for group in self.one_of:
            given = [name for name in group if params.get(name) not in (None, "")]
            names = " or ".join(f"`{name}`" for name in group)
            if len(given) > 1:
                problems.append((given[-1], f"give {names}, not both"))
            elif need_required and not given:
                problems.append((group[0], f"{self.op} needs {names}"))
        if need_required:
            for name in self.required:
                if params.get(name) in (None, ""):
                    problems.append((name, f"{self.op} needs a `{name}`"))
        if files is not None:
            problems.extend(self.file_count_problems(files, need_required=need_required))
        return problems

    def file_count_problems(self, files: FileCounts, *, need_required: bool = True) -> Problems:
        """Problems of how many files of each role a request sends."""
        problems: Problems = []
        for role in self.files:
            count = files.get(role.name, 0)
            if need_required and role.required and not count:
                problems.append((role.name, f"{self.op} needs a `{role.name}`"))
            if not role.many and count > 1:
                problems.append((role.name, f"one file, not {count}"))
            if role.max_files is not None and count > role.max_files:
                problems.append((role.name, f"{count} files; {self.op} takes at most {role.max_files}"))
            if role.pairs_with is not None and role.pairs_with != self.image and count:
                partners = files.get(role.pairs_with, 0)
                if count != partners:
                    problems.append(
                        (role.name, f"{count} file(s) for {partners} `{role.pairs_with}`: give one per file")
                    )
        return problems

    def tier_of(self, params: Mapping[str, Any], files: FileCounts | None = None) -> str | None:
        """The price tier a request runs on, given how many files of each role it sends."""
        return self.tier(params, files or {})

    def images(self, params: Mapping[str, Any]) -> int:
        """Images a call produces (an op that returns descriptions: one billed unit)."""
        return api_schema.num_images(params) if self.makes_images else 1

    def unit_price(self, tier: str | None) -> Decimal:
        """The default USD per billed unit of ``tier``."""
        if tier in self.prices:
            return self.prices[tier]
        return self.prices[None]


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _legacy_image_tier(params: Mapping[str, Any], _files: FileCounts) -> str | None:
    return api_schema.legacy_model(params)


def _legacy_rules(params: Mapping[str, Any], _files: FileCounts) -> Problems:
    return api_schema.legacy_model_rules(params)


LEGACY_IMAGE_PRICES: Mapping[str | None, Decimal] = {
    "V_1": Decimal("0.06"),
    "V_1_TURBO": Decimal("0.02"),
    "V_2": Decimal("0.08"),
    "V_2_TURBO": Decimal("0.05"),
    "V_2A": Decimal("0.04"),
    "V_2A_TURBO": Decimal("0.025"),
    "V_3": Decimal("0.06"),
    # AUTO lets Ideogram pick; price it as the dearest model so a budget holds
    "AUTO": Decimal("0.08"),
}

GENERATE = Endpoint(
    op="generate",
    native_path="/generate",
    proxy_path="/ideogram/generate",
    encoding=Encoding.LEGACY,
    request=api_schema.ImageRequest,
    required=("prompt",),
    rules=_legacy_rules,
    tier=_legacy_image_tier,
    prices=LEGACY_IMAGE_PRICES,
    estimated=frozenset({"V_3", "AUTO"}),
)
REMIX = Endpoint(
    op="remix",
    native_path="/remix",
    proxy_path="/ideogram/remix",
    encoding=Encoding.LEGACY,
    request=api_schema.RemixRequest,
    image="image_file",
    required=("prompt",),
    rules=_legacy_rules,
    tier=_legacy_image_tier,
    prices=LEGACY_IMAGE_PRICES,
    estimated=frozenset({"V_3", "AUTO"}),
    unauthorized_status=403,
)
UPSCALE = Endpoint(
    op="upscale",
    native_path="/upscale",
    proxy_path="/ideogram/upscale",
    encoding=Encoding.LEGACY,
    request=api_schema.UpscaleRequest,
    image="image_file",
    prices={None: Decimal("0.06")},
    estimated=frozenset({None}),
    output_scale=2,
    unauthorized_status=403,
)
DESCRIBE = Endpoint(
    op="describe",
    native_path="/describe",
    proxy_path="/ideogram/describe",
    encoding=Encoding.LEGACY,
    request=api_schema.DescribeRequest,
    returns=Returns.DESCRIPTIONS,
    image="image_file",
    prices={None: Decimal("0.01")},
    per_image=False,
    estimated=frozenset({None}),
    wrapped=False,
)

# --- Ideogram 3.0 (SPEC §10) --------------------------------------------------------------


def _usd(table: Mapping[str, str]) -> dict[str | None, Decimal]:
    return {tier: Decimal(price) for tier, price in table.items()}


_V3_SPEEDS = api_schema_v3.enum_values("rendering_speed")
_X_FACTORS = [f for f in api_schema_v3.enum_values("upscale_factor") if f != api_schema_v3.DEFAULT_UPSCALE]
#: USD per output image by rendering speed (BALANCED is not on the price page: priced as DEFAULT)
V3_PRICES = _usd({"FLASH": "0.03", "TURBO": "0.03", "BALANCED": "0.06", "DEFAULT": "0.06", "QUALITY": "0.09"})
#: with a character reference (FLASH has no published price: priced as TURBO)
V3_CHARACTER_PRICES = _usd(
    {
        api_schema_v3.character_tier(speed): price
        for speed, price in {
            "FLASH": "0.10",
            "TURBO": "0.10",
            "BALANCED": "0.15",
            "DEFAULT": "0.15",
            "QUALITY": "0.20",
        }.items()
    }
)
_TRANSPARENT_BASE = {"TURBO": "0.04", "BALANCED": "0.07", "DEFAULT": "0.07", "QUALITY": "0.10"}
#: a transparent background (FLASH is refused); the surcharge of upscale_factor X2/X4 is not
#: published: priced as X1 and marked an estimate
V3_TRANSPARENT_PRICES = _usd(
    {
        **_TRANSPARENT_BASE,
        **{
            api_schema_v3.upscaled_tier(speed, factor): price
            for speed, price in _TRANSPARENT_BASE.items()
            for factor in _X_FACTORS
        },
    }
)
_V3_ESTIMATED = frozenset({"BALANCED"})
_V3_CHARACTER_ESTIMATED = frozenset(
    {api_schema_v3.character_tier("BALANCED"), api_schema_v3.character_tier("FLASH")}
)
_V3_TRANSPARENT_ESTIMATED = frozenset(
    {"BALANCED", *(t for t in V3_TRANSPARENT_PRICES if isinstance(t, str) and t.endswith(tuple(_X_FACTORS)))}
)

V3_STYLE_REFERENCES = FileRole(
    api_schema_v3.STYLE_REFERENCES, many=True, max_bytes=api_schema_v3.MAX_REFERENCE_SET_BYTES
)
V3_CHARACTER_REFERENCES = FileRole(
    api_schema_v3.CHARACTER_ROLE,
    many=True,
    max_files=api_schema_v3.MAX_CHARACTER_REFERENCES,
    max_bytes=api_schema_v3.MAX_REFERENCE_SET_BYTES,
)
V3_CHARACTER_MASKS = FileRole(
    "character_reference_images_mask",
    many=True,
    max_files=api_schema_v3.MAX_CHARACTER_REFERENCES,
    max_bytes=api_schema_v3.MAX_REFERENCE_SET_BYTES,
    pairs_with=api_schema_v3.CHARACTER_ROLE,
)
V3_REFERENCES = (V3_STYLE_REFERENCES, V3_CHARACTER_REFERENCES, V3_CHARACTER_MASKS)
V3_IMAGE = "image"


def _flat(op: str, family: Mapping[str, Any], **entry: Any) -> Endpoint:
    """A V3 or V4 endpoint (flat multipart or JSON).

    Its paths follow from the op's name (``v3-edit``: ``/v1/ideogram-v3/edit``,
    behind the proxy's ``/ideogram`` prefix); its rules, tiers and prices are
    its ``family``'s unless ``entry`` says otherwise.
    """
    version, _, name = op.partition("-")
    route = f"/v1/ideogram-{version}/{name}"
    paths = {"native_path": route, "proxy_path": f"/ideogram{route}", "encoding": Encoding.FLAT}
    return Endpoint(op=op, **{**paths, **family, **entry})


V3_FAMILY: dict[str, Any] = {
    "rules": api_schema_v3.rules,
    "tier": api_schema_v3.tier,
    "prices": V3_PRICES,
    "estimated": _V3_ESTIMATED,
}


V3_GENERATE = _flat(
    "v3-generate",
    V3_FAMILY,
    request=api_schema_v3.GenerateRequest,
    files=V3_REFERENCES,
    required=("prompt",),
    prices={**V3_PRICES, **V3_CHARACTER_PRICES},
    estimated=_V3_ESTIMATED | _V3_CHARACTER_ESTIMATED,
)
V3_REMIX = _flat(
    "v3-remix",
    V3_FAMILY,
    request=api_schema_v3.RemixRequest,
    image=V3_IMAGE,
    files=V3_REFERENCES,
    required=("prompt",),
    prices={**V3_PRICES, **V3_CHARACTER_PRICES},
    estimated=_V3_ESTIMATED | _V3_CHARACTER_ESTIMATED,
    unauthorized_status=403,
)
V3_EDIT = _flat(
    "v3-edit",
    V3_FAMILY,
    # /v1/ideogram-v3/edit is deprecated (2026-04-29) for this path, with the same schema;
    # the proxy documents only the deprecated name (its proxy_path)
    native_path="/v1/ideogram-v3/inpaint",
    request=api_schema_v3.EditRequest,
    image=V3_IMAGE,
    files=(FileRole("mask", required=True, pairs_with=V3_IMAGE), *V3_REFERENCES),
    required=("prompt",),
    prices={**V3_PRICES, **V3_CHARACTER_PRICES},
    estimated=_V3_ESTIMATED | _V3_CHARACTER_ESTIMATED,
)
V3_REFRAME = _flat(
    "v3-reframe",
    V3_FAMILY,
    request=api_schema_v3.ReframeRequest,
    image=V3_IMAGE,
    files=(V3_STYLE_REFERENCES,),
    required=("resolution",),
    square_image=True,
)
V3_REPLACE_BACKGROUND = _flat(
    "v3-replace-background",
    V3_FAMILY,
    request=api_schema_v3.ReplaceBackgroundRequest,
    image=V3_IMAGE,
    files=(V3_STYLE_REFERENCES,),
    required=("prompt",),
)
V3_GENERATE_TRANSPARENT = _flat(
    "v3-generate-transparent",
    V3_FAMILY,
    request=api_schema_v3.TransparentRequest,
    required=("prompt",),
    rules=api_schema_v3.transparent_rules,
    tier=api_schema_v3.transparent_tier,
    prices=V3_TRANSPARENT_PRICES,
    estimated=_V3_TRANSPARENT_ESTIMATED,
    proxy_confirmed=False,
    transparent=True,
)

# --- Ideogram 4.0 (SPEC §10) --------------------------------------------------------------

#: USD per output image by rendering speed (FLASH is refused; BALANCED is not on the price page:
#: priced as DEFAULT)
V4_PRICES = _usd({"TURBO": "0.03", "BALANCED": "0.06", "DEFAULT": "0.06", "QUALITY": "0.10"})
_V4_ESTIMATED = frozenset({"BALANCED"})
#: the structured prompt V4 describe answers with and V4 generate takes
V4_JSON_PROMPT = Structured(
    name="json_prompt",
    summary=api_schema_v4.JSON_PROMPT_SUMMARY,
    example=api_schema_v4.json_prompt_example,
)
#: the API's name of a manifest's ``prompt`` on V4 generate and remix
V4_TEXT_PROMPT = {"prompt": "text_prompt"}


V4_FAMILY: dict[str, Any] = {
    "rules": api_schema_v4.rules,
    "tier": api_schema_v4.tier,
    "prices": V4_PRICES,
    "estimated": _V4_ESTIMATED,
}


V4_GENERATE = _flat(
    "v4-generate",
    V4_FAMILY,
    request=api_schema_v4.GenerateRequest,
    one_of=(("prompt", V4_JSON_PROMPT.name),),
    proxy_confirmed=False,
    wire_names=V4_TEXT_PROMPT,
    structured=(V4_JSON_PROMPT,),
)
V4_REMIX = _flat(
    "v4-remix",
    V4_FAMILY,
    request=api_schema_v4.RemixRequest,
    image=V3_IMAGE,
    required=("prompt",),
    proxy_confirmed=False,
    wire_names=V4_TEXT_PROMPT,
)
V4_IMAGE_TO_IMAGE = _flat(
    "v4-image-to-image",
    V4_FAMILY,
    request=api_schema_v4.ImageToImageRequest,
    image=V3_IMAGE,
    proxy_confirmed=False,
)
V4_DESCRIBE = _flat(
    "v4-describe",
    V4_FAMILY,
    request=api_schema_v4.DescribeRequest,
    returns=Returns.DESCRIPTIONS,
    image="image_file",
    # no speed, no prompt: nothing for the family's rules to check, one price
    rules=_no_rules,
    tier=_no_tier,
    # priced as legacy describe until Ideogram publishes a price (SPEC §10)
    prices=DESCRIBE.prices,
    per_image=False,
    estimated=frozenset({None}),
    proxy_confirmed=False,
    answer=V4_JSON_PROMPT,
)

#: every op, by name, in the order the docs list them
CATALOG: dict[str, Endpoint] = {
    e.op: e
    for e in (
        GENERATE,
        REMIX,
        UPSCALE,
        DESCRIBE,
        V3_GENERATE,
        V3_REMIX,
        V3_EDIT,
        V3_REFRAME,
        V3_REPLACE_BACKGROUND,
        V3_GENERATE_TRANSPARENT,
        V4_GENERATE,
        V4_REMIX,
        V4_IMAGE_TO_IMAGE,
        V4_DESCRIBE,
    )
}


def ops() -> tuple[str, ...]:
    """The names of every op."""
    return tuple(CATALOG)


def endpoint(op: str) -> Endpoint:
    """The endpoint of ``op`` (KeyError if there is none)."""
    return CATALOG[op]


def unknown_op_message(op: object) -> str:
    """Why ``op`` is refused, with the closest known op when there is one."""
    names = ops()
    close = difflib.get_close_matches(str(op), names, n=1) if isinstance(op, str) else []
    hint = f"; did you mean `{close[0]}`?" if close else ""
    return f"unknown op {op!r}: use one of {', '.join(names)}{hint}"


def all_fields() -> frozenset[str]:
    """Every request field of every op (what `defaults` may hold)."""
    return frozenset().union(*(e.fields | e.file_names for e in CATALOG.values()))
