"""Images in flight: the limit holds, waiters are served in order, cancellation gives places back."""

from __future__ import annotations

import asyncio

from pipeline.pacing import ImageSlots


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_never_more_images_in_flight_than_the_limit() -> None:
    slots = ImageSlots(10)
    in_flight = 0
    most = 0

    async def call(images: int) -> None:
        nonlocal in_flight, most
        await slots.acquire(images)
        in_flight += images
        most = max(most, in_flight)
        await asyncio.sleep(0)  # hold the places across a turn of the loop
        in_flight -= images
        slots.release(images)

    await asyncio.gather(*(call(1 + i % 4) for i in range(200)))
    assert most <= 10
    assert slots.peak == most
    assert slots.in_use == 0


async def test_a_large_request_is_not_overtaken_by_small_ones() -> None:
    """A 4-image request waiting at the head gets the next free places, not the 1-image requests behind it."""
    slots = ImageSlots(4)
    await slots.acquire(3)
    order: list[str] = []

    async def call(name: str, images: int) -> None:
        await slots.acquire(images)
        order.append(name)

    big = asyncio.create_task(call("big", 4))
    await settle()
    smalls = [asyncio.create_task(call(f"small{i}", 1)) for i in range(3)]
    await settle()
    assert order == []  # one place is free, but the big request is first in line
    slots.release(3)
    await settle()
    assert order == ["big"]
    slots.release(4)
    await asyncio.gather(big, *smalls)
    assert order == ["big", "small0", "small1", "small2"]


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    slots = ImageSlots(2)
    await slots.acquire(2)
    first = asyncio.create_task(slots.acquire(2))
    second = asyncio.create_task(slots.acquire(1))
    await settle()
    first.cancel()
    await settle()
    slots.release(1)
    await asyncio.wait_for(second, 1)
    assert slots.in_use == 2


async def test_places_granted_to_a_task_cancelled_before_it_ran_are_given_back() -> None:
    slots = ImageSlots(1)
    await slots.acquire(1)
    waiter = asyncio.create_task(slots.acquire(1))
    await settle()
    slots.release(1)  # hands the place to the waiter...
    waiter.cancel()  # ...which is cancelled before it resumes
    await settle()
    assert waiter.cancelled()
    assert slots.in_use == 0
    await asyncio.wait_for(slots.acquire(1), 1)


async def test_a_429_sets_the_limit_to_what_was_in_flight_and_it_creeps_back() -> None:
    """A 429 with 6 images in flight (2 the refused call's): the cap is 4; then +1 per 2×limit calls."""
    slots = ImageSlots(8)
    for _ in range(3):
        await slots.acquire(2)
    slots.on_rate_limited(2)
    assert slots.limit == 4
    slots.release(2)
    slots.on_rate_limited(2)  # another refusal with fewer in flight lowers it only to what it sees
    assert slots.limit == 2
    successes = 0
    while slots.limit == 2:
        slots.on_success()
        successes += 1
    assert slots.limit == 3
    assert 4 <= successes <= 6  # about twice the limit's worth of calls per place
    for _ in range(100):
        slots.on_success()
    assert slots.limit == 8


async def test_cancelling_every_job_at_once_raises_only_cancellation() -> None:
    """A second Ctrl-C cancels all jobs: holders release while waiters unwind; nothing else is raised."""
    slots = ImageSlots(5)

    async def job() -> None:
        await slots.acquire(1)
        try:
            await asyncio.Event().wait()  # holds its place until cancelled
        finally:
            slots.release(1)

    tasks = [asyncio.create_task(job()) for _ in range(25)]
    await settle()
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results
    assert slots.in_use == 0
    await asyncio.wait_for(slots.acquire(5), 1)
