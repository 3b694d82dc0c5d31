"""PostgreSQL row locks: lease renewal never waits on a job row, and a deadlock victim is run again.

Many workers share one PostgreSQL ledger, and one worker's write-backs, lease
renewal and reclaims run side by side; these tests hold real row locks from a
second connection to check that none of them can stall or kill a run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import Connection, text

from pipeline.ledger.repository import Ledger
from pipeline.ledger.writer import run_write
from tests.integration.test_ledger_contract import many, save

LEASE_S = 60.0


@pytest.fixture
async def pg_ledger(pg_url: str) -> AsyncIterator[Ledger]:
    ledger = await Ledger.open(pg_url, upgrade=False)
    try:
        yield ledger
    finally:
        await ledger.close()


async def test_renewal_does_not_wait_for_a_job_row_another_transaction_holds(
    pg_ledger: Ledger, pg_url: str
) -> None:
    """A row locked by the worker's own write-back is skipped this round; the others are renewed at once."""
    record = await save(pg_ledger)
    await pg_ledger.plan_jobs(record.id, many(3))
    claim = await pg_ledger.claim_jobs(record.id, "w1", 3, LEASE_S)
    busy, *free = claim.jobs
    other = await asyncpg.connect(pg_url)
    try:
        async with other.transaction():
            await other.execute("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", busy.id)
            renewed = await asyncio.wait_for(pg_ledger.renew_leases("w1", 3600), 5)
        assert renewed == {j.id for j in free}
        assert await pg_ledger.renew_leases("w1", 3600) == {j.id for j in claim.jobs}
    finally:
        await other.close()


async def test_a_transaction_chosen_as_deadlock_victim_is_run_again(pg_ledger: Ledger, pg_url: str) -> None:
    """Two transactions lock two rows in opposite orders; ours loses the deadlock, is retried, and commits."""
    record = await save(pg_ledger)
    await pg_ledger.plan_jobs(record.id, many(2))
    claim = await pg_ledger.claim_jobs(record.id, "w1", 2, LEASE_S)
    first, second = (j.id for j in claim.jobs)
    other = await asyncpg.connect(pg_url)
    # the other side waits long before checking for a deadlock, so ours (200 ms) is the victim
    await other.execute("SET deadlock_timeout = '20s'")
    other_pid = await other.fetchval("SELECT pg_backend_pid()")
    other_has_first = asyncio.Event()
    ours_has_second = asyncio.Event()
    runs = 0

    def lock_in_reverse(conn: Connection) -> int:
        nonlocal runs
        runs += 1
        conn.execute(text("SET LOCAL deadlock_timeout = '200ms'"))
        conn.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": second})
        loop.call_soon_threadsafe(ours_has_second.set)
        if runs == 1:
            wait_until_blocked_by_us(conn, other_pid)
        conn.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": first})
        return runs

    async def other_side() -> None:
        async with other.transaction():
            await other.execute("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", first)
            other_has_first.set()
            await ours_has_second.wait()
            await other.execute("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", second)

    loop = asyncio.get_running_loop()
    try:
        theirs = asyncio.create_task(other_side())
        await asyncio.wait_for(other_has_first.wait(), 15)
        ours = await asyncio.wait_for(run_write(pg_ledger.engine, None, lock_in_reverse), 15)
        await asyncio.wait_for(theirs, 15)
    finally:
        await other.close()
    # the first run was the deadlock's victim; the second committed (well before the other side's 20 s)
    assert ours == 2


def wait_until_blocked_by_us(conn: Connection, pid: int) -> None:
    """Return once backend ``pid`` waits for a lock this connection holds (PostgreSQL checks for a
    deadlock once per wait, so ours must start waiting only after theirs has)."""
    deadline = time.monotonic() + 10
    query = text("SELECT pg_backend_pid() = ANY(pg_blocking_pids(:pid))")
    while not conn.execute(query, {"pid": pid}).scalar_one():
        assert time.monotonic() < deadline, "the other transaction never waited for our row"
        time.sleep(0.005)
