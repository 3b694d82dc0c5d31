"""The account cap when processes disagree on it, and places held through a ledger outage (SPEC §11)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pipeline.account_slots import SharedSlots
from pipeline.ledger.accounts import AccountStatus
from pipeline.ledger.repository import Ledger


async def account_becomes(ledger: Ledger, wanted: Callable[[AccountStatus], bool]) -> None:
    """Wait until the ledger's view of its one account satisfies ``wanted`` (10 s at most)."""
    async with asyncio.timeout(10):
        while True:
            (status,) = await ledger.account_statuses()
            if wanted(status):
                return
            await asyncio.sleep(0.02)


async def test_a_process_never_has_more_in_flight_than_its_own_concurrency(ledger: Ledger) -> None:
    """A process of concurrency 2 keeps at most 2 images in flight, whatever cap a later process wrote.

    `ideobatch run a.yaml` (concurrency 2) and, while it runs, `ideobatch run b.yaml`
    (concurrency 8, same base_url and key variable): b's `account_id` rewrites the
    account's cap to 8, and a alone then holds 4 places (its claim room, 2 x 2).
    """
    account = await ledger.account_id("http://127.0.0.1:1", "KEY", 2)
    small = SharedSlots(ledger, account, "a", 2, lease_s=30)
    await small.start()
    try:
        await ledger.account_id("http://127.0.0.1:1", "KEY", 8)  # another process starts
        held = 0
        most = 0
        gate = asyncio.Event()

        async def call(job_id: int) -> None:
            nonlocal held, most
            await small.acquire(1, job_id)
            held += 1
            most = max(most, held)
            await gate.wait()
            held -= 1
            small.release(1, job_id)

        calls = [asyncio.create_task(call(n)) for n in range(4)]  # the loop claims 2 x concurrency
        # the ledger has granted the process its places (all four at once, were it asked for them)
        await account_becomes(ledger, lambda a: a.in_flight.get("a", 0) >= 2)
        (status,) = await ledger.account_statuses()
        assert status.in_flight["a"] == 2, status
        gate.set()
        await asyncio.wait_for(asyncio.gather(*calls), 30)
    finally:
        await small.close()
    assert most <= 2, f"a process of concurrency 2 had {most} images in flight"


async def test_places_in_use_by_a_live_process_are_counted_again_once_it_renews(ledger: Ledger) -> None:
    """A live process whose holds ran out (a ledger outage longer than the lease) must not lose them.

    Its calls still run; once the ledger answers and it renews, the account must count
    them again, or another process is granted the same places: 2x the cap in flight.
    (`ideobatch worker --lease 4` x2 against PostgreSQL through a relay cut for 7 s,
    calls of 2.5 s: the fake server saw 8 images in flight with a cap of 4.)
    """
    account = await ledger.account_id("http://127.0.0.1:1", "KEY", 2)
    a = SharedSlots(ledger, account, "a", 2, lease_s=0.5)
    b = SharedSlots(ledger, account, "b", 2, lease_s=30)
    await a.start()
    await b.start()
    try:
        await a.acquire(1, 1)
        await a.acquire(1, 2)
        third = asyncio.create_task(a.acquire(1, 3))  # waits: the cap is full
        # the ledger is away: a cannot renew, its holds run out
        await account_becomes(ledger, lambda s: not s.in_flight.get("a"))
        a.release(1, 1)  # job 1's call ends: its place goes to job 3, which is sent
        await asyncio.wait_for(third, 5)
        # a's next exchange holds its calls in flight again
        await account_becomes(ledger, lambda s: s.in_flight.get("a") == 2)
        await ledger.renew_leases("a", 30)  # the ledger is back: a renews
        assert a.in_use == 2, "jobs 2 and 3 are in flight"
        granted = asyncio.create_task(b.acquire(2, 10))
        # the ledger has answered b: it waits in line (or, the bug, was granted a's places)
        async with asyncio.timeout(10):
            while not granted.done():
                if (await ledger.account_statuses())[0].waiting:
                    break
                await asyncio.sleep(0.02)
        exceeded = granted.done()
        granted.cancel()
    finally:
        await a.close()
        await b.close()
    assert not exceeded, "b was granted 2 places while a still had 2 calls in flight: 4 with a cap of 2"
