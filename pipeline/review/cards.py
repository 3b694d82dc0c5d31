"""Gallery cards and filters, shared by the live gallery (`ideobatch serve`) and the static file.

A card shows what tells an image apart from its neighbours: the request
fields that vary among its op's jobs (the matrix values), the prompt as
written and as the API rewrote it, the catalog id, the seed, the model and
the price of the image. Filters are read from a query string (the live
gallery's form) into the ledger's `GalleryFilter`; the static file applies
the same controls in the page, from each card's ``data-filter``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from pipeline.keys import canonical_json
from pipeline.ledger.gallery import FIELD_NAME, UNREVIEWED, GalleryFilter, GalleryRow
from pipeline.ledger.records import MICROS_PER_USD
from pipeline.ledger.tables import VERDICTS
from pipeline.results import IMAGE_DOWNLOADED, IMAGE_EXPIRED, IMAGE_FAILED, IMAGE_PENDING, IMAGE_WITHHELD
from pipeline.review.fields import ABSENT, FieldChoice, FieldSummary, value_label

#: the prefix of a request field's filter parameter (``f.style_type=...``)
FIELD_PARAM = "f."
#: free-text filters, by parameter name
TEXT_PARAMS = ("prompt", "enhanced", "id", "job", "seed")
IMAGE_STATES = (IMAGE_DOWNLOADED, IMAGE_WITHHELD, IMAGE_EXPIRED, IMAGE_FAILED, IMAGE_PENDING)
PICK_CHOICES = (*VERDICTS, UNREVIEWED)
#: the longest prompt text a card shows before cutting it (the full text is in its title)
CARD_TEXT = 140


def usd(micros: int) -> str:
    """Micro-dollars as ``$0.08`` or ``$0.025`` (no trailing zeros past the cents)."""
    text = f"{micros / MICROS_PER_USD:.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def usd_value(micros: int) -> str:
    """Micro-dollars as the plain decimal text the cost filter takes (``0.08``)."""
    return str(Decimal(micros) / MICROS_PER_USD)


def short(text: str | None, limit: int = CARD_TEXT) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis."""
    if not text:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Filters:
    """A gallery's filter as parsed from its query: for the ledger, for the form, and what was wrong."""

    wanted: GalleryFilter
    #: the parameters as given (to fill the form in again and to build page links)
    params: dict[str, str]
    problems: tuple[str, ...] = ()

    def query(self, **extra: int | None) -> dict[str, str]:
        """The query of a link that keeps these filters (plus a cursor)."""
        query = dict(self.params)
        query.update({k: str(v) for k, v in extra.items() if v is not None})
        return query


def parse_filters(params: Mapping[str, str]) -> Filters:
    """A `GalleryFilter` from query parameters; a value that does not parse is reported and ignored."""
    # NUL is no character of a request (and PostgreSQL refuses it in text)
    cleaned = {k: v.replace("\x00", "").strip() for k, v in params.items()}
    kept = {k: v for k, v in cleaned.items() if v and (k in _PARAMS or k.startswith(FIELD_PARAM))}
    problems: list[str] = []
    values: dict[str, Any] = {}
    fields: list[tuple[str, Any]] = []
    for name, raw in kept.items():
        if name.startswith(FIELD_PARAM):
            field_name = name[len(FIELD_PARAM) :]
            if FIELD_NAME.match(field_name):
                fields.append((field_name, _json_value(raw)))
            else:
                problems.append(f"{field_name!r} is not a request field")
        elif name == "seed":
            values["seed"] = _integer(raw, "seed", problems)
        elif name == "cost":
            values["cost_micros"] = _micros(raw, problems)
        elif name == "state":
            values["image_state"] = raw if raw in IMAGE_STATES else _bad(raw, "state", problems)
        elif name == "pick":
            values["pick"] = raw if raw in PICK_CHOICES else _bad(raw, "pick", problems)
        elif name == "id":
            values["source_id"] = raw
        else:
            values[name] = raw
    wanted = GalleryFilter(**{k: v for k, v in values.items() if v is not None}, fields=tuple(sorted(fields)))
    return Filters(wanted, kept, tuple(problems))


_PARAMS = frozenset({"op", "state", "pick", "cost", *TEXT_PARAMS})
#: a whole number a database column can hold (seeds are below 2**31 anyway)
_INTEGER = re.compile(r"-?[0-9]{1,18}")
#: no image costs more than this (a larger "price" is a typo, and would overflow the ledger's integers)
MAX_PRICE_USD = Decimal(1_000_000)


def _json_value(raw: str) -> Any:
    """JSON when the text is JSON (``50``, ``"50"``, ``null``), else the text itself."""
    try:
        value = json.loads(raw, parse_constant=_no_constant)
        usable = _finite(value)
        # no lone surrogate (the ledger's driver cannot encode one)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError, UnicodeEncodeError):
        return raw
    return value if usable else raw


