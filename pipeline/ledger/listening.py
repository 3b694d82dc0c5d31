"""PostgreSQL LISTEN on a connection of its own: another process's NOTIFY wakes this one at once.

Used for the account's places in flight (`pipeline.ledger.accounts`): a
process whose calls wait is told the moment another process hands them
places, instead of finding out at its next poll. asyncpg is used directly
here (a listening connection must stay out of the pool), and its errors
are this module's to translate: a listener that cannot connect, or whose
connection drops, only means the waiting process polls (it always does,
less often), so they are logged, never raised.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import make_url

log = logging.getLogger("ideobatch")

#: how long connecting a listener may take before the process just polls
CONNECT_TIMEOUT_S = 5.0


class Listener:
    """A LISTEN connection (or none: SQLite, or it could not connect); `close` it when done."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    @property
    def listening(self) -> bool:
        """Whether notifications arrive."""
        return self._connection is not None and not self._connection.is_closed()

    async def close(self) -> None:
        """Stop listening."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close(timeout=2)
            self._connection = None


async def listen(url: str, channel: str, payload: str, wake: Callable[[], None]) -> Any:
    """A connection LISTENing on ``channel``, calling ``wake`` when ``payload`` is notified (None: cannot)."""
    target = make_url(url).set(drivername="postgresql")
    dsn = target.render_as_string(hide_password=False)

    def on_notify(_connection: Any, _pid: int, _channel: str, notified: str) -> None:
        if notified == payload:
            wake()

    import asyncpg  # PostgreSQL ledgers only

    try:
        connection = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
        await connection.add_listener(channel, on_notify)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.info("not listening for places in flight (%s): polling instead", exc)
        return None
    return connection
