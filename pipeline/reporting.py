"""`ideobatch status` and `retry`: what the ledger says, for people and tools."""

from __future__ import annotations

import difflib
from typing import Any

from pipeline.errors import UsageError
from pipeline.ledger.records import to_usd
from pipeline.ledger.repository import Ledger, opened_ledger
from pipeline.summary import build_summary, iso_time


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
    async with opened_ledger(ledger_url, create=False) as ledger:
        manifest_id = await manifest_id_for(ledger, manifest)
        return build_summary(await ledger.status(manifest_id))


async def retry_jobs(ledger_url: str, manifest: str | None, *, failed: bool, reason: str | None) -> int:
    """Put failed jobs (all, or of one reason) back to pending; returns how many."""
    if not failed and reason is None:
        raise UsageError("say which jobs to retry: --failed (all failed jobs) and/or --reason REASON")
    async with opened_ledger(ledger_url, create=False) as ledger:
        return await retry_failed(ledger, await manifest_id_for(ledger, manifest), reason)


async def retry_failed(ledger: Ledger, manifest_id: int | None, reason: str | None) -> int:
    """`retry --failed` (``reason`` None) or `retry --reason R`: failed jobs back to pending; how many.

    A reason no failed job has is refused (`UsageError`): a typo must not quietly retry nothing.
    """
    if reason is not None:
        check_reason(reason, await ledger.failure_counts(manifest_id))
    return await ledger.reset_jobs(manifest_id, states=("failed",), reason=reason)


def check_reason(reason: str, counts: dict[str, int]) -> None:
    """`UsageError` unless some failed job has ``reason``: a typo must not quietly retry nothing."""
    if reason in counts:
        return
    if not counts:
        raise UsageError(f"no failed job has reason {reason!r}: no job has failed")
    close = difflib.get_close_matches(reason, list(counts), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    present = ", ".join(f"{name} ({count})" for name, count in sorted(counts.items()))
    raise UsageError(f"no failed job has reason {reason!r}{hint}; failed jobs by reason: {present}")


async def in_doubt_report(ledger_url: str, manifest: str | None) -> dict[str, Any]:
    """The attempts in doubt (may have been billed twice), with what they may have cost."""
    async with opened_ledger(ledger_url, create=False) as ledger:
        manifest_id = await manifest_id_for(ledger, manifest)
        found = await ledger.in_doubt_attempts(manifest_id)
        name = (await ledger.get_manifest_by_id(manifest_id)).name if manifest_id is not None else None
    return {
        "manifest": name,
        "in_doubt": len(found),
        "in_doubt_usd": round(to_usd(sum(a.estimate_micros for a in found)), 6),
        "attempts": [
            {
                "job_key": a.job_key,
                "op": a.op,
                "prompt": a.prompt,
                "attempt": a.attempt,
                "started_at": iso_time(a.started_at),
                "reason": a.reason,
                "message": a.message,
                "estimated_usd": round(to_usd(a.estimate_micros), 6),
            }
            for a in found
        ],
    }


def render_in_doubt(report: dict[str, Any]) -> str:
    """The in-doubt attempts for people, one per line."""
    lines = [
        f"{report['in_doubt']} attempt(s) in doubt, up to ${report['in_doubt_usd']:.2f} "
        "(each may have been billed without its answer being recorded)"
    ]
    for a in report["attempts"]:
        prompt = (a["prompt"] or "")[:60]
        why = a["reason"] or "unknown"
        if a["message"]:
            why += f": {a['message'][:100]}"
        lines.append(
            f"  {a['started_at']}  {a['job_key'][:12]}  {a['op']:<9} attempt {a['attempt']}  "
            f"${a['estimated_usd']:.2f}  {prompt!r}  ({why})"
        )
    return "\n".join(lines)
