"""`ideobatch export`: results as CSV, JSON Lines or a Hugging Face imagefolder (SPEC §7, §11).

The columns are computed from the data: one per request field the exported
jobs were planned with (the union of their requests' keys, sorted), around a
fixed set (job, prompt as written and as enhanced, the image and its file,
source, cost). Images and descriptions are exported separately (`kind`), so
that every integer column of a file is filled and loads as integers; the
decisions are written out in docs/export.md.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from pipeline import endpoints
from pipeline.errors import OutputUnusable, UsageError
from pipeline.ledger.exports import ExportRow
from pipeline.ledger.repository import Ledger, opened_ledger
from pipeline.ledger.tables import FAILED, PICKED, SUCCEEDED
from pipeline.reporting import manifest_id_for
from pipeline.results import IMAGE_DOWNLOADED

KINDS = ("images", "descriptions")
STATES = ("succeeded", "failed", "all")
FORMATS = ("csv", "jsonl", "hf")
#: the file `datasets.load_dataset("imagefolder", data_dir=...)` reads the columns from
HF_METADATA = "metadata.jsonl"

_HEAD = ("job_key", "op", "state")
_FAILURE = ("reason", "message")
_IMAGE_PROMPT = ("prompt", "enhanced_prompt", "model")
_IMAGE_TAIL = (
    "index",
    "seed",
    "resolution",
    "path",
    "sha256",
    "bytes",
    "width",
    "height",
    "image_state",
    "source",
    "source_id",
    "parent_key",
    "cost_usd",
    "manifest",
    "pick",
)
_TEXT_TAIL = ("index", "text", "source", "source_id", "parent_key", "cost_usd", "manifest")
#: request fields an image row already carries in a fixed column (the image's value, or the
#: request's on a row without an image)
_IMAGE_MERGED = frozenset({"prompt", "model", "seed", "resolution"})
#: image columns that describe the file: 0 for a billed image that has no file (withheld)
_FILE_SIZES = ("bytes", "width", "height")

#: a spreadsheet runs a cell that starts with one of these as a formula
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> object:
    """A cell value that a spreadsheet will not run as a formula (OWASP CSV injection)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def kind_of(op: str) -> str:
    """Which export an op's results belong to: ``images`` or ``descriptions``."""
    return "images" if endpoints.endpoint(op).makes_images else "descriptions"


def split_cost(total_micros: int, count: int) -> list[int]:
    """A job's cost over its ``count`` billed results, in micro-dollars, summing exactly to the total.

    The remainder of the division goes to the first result.
    """
    if count <= 0:
        return []
    share, rest = divmod(total_micros, count)
    return [share + rest] + [share] * (count - 1)


@dataclass(frozen=True)
class Layout:
    """The columns of one export: fixed ones around one column per request field."""

    kind: str
    with_failures: bool
    #: (column name, request key), sorted by key
    request_columns: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, kind: str, with_failures: bool, fields: dict[str, set[str]]) -> Layout:
        """The layout for ``kind``, from the request keys per op that the ledger holds."""
        keys: set[str] = set()
        for op, op_keys in fields.items():
            if kind_of(op) == kind:
                keys |= op_keys
        merged = _IMAGE_MERGED if kind == "images" else frozenset()
        fixed = set(_fixed(kind))
        columns = []
        for key in sorted(keys - merged):
            columns.append((f"request_{key}" if key in fixed else key, key))
        return cls(kind, with_failures, tuple(columns))

    @property
    def columns(self) -> list[str]:
        """Every column, in order."""
        head = [*_HEAD, *(_FAILURE if self.with_failures else ())]
        if self.kind == "images":
            return [*head, *_IMAGE_PROMPT, *(c for c, _k in self.request_columns), *_IMAGE_TAIL]
        return [*head, *(c for c, _k in self.request_columns), *_TEXT_TAIL]

    def record(self, row: ExportRow, cost_micros: int) -> dict[str, Any]:
        """One row's values by column (``cost_usd`` in micro-dollars; `csv_row`/`json_row` format it)."""
        request = row.request
        values: dict[str, Any] = {"job_key": row.job_key, "op": row.op, "state": row.state}
        if self.with_failures:
            failed = row.state == FAILED
            values["reason"] = row.error_kind if failed else None
            values["message"] = row.error_message if failed else None
        for column, key in self.request_columns:
            values[column] = request.get(key)
        has_result = row.index is not None
        values.update(
            index=row.index,
            source=row.source,
            source_id=row.source_id,
            parent_key=row.parent_key,
            cost_usd=cost_micros,
            manifest=row.manifest,
        )
        if self.kind == "descriptions":
            values["text"] = row.text
            return {column: values.get(column) for column in self.columns}
        prompt = request.get("prompt")
        values.update(
            prompt=prompt if isinstance(prompt, str) else None,
            enhanced_prompt=row.enhanced_prompt,
            model=row.model,
            seed=row.seed if has_result else request.get("seed"),
            resolution=row.resolution if has_result else request.get("resolution"),
            path=absolute_path(row.path, row.base_dir),
            sha256=row.sha256,
            image_state=row.image_state,
            pick=row.verdict,
        )
        for column in _FILE_SIZES:
            value = getattr(row, column)
            values[column] = value if value is not None or not has_result else 0
        return {column: values.get(column) for column in self.columns}


