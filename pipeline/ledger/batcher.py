"""Group commit: many jobs' write-backs in one ledger transaction.

Each job awaits its own write (so nothing is assumed recorded before it is),
but writes that arrive while a transaction is running are committed together
in the next one. At high rates this turns thousands of tiny transactions a
second into a few dozen, without adding latency when the rate is low.

"Attempt sent" records are what a request waits for before it leaves, so
they have a committer of their own: they never wait behind a batch of
completions being written, only for the transaction that is running (any
kind: SQLite has one writer) and then their group's, which goes before every
other write of this process that waits (`pipeline.ledger.gate`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from pipeline.errors import LeaseLost, LedgerError
from pipeline.leases import DEFAULT_LEASE_S
from pipeline.ledger.records import Completion, Outcome, Response
from pipeline.ledger.repository import Ledger
from pipeline.results import DownloadOutcome

log = logging.getLogger("ideobatch")

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Queue(Generic[Item, Result]):
    """Pending writes of one kind and the futures waiting on them."""

    def __init__(
        self,
        name: str,
        flush: Callable[[list[Item]], Awaitable[dict[int, Result]]],
        key: Callable[[Item], int],
    ) -> None:
        self.name = name
        self._flush = flush
        self._key = key
        self.items: list[tuple[Item, asyncio.Future[Result]]] = []

    def add(self, item: Item) -> asyncio.Future[Result]:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.items.append((item, future))
        return future

    async def flush(self) -> None:
        batch, self.items = self.items, []
        if batch:
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        """Commit ``batch`` in one transaction; if the ledger refuses it, each write on its own.

        One write the database refuses (a value it cannot store, say) must not
        take the others of its batch down with it: they are committed one by
        one, and only the refused one fails (with a `LedgerError`, which stops
        the run and keeps a paid answer on disk). A ledger that is away
        (`LedgerError` from the verb) fails the whole batch and ends the writer.
        """
        try:
            results = await self._flush([item for item, _ in batch])
        except LedgerError as exc:
            _fail(batch, exc)
            raise
        except Exception as exc:
            if len(batch) > 1:
                for single in batch:
                    await self._commit([single])
                return
            log.error("the ledger refused the %s write of job %s: %s", self.name, self._key(batch[0][0]), exc)
            refused = LedgerError(
                f"the ledger refused to record job {self._key(batch[0][0])} ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); please report this"
            )
            _fail(batch, refused)
            return
        except BaseException as exc:
            # the writer cancelled mid-write (the other committer failed): its waiters learn that
            # their write did not happen, as a LedgerError, never as a cancellation of their own
            _fail(batch, LedgerError(f"the ledger writer stopped during a write: {type(exc).__name__}"))
            raise
        for item, future in batch:
            if future.done():
                continue
            job_id = self._key(item)
            if job_id in results:
                future.set_result(results[job_id])
            else:
                future.set_exception(LeaseLost(f"job {job_id}: its lease was taken by another worker"))


def _fail(batch: Sequence[tuple[Any, asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


class WriteBatcher:
    """Coalesces a worker's ledger writes; one background task commits them."""

    def __init__(
        self, ledger: Ledger, owner: str, run_id: int | None, *, lease_s: float = DEFAULT_LEASE_S
    ) -> None:
        self._ledger = ledger
        self._owner = owner
        self._run_id = run_id
        self._lease_s = lease_s
        self._wake = asyncio.Event()
        self._attempts_wake = asyncio.Event()
        self._closed = False
        self._attempts: _Queue[int, int] = _Queue("attempts", self._write_attempts, lambda i: i)
        self._responses: _Queue[Response, int | None] = _Queue(
            "responses", self._write_responses, lambda r: r.job_id
        )
        self._completions: _Queue[Completion, bool] = _Queue(
            "completions", self._write_completions, lambda c: c.job_id
        )
        self._retries: _Queue[Outcome, bool] = _Queue("retries", self._write_retries, lambda o: o.job_id)
        self._failures: _Queue[Outcome, bool] = _Queue("failures", self._write_failures, lambda o: o.job_id)
        self._queues: Sequence[_Queue[Any, Any]] = (
            self._attempts,
            self._responses,
            self._completions,
            self._retries,
            self._failures,
        )
        self.transactions = 0
        #: why the writer stopped early (the ledger went away): every later write fails with it
        self._broken: LedgerError | None = None

    async def _enqueue(self, queue: _Queue[Item, Result], item: Item) -> Result:
        if self._broken is not None:
            raise LedgerError(str(self._broken))
        if self._closed:
            raise RuntimeError("the ledger writer is closed")
        future = queue.add(item)
        (self._attempts_wake if queue is self._attempts else self._wake).set()
        return await future

    async def attempt_sent(self, job_id: int) -> int:
        """Record that a request for ``job_id`` is being sent; returns the attempt id."""
        return await self._enqueue(self._attempts, job_id)

    async def response(self, response: Response) -> int | None:
        """Record a paid response before its images are downloaded.

        None: the answer is the job's; a number: it was recorded as an extra
        answer (the job's lease had passed to another worker), its images
        numbered from there (`pipeline.ledger.late_answers`).
        """
        return await self._enqueue(self._responses, response)

    async def extra_downloads(self, job_id: int, downloads: Sequence[DownloadOutcome]) -> None:
        """Record the downloads of an extra answer (rare: not batched)."""
        if self._broken is not None:
            raise LedgerError(str(self._broken))
        await self._ledger.record_downloads(job_id, downloads)

    async def complete(self, completion: Completion) -> None:
        """Finish a job."""
        await self._enqueue(self._completions, completion)

    async def settle(self, outcome: Outcome, *, final: bool) -> None:
        """Reschedule (``final=False``) or fail a job after an unsuccessful attempt."""
        await self._enqueue(self._failures if final else self._retries, outcome)

    async def run(self) -> None:
        """Commit queued writes until closed; a database error ends the task (and the run).

        When it ends early, every write still queued, and every later one,
        fails with a `LedgerError`, so that no job waits for a writer that is gone.
        """
        try:
            await self._commit_both()
        except BaseException as exc:
            self._broken = (
                exc if isinstance(exc, LedgerError) else LedgerError(f"the ledger writer stopped: {exc}")
            )
            for queue in self._queues:
                batch, queue.items = queue.items, []
                _fail(batch, LedgerError(str(self._broken)))
            raise

    async def _commit_both(self) -> None:
        """The attempts' committer and the other writes' committer, until both end (or one fails)."""
        committers = [
            asyncio.create_task(self._commit_until_closed([self._attempts], self._attempts_wake)),
            asyncio.create_task(self._commit_until_closed(self._queues[1:], self._wake)),
        ]
        try:
            done, _pending = await asyncio.wait(committers, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
        finally:
            for task in committers:
                task.cancel()
            await asyncio.gather(*committers, return_exceptions=True)

    async def _commit_until_closed(self, queues: Sequence[_Queue[Any, Any]], wake: asyncio.Event) -> None:
        """Commit what ``queues`` hold, one queue's writes per transaction, taking turns."""
        turn = 0
        while True:
            await wake.wait()
            wake.clear()
            while any(q.items for q in queues):
                pending = [q for q in queues if q.items]
                queue = pending[turn % len(pending)]
                turn += 1
                self.transactions += 1
                await queue.flush()
            if self._closed:
                return

    async def close(self) -> None:
        """Stop accepting writes; `run` returns once what is queued is committed."""
        self._closed = True
        self._wake.set()
        self._attempts_wake.set()

    async def _write_attempts(self, job_ids: list[int]) -> dict[int, int]:
        return await self._ledger.record_attempts(self._owner, self._run_id, job_ids)

    async def _write_responses(self, responses: list[Response]) -> dict[int, int | None]:
        return await self._ledger.record_responses(self._owner, responses, self._lease_s)

    async def _write_completions(self, completions: list[Completion]) -> dict[int, bool]:
        return dict.fromkeys(await self._ledger.complete_jobs(self._owner, completions), True)

    async def _write_retries(self, outcomes: list[Outcome]) -> dict[int, bool]:
        return dict.fromkeys(await self._ledger.settle_attempts(self._owner, outcomes, final=False), True)

    async def _write_failures(self, outcomes: list[Outcome]) -> dict[int, bool]:
        return dict.fromkeys(await self._ledger.settle_attempts(self._owner, outcomes, final=True), True)
