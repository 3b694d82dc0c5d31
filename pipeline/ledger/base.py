"""Shared machinery of the ledger's verbs: transactions, row locks, batching helpers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Select, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipeline.errors import LedgerUnavailable, PlanSuperseded
from pipeline.jobs import PlannedJob
from pipeline.keys import canonical_json
from pipeline.ledger import engine as engines
from pipeline.ledger import faults
from pipeline.ledger.gate import WriteGate
from pipeline.ledger.statements import DriverSql, statements
from pipeline.ledger.tables import (
    PENDING,
    manifests,
)
from pipeline.ledger.writer import SqliteWriter, Work, run_write
from pipeline.retrying import until_available

log = logging.getLogger("ideobatch")

Key = TypeVar("Key")
T = TypeVar("T")

#: SQLite allows 32766 bound parameters; stay well under it in IN (...) lists
ID_CHUNK = 900


def id_chunks(items: Sequence[Any], size: int = ID_CHUNK) -> Iterable[Sequence[Any]]:
    """``items`` in slices short enough for one statement's parameters."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def grouped(pairs: Iterable[tuple[Key, int]]) -> dict[Key, list[int]]:
    """Ids grouped by the values they share, so that each group is one statement."""
    groups: dict[Key, list[int]] = {}
    for key, item in pairs:
        groups.setdefault(key, []).append(item)
    return groups


class LedgerBase:
    """A ledger's connection pool and the transaction helpers every verb uses."""

    def __init__(self, engine: AsyncEngine, url: str, retry_window_s: float | None = None) -> None:
        self.engine = engine
        self.url = url
        #: how long a verb waits for a ledger that does not answer before `LedgerUnavailable`
        self.retry_window_s = faults.default_window() if retry_window_s is None else retry_window_s
        #: when the current outage began (monotonic), None while the ledger answers
        self._outage_since: float | None = None
        #: an outage outlasted the window: later verbs try once, without waiting again
        self._gave_up = False
        #: set by `stop_waiting`: no verb waits for the ledger any more
        self._hurry = asyncio.Event()
        self.is_sqlite = engines.is_sqlite(engine)
        self._sql = statements(postgres=not self.is_sqlite)
        self._driver = DriverSql(engine.dialect)
        #: SQLite: one write transaction of this process at a time, attempt records first
        self._write_gate = WriteGate() if self.is_sqlite else None
        busy = engines.busy_timeout_ms(self.retry_window_s)
        self._sqlite_writer = SqliteWriter(url, busy) if self.is_sqlite else None

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one verb; wait out a ledger that is away (`faults`); translate its errors."""
        window = 0.0 if self._gave_up or self._hurry.is_set() else self.retry_window_s
        try:
            result = await until_available(
                call,
                window_s=window,
                transient=faults.is_transient,
                on_retry=self._on_retry,
                give_up=self._hurry,
                again_at_once=faults.is_stale_connection,
            )
        except Exception as exc:
            error = faults.translated(exc, self.url, window)
            if error is None:
                raise
            if isinstance(error, LedgerUnavailable):
                self._gave_up = True
            raise error from exc
        if self._outage_since is not None:
            log.warning("the ledger is back after %.1f s", time.monotonic() - self._outage_since)
            self._outage_since = None
        self._gave_up = False
        return result

    def stop_waiting(self) -> None:
        """From now on try the ledger once and never wait for it.

        A second Ctrl-C: the user wants out. Answers that cannot be recorded are
        kept on disk, and the run's leases run out by themselves.
        """
        self._hurry.set()

    @asynccontextmanager
    async def _translating(self) -> AsyncIterator[None]:
        """Translate the ledger's errors in a block that cannot simply be run again (a stream)."""
        try:
            yield
        except Exception as exc:
            error = faults.translated(exc, self.url, 0.0)
            if error is None:
                raise
            raise error from exc

    def _on_retry(self, error: BaseException, waited_s: float) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic() - waited_s
            log.warning(
                "the ledger %s does not answer (%s): waiting for it (up to %g s)",
                faults.masked(self.url),
                faults.describe(error)[:200],
                self.retry_window_s,
            )

    async def _transact(self, work: Work[T], *, urgent: bool = False) -> T:
        """Run ``work`` (a function of a sync `Connection`) as one write transaction.

        ``urgent``: a request waits for it (its attempt record), so on SQLite it
        goes before the other writes of this process that wait for their turn.
        """
        if self._write_gate is None:
            return await run_write(self.engine, self._sqlite_writer, work)
        async with self._write_gate.held(urgent=urgent):
            return await run_write(self.engine, self._sqlite_writer, work)

    async def _dispose(self) -> None:
        """Close every connection of the ledger."""
        try:
            if self._sqlite_writer is not None:
                await self._sqlite_writer.close()
        finally:
            await self.engine.dispose()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        # SQLite has one writer: queue this process's writers here, where waiting is
        # an await, rather than in SQLite's busy handler, which sleeps in steps of ms.
        async with self._write_turn(), self.engine.connect() as conn:
            conn = await conn.execution_options(**engines.WRITE)
            async with conn.begin():
                yield conn

    def _write_turn(self) -> contextlib.AbstractAsyncContextManager[None]:
        """This process's turn to write (SQLite), or no wait (PostgreSQL)."""
        return self._write_gate.held() if self._write_gate is not None else contextlib.nullcontext()

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    def _locked(self, query: Select[Any], skip_locked: bool = False) -> Select[Any]:
        """SELECT ... FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes."""
        if self.is_sqlite:
            return query
        return query.with_for_update(skip_locked=skip_locked)

    def _insert_rows(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        """Insert job rows (`job_row_values`); keys the manifest already has are left alone."""
        conn.exec_driver_sql(self._driver.insert_job, rows)

    def _plan_rows(
        self, conn: Connection, rows: list[tuple[Any, ...]], manifest_id: int, plan_seq: int
    ) -> None:
        """Insert a plan's job rows; those the manifest already has are marked as of this plan.

        Raises `PlanSuperseded` (writing nothing) when a newer plan of the
        manifest has begun: its withdrawals stand, and the rows of this one
        would make the jobs it removed pending again.
        """
        latest = conn.execute(select(manifests.c.plan_seq).where(manifests.c.id == manifest_id)).scalar()
        if latest is not None and latest > plan_seq:
            raise PlanSuperseded(f"plan {plan_seq} of the manifest was overtaken by plan {latest}")
        conn.exec_driver_sql(self._driver.plan_job, rows)


def job_row_values(
    manifest_id: int, job: PlannedJob, estimate: int, parent_id: int | None, plan_seq: int | None = None
) -> tuple[Any, ...]:
    """A new job's row, in the order of `JOB_COLUMNS` (``plan_seq``: the plan that makes it, if one does)."""
    now = time.time()
    return (
        manifest_id,
        job.key,
        job.op,
        job.stage,
        job.rank,
        job.replica,
        canonical_json(job.request),
        job.model,
        job.num_images,
        job.source,
        job.source_sha256,
        job.source_id,
        json.dumps([i.as_json() for i in job.inputs]) if job.inputs else None,
        parent_id,
        PENDING,
        0,  # attempts
        0.0,  # next_attempt_at
        estimate,
        0,  # reserved_micros
        0,  # cost_micros
        now,  # created_at
        now,  # updated_at
        plan_seq,
    )
