"""The ledger's verbs: every read and write of the job store, and no SQL elsewhere.

Each verb is one transaction. Write-backs take batches (a worker groups the
results of many jobs into one commit) and check, row by row, that the caller
still holds the job's lease: a job reclaimed by another worker is reported
back as lost, never overwritten. PostgreSQL claims with ``FOR UPDATE SKIP
LOCKED``; SQLite serializes writers with ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Connection,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, OperationalError

from pipeline.errors import LedgerError, LedgerMissing, LedgerNotMigrated
from pipeline.jobs import PlannedJob
from pipeline.keys import canonical_json
from pipeline.ledger import engine as engines
from pipeline.ledger import faults
from pipeline.ledger.accounts import Accounts, drop_slots
from pipeline.ledger.admin import Admin
from pipeline.ledger.base import id_chunks, job_row_values
from pipeline.ledger.execution import Execution
from pipeline.ledger.exports import Exports
from pipeline.ledger.faults import masked, verb
from pipeline.ledger.gallery import GalleryReads
from pipeline.ledger.picks import Picks
from pipeline.ledger.records import (
    ManifestRecord,
    PlanCounts,
    to_micros,
)
from pipeline.ledger.reports import Reports
from pipeline.ledger.review import ReviewReads
from pipeline.ledger.tables import (
    jobs,
    manifests,
    runs,
)
from pipeline.ledger.withdrawals import Withdrawals

#: jobs per planning transaction: large, because each batch rewrites the pages of the
#: (random) job-key index it touches; two batches are in memory at a time
PLAN_BATCH = 50_000
#: while a batch is written, expansion yields to the event loop every this many jobs
PLAN_YIELD_EVERY = 100


class Ledger(Execution, Reports, Exports, Admin, Accounts, ReviewReads, GalleryReads, Picks, Withdrawals):
    """The job store of one ledger URL (SQLite file or PostgreSQL database)."""

    # --- lifecycle -----------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        upgrade: bool | None = None,
        retry_window_s: float | None = None,
        create: bool = True,
    ) -> Ledger:
        """Open a ledger; SQLite ones are migrated to the newest schema on open.

        PostgreSQL ledgers must be at the newest schema already (`ideobatch db
        upgrade`), so that many workers never race to migrate one database. A
        ledger that does not answer is waited for up to ``retry_window_s``
        (default: `faults.default_window`); one that cannot be used raises
        `LedgerError` naming it (password masked) and what to do. With
        ``create=False`` a SQLite file that does not exist is `LedgerMissing`
        instead of a new ledger (commands that only read create none).
        """
        if not create and (missing := engines.missing_sqlite_file(url)) is not None:
            raise LedgerMissing(f"there is no ledger at {missing}")
        window = faults.default_window() if retry_window_s is None else retry_window_s
        try:
            engine = engines.create_engine(url, engines.busy_timeout_ms(window))
        except OSError as exc:
            raise LedgerError(f"cannot create the ledger {masked(url)}: {exc.strerror or exc}") from exc
        ledger = cls(engine, url, window)
        should_upgrade = ledger.is_sqlite if upgrade is None else upgrade
        try:
            await ledger._guarded(lambda: ledger._check_schema(should_upgrade))
        except LedgerError:
            await ledger._dispose()
            raise
        except (OSError, DBAPIError) as exc:
            await ledger._dispose()
            raise LedgerError(f"cannot open the ledger {masked(url)}: {_db_message(exc)}") from exc
        except BaseException:
            await ledger._dispose()
            raise
        return ledger

    async def _check_schema(self, upgrade: bool) -> None:
        stored = await engines.stored_revision(self.engine)
        newer = stored not in (None, engines.HEAD_REVISION) and stored not in engines.known_revisions()
        if newer:
            raise LedgerError(
                f"the ledger {masked(self.url)} has a schema ({stored}) newer than this ideobatch "
                f"knows: upgrade ideobatch (pip install -U ideobatch) to use it"
            )
        if upgrade:
            fresh = stored is None and self.is_sqlite and await engines.create_fresh_sqlite(self.engine)
            if stored != engines.HEAD_REVISION and not fresh:
                await engines.upgrade(self.engine)
            return
        if stored == engines.HEAD_REVISION:
            return  # the common case, known without importing Alembic
        current = await engines.current_revision(self.engine)
        head = engines.head_revision()
        if current != head:
            raise LedgerNotMigrated(
                f"the ledger {masked(self.url)} has schema {current or 'nothing'}, this ideobatch needs "
                f"{head}: run `ideobatch db upgrade --ledger URL` first"
            )

    async def close(self) -> None:
        """Release the connection pools."""
        await self._dispose()

    # --- manifests and planning -------------------------------------------------------

    @verb
    async def save_manifest(
        self,
        *,
        name: str,
        sha256: str,
        path: str | None,
        base_dir: str,
        config: dict[str, Any],
        budget_micros: int | None,
        replanning: bool = True,
    ) -> ManifestRecord:
        """Create or update the manifest of this name (a re-plan keeps its jobs).

        ``replanning`` marks the plan incomplete until `plan_jobs` finishes, so
        that an interrupted plan is never taken for a complete one, and begins
        a new plan (its number, ``plan_seq``, one more than the last).
        """
        now = time.time()
        values: dict[str, Any] = {
            "sha256": sha256,
            "path": path,
            "base_dir": base_dir,
            "config": canonical_json(config),
            "planned_at": now,
            "budget_micros": budget_micros,
        }
        if replanning:
            values["plan_complete"] = False
            values["plan_seq"] = manifests.c.plan_seq + 1
        async with self._write() as conn:
            row = (
                await conn.execute(self._locked(select(manifests.c.id).where(manifests.c.name == name)))
            ).first()
            if row is None:
                await conn.execute(
                    insert(manifests).values(
                        name=name,
                        spent_micros=0,
                        reserved_micros=0,
                        **{**values, "plan_complete": False, "plan_seq": 1},
                    )
                )
            else:
                await conn.execute(update(manifests).where(manifests.c.id == row.id).values(**values))
        record = await self.get_manifest(name)
        assert record is not None
        return record

    @verb
    async def mark_planned(
        self, manifest_id: int, config: dict[str, Any], plan_seq: int | None = None
    ) -> None:
        """Record that the manifest's jobs are all in the ledger, with the settings they came from.

        With ``plan_seq``, only if that plan is still the manifest's latest (a
        plan overtaken by a newer one marks nothing).
        """
        latest = [] if plan_seq is None else [manifests.c.plan_seq == plan_seq]
        async with self._write() as conn:
            await conn.execute(
                update(manifests)
                .where(manifests.c.id == manifest_id, *latest)
                .values(plan_complete=True, config=canonical_json(config))
            )

    @verb
    async def get_manifest(self, name: str) -> ManifestRecord | None:
        """The manifest of this name, or None."""
        async with self._read() as conn:
            row = (await conn.execute(select(manifests).where(manifests.c.name == name))).first()
        return _manifest_record(row) if row else None

    @verb
    async def get_manifest_by_id(self, manifest_id: int) -> ManifestRecord:
        """The manifest with this id."""
        async with self._read() as conn:
            row = (await conn.execute(select(manifests).where(manifests.c.id == manifest_id))).one()
        return _manifest_record(row)

    @verb
    async def list_manifests(self) -> list[ManifestRecord]:
        """Every planned manifest, oldest plan first."""
        async with self._read() as conn:
            rows = (await conn.execute(select(manifests).order_by(manifests.c.id))).all()
        return [_manifest_record(r) for r in rows]

    async def plan_jobs(
        self,
        manifest_id: int,
        planned: Iterable[PlannedJob],
        batch: int = PLAN_BATCH,
        *,
        complete: bool = True,
        beside_a_run: bool = False,
        plan_seq: int | None = None,
    ) -> PlanCounts:
        """Write jobs in streamed batches; jobs whose key is already known keep their row.

        Every job written is marked as of plan ``plan_seq`` (default: the
        manifest's latest, `save_manifest`), and one an earlier plan withdrew
        is pending again. One batch is written while the next is being
        expanded, so expansion (Python) and the database (its own thread or
        server) work side by side. ``complete``: these are the last of the
        plan's jobs, so the manifest's plan is marked complete after them
        (False: more are coming). ``beside_a_run``: jobs are being run
        meanwhile, so expansion yields to the event loop every
        `PLAN_YIELD_EVERY` jobs, not only while a batch is written.
        """
        if plan_seq is None:
            plan_seq = (await self.get_manifest_by_id(manifest_id)).plan_seq
        counts = PlanCounts()
        before = await self._count_jobs(manifest_id)
        micros: dict[Decimal, int] = {}
        chunk: list[tuple[Any, ...]] = []
        writing: asyncio.Task[None] | None = None
        try:
            for job in planned:
                counts.total += 1
                bucket = (job.op, job.model)
                counts.by_op_model[bucket] = counts.by_op_model.get(bucket, 0) + 1
                estimate = micros.get(job.cost_usd)
                if estimate is None:
                    estimate = micros[job.cost_usd] = to_micros(job.cost_usd)
                counts.estimate_micros += estimate
                chunk.append(job_row_values(manifest_id, job, estimate, None, plan_seq))
                if len(chunk) >= batch:
                    if writing is not None:
                        await writing
                    writing = asyncio.create_task(self._insert_jobs(manifest_id, plan_seq, chunk))
                    chunk = []
                elif (writing is not None or beside_a_run) and len(chunk) % PLAN_YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let the batch in flight take its next step
        except BaseException:
            if writing is not None:
                # the batch already handed over is committed (or not) before the error goes up
                with contextlib.suppress(Exception):
                    await writing
            raise
        if writing is not None:
            await writing
        if chunk:
            await self._insert_jobs(manifest_id, plan_seq, chunk)
        if complete:
            async with self._write() as conn:
                await conn.execute(
                    update(manifests)
                    .where(manifests.c.id == manifest_id, manifests.c.plan_seq == plan_seq)
                    .values(plan_complete=True)
                )
        counts.new = await self._count_jobs(manifest_id) - before
        return counts

    @verb
    async def _insert_jobs(self, manifest_id: int, plan_seq: int, rows: list[tuple[Any, ...]]) -> None:
        await self._transact(lambda conn: self._plan_rows(conn, rows, manifest_id, plan_seq))

    @verb
    async def _count_jobs(self, manifest_id: int) -> int:
        async with self._read() as conn:
            value = await conn.scalar(
                select(func.count()).select_from(jobs).where(jobs.c.manifest_id == manifest_id)
            )
        return int(value or 0)

    @verb
    async def job_states(self, manifest_id: int, keys: Sequence[str]) -> dict[str, str]:
        """The state of each of these keys that the ledger knows."""
        found: dict[str, str] = {}
        async with self._read() as conn:
            for part in id_chunks(keys):
                rows = await conn.execute(
                    select(jobs.c.key, jobs.c.state).where(
                        jobs.c.manifest_id == manifest_id, jobs.c.key.in_(part)
                    )
                )
                found.update({r.key: r.state for r in rows})
        return found

    # --- runs ------------------------------------------------------------------------

    @verb
    async def start_run(self, *, owner: str, kind: str, manifest_id: int | None, host: str, pid: int) -> int:
        """Register a run or worker process; returns its id."""
        now = time.time()
        async with self._write() as conn:
            result = await conn.execute(
                insert(runs)
                .values(
                    owner=owner,
                    kind=kind,
                    manifest_id=manifest_id,
                    host=host,
                    pid=pid,
                    started_at=now,
                    heartbeat_at=now,
                )
                .returning(runs.c.id)
            )
            return int(result.scalar_one())

    @verb
    async def unfinished_runs(self, host: str) -> list[tuple[str, int]]:
        """(owner, pid) of runs on ``host`` that never recorded their end."""
        async with self._read() as conn:
            rows = await conn.execute(
                select(runs.c.owner, runs.c.pid).where(runs.c.host == host, runs.c.ended_at.is_(None))
            )
            return [(r.owner, r.pid) for r in rows]

    @verb
    async def reclaim_dead(self, owners: Sequence[str]) -> int:
        """Reclaim the jobs and the places in flight of workers known to be dead; mark their runs crashed."""
        if not owners:
            return 0
        count = await self.reclaim_expired(owners=owners)
        async with self._write() as conn:
            await conn.run_sync(_drop_slots_of, list(owners))
            await conn.execute(
                update(runs)
                .where(runs.c.owner.in_(list(owners)), runs.c.ended_at.is_(None))
                .values(ended_at=time.time(), outcome="crashed")
            )
            await conn.execute(
                update(manifests)
                .where(manifests.c.lock_owner.in_(list(owners)))
                .values(lock_owner=None, lock_expires_at=None)
            )
        return count

    @verb
    async def end_run(self, run_id: int, outcome: str, summary: dict[str, Any]) -> None:
        """Record how a run ended."""
        async with self._write() as conn:
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(ended_at=time.time(), outcome=outcome, summary=canonical_json(summary))
            )

    # --- locks -------------------------------------------------------------------------

    @verb
    async def acquire_lock(self, manifest_id: int, owner: str, ttl: float) -> bool:
        """Take the manifest's run lock if free or expired (`run --lock`)."""
        now = time.time()
        async with self._write() as conn:
            result = await conn.execute(
                update(manifests)
                .where(
                    manifests.c.id == manifest_id,
                    (manifests.c.lock_owner.is_(None))
                    | (manifests.c.lock_owner == owner)
                    | (manifests.c.lock_expires_at < now),
                )
                .values(lock_owner=owner, lock_expires_at=now + ttl)
            )
            return bool(result.rowcount)

    @verb
    async def release_lock(self, manifest_id: int, owner: str) -> None:
        """Give the manifest's run lock back."""
        async with self._write() as conn:
            await conn.execute(
                update(manifests)
                .where(manifests.c.id == manifest_id, manifests.c.lock_owner == owner)
                .values(lock_owner=None, lock_expires_at=None)
            )


def _drop_slots_of(conn: Connection, owners: list[str]) -> None:
    for owner in owners:
        drop_slots(conn, owner)


def _manifest_record(row: Any) -> ManifestRecord:
    return ManifestRecord(
        id=row.id,
        name=row.name,
        sha256=row.sha256,
        base_dir=row.base_dir,
        config=json.loads(row.config),
        budget_micros=row.budget_micros,
        spent_micros=row.spent_micros,
        reserved_micros=row.reserved_micros,
        plan_complete=bool(row.plan_complete),
        plan_seq=int(row.plan_seq),
    )


def _db_message(exc: BaseException) -> str:
    if isinstance(exc, OperationalError | DBAPIError):
        return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    return str(exc)


@asynccontextmanager
async def opened_ledger(
    url: str, *, retry_window_s: float | None = None, create: bool = True
) -> AsyncIterator[Ledger]:
    """A ledger, closed on exit (``create=False``: `LedgerMissing` rather than a new SQLite file)."""
    ledger = await Ledger.open(url, retry_window_s=retry_window_s, create=create)
    try:
        yield ledger
    finally:
        await ledger.close()
