"""Write transactions as plain functions: one thread hop per transaction on SQLite.

The async SQLite driver (aiosqlite) hands every DBAPI call — cursor, execute,
fetch, close, BEGIN, COMMIT — to its thread and back, so a transaction of a
few statements costs a dozen round trips through a busy event loop. The
ledger's write verbs are therefore written as synchronous functions of a
`Connection`, and run:

- on SQLite, whole, on one dedicated thread with a synchronous engine (the
  thread releases the GIL while SQLite works, so the event loop goes on);
- on PostgreSQL, through the async engine's ``run_sync`` (asyncpg is already
  one network round trip per statement).

No write runs in autocommit: PostgreSQL commits an autocommitted statement
when it ends even if its client is gone by then (a cut connection while the
statement waits for a lock), so a verb run again after such a failure would
write a second time what was committed behind its back. Inside a
transaction, the COMMIT is only sent once the statements' answers arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.ledger import engine as engines

T = TypeVar("T")

#: a write transaction's body
Work = Callable[[Connection], T]


class SqliteWriter:
    """A synchronous engine on a SQLite ledger whose transactions run on one thread, in turn."""

    def __init__(self, url: str, busy_ms: int = engines.SQLITE_BUSY_TIMEOUT_MS) -> None:
        self._engine = engines.create_sqlite_writer_engine(url, busy_ms)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ideobatch-ledger")
        self._closed = False

    async def run(self, work: Work[T]) -> T:
        """Run ``work`` in a ``BEGIN IMMEDIATE`` transaction; committed when it returns.

        A caller cancelled before its transaction started cancels it; one
        cancelled while it runs waits for it to end (commit or roll back: either
        way the ledger is consistent), so that no other writer of this process
        starts while the file is still locked.
        """
        done = self._thread.submit(self._transaction, work)
        try:
            return await asyncio.shield(asyncio.wrap_future(done))
        except asyncio.CancelledError:
            if not done.cancel():
                with contextlib.suppress(Exception):
                    await asyncio.wrap_future(done)
            raise

    def _transaction(self, work: Work[T]) -> T:
        with self._engine.connect() as conn:
            conn = conn.execution_options(**engines.WRITE)
            with conn.begin():
                return work(conn)

    async def close(self) -> None:
        """Close the connection (on its own thread, as pysqlite requires) and stop the thread."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wrap_future(self._thread.submit(self._engine.dispose))
        finally:
            # queued work (the dispose included) still runs; the event loop does not wait for it
            self._thread.shutdown(wait=False)


#: PostgreSQL's "deadlock detected" and "could not serialize": the transaction may simply be run again
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
PG_TRIES = 3


async def run_write(engine: AsyncEngine, sqlite: SqliteWriter | None, work: Work[T]) -> T:
    """Run ``work`` as one write transaction on whichever backend the ledger has.

    On PostgreSQL a transaction that the server aborted to break a deadlock
    (workers' transactions lock rows of one table in different orders) is run
    again, up to `PG_TRIES` times: it was rolled back whole, and ``work`` only
    depends on its connection.
    """
    if sqlite is not None:
        return await sqlite.run(work)
    tries = 1
    while True:
        try:
            async with engine.connect() as conn, conn.begin():
                return await conn.run_sync(work)
        except DBAPIError as exc:
            if tries >= PG_TRIES or getattr(exc.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES:
                raise
            tries += 1
