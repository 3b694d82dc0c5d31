"""`ideobatch status`, `export` and `retry`: what the ledger says, for people and tools."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, TextIO

from pipeline.errors import UsageError
from pipeline.ledger.reports import ExportRow
from pipeline.ledger.repository import Ledger, opened_ledger
from pipeline.summary import build_summary


async def manifest_id_for(ledger: Ledger, manifest: str | None) -> int | None:
    """The id of a manifest given by name or by its file (None: all manifests)."""
    if manifest is None:
        return None
    record = await ledger.get_manifest(manifest)
    if record is None and (manifest.endswith((".yaml", ".yml")) or "/" in manifest):
        from pipeline.manifest import load_manifest

        record = await ledger.get_manifest(load_manifest(manifest).manifest.name)
    if record is None:
        raise UsageError(f"the ledger has no manifest {manifest!r} (plan or run it first)")
    return record.id


async def status_summary(ledger_url: str, manifest: str | None) -> dict[str, Any]:
    """The status summary of one manifest (by name or file) or of the whole ledger."""
    async with opened_ledger(ledger_url) as ledger:
        manifest_id = await manifest_id_for(ledger, manifest)
        return build_summary(await ledger.status(manifest_id))


EXPORT_COLUMNS = (
    "job_key",
    "op",
    "state",
    "prompt",
    "enhanced_prompt",
    "model",
    "seed",
    "resolution",
    "index",
    "path",
    "sha256",
    "bytes",
    "width",
    "height",
    "image_state",
    "source",
    "source_id",
    "parent_key",
    "text",
    "job_cost_usd",
    "manifest",
    "pick",
)
#: a spreadsheet runs a cell that starts with one of these as a formula
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> object:
    """A cell value that a spreadsheet will not run as a formula (OWASP CSV injection)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _relative(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else path
    except ValueError:
        return path


def export_record(row: ExportRow) -> dict[str, Any]:
    """One export row as a dict with the `EXPORT_COLUMNS` keys."""
    prompt = row.request.get("prompt")
    return {
        "job_key": row.job_key,
        "op": row.op,
        "state": row.state,
        "prompt": prompt if isinstance(prompt, str) else None,
        "enhanced_prompt": row.enhanced_prompt,
        "model": row.model,
        "seed": row.seed,
        "resolution": row.resolution,
        "index": row.index,
        "path": _relative(row.path),
        "sha256": row.sha256,
        "bytes": row.bytes,
        "width": row.width,
        "height": row.height,
        "image_state": row.image_state if row.text is None else "description",
        "source": row.source,
        "source_id": row.source_id,
        "parent_key": row.parent_key,
        "text": row.text,
        "job_cost_usd": round(row.cost_micros / 1_000_000, 6),
        "manifest": row.manifest,
        "pick": row.verdict,
    }


async def export(
    ledger_url: str, manifest: str | None, fmt: str, out: TextIO, *, picked: bool = False
) -> int:
    """Stream one row per produced image or description to ``out``; returns the row count.

    ``picked``: only the images a person picked (`ideobatch serve`).
    """
    count = 0
    async with opened_ledger(ledger_url) as ledger:
        manifest_id = await manifest_id_for(ledger, manifest)
        writer = None
        if fmt == "csv":
            writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, extrasaction="ignore")
            writer.writeheader()
        async for row in ledger.export_rows(manifest_id, picked=picked):
            record = export_record(row)
            if writer is not None:
                writer.writerow({k: csv_safe(v) for k, v in record.items()})
            else:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


async def retry_jobs(ledger_url: str, manifest: str | None, *, failed: bool, reason: str | None) -> int:
    """Put failed jobs (all, or of one reason) back to pending; returns how many."""
    if not failed and reason is None:
        raise UsageError("say which jobs to retry: --failed (all failed jobs) and/or --reason REASON")
    async with opened_ledger(ledger_url) as ledger:
        return await retry_failed(ledger, await manifest_id_for(ledger, manifest), reason)


async def retry_failed(ledger: Ledger, manifest_id: int | None, reason: str | None) -> int:
    """`retry --failed` (``reason`` None) or `retry --reason R`: failed jobs back to pending; how many."""
    return await ledger.reset_jobs(manifest_id, states=("failed",), reason=reason)
