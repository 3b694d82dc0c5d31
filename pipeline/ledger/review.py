"""Read-side verbs of the live review (`ideobatch serve`): every manifest's progress, workers, metrics.

Each verb answers from a handful of grouped queries over indexed columns, so
that a page of a ledger with 100,000 images answers in a few tens of
milliseconds; nothing here writes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from sqlalchemy import Float, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from pipeline.ledger.base import LedgerBase
from pipeline.ledger.faults import verb
from pipeline.ledger.reports import WORKER_STALE_S
from pipeline.ledger.tables import FAILED, RUNNING, attempts, images, jobs, manifests, picks, runs

#: the window over which the overview measures each manifest's rate
RATE_WINDOW_S = 60.0
#: at most this many in-flight jobs are listed per worker
IN_FLIGHT_LISTED = 8
#: upper bounds (seconds) of the request-latency histogram's buckets
LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass
class ManifestProgress:
    """One manifest as the overview shows it."""

    id: int
    name: str
    jobs: dict[str, int] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    picks: dict[str, int] = field(default_factory=dict)
    spent_micros: int = 0
    reserved_micros: int = 0
    budget_micros: int | None = None
    #: jobs that finished (either way) within the last `RATE_WINDOW_S`
    finished_recently: int = 0
    in_flight_images: int = 0
    output_dir: str | None = None


@dataclass(frozen=True)
class InFlightJob:
    """A job whose request is out: sent, not answered yet."""

    key: str
    op: str
    manifest_id: int
    prompt: str | None
    num_images: int
    sent_at: float


@dataclass
class WorkerView:
    """A live run or worker process and the images it has in flight."""

    owner: str
    kind: str
    host: str
    pid: int
    manifest_id: int | None
    started_at: float
    heartbeat_age_s: float
    in_flight_images: int = 0
    in_flight: list[InFlightJob] = field(default_factory=list)


@dataclass
class LedgerOverview:
    """Every manifest's progress and every live worker, read at ``at``."""

    at: float
    manifests: list[ManifestProgress]
    workers: list[WorkerView]


@dataclass
class ManifestMetrics:
    """Counters of one manifest for `/metrics` (at scrape time, from the ledger)."""

    progress: ManifestProgress
    in_doubt: int = 0
    #: finished attempts by HTTP status (0: none: a connection error, a timeout, a stop)
    requests: dict[int, int] = field(default_factory=dict)
    #: answered attempts' duration: cumulative counts per `LATENCY_BUCKETS_S` bound, count, sum
    latency_buckets: list[int] = field(default_factory=list)
    latency_count: int = 0
    latency_sum_s: float = 0.0


@dataclass(frozen=True)
class FailedJob:
    """A failed job, as an example of its reason."""

    job_id: int
    key: str
    op: str
    prompt: str | None
    message: str | None
    source: str | None
    source_id: str | None
    attempts: int


@dataclass(frozen=True)
class FailureGroup:
    """The failed jobs of one reason: how many, and the latest few."""

    reason: str | None
    count: int
    examples: list[FailedJob]


