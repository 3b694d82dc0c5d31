"""The ledger's failures, translated once: what to wait out, what to stop for.

Every verb of the ledger runs through `LedgerBase._guarded` (the `verb`
decorator): a connection lost, refused or reset, a server restarting, a
SQLite file locked, failing I/O or full is *transient* — the verb is run
again, with backoff, for up to the ledger's retry window (`ledger_retry`,
default 60 s) — and past the window it becomes `LedgerUnavailable`. A
damaged file (a SQLite page that does not decode, a file that is not a
database) is `LedgerError` at once. Anything else (a constraint, a bug) goes
up unchanged. SQLAlchemy's, asyncpg's and sqlite3's exceptions are read here
and nowhere else.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from pipeline.durations import human_duration, parse_duration
from pipeline.errors import LedgerError, LedgerUnavailable, UsageError

if TYPE_CHECKING:
    from pipeline.ledger.base import LedgerBase

P = ParamSpec("P")
T = TypeVar("T")
Self = TypeVar("Self", bound="LedgerBase")

#: how long a ledger that stops answering is waited for before the run stops (exit 5)
DEFAULT_LEDGER_RETRY_S = 60.0
#: environment variable that sets the retry window of every command (seconds or `30s`, `2m`)
LEDGER_RETRY_ENV = "IDEOBATCH_LEDGER_RETRY"

#: SQLSTATE classes of a server or connection that is going away: 08 connection exception,
#: 53 insufficient resources, 57 operator intervention (shutdown, restart), 58 system error
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58"})
#: words of sqlite3's and asyncpg's messages for a busy, unreachable or failing store
_TRANSIENT_WORDS = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "database or disk is full",
    "unable to open database file",
    "connection was closed",
    "connection is closed",
    # asyncpg: "cannot perform operation: another operation is in progress", and "cannot switch
    # to state N; another operation (M) is in progress" on a connection the server ended mid-call
    "another operation",
    "the database system is",
)
#: words of sqlite3's messages for a file whose content is damaged
_DAMAGED_WORDS = ("malformed", "file is not a database", "file is encrypted", "not a database")


def masked(url: str) -> str:
    """A ledger URL fit to show: the password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return "(unparseable ledger URL)"


def describe(exc: BaseException) -> str:
    """The first line of what the driver said, without SQLAlchemy's wrapping."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        text = str(exc.orig).strip()
    else:
        text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return first or type(exc).__name__


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    for candidate in (exc, orig, getattr(orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str) and state:
            return state
    return None


def is_damaged(exc: BaseException) -> bool:
    """Whether ``exc`` says the ledger's file is damaged (retrying cannot help)."""
    if isinstance(exc, sa_exc.DatabaseError) and not isinstance(exc, sa_exc.OperationalError):
        return isinstance(exc.orig, sqlite3.DatabaseError) and any(
            word in describe(exc).lower() for word in _DAMAGED_WORDS
        )
    return False


def is_stale_connection(exc: BaseException) -> bool:
    """Whether ``exc`` is a pooled connection the server had closed (a restart, an idle timeout).

    SQLAlchemy has then emptied the pool (the engine has no pre-ping: see
    `engine.create_engine`), so the verb can run again at once on a new
    connection, as a pre-ping would have had it do.
    """
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is the ledger going away for a while (worth waiting out)."""
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        state = _sqlstate(exc)
        if state is not None:
            return state[:2] in _TRANSIENT_SQLSTATE_CLASSES
        if isinstance(exc.orig, OSError | TimeoutError):
            return True
        message = describe(exc).lower()
        return any(word in message for word in _TRANSIENT_WORDS)
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    # asyncpg raises OSError (refused, reset) and TimeoutError from connect, unwrapped
    return isinstance(exc, OSError | TimeoutError) and not isinstance(exc, FileNotFoundError)


def translated(exc: BaseException, url: str, window_s: float) -> LedgerError | None:
    """``exc`` as the ledger error it means, or None when it is not the ledger's failure."""
    where = masked(url)
    if is_damaged(exc):
        return LedgerError(
            f"the ledger {where} is damaged ({describe(exc)}): restore it from a backup, or move it "
            "away and run again (finished jobs would then be paid for again)"
        )
    if is_transient(exc):
        waited = f"for {human_duration(window_s)}" if window_s > 0 else "and the retry window is used up"
        return LedgerUnavailable(
            f"the ledger {where} did not answer {waited} ({describe(exc)}); nothing recorded is "
            "lost: run the same command again once it is back"
        )
    return None


def parse_window(value: str | None) -> float | None:
    """A retry window written as seconds or a duration (``90``, ``30s``, ``2m``); None if unset."""
    if value is None or not value.strip():
        return None
    return parse_duration(value.strip())


def default_window() -> float:
    """The retry window when a command is not told one: `LEDGER_RETRY_ENV`, else 60 s."""
    try:
        window = parse_window(os.environ.get(LEDGER_RETRY_ENV))
    except ValueError as exc:
        raise UsageError(f"{LEDGER_RETRY_ENV}: {exc}") from None
    return DEFAULT_LEDGER_RETRY_S if window is None else window


def verb(
    method: Callable[Concatenate[Self, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Self, P], Coroutine[Any, Any, T]]:
    """Mark a ledger method as a verb: run again while the ledger is away, errors translated."""

    @functools.wraps(method)
    async def guarded(self: Self, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._guarded(lambda: method(self, *args, **kwargs))

    return guarded
