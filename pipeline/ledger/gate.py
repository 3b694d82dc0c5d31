"""One SQLite write transaction of this process at a time, attempt records first.

SQLite takes one writer at a time, so a process runs its write transactions
in turn. A request waits for its "attempt sent" record before it leaves, so
those records must not queue behind the other writes (claims, the account's
places, completions, which no request waits for): an urgent transaction goes
before every ordinary one that waits, after the one running.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class WriteGate:
    """A lock with two lines: urgent waiters are served before ordinary ones, each line in order."""

    def __init__(self) -> None:
        self._busy = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._ordinary: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def held(self, *, urgent: bool = False) -> AsyncIterator[None]:
        """Hold the gate for one transaction (``urgent``: before the ordinary waiters)."""
        if self._busy:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            (self._urgent if urgent else self._ordinary).append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._pass_on()  # handed the gate as it was cancelled: hand it on
                raise
        else:
            self._busy = True
        try:
            yield
        finally:
            self._pass_on()

    def _pass_on(self) -> None:
        """Give the gate to the first waiter still waiting (urgent first), or open it."""
        for line in (self._urgent, self._ordinary):
            while line:
                turn = line.popleft()
                if not turn.done():
                    turn.set_result(None)
                    return
        self._busy = False