class ReviewReads(LedgerBase):
    """The part of the `Ledger` the review pages and `/metrics` read from."""

    @verb
    async def overview(self, now: float | None = None) -> LedgerOverview:
        """Progress, spend, rate, failures and picks of every manifest; live workers and their jobs."""
        now = time.time() if now is None else now
        async with self.engine.connect() as conn:
            progress = await _progress(conn, now)
            workers = await _workers(conn, now)
        return LedgerOverview(at=now, manifests=list(progress.values()), workers=workers)

    @verb
    async def failed_count(self, manifest_id: int) -> int:
        """How many of the manifest's jobs failed (an index range, however large the manifest)."""
        async with self.engine.connect() as conn:
            value = await conn.scalar(
                select(func.count()).where(jobs.c.manifest_id == manifest_id, jobs.c.state == FAILED)
            )
        return int(value or 0)

    @verb
    async def failure_groups(self, manifest_id: int, examples: int = 5) -> list[FailureGroup]:
        """The manifest's failed jobs grouped by reason (most first), each with its latest examples."""
        failed = [jobs.c.manifest_id == manifest_id, jobs.c.state == FAILED]
        ranked = (
            select(
                jobs.c.id,
                jobs.c.key,
                jobs.c.op,
                jobs.c.request,
                jobs.c.error_kind,
                jobs.c.error_message,
                jobs.c.source,
                jobs.c.source_id,
                jobs.c.attempts,
                func.row_number()
                .over(partition_by=jobs.c.error_kind, order_by=(jobs.c.finished_at.desc(), jobs.c.id.desc()))
                .label("n"),
            )
            .where(*failed)
            .subquery()
        )
        async with self.engine.connect() as conn:
            counts = await conn.execute(
                select(jobs.c.error_kind, func.count()).where(*failed).group_by(jobs.c.error_kind)
            )
            groups = {kind: FailureGroup(kind, int(count), []) for kind, count in counts}
            for row in await conn.execute(select(ranked).where(ranked.c.n <= examples).order_by(ranked.c.n)):
                prompt = json.loads(row.request).get("prompt")
                groups[row.error_kind].examples.append(
                    FailedJob(
                        job_id=row.id,
                        key=row.key,
                        op=row.op,
                        prompt=prompt if isinstance(prompt, str) else None,
                        message=row.error_message,
                        source=row.source,
                        source_id=row.source_id,
                        attempts=row.attempts,
                    )
                )
        return sorted(groups.values(), key=lambda g: (-g.count, g.reason or ""))

    @verb
    async def metrics(self, now: float | None = None) -> list[ManifestMetrics]:
        """Per manifest: the overview's counts, in-doubt attempts, requests by status, latency."""
        now = time.time() if now is None else now
        async with self.engine.connect() as conn:
            progress = await _progress(conn, now)
            found = {
                mid: ManifestMetrics(p, latency_buckets=[0] * len(LATENCY_BUCKETS_S))
                for mid, p in progress.items()
            }
            await _attempt_counts(conn, found)
        return list(found.values())


async def _progress(conn: AsyncConnection, now: float) -> dict[int, ManifestProgress]:
    found: dict[int, ManifestProgress] = {}
    for row in await conn.execute(select(manifests).order_by(manifests.c.id)):
        config = json.loads(row.config)
        found[row.id] = ManifestProgress(
            id=row.id,
            name=row.name,
            spent_micros=row.spent_micros,
            reserved_micros=row.reserved_micros,
            budget_micros=row.budget_micros,
            output_dir=(config.get("output") or {}).get("dir"),
        )
    for manifest_id, state, count in await conn.execute(
        select(jobs.c.manifest_id, jobs.c.state, func.count()).group_by(jobs.c.manifest_id, jobs.c.state)
    ):
        if manifest_id in found:
            found[manifest_id].jobs[state] = int(count)
    for manifest_id, state, count in await conn.execute(
        select(jobs.c.manifest_id, images.c.state, func.count())
        .join(jobs, jobs.c.id == images.c.job_id)
        .group_by(jobs.c.manifest_id, images.c.state)
    ):
        if manifest_id in found:
            found[manifest_id].images[state] = int(count)
    for manifest_id, kind, count in await conn.execute(
        select(jobs.c.manifest_id, jobs.c.error_kind, func.count())
        .where(jobs.c.state == FAILED)
        .group_by(jobs.c.manifest_id, jobs.c.error_kind)
    ):
        if manifest_id in found:
            found[manifest_id].failures[kind or "unknown"] = int(count)
    # one range of the (manifest_id, finished_at) index per manifest
    recent = (
        select(func.count())
        .where(jobs.c.manifest_id == manifests.c.id, jobs.c.finished_at >= now - RATE_WINDOW_S)
        .scalar_subquery()
    )
    for manifest_id, count in await conn.execute(select(manifests.c.id, recent)):
        if manifest_id in found:
            found[manifest_id].finished_recently = int(count)
    for manifest_id, verdict, count in await conn.execute(
        select(jobs.c.manifest_id, picks.c.verdict, func.count())
        .select_from(picks)
        .join(images, images.c.id == picks.c.image_id)
        .join(jobs, jobs.c.id == images.c.job_id)
        .group_by(jobs.c.manifest_id, picks.c.verdict)
    ):
        if manifest_id in found:
            found[manifest_id].picks[verdict] = int(count)
    for manifest_id, count in await conn.execute(
        select(jobs.c.manifest_id, func.coalesce(func.sum(jobs.c.num_images), 0))
        .select_from(jobs)
        .join(attempts, attempts.c.job_id == jobs.c.id)
        .where(jobs.c.state == RUNNING, attempts.c.ended_at.is_(None))
        .group_by(jobs.c.manifest_id)
    ):
        if manifest_id in found:
            found[manifest_id].in_flight_images = int(count)
    return found


