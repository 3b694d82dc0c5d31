"""What differs between a manifest's jobs: the request fields whose values vary, and their values.

Four "red fox" cards that differ only by ``style_type`` should say so. A
field *varies* for an op when two of that op's jobs have different values
for it (a job without the field counts as one more value). The summary is
built from every job's request once, then only from jobs planned since
(requests never change once planned: the job key is their hash), so a
100,000-job manifest is read in full once per server, not per page.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.keys import canonical_json
from pipeline.ledger.gallery import FIELD_NAME, JobFields
from pipeline.ledger.repository import Ledger

#: a field with more distinct values than this is filtered by typing a value, not by a list
MAX_LISTED_VALUES = 100
#: shown on every card on its own, not as a "what differs" value
SHOWN_APART = frozenset({"prompt"})
#: a value longer than this (a JSON prompt object, say) is cut on cards and in lists
LABEL_CHARS = 60
#: the JSON text that stands for "the request does not have this field"
ABSENT = "null"


def value_label(text: str) -> str:
    """A value's JSON text as people read it: strings without their quotes, cut to `LABEL_CHARS`."""
    value = json.loads(text)
    label = value if isinstance(value, str) else text
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


@dataclass(frozen=True)
class _Json:
    """A value kept by its JSON text (objects, lists, booleans): never equal to a plain value."""

    text: str


def _key(value: Any) -> Any:
    """A cheap dict key for a request value (strings and numbers as they are: most values are)."""
    kind = type(value)
    if kind is str or kind is int or kind is float or value is None:
        return value
    return _Json(canonical_json(value))


def _text(key: Any) -> str:
    return key.text if isinstance(key, _Json) else canonical_json(key)


@dataclass
class FieldValues:
    """The values one request field takes among one op's jobs."""

    counts: dict[Any, int] = field(default_factory=dict)
    present: int = 0
    #: more than `MAX_LISTED_VALUES` distinct values (counts stop being kept)
    crowded: bool = False

    def texts(self) -> set[str]:
        """The values, as JSON text."""
        return {_text(key) for key in self.counts}


@dataclass(frozen=True)
class FieldChoice:
    """A request field a gallery can be filtered on, with its values (JSON text, label)."""

    name: str
    values: tuple[tuple[str, str], ...]
    crowded: bool


@dataclass
class FieldSummary:
    """Per op, per request field: the values the manifest's jobs have, up to the last job read."""

    last_job_id: int = 0
    jobs_by_op: dict[str, int] = field(default_factory=dict)
    fields: dict[str, dict[str, FieldValues]] = field(default_factory=dict)
    #: the price of one image, in micro-dollars, of every job read
    unit_costs: set[int] = field(default_factory=set)

    def add(self, jobs: Iterable[JobFields]) -> None:
        """Fold more jobs (in id order) into the summary."""
        for job in jobs:
            self.last_job_id = max(self.last_job_id, job.id)
            self.jobs_by_op[job.op] = self.jobs_by_op.get(job.op, 0) + 1
            self.unit_costs.add(job.estimate_micros // max(1, job.num_images))
            request: dict[str, Any] = json.loads(job.request)
            per_op = self.fields.setdefault(job.op, {})
            for name, value in request.items():
                values = per_op.get(name)
                if values is None:
                    values = per_op[name] = FieldValues()
                values.present += 1
                if values.crowded or name in SHOWN_APART:
                    continue
                key = _key(value)
                values.counts[key] = values.counts.get(key, 0) + 1
                if len(values.counts) > MAX_LISTED_VALUES:
                    values.crowded = True
                    values.counts.clear()

    def _absent(self, op: str, values: FieldValues) -> int:
        return self.jobs_by_op.get(op, 0) - values.present

    def varying(self, op: str) -> list[str]:
        """The request fields whose values differ among ``op``'s jobs (the prompt aside), by name."""
        found = []
        for name, values in self.fields.get(op, {}).items():
            if name in SHOWN_APART or not FIELD_NAME.match(name):
                continue
            kinds = len(values.counts) + (1 if self._absent(op, values) else 0)
            if values.crowded or kinds > 1:
                found.append(name)
        return sorted(found)

    def choice_names(self) -> list[str]:
        """The fields that vary for at least one op."""
        return sorted({name for op in self.fields for name in self.varying(op)})

    def choices(self) -> list[FieldChoice]:
        """Every field that varies for some op, with the values it takes across ops."""
        names = self.choice_names()
        result = []
        for name in names:
            texts: set[str] = set()
            crowded = False
            for op, per_op in self.fields.items():
                values = per_op.get(name)
                if values is None:
                    continue
                crowded = crowded or values.crowded
                texts.update(values.texts())
                if self._absent(op, values):
                    texts.add(ABSENT)
            ordered = sorted(texts - {ABSENT}, key=_natural) + ([ABSENT] if ABSENT in texts else [])
            labelled = tuple((t, "(not set)" if t == ABSENT else value_label(t)) for t in ordered)
            result.append(FieldChoice(name, () if crowded else labelled, crowded))
        return result


def _natural(text: str) -> tuple[int, float, str]:
    value = json.loads(text)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, text)


class FieldCache:
    """The field summary of each manifest, kept up to date from the ledger as pages ask for it."""

    def __init__(self, ledger: Ledger, chunk: int = 20_000) -> None:
        self._ledger = ledger
        self._chunk = chunk
        self._summaries: dict[int, FieldSummary] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def summary(self, manifest_id: int) -> FieldSummary:
        """The manifest's summary, with every job planned so far folded in."""
        lock = self._locks.setdefault(manifest_id, asyncio.Lock())
        async with lock:
            summary = self._summaries.setdefault(manifest_id, FieldSummary())
            while True:
                found = await self._ledger.job_fields_after(manifest_id, summary.last_job_id, self._chunk)
                if not found:
                    return summary
                # parsing thousands of requests is CPU work: off the event loop
                await asyncio.to_thread(summary.add, found)
                if len(found) < self._chunk:
                    return summary
