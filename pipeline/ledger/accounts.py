"""The provider account's cap on images in flight, held in the ledger for every process (SPEC §11).

Ideogram caps images in flight per organisation. Every process working on
one ledger with the same provider ``base_url`` and key variable takes its
places from the ledger: a call holds ``images`` places (`slot_holds`) from
just before it is sent until it ends, and a call that does not fit waits in
line (`slot_waiters`), oldest first across processes. Whoever changes the
places in use — taking, or giving back — hands freed places to the oldest
waiters in the same transaction, whichever process they belong to; each
process learns of its grants from its next exchange or poll. Holds and
waiters have a lease, renewed with the jobs' leases: a dead process's places
come back when it runs out.

Why tables and not PostgreSQL advisory locks: a hold must outlive the
connection that took it (a pooled connection is shared by many calls),
carry a number of places, be visible to ``status``, and behave the same on
SQLite. The account row is the one lock: each exchange is one short
transaction that locks it first.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from yarl import URL

from pipeline.ledger.base import LedgerBase
from pipeline.ledger.faults import verb
from pipeline.ledger.listening import Listener, listen
from pipeline.ledger.tables import accounts, slot_holds, slot_waiters


def account_url(base_url: str) -> str:
    """The spelling of a provider base URL that names its account.

    ``https://API.ideogram.ai/``, ``https://api.ideogram.ai:443`` and
    ``https://api.ideogram.ai`` are one account: scheme and host in lower case
    (an international host in its ASCII form), the scheme's default port
    dropped, no trailing slash. A path is kept (``/v1`` may be another
    service). Text that is no URL is kept as it is.
    """
    try:
        url = URL(base_url.strip())
        if not url.absolute:
            return base_url
        normal = url.with_path(url.path.rstrip("/")).with_query(None).with_fragment(None)
        if url.is_default_port():
            normal = normal.with_port(None)
        return str(normal)
    except ValueError:
        return base_url


@dataclass(frozen=True)
class SlotExchange:
    """What an exchange with the account's places gave this process."""

    #: of the jobs this process asked places for, those that hold them now
    granted: frozenset[int]
    #: the account's places in use after the exchange, and its limit (the learned cap, or the cap)
    in_use: int
    limit: int
    #: when the oldest call of another process that still waits began waiting (None: none waits)
    oldest_other_since: float | None = None


@dataclass(frozen=True)
class AccountStatus:
    """An account's caps and who holds its places."""

    base_url: str
    key_env: str
    cap: int
    learned_cap: int | None
    #: images in flight per process (lease owner)
    in_flight: dict[str, int]
    waiting: int