async def _workers(conn: AsyncConnection, now: float) -> list[WorkerView]:
    live = await conn.execute(
        select(runs)
        .where(runs.c.ended_at.is_(None), runs.c.heartbeat_at > now - WORKER_STALE_S)
        .order_by(runs.c.id)
    )
    workers = {
        row.owner: WorkerView(
            owner=row.owner,
            kind=row.kind,
            host=row.host,
            pid=row.pid,
            manifest_id=row.manifest_id,
            started_at=row.started_at,
            heartbeat_age_s=round(max(0.0, now - row.heartbeat_at), 1),
        )
        for row in live
    }
    if not workers:
        return []
    out = await conn.execute(
        select(
            jobs.c.lease_owner,
            jobs.c.key,
            jobs.c.op,
            jobs.c.manifest_id,
            jobs.c.request,
            jobs.c.num_images,
            attempts.c.started_at,
        )
        .join(attempts, attempts.c.job_id == jobs.c.id)
        .where(jobs.c.state == RUNNING, attempts.c.ended_at.is_(None))
        .order_by(attempts.c.started_at)
    )
    for row in out:
        worker = workers.get(row.lease_owner)
        if worker is None:
            continue
        worker.in_flight_images += row.num_images
        if len(worker.in_flight) < IN_FLIGHT_LISTED:
            prompt = json.loads(row.request).get("prompt")
            worker.in_flight.append(
                InFlightJob(
                    key=row.key,
                    op=row.op,
                    manifest_id=row.manifest_id,
                    prompt=prompt if isinstance(prompt, str) else None,
                    num_images=row.num_images,
                    sent_at=row.started_at,
                )
            )
    return list(workers.values())


async def _attempt_counts(conn: AsyncConnection, found: dict[int, ManifestMetrics]) -> None:
    """Finished attempts per manifest and status, in-doubt ones, and the latency histogram: one scan."""
    status = func.coalesce(attempts.c.http_status, 0)
    duration = cast(attempts.c.ended_at - attempts.c.started_at, Float)
    buckets = [func.sum(case((duration <= bound, 1), else_=0)) for bound in LATENCY_BUCKETS_S]
    query = (
        select(
            jobs.c.manifest_id,
            status,
            func.count(),
            func.sum(case((attempts.c.in_doubt.is_(True), 1), else_=0)),
            func.coalesce(func.sum(duration), 0.0),
            *buckets,
        )
        .join(jobs, jobs.c.id == attempts.c.job_id)
        .where(attempts.c.ended_at.is_not(None))
        .group_by(jobs.c.manifest_id, status)
    )
    for row in await conn.execute(query):
        metrics = found.get(row[0])
        if metrics is None:
            continue
        code, count = int(row[1]), int(row[2])
        metrics.requests[code] = count
        metrics.in_doubt += int(row[3] or 0)
        if code:  # an answer came back: its duration is a request's latency
            metrics.latency_count += count
            metrics.latency_sum_s += float(row[4])
            metrics.latency_buckets = [
                a + int(b or 0) for a, b in zip(metrics.latency_buckets, row[5:], strict=True)
            ]
