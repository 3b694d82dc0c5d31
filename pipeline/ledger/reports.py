"""Read-side verbs of the ledger: status counts, failures, in-doubt attempts, runs and workers."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from pipeline.ledger.accounts import read_accounts
from pipeline.ledger.base import LedgerBase
from pipeline.ledger.faults import verb
from pipeline.ledger.records import StoredImage
from pipeline.ledger.tables import PENDING, RUNNING, attempts, descriptions, images, jobs, manifests, runs

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
    #: what the in-doubt attempts may have cost: the estimated price of each one's call
    in_doubt_micros: int = 0
    failures: dict[str, tuple[int, str]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    #: provider accounts: caps and places in flight (SPEC §11)
    accounts: list[dict[str, Any]] = field(default_factory=list)


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

    @verb
    async def job_counts(self, manifest_id: int | None) -> dict[str, int]:
        """How many jobs of the manifest (None: of every manifest) are in each state."""
        where = [jobs.c.manifest_id == manifest_id] if manifest_id is not None else []
        query = select(jobs.c.state, func.count()).where(*where).group_by(jobs.c.state)
        async with self.engine.connect() as conn:
            return {state: int(count) for state, count in await conn.execute(query)}

    @verb
    async def failure_counts(self, manifest_id: int | None) -> dict[str, int]:
        """How many jobs failed, per reason."""
        where = [jobs.c.state == "failed"]
        if manifest_id is not None:
            where.append(jobs.c.manifest_id == manifest_id)
        query = select(jobs.c.error_kind, func.count()).where(*where).group_by(jobs.c.error_kind)
        async with self.engine.connect() as conn:
            return {kind or "unknown": int(count) for kind, count in await conn.execute(query)}

    @verb
    async def in_doubt_attempts(self, manifest_id: int | None, limit: int = 10_000) -> list[InDoubtAttempt]:
        """Attempts that may have been billed without an answer being recorded (oldest first)."""
        where: list[ColumnElement[bool]] = [attempts.c.in_doubt.is_(True)]
        if manifest_id is not None:
            where.append(jobs.c.manifest_id == manifest_id)
        query = (
            select(
                jobs.c.key,
                jobs.c.op,
                jobs.c.request,
                jobs.c.estimate_micros,
                attempts.c.number,
                attempts.c.started_at,
                attempts.c.error_kind,
                attempts.c.message,
            )
            .join(jobs, jobs.c.id == attempts.c.job_id)
            .where(*where)
            .order_by(attempts.c.started_at, attempts.c.id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        found = []
        for row in rows:
            prompt = json.loads(row.request).get("prompt")
            found.append(
                InDoubtAttempt(
                    job_key=row.key,
                    op=row.op,
                    prompt=prompt if isinstance(prompt, str) else None,
                    attempt=row.number,
                    started_at=row.started_at,
                    reason=row.error_kind,
                    message=row.message,
                    estimate_micros=row.estimate_micros,
                )
            )
        return found

    @verb
    async def images_of(self, job_id: int) -> list[StoredImage]:
        """The recorded images of a job, by index."""
        async with self._read() as conn:
            rows = await conn.execute(
                select(images).where(images.c.job_id == job_id).order_by(images.c.index)
            )
            return [_stored_image(r) for r in rows]

    @verb
    async def known_image_paths(self, paths: Sequence[str]) -> set[str]:
        """Which of ``paths`` are recorded as an image's local file (of any manifest)."""
        if not paths:
            return set()
        async with self._read() as conn:
            rows = await conn.execute(select(images.c.local_path).where(images.c.local_path.in_(list(paths))))
            return {r.local_path for r in rows}

    @verb
    async def descriptions_of(self, job_id: int) -> list[str]:
        """The recorded descriptions of a job, by index."""
        async with self._read() as conn:
            rows = await conn.execute(
                select(descriptions.c.text)
                .where(descriptions.c.job_id == job_id)
                .order_by(descriptions.c.index)
            )
            return [r.text for r in rows]

    @verb
    async def pending_work(
        self, manifest_id: int | None = None, *, skip: Sequence[int] = ()
    ) -> tuple[int, int, float | None]:
        """Pending and running job counts, and the earliest time a pending job is due.

        ``manifest_id`` None counts every manifest but those in ``skip``.
        """
        where = [jobs.c.manifest_id == manifest_id] if manifest_id is not None else []
        if skip:
            where.append(jobs.c.manifest_id.not_in(list(skip)))
        async with self._read() as conn:
            rows = await conn.execute(
                select(jobs.c.state, func.count(), func.min(jobs.c.next_attempt_at))
                .where(jobs.c.state.in_((PENDING, RUNNING)), *where)
                .group_by(jobs.c.state)
            )
            pending, running, due = 0, 0, None
            for state, count, earliest in rows:
                if state == PENDING:
                    pending, due = int(count), earliest
                else:
                    running = int(count)
        return pending, running, due


@dataclass(frozen=True)
class InDoubtAttempt:
    """A call that may have been billed without its answer being recorded."""

    job_key: str
    op: str
    prompt: str | None
    attempt: int
    started_at: float
    #: why it is in doubt: the error that ended it (timeout, reset, http_503, a stopped run...)
    reason: str | None
    message: str | None
    estimate_micros: int


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
    doubt = (
        await conn.execute(
            select(func.count(), func.coalesce(func.sum(jobs.c.estimate_micros), 0))
            .select_from(attempts)
            .join(jobs, jobs.c.id == attempts.c.job_id)
            .where(attempts.c.in_doubt.is_(True), *job_where)
        )
    ).one()
    status.in_doubt, status.in_doubt_micros = int(doubt[0]), int(doubt[1])
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
    status.accounts = [asdict(account) for account in await read_accounts(conn)]
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


def _stored_image(row: Any) -> StoredImage:
    return StoredImage(
        job_id=row.job_id,
        index=row.index,
        remote_url=row.remote_url,
        prompt=row.prompt,
        resolution=row.resolution,
        seed=row.seed,
        is_image_safe=row.is_image_safe,
        state=row.state,
        local_path=row.local_path,
        sha256=row.sha256,
        bytes=row.bytes,
        width=row.width,
        height=row.height,
    )