def _finite(value: Any) -> bool:
    """Whether ``value`` holds no infinite number (``1e999`` parses as one; JSON has none)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(item) for item in value)
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    return True


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is no request value")  # NaN and Infinity: kept as text


def _bad(raw: str, name: str, problems: list[str]) -> str | None:
    problems.append(f"{name}: {raw!r} is not one of the choices")
    return None


def _integer(raw: str, name: str, problems: list[str]) -> int | None:
    if not _INTEGER.fullmatch(raw):
        problems.append(f"{name}: {raw!r} is not a whole number")
        return None
    return int(raw)


def _micros(raw: str, problems: list[str]) -> int | None:
    try:
        amount = Decimal(raw.lstrip("$"))
    except InvalidOperation:
        amount = Decimal(-1)
    if not amount.is_finite() or not 0 <= amount <= MAX_PRICE_USD:
        problems.append(f"cost: {raw!r} is not an amount in USD")
        return None
    return int(amount * MICROS_PER_USD)


class CardLinks(Protocol):
    """Where a card's pictures and detail view are: server routes, or files beside a static page."""

    def thumb(self, row: GalleryRow) -> str | None:
        """The card's thumbnail."""

    def full(self, row: GalleryRow) -> str | None:
        """The full image."""

    def detail(self, row: GalleryRow) -> str | None:
        """The image's detail view."""

    def source_thumb(self, row: GalleryRow) -> str | None:
        """A thumbnail of the job's source image."""


@dataclass(frozen=True)
class CardView:
    """One image's card, ready for the template."""

    image_id: int
    job_key: str
    op: str
    image_state: str
    verdict: str | None
    prompt: str
    enhanced: str
    seed: int | None
    source_id: str | None
    model: str | None
    cost: str
    resolution: str | None
    chips: tuple[tuple[str, str], ...]
    thumb_url: str | None
    full_url: str | None
    detail_url: str | None
    source_thumb_url: str | None
    has_source: bool
    filter_data: str
    title: str = field(default="")


def request_value(request: Mapping[str, Any], name: str) -> str:
    """A request field's value as its JSON text (`ABSENT` when the request lacks it)."""
    return canonical_json(request[name]) if name in request else ABSENT


def build_card(row: GalleryRow, summary: FieldSummary, links: CardLinks) -> CardView:
    """The card of one gallery row."""
    varying = summary.varying(row.op)
    # a field this job does not set is no news on its card (the filter still offers "(not set)")
    chips = tuple(
        (name, value_label(request_value(row.request, name))) for name in varying if name in row.request
    )
    prompt = row.prompt or ""
    enhanced = row.enhanced_prompt or ""
    data = {
        "op": row.op,
        "state": row.image_state,
        "pick": row.verdict or UNREVIEWED,
        "job": row.job_key,
        "prompt": prompt.lower(),
        "enhanced": enhanced.lower(),
        "id": row.source_id or "",
        "seed": "" if row.seed is None else str(row.seed),
        "cost": usd_value(row.unit_estimate_micros),
        "f": {name: request_value(row.request, name) for name in summary.choice_names()},
    }
    title_lines = [prompt, f"enhanced: {enhanced}" if enhanced else "", f"job {row.job_key[:12]}"]
    return CardView(
        image_id=row.image_id,
        job_key=row.job_key,
        op=row.op,
        image_state=row.image_state,
        verdict=row.verdict,
        prompt=short(prompt),
        enhanced=short(enhanced),
        seed=row.seed,
        source_id=row.source_id,
        model=row.model,
        cost=usd(row.cost_per_image_micros),
        resolution=row.resolution,
        chips=chips,
        thumb_url=links.thumb(row),
        full_url=links.full(row),
        detail_url=links.detail(row),
        source_thumb_url=links.source_thumb(row) if row.source else None,
        has_source=row.source is not None,
        filter_data=json.dumps(data, ensure_ascii=False, sort_keys=True),
        title="\n".join(line for line in title_lines if line),
    )


@dataclass(frozen=True)
class FilterControls:
    """What the filter bar offers: ops, states, prices and the varying request fields."""

    ops: tuple[str, ...]
    states: tuple[str, ...]
    picks: tuple[str, ...]
    costs: tuple[tuple[str, str], ...]
    fields: tuple[FieldChoice, ...]


def filter_controls(summary: FieldSummary) -> FilterControls:
    """The controls of a manifest's filter bar."""
    return FilterControls(
        ops=tuple(sorted(summary.jobs_by_op)),
        states=IMAGE_STATES,
        picks=PICK_CHOICES,
        costs=tuple((usd_value(m), usd(m)) for m in sorted(summary.unit_costs)),
        fields=tuple(summary.choices()),
    )
