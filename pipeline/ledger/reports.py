"""Read-side verbs of the ledger: status counts, failures, runs, and the export stream."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from pipeline.ledger.base import LedgerBase
from pipeline.ledger.faults import verb
from pipeline.ledger.tables import PICKED, attempts, descriptions, images, jobs, manifests, picks, runs

#: a run whose heartbeat is older than this is not shown as a live worker
WORKER_STALE_S = 180.0


@dataclass
class LedgerStatus:
    """What the ledger knows about one manifest (or all of them)."""

    manifest: str | None
    jobs: dict[str, int] = field(default_factory=dict)
    by_op: dict[str, dict[str, int]] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    descriptions: int = 0
    spent_micros: int = 0
    reserved_micros: int = 0
    budget_micros: int | None = None
    in_doubt: int = 0
    failures: dict[str, tuple[int, str]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ExportRow:
    """One produced image or description with its job."""

    job_key: str
    op: str
    state: str
    request: dict[str, Any]
    model: str | None
    source: str | None
    source_id: str | None
    parent_key: str | None
    manifest: str
    index: int | None
    enhanced_prompt: str | None
    seed: int | None
    resolution: str | None
    path: str | None
    sha256: str | None
    bytes: int | None
    width: int | None
    height: int | None
    image_state: str | None
    text: str | None
    cost_micros: int
    error_kind: str | None
    #: a person's verdict on the image (`ideobatch serve`): picked, rejected, or None
    verdict: str | None = None


class Reports(LedgerBase):
    """The part of the `Ledger` with its read-only reporting verbs."""

    @verb
    async def status(self, manifest_id: int | None) -> LedgerStatus:
        """Counts per state and op, images, spend, in-doubt attempts, failures, runs, workers."""
        async with self.engine.connect() as conn:
            return await _status(conn, manifest_id)

    @verb
    async def failed_jobs(self, manifest_id: int | None, limit: int = 10_000) -> list[dict[str, Any]]:
        """Failed jobs with their reasons (newest first, at most ``limit``)."""
        where = [jobs.c.state == "failed"]
        if manifest_id is not None:
            where.append(jobs.c.manifest_id == manifest_id)
        query = (
            select(jobs.c.key, jobs.c.op, jobs.c.error_kind, jobs.c.error_message, jobs.c.request)
            .where(*where)
            .order_by(jobs.c.finished_at.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        result = []
        for row in rows:
            prompt = json.loads(row.request).get("prompt")
            result.append(
                {
                    "job_key": row.key,
                    "op": row.op,
                    "reason": row.error_kind,
                    "message": row.error_message,
                    "prompt": prompt if isinstance(prompt, str) else None,
                }
            )
        return result

    async def export_rows(self, manifest_id: int | None, *, picked: bool = False) -> AsyncIterator[ExportRow]:
        """Every produced image and description, streamed (one row each); ``picked``: picked images only."""
        parent = jobs.alias("parent")
        where = [jobs.c.manifest_id == manifest_id] if manifest_id is not None else []
        base = (
            select(
                jobs.c.key,
                jobs.c.op,
                jobs.c.state,
                jobs.c.request,
                jobs.c.model,
                jobs.c.source,
                jobs.c.source_id,
                jobs.c.cost_micros,
                jobs.c.error_kind,
                parent.c.key.label("parent_key"),
                manifests.c.name.label("manifest"),
            )
            .select_from(jobs)
            .join(manifests, manifests.c.id == jobs.c.manifest_id)
            .outerjoin(parent, parent.c.id == jobs.c.parent_id)
        )
        image_query = (
            base.add_columns(
                images.c.index,
                images.c.prompt,
                images.c.seed,
                images.c.resolution,
                images.c.local_path,
                images.c.sha256,
                images.c.bytes,
                images.c.width,
                images.c.height,
                images.c.state.label("image_state"),
                picks.c.verdict,
            )
            .join(images, images.c.job_id == jobs.c.id)
            .outerjoin(picks, picks.c.image_id == images.c.id)
            .where(*where)
            .order_by(jobs.c.id, images.c.index)
        )
        if picked:
            image_query = image_query.where(picks.c.verdict == PICKED)
        text_query = (
            base.add_columns(descriptions.c.index, descriptions.c.text)
            .join(descriptions, descriptions.c.job_id == jobs.c.id)
            .where(*where)
            .order_by(jobs.c.id, descriptions.c.index)
        )
        async with self._translating(), self.engine.connect() as conn:
            result = await conn.stream(image_query.execution_options(yield_per=1000))
            async for row in result:
                yield _export_row(row, text=None)
            if picked:
                return
            result = await conn.stream(text_query.execution_options(yield_per=1000))
            async for row in result:
                yield _export_row(row, text=row.text)


def _export_row(row: Any, text: str | None) -> ExportRow:
    mapping = row._mapping
    return ExportRow(
        job_key=row.key,
        op=row.op,
        state=row.state,
        request=json.loads(row.request),
        model=row.model,
        source=row.source,
        source_id=row.source_id,
        parent_key=row.parent_key,
        manifest=row.manifest,
        index=row.index,
        enhanced_prompt=mapping.get("prompt"),
        seed=mapping.get("seed"),
        resolution=mapping.get("resolution"),
        path=mapping.get("local_path"),
        sha256=mapping.get("sha256"),
        bytes=mapping.get("bytes"),
        width=mapping.get("width"),
        height=mapping.get("height"),
        image_state=mapping.get("image_state"),
        text=text,
        cost_micros=row.cost_micros,
        error_kind=row.error_kind,
        verdict=mapping.get("verdict"),
    )


async def _status(conn: AsyncConnection, manifest_id: int | None) -> LedgerStatus:
    job_where = [jobs.c.manifest_id == manifest_id] if manifest_id is not None else []
    status = LedgerStatus(manifest=None)
    for op, state, count in await conn.execute(
        select(jobs.c.op, jobs.c.state, func.count()).where(*job_where).group_by(jobs.c.op, jobs.c.state)
    ):
        status.jobs[state] = status.jobs.get(state, 0) + count
        status.by_op.setdefault(op, {})[state] = count
    for state, count in await conn.execute(
        select(images.c.state, func.count())
        .join(jobs, jobs.c.id == images.c.job_id)
        .where(*job_where)
        .group_by(images.c.state)
    ):
        status.images[state] = count
    status.descriptions = int(
        await conn.scalar(
            select(func.count())
            .select_from(descriptions)
            .join(jobs, jobs.c.id == descriptions.c.job_id)
            .where(*job_where)
        )
        or 0
    )
    status.in_doubt = int(
        await conn.scalar(
            select(func.count())
            .select_from(attempts)
            .join(jobs, jobs.c.id == attempts.c.job_id)
            .where(attempts.c.in_doubt.is_(True), *job_where)
        )
        or 0
    )
    for kind, count, example in await conn.execute(
        select(jobs.c.error_kind, func.count(), func.max(jobs.c.error_message))
        .where(jobs.c.state == "failed", *job_where)
        .group_by(jobs.c.error_kind)
    ):
        status.failures[kind or "unknown"] = (count, example or "")
    manifest_where = [manifests.c.id == manifest_id] if manifest_id is not None else []
    money = (
        await conn.execute(
            select(
                func.coalesce(func.sum(manifests.c.spent_micros), 0),
                func.coalesce(func.sum(manifests.c.reserved_micros), 0),
                func.max(manifests.c.budget_micros),
                func.min(manifests.c.name),
            ).where(*manifest_where)
        )
    ).one()
    status.spent_micros, status.reserved_micros = int(money[0]), int(money[1])
    status.budget_micros = money[2] if manifest_id is not None else None
    status.manifest = money[3] if manifest_id is not None else None
    run_where = [runs.c.manifest_id == manifest_id] if manifest_id is not None else []
    now = time.time()
    for row in await conn.execute(select(runs).where(*run_where).order_by(runs.c.id.desc()).limit(5)):
        status.runs.append(_run_dict(row, now))
    live = await conn.execute(
        select(runs)
        .where(runs.c.ended_at.is_(None), runs.c.heartbeat_at > now - WORKER_STALE_S)
        .order_by(runs.c.id)
    )
    status.workers = [_run_dict(row, now) for row in live]
    return status


def _run_dict(row: Any, now: float) -> dict[str, Any]:
    ended = row.ended_at
    summary = json.loads(row.summary) if row.summary else {}
    return {
        "owner": row.owner,
        "kind": row.kind,
        "host": row.host,
        "pid": row.pid,
        "started_at": row.started_at,
        "ended_at": ended,
        "duration_s": round((ended or now) - row.started_at, 3),
        "heartbeat_age_s": round(now - row.heartbeat_at, 1),
        "outcome": row.outcome,
        "jobs_done": summary.get("run", {}).get("succeeded") if isinstance(summary, dict) else None,
    }
