"""How fast to send: images in flight (with AIMD on 429) and an optional request rate.

Ideogram counts its in-flight limit in images: a request for 4 images takes
4 places. `ImageSlots` admits a request only when its images fit under the
current limit. A 429 for the in-flight limit says the provider's real cap
is what was in flight then (the other calls' images): the limit drops to
that at once, rather than halving, and then probes one place higher every
twice-the-limit successful calls, up to the configured ceiling — so a
ceiling set above the real cap settles at the real cap and costs few extra
requests. These are the places of one process (`limits.scope: process`);
`pipeline.account_slots` keeps them in the ledger for every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Protocol

#: successful calls, in multiples of the limit, between two probes of one place more
PROBE_EVERY = 2


class Slots(Protocol):
    """Places in flight for calls (`ImageSlots` in one process, `SharedSlots` through the ledger)."""

    ceiling: int
    peak: int

    async def acquire(self, images: int, job_id: int | None = None) -> None:
        """Wait for ``images`` places (for the call of ``job_id``)."""
        ...

    def release(self, images: int, job_id: int | None = None) -> None:
        """Give the places of a call back."""
        ...

    def on_success(self) -> None:
        """A call went through."""
        ...

    def on_rate_limited(self, images: int = 1) -> None:
        """A call of ``images`` (still holding its places) was refused for the provider's in-flight limit."""
        ...


class ImageSlots:
    """A counting limiter in images with an adaptive ceiling; waiters are served in order.

    A release hands the freed places straight to the waiters at the head of
    the queue (no barging, no herd of woken tasks re-checking a condition), so
    its cost does not grow with the number of jobs waiting.
    """

    def __init__(self, ceiling: int) -> None:
        self.ceiling = max(1, ceiling)
        self._limit = float(self.ceiling)
        self.in_use = 0
        self.peak = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def limit(self) -> int:
        """The current limit in images (between 1 and the ceiling)."""
        return max(1, int(self._limit))

    def _fits(self, images: int) -> bool:
        # a request larger than the limit goes alone rather than never
        return self.in_use + images <= self.limit or self.in_use == 0

    def _take(self, images: int) -> None:
        self.in_use += images
        self.peak = max(self.peak, self.in_use)

    async def acquire(self, images: int, job_id: int | None = None) -> None:
        """Wait until ``images`` places are free (and every earlier waiter is served), then take them.

        ``job_id`` is not needed here (the ledger's shared places are per job).
        """
        if not self._waiters and self._fits(images):
            self._take(images)
            return
        entry = (images, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            if entry[1].done() and not entry[1].cancelled():
                self.release(images)  # granted, but cancelled before it could be used
            else:
                # a release may already have dropped this cancelled entry from the head
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                self._serve()
            raise

    def release(self, images: int, job_id: int | None = None) -> None:
        """Give places back; they go to the waiters at the head of the queue."""
        self.in_use -= images
        self._serve()

    def _serve(self) -> None:
        while self._waiters:
            images, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            if not self._fits(images):
                return
            self._waiters.popleft()
            self._take(images)
            future.set_result(None)

    def on_rate_limited(self, images: int = 1) -> None:
        """A call of ``images`` (still holding its places) was refused for the in-flight limit.

        The other calls in flight are what the provider let through: the limit
        becomes that (never more than it was, never below one). The call gives
        its places back right after, so a burst of refusals walks the limit
        down to the calls that really got through.
        """
        self._limit = max(1.0, min(self._limit, float(self.in_use - images)))

    def on_success(self) -> None:
        """A call went through: creep back towards the ceiling (+1 per twice the limit's calls)."""
        if self._limit < self.ceiling:
            self._limit = min(float(self.ceiling), self._limit + 1.0 / (PROBE_EVERY * self._limit))
            self._serve()


class TokenBucket:
    """At most ``per_minute`` requests a minute, with a burst of one second's worth."""

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        """Wait for a token."""
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)