class Accounts(LedgerBase):
    """The part of the `Ledger` that keeps provider accounts' places in flight."""

    @verb
    async def account_id(self, base_url: str, key_env: str, cap: int) -> int:
        """The account of ``base_url`` and ``key_env`` (created if new), its cap set to ``cap``.

        The URL is compared as `account_url` spells it.
        """
        # each backend's upsert, its dialect imported when used (a run on SQLite loads no PostgreSQL)
        dialect: Any = importlib.import_module(
            "sqlalchemy.dialects.sqlite" if self.is_sqlite else "sqlalchemy.dialects.postgresql"
        )
        now = time.time()
        base_url = account_url(base_url)

        def work(conn: Connection) -> int:
            # Processes starting together may both find no row: the insert leaves
            # the first one's row alone, and the locked select then reads it.
            new = {"base_url": base_url, "key_env": key_env, "cap": cap, "updated_at": now}
            conn.execute(dialect.insert(accounts).values(**new).on_conflict_do_nothing())
            where = (accounts.c.base_url == base_url, accounts.c.key_env == key_env)
            found = conn.execute(self._locked(select(accounts.c.id, accounts.c.cap).where(*where))).one()
            if found.cap != cap:
                _set(conn, found.id, cap=cap, updated_at=now)
            return int(found.id)

        return await self._transact(work)

    @verb
    async def exchange_slots(
        self,
        account_id: int,
        owner: str,
        *,
        give_back: Sequence[int] = (),
        want: Sequence[tuple[int, int]] = (),
        handed_over: Sequence[tuple[int, int]] = (),
        holding: Sequence[tuple[int, int]] = (),
        refused: bool = False,
        lease_s: float,
        now: float | None = None,
    ) -> SlotExchange:
        """Give back the places of ``give_back`` jobs (or their place in line) and ask for ``want``.

        ``want`` is (job id, images) for each call waiting for places.

        One transaction: the places given back and those of expired leases
        are handed to the oldest waiters, this process's new requests joining
        the end of the line. Returns which of the jobs in ``want`` hold places
        now (granted now, or earlier by another process's exchange).

        ``handed_over``: (from job, to job) pairs of places this process passed
        from a call that ended straight to one of its own waiting calls (no
        other process's call waited longer): the hold is renamed.
        ``refused``: the provider refused a call for its in-flight limit (its
        places are among those given back). The places still held then are
        what it let through: the account's learned cap becomes that, before
        anything is handed out.
        """
        now = time.time() if now is None else now

        def work(conn: Connection) -> SlotExchange:
            account = self._lock_account(conn, account_id)
            # hand-overs first: a place handed on and then given back goes back
            if handed_over:
                _hand_over(conn, account_id, owner, handed_over)
            for table in (slot_holds, slot_waiters) if give_back else ():
                conn.execute(
                    delete(table).where(
                        table.c.account_id == account_id,
                        table.c.owner == owner,
                        table.c.job_id.in_(list(give_back)),
                    )
                )
            if holding:
                self._hold_again(conn, account_id, owner, holding, now, now + lease_s)
            wanted = dict(want)
            if wanted:
                known = {
                    r.job_id
                    for table in (slot_holds, slot_waiters)
                    for r in conn.execute(
                        select(table.c.job_id).where(
                            table.c.account_id == account_id, table.c.job_id.in_(list(wanted))
                        )
                    )
                }
                new = [
                    {
                        "account_id": account_id,
                        "job_id": job_id,
                        "owner": owner,
                        "images": images,
                        "since": now,
                        "expires_at": now + lease_s,
                    }
                    for job_id, images in wanted.items()
                    if job_id not in known
                ]
                if new:
                    conn.execute(insert(slot_waiters), new)
            if refused:
                account = self._learn(conn, account, now)
            in_use, limit = self._hand_out(conn, account, now, lease_s)
            held = (
                {
                    r.job_id
                    for r in conn.execute(
                        select(slot_holds.c.job_id).where(
                            slot_holds.c.account_id == account_id,
                            slot_holds.c.owner == owner,
                            slot_holds.c.job_id.in_(list(wanted)),
                        )
                    )
                }
                if wanted
                else set()
            )
            others = conn.execute(
                select(func.min(slot_waiters.c.since)).where(
                    slot_waiters.c.account_id == account_id, slot_waiters.c.owner != owner
                )
            ).scalar_one()
            return SlotExchange(frozenset(held), in_use, limit, others)

        return await self._transact(work)

    def _hold_again(
        self,
        conn: Connection,
        account_id: int,
        owner: str,
        holding: Sequence[tuple[int, int]],
        now: float,
        expires_at: float,
    ) -> None:
        """The places of ``owner``'s calls in flight, held again under a fresh lease.

        A live process whose holds ran out (it could not renew them while the
        ledger was away, or it was frozen) still has those calls out: they
        count again, so that nobody is granted their places twice.
        """
        jobs_held = [job_id for job_id, _images in holding]
        mine = (slot_holds.c.account_id == account_id, slot_holds.c.job_id.in_(jobs_held))
        present = {r.job_id for r in conn.execute(select(slot_holds.c.job_id).where(*mine))}
        conn.execute(
            update(slot_holds).where(*mine, slot_holds.c.owner == owner).values(expires_at=expires_at)
        )
        missing = [
            {
                "account_id": account_id,
                "job_id": job_id,
                "owner": owner,
                "images": images,
                "granted_at": now,
                "expires_at": expires_at,
            }
            for job_id, images in holding
            if job_id not in present
        ]
        if missing:
            conn.execute(
                delete(slot_waiters).where(
                    slot_waiters.c.account_id == account_id,
                    slot_waiters.c.job_id.in_([row["job_id"] for row in missing]),
                )
            )
            conn.execute(insert(slot_holds), missing)

    def _lock_account(self, conn: Connection, account_id: int) -> Any:
        query = select(accounts.c.id, accounts.c.cap, accounts.c.learned_cap).where(
            accounts.c.id == account_id
        )
        return conn.execute(self._locked(query)).one()

    def _hand_out(self, conn: Connection, account: Any, now: float, lease_s: float) -> tuple[int, int]:
        """Drop expired holds and waiters, then grant places to the oldest waiters that fit, in order."""
        account_id = account.id
        for table in (slot_holds, slot_waiters):
            conn.execute(delete(table).where(table.c.account_id == account_id, table.c.expires_at < now))
        in_use = _in_use(conn, account_id, now)
        limit = min(account.cap, account.learned_cap or account.cap)
        waiting = conn.execute(
            select(slot_waiters.c.id, slot_waiters.c.job_id, slot_waiters.c.owner, slot_waiters.c.images)
            .where(slot_waiters.c.account_id == account_id)
            .order_by(slot_waiters.c.since, slot_waiters.c.id)
        ).all()
        granted_ids: list[int] = []
        holds: list[dict[str, Any]] = []
        for waiter in waiting:
            # strictly in order: a call that does not fit keeps the ones behind it waiting;
            # one larger than the limit goes alone rather than never
            if in_use + waiter.images > limit and in_use > 0:
                break
            in_use += waiter.images
            granted_ids.append(waiter.id)
            holds.append(
                {
                    "account_id": account_id,
                    "job_id": waiter.job_id,
                    "owner": waiter.owner,
                    "images": waiter.images,
                    "granted_at": now,
                    "expires_at": now + lease_s,
                }
            )
        if holds:
            conn.execute(delete(slot_waiters).where(slot_waiters.c.id.in_(granted_ids)))
            conn.execute(insert(slot_holds), holds)
            if not self.is_sqlite:
                # wake the processes whose calls were granted (delivered when this commits)
                for owner in sorted({hold["owner"] for hold in holds}):
                    conn.exec_driver_sql("SELECT pg_notify($1, $2)", (slots_channel(account_id), owner))
        return in_use, limit

    def _learn(self, conn: Connection, account: Any, now: float) -> Any:
        """Set the learned cap to the places held now (never above what was learned before)."""
        estimate = max(1, _in_use(conn, account.id, now))
        learned = int(min(account.learned_cap or account.cap, estimate))
        _set(conn, account.id, learned_cap=learned, updated_at=now)
        return self._lock_account(conn, account.id)

    async def listen_for_grants(self, account_id: int, owner: str, wake: Callable[[], None]) -> Listener:
        """Call ``wake`` when another process's exchange grants ``owner`` places (PostgreSQL only).

        A dedicated connection LISTENs to the account's channel; on SQLite
        (one machine) nothing listens and waiting calls poll. Close the
        returned listener when done.
        """
        if self.is_sqlite:
            return Listener(None)
        return Listener(await listen(self.url, slots_channel(account_id), owner, wake))

    @verb
    async def held_slots(self, account_id: int, owner: str, job_ids: Sequence[int]) -> frozenset[int]:
        """Which of ``job_ids`` hold places of the account for ``owner`` (a read, no lock)."""
        if not job_ids:
            return frozenset()
        async with self._read() as conn:
            rows = await conn.execute(
                select(slot_holds.c.job_id).where(
                    slot_holds.c.account_id == account_id,
                    slot_holds.c.owner == owner,
                    slot_holds.c.job_id.in_(list(job_ids)),
                )
            )
            return frozenset(r.job_id for r in rows)

    @verb
    async def probe_cap(self, account_id: int) -> int | None:
        """Raise the learned cap by one place (towards the configured cap); the learned cap after."""
        now = time.time()

        def work(conn: Connection) -> int | None:
            account = self._lock_account(conn, account_id)
            if account.learned_cap is None:
                return None
            raised = int(account.learned_cap) + 1
            learned = None if raised >= account.cap else raised
            _set(conn, account_id, learned_cap=learned, updated_at=now)
            return learned

        return await self._transact(work)

    @verb
    async def account_statuses(self) -> list[AccountStatus]:
        """Every account: its caps, the images in flight per process, and the calls waiting."""
        async with self._read() as conn:
            return await read_accounts(conn)


