"""`ideobatch status`, `export` and `retry`: what the ledger says, for people and tools."""

from __future__ import annotations

from typing import Any

from pipeline.errors import UsageError
from pipeline.ledger.repository import Ledger
from pipeline.running import opened_ledger
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
