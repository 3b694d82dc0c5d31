"""Attempt records go first: a request never waits behind other writes of its process.

A request leaves only once its "attempt sent" record is committed (SIGKILL
safety). Claims, the account's places and completions are written by the
same process on one SQLite file, one transaction at a time; these tests
pin that an attempt record waits only for the transaction running, never
for a queue of others, and never for a batch of completions being written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

from pipeline.ledger.batcher import WriteBatcher
from pipeline.ledger.gate import WriteGate
from pipeline.ledger.records import Completion
from pipeline.ledger.repository import Ledger


async def test_an_urgent_transaction_goes_before_ordinary_ones_waiting() -> None:
    gate = WriteGate()
    order: list[str] = []

    async def write(name: str, *, urgent: bool = False) -> None:
        async with gate.held(urgent=urgent):
            order.append(name)
            await asyncio.sleep(0)

    async with gate.held():  # a transaction running
        tasks = [asyncio.create_task(write("claim")), asyncio.create_task(write("places"))]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(write("attempt", urgent=True)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == ["attempt", "claim", "places"]


async def test_a_waiter_cancelled_in_line_or_as_it_gets_its_turn_does_not_block_the_gate() -> None:
    gate = WriteGate()
    done: list[str] = []

    async def write(name: str) -> None:
        async with gate.held():
            done.append(name)

    async with gate.held():
        first = asyncio.create_task(write("cancelled in line"))
        second = asyncio.create_task(write("next"))
        await asyncio.sleep(0)
        first.cancel()
    await asyncio.wait_for(second, 5)
    assert done == ["next"]
    async with gate.held():  # open again
        pass


class _SlowCompletions:
    """A ledger whose completions transaction runs until told to end."""

    def __init__(self) -> None:
        self.completing = asyncio.Event()
        self.finish = asyncio.Event()
        self.attempt_batches: list[list[int]] = []

    async def record_attempts(self, owner: str, run_id: int | None, job_ids: Sequence[int]) -> dict[int, int]:
        self.attempt_batches.append(list(job_ids))
        return {job_id: 100 + job_id for job_id in job_ids}

    async def complete_jobs(self, owner: str, completions: Sequence[Completion]) -> set[int]:
        self.completing.set()
        await self.finish.wait()
        return {c.job_id for c in completions}


async def test_an_attempt_record_does_not_wait_for_a_batch_of_completions_being_written() -> None:
    ledger = _SlowCompletions()
    batcher = WriteBatcher(cast(Ledger, ledger), "owner", None)
    writer = asyncio.create_task(batcher.run())
    try:
        completing = asyncio.create_task(batcher.complete(Completion(1, [], None, [], None, None)))
        await ledger.completing.wait()  # the completions' transaction is running
        attempts = await asyncio.wait_for(
            asyncio.gather(*(batcher.attempt_sent(job_id) for job_id in (2, 3, 4))), 5
        )
        assert attempts == [102, 103, 104]
        assert ledger.attempt_batches == [[2, 3, 4]], "the three records share one transaction"
        assert not completing.done()
        ledger.finish.set()
        await completing
    finally:
        await batcher.close()
        await asyncio.wait_for(writer, 5)
