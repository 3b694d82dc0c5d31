"""Retry decisions, built on tenacity in this one module (stamina-style).

One `RetryPolicy` per run answers two questions: after a failed API attempt,
wait how long before the next one (or give up)?; and how to retry a download
in place. Only the error classes that say "transient" are retried — never a
bare Exception. The wait is exponential with jitter, capped, and a server's
``Retry-After`` is a floor on it. API retries are scheduled in the ledger
(`next_attempt_at`) so a waiting job holds no slot; downloads are retried in
place because they cost nothing.

Tests (and benchmarks) can shrink every wait with `set_wait_scale(0)` or the
environment variable ``IDEOBATCH_TESTING_WAIT_SCALE`` (except the ledger's:
`until_available` waits for a server that is really away, so its waits stay real).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    Future,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from pipeline.errors import DownloadRetryable, TransientError

T = TypeVar("T")

#: download attempts before an image is recorded as failed
DOWNLOAD_ATTEMPTS = 5
#: longest a server's Retry-After is honoured (a bogus header must not park a job for days)
MAX_RETRY_AFTER_S = 3600.0

#: first and longest wait between tries of a ledger that does not answer
LEDGER_FIRST_WAIT_S = 0.25
LEDGER_MAX_WAIT_S = 5.0

_wait_scale = float(os.environ.get("IDEOBATCH_TESTING_WAIT_SCALE", "1"))


def set_wait_scale(scale: float) -> None:
    """Multiply every retry wait by ``scale`` (0 in tests: retry at once)."""
    global _wait_scale
    _wait_scale = scale


class _wait_with_retry_after(wait_base):
    """Exponential backoff with jitter, floored by the error's ``retry_after``."""

    def __init__(self, backoff: wait_base) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = float(self.backoff(retry_state))
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        floor = getattr(error, "retry_after", None)
        if isinstance(floor, (int, float)) and floor > 0:
            wait = max(wait, min(float(floor), MAX_RETRY_AFTER_S))
        return wait * _wait_scale


class RetryPolicy:
    """When to try an API call or a download again, and after how long."""

    def __init__(self, attempts: int, initial_s: float, max_s: float) -> None:
        self.attempts = attempts
        backoff = wait_exponential_jitter(multiplier=initial_s, max=max_s, jitter=initial_s)
        self._api = AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(attempts),
            wait=_wait_with_retry_after(backoff),
        )
        self._download_backoff = wait_exponential_jitter(multiplier=0.5, max=10, jitter=0.5)

    def next_delay(self, error: TransientError, attempt_number: int) -> float | None:
        """Seconds to wait before attempt ``attempt_number + 1``, or None to give up."""
        state = _failed_state(self._api, error, attempt_number)
        if not self._api.retry(state) or self._api.stop(state):
            return None
        return float(self._api.wait(state))

    def wait_after(self, error: TransientError, attempt_number: int) -> float:
        """Seconds to wait after ``error`` whatever the attempts (a call refused unbilled, a 429)."""
        return float(self._api.wait(_failed_state(self._api, error, max(1, attempt_number))))

    async def download(self, fetch: Callable[[], Awaitable[T]]) -> T:
        """Run ``fetch`` until it succeeds, retrying `DownloadRetryable` errors in place.

        The first try runs bare (nearly every download succeeds at once, and a
        tenacity loop costs more than the download's own bookkeeping); after a
        failure, tenacity runs the remaining tries.
        """
        try:
            return await fetch()
        except DownloadRetryable as first:
            wait = _wait_with_retry_after(self._download_backoff)
            await asyncio.sleep(wait(_failed_state(None, first, 1)))
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(DownloadRetryable),
            stop=stop_after_attempt(DOWNLOAD_ATTEMPTS - 1),
            wait=_wait_with_retry_after(self._download_backoff),
            reraise=True,
        )

        async def attempt() -> T:
            return await fetch()

        return await retrying(attempt)


async def until_available(
    call: Callable[[], Awaitable[T]],
    *,
    window_s: float,
    transient: Callable[[BaseException], bool],
    on_retry: Callable[[BaseException, float], None],
    give_up: asyncio.Event | None = None,
    again_at_once: Callable[[BaseException], bool] | None = None,
) -> T:
    """Run ``call``; while it fails with a ``transient`` error, run it again for up to ``window_s``.

    The first try runs bare (a ledger verb runs thousands of times a second and
    nearly always succeeds). A first failure that ``again_at_once`` accepts (a
    pooled connection the server had closed) is tried again at once, quietly,
    whatever the window. ``on_retry(error, seconds_waited_so_far)`` is told of
    each failure that will be tried again after a wait; past the window, or as
    soon as ``give_up`` is set, the last error is raised. ``window_s`` may be
    infinite (a worker that follows forever).
    """
    try:
        return await call()
    except Exception as error:
        failed = error
    if again_at_once is not None and again_at_once(failed):
        try:
            return await call()
        except Exception as error:
            failed = error
    if window_s <= 0 or not transient(failed):
        raise failed
    on_retry(failed, 0.0)
    started = time.monotonic()

    def report(state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if error is not None:
            on_retry(error, time.monotonic() - started)

    stopped = asyncio.Event() if give_up is None else give_up

    async def pause(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), seconds)

    retrying = AsyncRetrying(
        retry=retry_if_exception(transient),
        stop=stop_after_delay(window_s) | stop_when_event_set(stopped),  # type: ignore[arg-type]
        wait=wait_exponential_jitter(multiplier=LEDGER_FIRST_WAIT_S, max=LEDGER_MAX_WAIT_S, jitter=0.25),
        before_sleep=report,
        sleep=pause,
        reraise=True,
    )
    # the first try already failed: wait before the next one
    await pause(LEDGER_FIRST_WAIT_S)

    async def attempt() -> T:
        return await call()

    return await retrying(attempt)


def _failed_state(
    retrying: AsyncRetrying | None, error: BaseException, attempt_number: int
) -> RetryCallState:
    """The state tenacity's strategies read, for an attempt that failed with ``error``."""
    state = RetryCallState(retry_object=retrying, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt_number
    state.outcome = Future.construct(attempt_number, error, True)
    state.outcome_timestamp = time.monotonic()
    return state
