"""One account's cap on images in flight, shared through the ledger by every process (SPEC §11)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pipeline import account_slots
from pipeline.account_slots import SharedSlots
from pipeline.fake_server import FakeServer
from pipeline.ledger.repository import Ledger
from tests.integration.conftest import run, write_manifest

LEASE_S = 1.0


async def test_three_processes_never_hold_more_than_the_cap(ledger: Ledger) -> None:
    """Three processes share a cap of 4 through the ledger: never more than 4 places held at once."""
    account = await ledger.account_id("http://127.0.0.1:1", "KEY", 4)
    slots = [SharedSlots(ledger, account, f"p{n}", 4, lease_s=30) for n in range(3)]
    for s in slots:
        await s.start()
    held: list[int] = []
    most = 0

    async def call(s: SharedSlots, job_id: int, images: int) -> None:
        nonlocal most
        await s.acquire(images, job_id)
        held.extend([job_id] * images)
        most = max(most, len(held))
        await asyncio.sleep(0.005)
        for _ in range(images):
            held.remove(job_id)
        s.release(images, job_id)

    try:
        calls = [call(slots[n % 3], n, 1 + n % 2) for n in range(30)]
        await asyncio.wait_for(asyncio.gather(*calls), 30)
    finally:
        for s in slots:
            await s.close()
    assert most <= 4
    assert most >= 3, "the processes together used the cap"


async def test_spellings_of_one_base_url_share_one_cap(ledger: Ledger) -> None:
    """`https://API.ideogram.ai/`, `https://api.ideogram.ai:443` and `https://api.ideogram.ai`: one cap.

    Before, each spelling was an account of its own, with the whole cap: three
    processes could have three times the cap in flight.
    """
    spellings = ["https://API.ideogram.ai/", "https://api.ideogram.ai:443", "https://api.ideogram.ai"]
    ids = [await ledger.account_id(url, "IDEOGRAM_API_KEY", 2) for url in spellings]
    assert len(set(ids)) == 1
    slots = [SharedSlots(ledger, account, f"p{n}", 2, lease_s=30) for n, account in enumerate(ids)]
    for s in slots:
        await s.start()
    try:
        for n, s in enumerate(slots[:2]):
            await asyncio.wait_for(s.acquire(1, n), 5)
        third = asyncio.create_task(slots[2].acquire(1, 2))
        await asyncio.sleep(0.5)  # a few exchanges: the cap is full, the third call waits
        assert not third.done(), "a third image in flight with a cap of 2"
        slots[0].release(1, 0)
        await asyncio.wait_for(third, 5)
    finally:
        for s in slots:
            await s.close()
    [status] = await ledger.account_statuses()
    assert status.base_url == "https://api.ideogram.ai"


async def test_freed_places_go_to_the_oldest_waiter_whichever_process_it_is(ledger: Ledger) -> None:
    """A process giving a place back hands it to another process's older waiter, not to its own."""
    account = await ledger.account_id("http://127.0.0.1:1", "KEY", 1)
    lease = 60.0
    first = await ledger.exchange_slots(account, "a", want=[(1, 1)], lease_s=lease, now=100.0)
    assert first.granted == {1}
    waits_b = await ledger.exchange_slots(account, "b", want=[(2, 1)], lease_s=lease, now=101.0)
    waits_a = await ledger.exchange_slots(account, "a", want=[(3, 1)], lease_s=lease, now=102.0)
    assert waits_b.granted == waits_a.granted == frozenset()
    # a gives its place back while its own job 3 waits: b's job 2 waited longer, so it gets it
    after = await ledger.exchange_slots(account, "a", give_back=[1], want=[(3, 1)], lease_s=lease, now=103.0)
    assert after.granted == frozenset()
    b_learns = await ledger.exchange_slots(account, "b", want=[(2, 1)], lease_s=lease, now=103.5)
    assert b_learns.granted == {2}
    then_a = await ledger.exchange_slots(account, "b", give_back=[2], lease_s=lease, now=104.0)
    assert then_a.in_use == 1
    a_learns = await ledger.exchange_slots(account, "a", want=[(3, 1)], lease_s=lease, now=104.5)
    assert a_learns.granted == {3}


