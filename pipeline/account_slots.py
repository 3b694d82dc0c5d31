"""A provider account's places in flight, taken from the ledger: one cap for every process (SPEC §11).

`SharedSlots` has the interface of `pipeline.pacing.ImageSlots`, but the
places live in the ledger (`pipeline.ledger.accounts`), so that every
process working on one ledger with the same provider base URL and key
variable together keeps under ``limits.concurrency``. One background task
does the ledger work: it gives back the places of calls that ended and asks
for places for calls that wait, many of each in one transaction (at most one
ledger round trip per call); while calls wait it asks again, sooner after a
grant and less often while nothing moves, to learn of places another
process handed them. A call that ends while another call of this process
waits, and no other process's call has waited longer (as of the last
exchange), hands its places straight over: the waiting call goes at once,
and the ledger learns of the hand-over with the next exchange.

The cap is also learned (AIMD that settles at the provider's real cap): a
429 for the in-flight limit sets the account's learned cap to the places
that were in flight then, shared through the ledger; every twice-the-cap
successful calls probe one place higher, until the configured cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from pipeline.errors import LedgerError

log = logging.getLogger("ideobatch")

#: how often a process with waiting calls looks for places another process handed them (a read);
#: less often when the ledger tells it of grants (PostgreSQL's NOTIFY)
POLL_S = 0.02
POLL_LISTENING_S = 0.2
#: how often, while calls wait, it runs a full exchange anyway (which drops dead processes' holds)
EXCHANGE_EVERY_S = 1.0
#: a call that ends hands its places to our own oldest waiting call unless another process's
#: call has waited this much longer: first come, first served to within a fraction of a call
#: (handing each place to another process costs a ledger round trip and a wake-up)
FAIRNESS_SLACK_S = 0.25
#: successful calls, in multiples of the limit, between two probes of one place more
PROBE_EVERY = 2
#: a hand-over alone changes no count the ledger keeps (the places stay this process's, in use):
#: the ledger learns of it with the next exchange, at the latest this long after it when the call
#: it went to was in the ledger's line (so that no other process's places are handed to that call
#: meanwhile), else with whatever exchange comes next (at least every `EXCHANGE_EVERY_S`)
HAND_OVER_TOLD_WITHIN_S = 0.05


class Exchange(Protocol):
    """What an exchange with the ledger gave (`pipeline.ledger.accounts.SlotExchange`)."""

    @property
    def granted(self) -> frozenset[int]:
        """Jobs of ours that hold places now."""
        ...

    @property
    def limit(self) -> int:
        """The account's limit now."""
        ...

    @property
    def in_use(self) -> int:
        """The account's places in use after the exchange."""
        ...

    @property
    def oldest_other_since(self) -> float | None:
        """When another process's oldest waiting call began waiting."""
        ...


class SlotLedger(Protocol):
    """The ledger verbs of an account's places (`pipeline.ledger.accounts.Accounts`)."""

    async def exchange_slots(
        self,
        account_id: int,
        owner: str,
        *,
        give_back: list[int],
        want: list[tuple[int, int]],
        handed_over: list[tuple[int, int]],
        holding: list[tuple[int, int]],
        refused: bool,
        lease_s: float,
    ) -> Exchange:
        """Give back places, ask for others (and learn the cap after a refusal)."""
        ...

    async def probe_cap(self, account_id: int) -> int | None:
        """Raise the learned cap by one."""
        ...

    async def held_slots(self, account_id: int, owner: str, job_ids: list[int]) -> frozenset[int]:
        """Which of ``job_ids`` hold places (a read)."""
        ...

    async def listen_for_grants(self, account_id: int, owner: str, wake: Callable[[], None]) -> Listening:
        """Call ``wake`` when another process grants ``owner`` places."""
        ...


class Listening(Protocol):
    """A subscription to grants (`pipeline.ledger.listening.Listener`)."""

    @property
    def listening(self) -> bool:
        """Whether notifications arrive."""
        ...

    async def close(self) -> None:
        """Stop listening."""
        ...


