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

from pipeline import api_schema

#: (field path, message) problems of one request
Problems = list[tuple[str, str]]
Rules = Callable[[Mapping[str, Any]], Problems]
Tier = Callable[[Mapping[str, Any]], "str | None"]

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


def _no_rules(_params: Mapping[str, Any]) -> Problems:
    return []


def _no_tier(_params: Mapping[str, Any]) -> str | None:
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

    @property
    def fields(self) -> frozenset[str]:
        """The request fields this op takes (not counting files)."""
        return frozenset(self.request.model_fields)

    @property
    def file_names(self) -> frozenset[str]:
        """The names of the files it sends besides the main image."""
        return frozenset(role.name for role in self.files)

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

    def check(self, params: Mapping[str, Any], *, need_required: bool = True) -> Problems:
        """Problems of one request: schema (enums, ranges, unknown fields), rules, required fields.

        ``need_required=False`` skips the required-field check, for the fixed
        part of a job whose prompts come from a file.
        """
        problems: Problems = []
        try:
            self.request.model_validate(dict(params))
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                problems.append((_loc(err["loc"]), api_schema.clean_message(err["msg"], err["type"])))
        problems.extend(self.rules(params))
        if need_required:
            for name in self.required:
                if params.get(name) in (None, ""):
                    problems.append((name, f"{self.op} needs a `{name}`"))
        return problems

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


def _legacy_image_tier(params: Mapping[str, Any]) -> str | None:
    return api_schema.legacy_model(params)


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
    rules=api_schema.legacy_model_rules,
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
    rules=api_schema.legacy_model_rules,
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

#: every op, by name, in the order the docs list them
CATALOG: dict[str, Endpoint] = {e.op: e for e in (GENERATE, REMIX, UPSCALE, DESCRIBE)}


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