async def read_accounts(conn: AsyncConnection) -> list[AccountStatus]:
    """Every account's caps, images in flight per process and calls waiting (leases running)."""
    now = time.time()
    rows = (await conn.execute(select(accounts).order_by(accounts.c.id))).all()
    holds = (
        await conn.execute(
            select(slot_holds.c.account_id, slot_holds.c.owner, func.sum(slot_holds.c.images))
            .where(slot_holds.c.expires_at >= now)
            .group_by(slot_holds.c.account_id, slot_holds.c.owner)
        )
    ).all()
    waiting = (
        await conn.execute(
            select(slot_waiters.c.account_id, func.count())
            .where(slot_waiters.c.expires_at >= now)
            .group_by(slot_waiters.c.account_id)
        )
    ).all()
    in_flight: dict[int, dict[str, int]] = {}
    for account_id, owner, images in holds:
        in_flight.setdefault(account_id, {})[owner] = int(images)
    waits = {account_id: int(count) for account_id, count in waiting}
    return [
        AccountStatus(
            base_url=row.base_url,
            key_env=row.key_env,
            cap=row.cap,
            learned_cap=row.learned_cap,
            in_flight=in_flight.get(row.id, {}),
            waiting=waits.get(row.id, 0),
        )
        for row in rows
    ]