class SharedSlots:
    """Places in flight of one provider account, held in the ledger (see the module docstring)."""

    def __init__(
        self, ledger: SlotLedger, account_id: int, owner: str, ceiling: int, *, lease_s: float
    ) -> None:
        self._ledger = ledger
        self.account_id = account_id
        self.owner = owner
        self.ceiling = max(1, ceiling)
        self.lease_s = lease_s
        #: this process's places in use, and the most it held at once
        self.in_use = 0
        self.peak = 0
        self.limit = self.ceiling
        self._waiting: dict[int, tuple[int, asyncio.Future[None], float]] = {}
        #: waiting calls the ledger has in its line already
        self._asked: set[int] = set()
        self._last_exchange = 0.0
        self._give_back: list[int] = []
        self._handed_over: list[tuple[int, int]] = []
        #: when the oldest hand-over to a call in the ledger's line, not told yet, was made
        #: (monotonic; None: there is none)
        self._handed_since: float | None = None
        #: when another process's oldest waiting call began waiting (last exchange); None: none waits
        self._oldest_other: float | None = None
        #: the account's places in use at the last exchange (every process's)
        self._account_in_use = 0
        #: the call being released was just refused: its places go back, never on
        self._refusing = False
        self._held: dict[int, int] = {}
        self._refused = False
        self._successes = 0
        self._probe = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: Listening | None = None
        #: the ledger said another process granted us places
        self._notified = False
        self._failure: LedgerError | None = None

    async def start(self) -> None:
        """Start the task that talks to the ledger (and listen for grants where the ledger can tell)."""
        if self._task is None:
            self._listener = await self._ledger.listen_for_grants(self.account_id, self.owner, self._granted)
            self._task = asyncio.create_task(self._exchange_loop(), name=f"slots-{self.account_id}")

    def _granted(self) -> None:
        self._notified = True
        self._wake.set()

    async def close(self) -> None:
        """Stop (the ledger drops what is held when the run releases its jobs)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, LedgerError):
                await self._task
            self._task = None
        if self._listener is not None:
            await self._listener.close()
            self._listener = None

    async def acquire(self, images: int, job_id: int | None = None) -> None:
        """Wait until the account has ``images`` places for ``job_id`` (and earlier callers are served)."""
        if self._failure is not None:
            raise LedgerError(str(self._failure))
        assert job_id is not None, "places in the ledger are held per job"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[job_id] = (images, future, time.time())
        self._wake.set()
        try:
            await future
        except asyncio.CancelledError:
            self._waiting.pop(job_id, None)
            self._asked.discard(job_id)
            if future.done() and not future.cancelled():
                self.release(images, job_id)  # granted, but cancelled before it could be used
            else:
                self._give_back.append(job_id)  # leave the line
                self._wake.set()
            raise

    def _take(self, job_id: int, images: int) -> None:
        """``job_id`` holds its places from now (counted at the grant, before its call resumes)."""
        self._held[job_id] = images
        self.in_use += images
        self.peak = max(self.peak, self.in_use)

    def release(self, images: int, job_id: int | None = None) -> None:
        """The call of ``job_id`` ended: its places go to a waiting call of ours, or back to the account."""
        assert job_id is not None, "places in the ledger are held per job"
        if self._held.pop(job_id, None) is not None:
            self.in_use -= images
        refused, self._refusing = self._refusing, False
        # a refused call's places, or any while the account is over its (learned) limit, go back
        over = self._account_in_use > self.limit
        successor = None if refused or over else self._successor(images)
        if successor is not None:
            _images, future, _since = self._waiting.pop(successor)
            if successor in self._asked and self._handed_since is None:
                self._handed_since = time.monotonic()
            self._asked.discard(successor)
            self._take(successor, images)
            future.set_result(None)
            self._handed_over.append((job_id, successor))
            return  # told with the next exchange (`HAND_OVER_TOLD_WITHIN_S`)
        self._give_back.append(job_id)
        self._wake.set()

    def _successor(self, images: int) -> int | None:
        """Our oldest waiting call of ``images`` places, if no other process's call waited longer."""
        for job_id, (wanted, future, since) in self._waiting.items():
            if future.done():
                continue
            if self._oldest_other is not None and self._oldest_other < since - FAIRNESS_SLACK_S:
                return None
            return job_id if wanted == images else None
        return None

    def on_success(self) -> None:
        """A call went through: after enough of them, probe one place above the learned cap."""
        if self.limit >= self.ceiling:
            return
        self._successes += 1
        if self._successes >= PROBE_EVERY * self.limit:
            self._successes = 0
            self._probe = True
            self._wake.set()

    def on_rate_limited(self, images: int = 1) -> None:
        """The provider refused a call for its in-flight limit: learn the cap as it gives places back."""
        self._refused = True
        self._refusing = True
        self._successes = 0
        self._wake.set()

    async def _exchange_loop(self) -> None:
        while True:
            if not self._changes() and not self._notified:
                listening = self._listener is not None and self._listener.listening
                # only calls in the ledger's line can be handed places by another process
                poll = (POLL_LISTENING_S if listening else POLL_S) if self._asked else None
                if poll is None and self._held:
                    poll = EXCHANGE_EVERY_S  # calls in flight: tell the ledger they still are
                if self._handed_since is not None:
                    due = max(0.0, self._handed_since + HAND_OVER_TOLD_WITHIN_S - time.monotonic())
                    poll = due if poll is None else min(poll, due)
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
                # comes as the wake-up does (`close` then waited for this task for ever)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll):
                        await self._wake.wait()
            self._notified = False
            self._wake.clear()
            try:
                if self._changes() or time.monotonic() - self._last_exchange >= EXCHANGE_EVERY_S:
                    await self._exchange()
                elif self._asked:
                    await self._look_for_grants()
            except LedgerError as exc:
                # the run stops (the executor's call sees it); waiting calls fail with it
                self._failure = exc
                for _images, future, _since in self._waiting.values():
                    if not future.done():
                        future.set_exception(LedgerError(str(exc)))
                self._waiting.clear()
                raise

    def _changes(self) -> bool:
        """Something the ledger must be told now: places given back, a refusal, new waits, or
        hand-overs made `HAND_OVER_TOLD_WITHIN_S` ago."""
        return bool(
            self._give_back
            or (
                self._handed_since is not None
                and time.monotonic() - self._handed_since >= HAND_OVER_TOLD_WITHIN_S
            )
            or self._refused
            or self._probe
            or any(job_id not in self._asked for job_id, _images in self._wanted())
        )

    def _wanted(self) -> list[tuple[int, int]]:
        """The waiting calls the ledger may hand places to: those in line already, then new ones
        while this process's places held and asked for stay within its own ``concurrency``
        (another process may have written a larger cap for the account: never more than ours)."""
        asked = [(job_id, self._waiting[job_id][0]) for job_id in self._waiting if job_id in self._asked]
        room = self.ceiling - self.in_use - sum(images for _job_id, images in asked)
        wanted = list(asked)
        for job_id, (images, future, _since) in self._waiting.items():
            if job_id in self._asked or future.done():
                continue
            # a call larger than the ceiling goes alone rather than never
            if images > room and (self.in_use or wanted):
                break
            wanted.append((job_id, images))
            room -= images
        return wanted

    async def _look_for_grants(self) -> None:
        """Learn of places another process's exchange handed our waiting calls (a read, no lock)."""
        granted = await self._ledger.held_slots(self.account_id, self.owner, list(self._asked))
        self._grant(granted)

    def _grant(self, granted: frozenset[int]) -> int:
        count = 0
        # in the order the calls asked (dicts keep insertion order)
        for job_id in [job_id for job_id in self._waiting if job_id in granted]:
            images, future, _since = self._waiting.pop(job_id)
            self._asked.discard(job_id)
            if not future.done():
                self._take(job_id, images)
                future.set_result(None)
                count += 1
        return count

    async def _exchange(self) -> int:
        """One round with the ledger; returns how many waiting calls were granted."""
        if self._probe:
            self._probe = False
            learned = await self._ledger.probe_cap(self.account_id)
            self.limit = self.ceiling if learned is None else learned
        give_back, self._give_back = self._give_back, []
        handed_over, self._handed_over, self._handed_since = self._handed_over, [], None
        refused, self._refused = self._refused, False
        want = self._wanted()
        #: the calls asked for, as they wait now (one may be handed places, end, and wait again
        #: before the ledger answers: that call is not in its line)
        asking = {job_id: self._waiting[job_id][1] for job_id, _images in want}
        holding = list(self._held.items())
        if not give_back and not want and not refused and not handed_over and not holding:
            return 0
        self._last_exchange = time.monotonic()
        exchange = await self._ledger.exchange_slots(
            self.account_id,
            self.owner,
            give_back=give_back,
            want=want,
            handed_over=handed_over,
            holding=holding,
            refused=refused,
            lease_s=self.lease_s,
        )
        # only calls that still wait are in the line: a call handed places meanwhile is not (else,
        # tried again, it would take the hold of the call it handed them on to as a grant of its own)
        self._asked.update(
            job_id
            for job_id, future in asking.items()
            if job_id in self._waiting and self._waiting[job_id][1] is future
        )
        self._oldest_other = exchange.oldest_other_since
        self._account_in_use = exchange.in_use
        if refused and exchange.limit < self.limit:
            log.info("the provider's in-flight cap looks like %d image(s): keeping under it", exchange.limit)
        self.limit = exchange.limit
        return self._grant(exchange.granted)