async def test_the_places_of_a_process_that_stopped_renewing_come_back_after_its_lease(
    ledger: Ledger,
) -> None:
    """A process that dies holding every place: another gets them when the hold's lease runs out."""
    account = await ledger.account_id("http://127.0.0.1:1", "KEY", 2)
    dead = SharedSlots(ledger, account, "dead", 2, lease_s=LEASE_S)
    alive = SharedSlots(ledger, account, "alive", 2, lease_s=LEASE_S)
    await dead.start()
    await alive.start()
    try:
        await dead.acquire(2, 1)
        await dead.close()  # it stops talking to the ledger: no release, no renewal
        got = asyncio.create_task(alive.acquire(1, 2))
        await asyncio.sleep(LEASE_S / 2)
        assert not got.done(), "the places are still held under a running lease"
        await asyncio.wait_for(got, 5 * LEASE_S)
    finally:
        await alive.close()


async def test_a_job_refused_fifty_times_for_the_cap_still_succeeds(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """429s are not attempts: with `retry.attempts: 2`, a job refused 50 times then let through succeeds."""
    fake_server.set_faults(rate_429=1.0, retry_after="none")
    manifest = write_manifest(
        tmp_path, "- op: generate\n  prompt: a patient fox\n", extra="retry:\n  attempts: 2\n"
    )
    task = asyncio.create_task(run(manifest, fake_server, tmp_path))
    await fake_server.state.wait_until(lambda s: s.stats()["by_status"].get("429", 0) >= 50, timeout_s=60)
    fake_server.set_faults(rate_429=0.0)
    code, summary = await asyncio.wait_for(task, 60)
    assert code == 0, summary
    assert summary["jobs"]["succeeded"] == 1
    assert summary["run"]["failed"] == 0
    assert fake_server.state.stats()["billed"] == 1


@pytest.mark.parametrize("scope", ["account", "process"])
async def test_limits_scope_decides_whether_runs_share_the_cap(
    tmp_path: Path, fake_server: FakeServer, scope: str
) -> None:
    """Two runs of concurrency 3 on one ledger: together at most 3 in flight (account), or 6 (process)."""
    fake_server.set_faults(latency_ms=60)
    prompts = ", ".join(f"owl {n}" for n in range(30))
    manifest = write_manifest(
        tmp_path,
        f"- op: generate\n  prompts: [{prompts}]\n",
        extra=f"limits:\n  concurrency: 3\n  scope: {scope}\n",
    )
    results = await asyncio.gather(run(manifest, fake_server, tmp_path), run(manifest, fake_server, tmp_path))
    assert [code for code, _summary in results] == [0, 0]
    most = fake_server.state.stats()["max_inflight_images"]
    assert most <= (3 if scope == "account" else 6)
    assert fake_server.state.stats()["billed"] == 30
    if scope == "process":
        assert most > 3, "two processes of their own cap of 3 had more than 3 in flight together"


async def test_hand_overs_told_together_leave_each_place_with_the_call_that_has_it(ledger: Ledger) -> None:
    """Hand-overs reach the ledger in batches (a chain, and one to a call granted meanwhile).

    Job 1's place went to job 2, then job 2's to job 3 (one hold renamed twice);
    job 10's place went to job 11, which another process's exchange had granted
    a place of its own meanwhile: job 10's place goes back; job 20's went to
    job 21, whose call ended and handed it to job 22, granted meanwhile too.
    The account then counts exactly the calls in flight.
    """
    account = await ledger.account_id("http://127.0.0.1:1", "KEY", 6)
    lease = 60.0
    want = [(1, 1), (10, 1), (11, 1), (20, 1), (22, 1)]
    first = await ledger.exchange_slots(account, "p", want=want, lease_s=lease)
    assert first.granted == {1, 10, 11, 20, 22}
    told = await ledger.exchange_slots(
        account,
        "p",
        handed_over=[(1, 2), (10, 11), (20, 21), (2, 3), (21, 22)],
        holding=[(3, 1), (11, 1), (22, 1)],
        lease_s=lease,
    )
    assert told.in_use == 3, "jobs 3, 11 and 22 are in flight"
    assert await ledger.held_slots(account, "p", [1, 2, 3, 10, 11, 20, 21, 22]) == {3, 11, 22}
    statuses = await ledger.account_statuses()
    assert statuses[0].in_flight == {"p": 3}


async def test_processes_starting_together_share_one_account(ledger_url: str) -> None:
    """Eight processes register the same account at the same moment: one account, none fails."""
    opened = [await Ledger.open(ledger_url) for _ in range(8)]
    try:
        ids = await asyncio.gather(*(led.account_id("http://127.0.0.1:1", "KEY", 4) for led in opened))
        assert len(set(ids)) == 1
        assert len(await opened[0].account_statuses()) == 1
    finally:
        for led in opened:
            await led.close()


class WatchedExchanges:
    """The ledger's slot verbs, counting the exchanges (the heaviest transactions of a run); with
    ``hold`` set, the next exchange is held back until `go` is set (a slow round trip)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.exchanges = 0
        self.hold = False
        self.arrived = asyncio.Event()
        self.go = asyncio.Event()

    async def exchange_slots(self, *args: Any, **kwargs: Any) -> Any:
        self.exchanges += 1
        if self.hold:
            self.hold = False
            self.arrived.set()
            await self.go.wait()
        return await self.ledger.exchange_slots(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ledger, name)


async def test_a_hand_over_to_a_call_outside_the_ledgers_line_is_told_with_the_next_exchange(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process at its ceiling of 1: call 1 ends and hands its place to call 2, which waited
    outside the ledger's line. No exchange is made for that alone (before: one 50 ms later, at
    every hand-over); the ledger hears of it with the next exchange, and once the calls are
    over the account counts none in flight."""
    monkeypatch.setattr(account_slots, "EXCHANGE_EVERY_S", 30.0)  # no periodic exchange meanwhile
    account = await ledger.account_id("http://127.0.0.1:1", "KEY", 1)
    counting = WatchedExchanges(ledger)
    slots = SharedSlots(counting, account, "p", 1, lease_s=30)  # type: ignore[arg-type]
    await slots.start()
    try:
        await asyncio.wait_for(slots.acquire(1, 1), 5)
        second = asyncio.create_task(slots.acquire(1, 2))  # at the ceiling: not in the line
        await asyncio.sleep(0.1)
        before = counting.exchanges
        slots.release(1, 1)
        await asyncio.wait_for(second, 5)
        third = asyncio.create_task(slots.acquire(1, 3))  # wakes the exchange loop
        await asyncio.sleep(0.3)
        assert counting.exchanges == before, "an exchange for a hand-over alone"
        slots.release(1, 2)
        await asyncio.wait_for(third, 5)
        slots.release(1, 3)  # given back: an exchange, the hand-overs told first
        for _ in range(250):
            [status] = await ledger.account_statuses()
            if not status.in_flight:
                break
            await asyncio.sleep(0.02)
    finally:
        await slots.close()
    assert status.in_flight == {}, "every call is over"


async def test_a_call_handed_places_while_its_request_for_them_is_on_the_way_never_runs_twice_on_them(
    ledger: Ledger,
) -> None:
    """Cap 2, another process holding one place. Call J asks the ledger for a place; before the
    answer comes back, call A ends and hands J its place. J then ends and hands that place to K,
    and J's job is tried again: the ledger's place is K's now, so J waits for one of its own
    (before, J took it as its own grant: K, J and the other process's call, 3 in flight)."""
    account = await ledger.account_id("http://127.0.0.1:1", "KEY", 2)
    slow = WatchedExchanges(ledger)
    mine = SharedSlots(slow, account, "p", 2, lease_s=30)  # type: ignore[arg-type]
    other = SharedSlots(ledger, account, "q", 2, lease_s=30)
    await mine.start()
    await other.start()
    try:
        await asyncio.wait_for(other.acquire(1, 100), 5)
        await asyncio.wait_for(mine.acquire(1, 1), 5)  # A
        slow.hold = True
        j = asyncio.create_task(mine.acquire(1, 2))  # J: its request for a place is on the way...
        await asyncio.wait_for(slow.arrived.wait(), 5)
        mine.release(1, 1)  # ...when A ends and hands J its place
        await asyncio.wait_for(j, 5)
        slow.go.set()  # the ledger puts J in line behind the other process (the cap is full)
        for waiting in (1, 0):  # J in line, then out of it as the hand-over reaches the ledger
            for _ in range(200):
                [status] = await ledger.account_statuses()
                if status.waiting == waiting:
                    break
                await asyncio.sleep(0.02)
            assert status.waiting == waiting
        k = asyncio.create_task(mine.acquire(1, 3))  # K waits
        await asyncio.sleep(0)
        mine.release(1, 2)  # J ends: K goes on with its place
        await asyncio.wait_for(k, 5)
        again = asyncio.create_task(mine.acquire(1, 2))  # J's job tried again
        done, _pending = await asyncio.wait({again}, timeout=0.5)
        in_flight = mine.in_use + other.in_use
        assert not done, f"J went again with K and the other process's call in flight: {in_flight} > 2"
        other.release(1, 100)  # a place comes free: J goes
        await asyncio.wait_for(again, 5)
        mine.release(1, 3)
        mine.release(1, 2)
    finally:
        await mine.close()
        await other.close()