def slots_channel(account_id: int) -> str:
    """The PostgreSQL NOTIFY channel on which an account's grants are announced (payload: the owner)."""
    return f"ideobatch_slots_{account_id}"


def _in_use(conn: Connection, account_id: int, now: float) -> int:
    """Places of the account held under a lease still running."""
    held = select(func.coalesce(func.sum(slot_holds.c.images), 0)).where(
        slot_holds.c.account_id == account_id, slot_holds.c.expires_at >= now
    )
    return int(conn.execute(held).scalar_one())


#: a hold passed from the call that ended to the one it was handed to (run for many pairs at once)
_RENAME_HOLD = (
    update(slot_holds)
    .where(
        slot_holds.c.account_id == bindparam("account"),
        slot_holds.c.owner == bindparam("holder"),
        slot_holds.c.job_id == bindparam("old_job"),
    )
    .values(job_id=bindparam("new_job"))
)


def _hand_over(conn: Connection, account_id: int, owner: str, pairs: Sequence[tuple[int, int]]) -> None:
    """The hold of each ``old`` job becomes its ``new`` job's (which leaves the line); one hold per job.

    Three statements for any number of (old, new) pairs, in their order: a
    job handed places and then ending hands the same hold on again. A ``new``
    job granted meanwhile by another process's exchange keeps its own hold
    (one place is enough) and the handed one goes back.
    """
    held = slot_holds.c.account_id == account_id
    news = [new_job for _old, new_job in pairs]
    already = {
        r.job_id for r in conn.execute(select(slot_holds.c.job_id).where(held, slot_holds.c.job_id.in_(news)))
    }
    renames = [
        {"account": account_id, "holder": owner, "old_job": old, "new_job": new_job}
        for old, new_job in pairs
        if new_job not in already
    ]
    if renames:
        conn.execute(_RENAME_HOLD, renames)
    dropped = [old for old, new_job in pairs if new_job in already]
    if dropped:
        conn.execute(
            delete(slot_holds).where(held, slot_holds.c.owner == owner, slot_holds.c.job_id.in_(dropped))
        )
    conn.execute(
        delete(slot_waiters).where(slot_waiters.c.account_id == account_id, slot_waiters.c.job_id.in_(news))
    )


def _set(conn: Connection, account_id: int, **values: Any) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))


def renew_slots(conn: Connection, owner: str, expires_at: float) -> None:
    """Extend the leases of ``owner``'s holds and waits (with its jobs' leases)."""
    for table in (slot_holds, slot_waiters):
        conn.execute(update(table).where(table.c.owner == owner).values(expires_at=expires_at))


def drop_slots(conn: Connection, owner: str) -> None:
    """Give back every place ``owner`` holds or waits for (it stops)."""
    for table in (slot_holds, slot_waiters):
        conn.execute(delete(table).where(table.c.owner == owner))