def _fixed(kind: str) -> tuple[str, ...]:
    """Every fixed column of ``kind`` (a request field of the same name gets a ``request_`` prefix)."""
    if kind == "images":
        return (*_HEAD, *_FAILURE, *_IMAGE_PROMPT, *_IMAGE_TAIL)
    return (*_HEAD, *_FAILURE, *_TEXT_TAIL)


def absolute_path(path: str | None, base_dir: str) -> str | None:
    """A stored image path, absolute: a relative one is taken as relative to the manifest's folder."""
    if not path:
        return None
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(base_dir, path))


def _usd_text(micros: int) -> str:
    return format(Decimal(micros).scaleb(-6), "f")


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """A record as CSV cells: objects as JSON text, cost as an exact decimal, formulas defused."""
    cells: dict[str, Any] = {}
    for column, value in record.items():
        if column == "cost_usd":
            value = _usd_text(value)
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False, sort_keys=True)
        cells[column] = csv_safe(value)
    return cells


def json_row(record: dict[str, Any], *, flat: bool = False) -> dict[str, Any]:
    """A record as JSON values (``flat``: objects as JSON text, so every line has one type per key)."""
    values = dict(record)
    values["cost_usd"] = round(record["cost_usd"] / 1_000_000, 6)
    if flat:
        for column, value in record.items():
            if isinstance(value, (dict, list)):
                values[column] = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return values


async def _by_job(rows: AsyncIterator[ExportRow]) -> AsyncGenerator[list[ExportRow], None]:
    """Consecutive rows of one job, grouped."""
    group: list[ExportRow] = []
    async for row in rows:
        if group and row.job_id != group[0].job_id:
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def _job_records(rows: list[ExportRow], layout: Layout) -> Iterator[dict[str, Any]]:
    shares = split_cost(rows[0].cost_micros, len(rows))
    for row, share in zip(rows, shares, strict=True):
        yield layout.record(row, share)


async def _records(
    ledger: Ledger, manifest_id: int | None, layout: Layout, state: str, picked: bool = False
) -> AsyncGenerator[dict[str, Any], None]:
    # each stream is closed as soon as it is left, so that its cursor never outlives the ledger
    if state in ("succeeded", "all"):
        # every image of a job is read, picked or not: its cost is split over all of them
        rows = ledger.export_rows(manifest_id, kind=layout.kind, states=(SUCCEEDED,))
        async with aclosing(rows), aclosing(_by_job(rows)) as jobs:
            async for job_rows in jobs:
                for record in _job_records(job_rows, layout):
                    if picked and record.get("pick") != PICKED:
                        continue
                    yield record
    if state in ("failed", "all") and not picked:
        async with aclosing(ledger.failed_job_rows(manifest_id)) as failed:
            async for row in failed:
                if kind_of(row.op) == layout.kind:
                    yield layout.record(row, row.cost_micros)


def _job_states(state: str) -> tuple[str, ...]:
    return {"succeeded": (SUCCEEDED,), "failed": (FAILED,)}.get(state, (SUCCEEDED, FAILED))


