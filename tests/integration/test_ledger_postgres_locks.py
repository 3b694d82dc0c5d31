"""PostgreSQL row locks: lease renewal never waits on a job row, and a deadlock victim is run again.

Many workers share one PostgreSQL ledger, and one worker's write-backs, lease
renewal and reclaims run side by side; these tests hold real row locks from a
second connection to check that none of them can stall or kill a run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import Connection, text

from pipeline.ledger.base import ID_CHUNK
from pipeline.ledger.repository import Ledger
from pipeline.ledger.writer import run_write
from tests.integration.test_ledger_contract import many, save
from tests.outage import Outage

LEASE_S = 60.0
# advisory lock keys of the deadlock test: one the other side hands to ours, one it holds until it commits
HANDOFF = 424242
THEIRS_OPEN = 424243


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
    # the other side waits long before checking for a deadlock, so ours (500 ms) is the victim
    await other.execute("SET deadlock_timeout = '20s'")
    await other.execute("SELECT pg_advisory_lock($1)", HANDOFF)
    other_has_first = asyncio.Event()
    ours_has_second = asyncio.Event()
    runs = 0

    def lock_in_reverse(conn: Connection) -> int:
        nonlocal runs
        runs += 1
        conn.execute(text("SET LOCAL deadlock_timeout = '500ms'"))
        if runs > 1:
            # the retry starts once theirs has committed, or it could take `second` first and deadlock again
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": THEIRS_OPEN})
        conn.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": second})
        loop.call_soon_threadsafe(ours_has_second.set)
        if runs == 1:
            # PostgreSQL checks for a deadlock once per wait: ours must start waiting for `first`
            # only once theirs waits for `second`, which it asks for right after this handoff
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": HANDOFF})
        conn.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": first})
        return runs

    async def other_side() -> None:
        async with other.transaction():
            await other.execute("SELECT pg_advisory_xact_lock($1)", THEIRS_OPEN)
            await other.execute("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", first)
            other_has_first.set()
            await ours_has_second.wait()
            # one message, two statements: the lock request follows the handoff at once
            await other.execute(
                f"SELECT pg_advisory_unlock({HANDOFF}); "
                f"SELECT id FROM jobs WHERE id = {int(second)} FOR UPDATE"
            )

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


async def test_attempts_of_more_jobs_than_an_id_chunk_are_recorded_once_when_the_connection_dies(
    pg_ledger: Ledger, pg_url: str
) -> None:
    """The attempt record of a large batch dies half way (its connection ended): run again, every job
    still has one attempt, not two, and its attempt count is 1."""
    record = await save(pg_ledger)
    count = ID_CHUNK + 100
    await pg_ledger.plan_jobs(record.id, many(count))
    claim = await pg_ledger.claim_jobs(record.id, "w1", count, LEASE_S)
    ids = [j.id for j in claim.jobs]
    other = await asyncpg.connect(pg_url)
    try:
        database = await other.fetchval("SELECT current_database()")
        # a job of the last id chunk, held by another transaction: the record waits there
        held = other.transaction()
        await held.start()
        await other.execute("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", ids[-1])
        recording = asyncio.create_task(pg_ledger.record_attempts("w1", None, ids))
        waiting = None
        for _ in range(200):
            waiting = await other.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() "
                "AND wait_event_type = 'Lock'",
                database,
            )
            if waiting is not None:
                break
            await asyncio.sleep(0.05)
        assert waiting is not None
        await other.execute("SELECT pg_terminate_backend($1)", waiting)
        await held.rollback()
        sent = await asyncio.wait_for(recording, 30)
        rows = await other.fetch(
            "SELECT j.id, j.attempts, count(a.id) AS made "
            "FROM jobs j LEFT JOIN attempts a ON a.job_id = j.id GROUP BY j.id, j.attempts"
        )
    finally:
        await other.close()
    assert set(sent) == set(ids)
    assert {(r["attempts"], r["made"]) for r in rows} == {(1, 1)}


async def test_an_attempt_record_whose_connection_is_cut_while_it_waits_is_not_recorded_twice(
    pg_url: str, outage: Outage
) -> None:
    """The attempt record waits for a job row another transaction holds; the network cuts the worker
    off meanwhile, and the record is made again once the ledger is back: the request it is for
    is one attempt, and once given back, one attempt in doubt (not two)."""
    ledger = await Ledger.open(outage.url, upgrade=False)
    other = await asyncpg.connect(pg_url)
    try:
        record = await save(ledger)
        await ledger.plan_jobs(record.id, many(1))
        (job,) = (await ledger.claim_jobs(record.id, "w1", 1, LEASE_S)).jobs
        held = other.transaction()
        await held.start()
        await other.execute("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", job.id)
        recording = asyncio.create_task(ledger.record_attempts("w1", None, [job.id]))
        waiting = await _waiting_backend(other)
        await outage.cut()
        await outage.refused_for(0.3)  # the worker knows its statement's connection is gone
        await held.rollback()
        # the abandoned statement goes on without its client, to its end
        for _ in range(200):
            if not await other.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", waiting):
                break
            await asyncio.sleep(0.05)
        outage.restore()
        sent = await asyncio.wait_for(recording, 30)
        assert set(sent) == {job.id}
        assert await other.fetchval("SELECT attempts FROM jobs WHERE id = $1", job.id) == 1
        assert await other.fetchval("SELECT count(*) FROM attempts WHERE job_id = $1", job.id) == 1
        await ledger.release_jobs("w1", [job.id])
        assert (await ledger.status(record.id)).in_doubt == 1
    finally:
        await other.close()
        await ledger.close()


async def _waiting_backend(other: asyncpg.Connection) -> int:
    """The pid of the backend of this database that waits for a row lock."""
    for _ in range(200):
        waiting = await other.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
        )
        if waiting is not None:
            return int(waiting)
        await asyncio.sleep(0.05)
    raise AssertionError("no statement waits for the row")


async def test_no_attempt_is_recorded_for_a_job_another_worker_takes_over_meanwhile(
    pg_ledger: Ledger, pg_url: str
) -> None:
    """Another worker takes over a job (its lease ran out) while the attempt record runs: the
    request is not sent, and no attempt is counted for it."""
    record = await save(pg_ledger)
    await pg_ledger.plan_jobs(record.id, many(1))
    (job,) = (await pg_ledger.claim_jobs(record.id, "w1", 1, LEASE_S)).jobs
    other = await asyncpg.connect(pg_url)
    try:
        # the other worker's claim, not yet committed
        taking = other.transaction()
        await taking.start()
        await other.execute("UPDATE jobs SET lease_owner = 'w2' WHERE id = $1", job.id)
        recording = asyncio.create_task(pg_ledger.record_attempts("w1", None, [job.id]))
        await _waiting_backend(other)
        await taking.commit()
        sent = await asyncio.wait_for(recording, 30)
        assert sent == {}
        assert await other.fetchval("SELECT count(*) FROM attempts WHERE job_id = $1", job.id) == 0
        assert await other.fetchval("SELECT attempts FROM jobs WHERE id = $1", job.id) == 0
    finally:
        await other.close()