async def export(
    ledger_url: str,
    manifest: str | None,
    out: TextIO,
    *,
    fmt: str,
    kind: str = "images",
    state: str = "succeeded",
    picked: bool = False,
) -> int:
    """Stream the rows of ``kind`` (jobs in ``state``) to ``out`` as CSV or JSON Lines; returns the count.

    ``picked``: only the images a person picked in `ideobatch serve`.
    """
    count = 0
    async with opened_ledger(ledger_url, create=False) as ledger:
        manifest_id = await manifest_id_for(ledger, manifest)
        fields = await ledger.request_fields(manifest_id, _job_states(state))
        layout = Layout.of(kind, state != "succeeded", fields)
        writer = None
        if fmt == "csv":
            writer = csv.DictWriter(out, fieldnames=layout.columns)
            writer.writeheader()
        async with aclosing(_records(ledger, manifest_id, layout, state, picked)) as records:
            async for record in records:
                if writer is not None:
                    writer.writerow(csv_row(record))
                else:
                    out.write(json.dumps(json_row(record), ensure_ascii=False) + "\n")
                count += 1
    return count


@dataclass(frozen=True)
class HfExport:
    """What `export --format hf` wrote."""

    metadata: Path
    images: int
    #: images the ledger lists whose file is gone (left out: the dataset would not load)
    missing: int


async def export_hf(
    ledger_url: str, manifest: str | None, folder: str | None, *, picked: bool = False
) -> HfExport:
    """Write ``metadata.jsonl`` beside the downloaded images, one line per image.

    ``folder`` (default: the manifest's output folder, or the folder holding
    every image) is where the file goes; each line's ``file_name`` is the
    image's path relative to it, so ``datasets.load_dataset("imagefolder",
    data_dir=folder)`` loads the images with every column.
    """
    async with opened_ledger(ledger_url, create=False) as ledger:
        manifest_id = await manifest_id_for(ledger, manifest)
        fields = await ledger.request_fields(manifest_id, (SUCCEEDED,))
        layout = Layout.of("images", False, fields)
        paths = await _image_paths(ledger, manifest_id, layout)
        if not paths:
            raise UsageError("no downloaded image to list: run the manifest first")
        root = Path(folder).resolve() if folder else await _default_folder(ledger, manifest_id, paths)
        outside = [p for p in paths if not _inside(p, root)]
        if outside:
            raise UsageError(
                f"{len(outside)} image(s) are outside {root} (e.g. {outside[0]}): "
                "choose a folder that holds them all with --out"
            )
        target = root / HF_METADATA
        temp = target.with_name(f".{HF_METADATA}.tmp")
        count = missing = 0
        records = _records(ledger, manifest_id, layout, "succeeded", picked)
        try:
            handle = temp.open("w", encoding="utf-8")
        except OSError as exc:
            raise OutputUnusable(str(temp), exc.strerror or str(exc)) from exc
        with handle as out:
            async with aclosing(records):
                async for record in records:
                    if record["image_state"] != IMAGE_DOWNLOADED or not record["path"]:
                        continue
                    if not os.path.isfile(record["path"]):
                        missing += 1
                        continue
                    line = {"file_name": Path(record["path"]).relative_to(root).as_posix()}
                    line.update(json_row(record, flat=True))
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")
                    count += 1
        os.replace(temp, target)
    return HfExport(target, count, missing)


async def _image_paths(ledger: Ledger, manifest_id: int | None, layout: Layout) -> list[str]:
    async with aclosing(_records(ledger, manifest_id, layout, "succeeded")) as records:
        return [r["path"] async for r in records if r["image_state"] == IMAGE_DOWNLOADED and r["path"]]


async def _default_folder(ledger: Ledger, manifest_id: int | None, paths: Iterable[str]) -> Path:
    """The manifest's output folder if it holds every image, else the deepest folder that does."""
    listed = list(paths)
    if manifest_id is not None:
        record = await ledger.get_manifest_by_id(manifest_id)
        configured = Path(record.config["output"]["dir"])
        if all(_inside(p, configured) for p in listed):
            return configured
    return Path(os.path.commonpath([os.path.dirname(p) for p in listed]))


def _inside(path: str, folder: Path) -> bool:
    return Path(path).is_relative_to(folder)
