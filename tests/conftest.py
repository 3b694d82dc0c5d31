"""Fixtures shared by the whole suite.

Databases: every test that needs a ledger gets a fresh one. SQLite ledgers
are files under ``tmp_path``. PostgreSQL ledgers are copies of one migrated
template database, made per test with ``CREATE DATABASE ... TEMPLATE`` (as
procrastinate's tests do), one step ahead of the test that uses it and
dropped in the background. The server comes from ``IDEOBATCH_TEST_PG``; when it is
unreachable the PostgreSQL tests are skipped, except in CI (``CI`` set),
where they fail.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy import make_url

from pipeline.ledger import engine as engines
from pipeline.ledger.repository import Ledger
from tests.outage import Outage

DEFAULT_TEST_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
#: prefix of every database the suite creates (and drops)
DB_PREFIX = "ideobatch_test"
PG_CONNECT_TIMEOUT_S = 5

T = TypeVar("T")


# --- PostgreSQL administration ------------------------------------------------------


class PgServer:
    """Creates and drops databases on the test PostgreSQL server.

    The statements run one after another on a thread of their own, each with
    its own event loop (never the one pytest-asyncio keeps for the tests), so
    that a fixture can start one and carry on while it runs.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = make_url(base_url).set(drivername="postgresql")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-admin")

    def url_of(self, database: str) -> str:
        """The ledger URL of a database on this server."""
        return self.base_url.set(database=database).render_as_string(hide_password=False)

    def submit(self, work: Callable[[], Awaitable[T]]) -> Future[T]:
        """Run ``work()`` on the admin thread."""

        async def main() -> T:
            return await work()

        return self._thread.submit(lambda: asyncio.run(main()))

    async def _execute(self, *statements: str) -> None:
        admin = await asyncpg.connect(
            self.url_of(self.base_url.database or "postgres"), timeout=PG_CONNECT_TIMEOUT_S
        )
        try:
            for statement in statements:
                await admin.execute(statement)
        finally:
            await admin.close()

    def check(self) -> None:
        """Raise if the server cannot be reached."""
        self.submit(lambda: self._execute("SELECT 1")).result()

    def create(self, name: str, template: str = "template0") -> Future[None]:
        """Start creating database ``name`` as a copy of ``template``."""
        return self.submit(lambda: self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))

    def drop(self, name: str) -> Future[None]:
        """Start dropping database ``name``, disconnecting whoever is still connected to it."""
        return self.submit(
            lambda: self._execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
                f'DROP DATABASE IF EXISTS "{name}"',
            )
        )

    def close(self) -> None:
        """Wait for what was started, then stop the admin thread."""
        self._thread.shutdown(wait=True)


class TemplateCopies:
    """Fresh copies of the migrated template, each made while the previous test runs.

    ``CREATE DATABASE`` costs about half a second of disk writes: made one
    step ahead, and dropped in the background, it overlaps the tests instead
    of adding to them.
    """

    def __init__(self, server: PgServer, template: str) -> None:
        self._server = server
        self._template = template
        self._next: tuple[str, Future[None]] | None = None
        self._drops: list[Future[None]] = []

    def _start_copy(self) -> tuple[str, Future[None]]:
        name = _unique_name("db")
        return name, self._server.create(name, template=self._template)

    def take(self) -> str:
        """The name of a new copy, for one test."""
        name, created = self._next or self._start_copy()
        self._next = self._start_copy()
        created.result()
        return name

    def discard(self, name: str) -> None:
        """Drop a copy a test is done with (in the background)."""
        self._drops.append(self._server.drop(name))

    def close(self) -> None:
        """Drop the copy made ahead, and check that every drop went through."""
        if self._next is not None:
            name, created = self._next
            created.result()
            self.discard(name)
        for drop in self._drops:
            drop.result()


def _unique_name(kind: str) -> str:
    return f"{DB_PREFIX}_{kind}_{uuid.uuid4().hex[:12]}"


async def _migrate(url: str) -> None:
    engine = engines.create_engine(url)
    try:
        await engines.upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The test PostgreSQL server; skips (fails in CI) when it cannot be reached."""
    server = PgServer(os.environ.get("IDEOBATCH_TEST_PG", DEFAULT_TEST_PG))
    try:
        server.check()
    except (OSError, asyncpg.PostgresError) as exc:
        server.close()
        reason = f"PostgreSQL at {server.base_url.render_as_string()} is unreachable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: PostgreSQL tests must run)", pytrace=False)
        pytest.skip(f"{reason} (set IDEOBATCH_TEST_PG)")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> Iterator[str]:
    """Name of a database migrated to the newest schema, copied by each `pg_url`."""
    name = _unique_name("tpl")
    pg_server.create(name).result()
    try:
        pg_server.submit(lambda: _migrate(pg_server.url_of(name))).result()
        yield name
    finally:
        pg_server.drop(name).result()


@pytest.fixture(scope="session")
def pg_copies(pg_server: PgServer, pg_template: str) -> Iterator[TemplateCopies]:
    """Copies of the template database, made ahead of the tests."""
    copies = TemplateCopies(pg_server, pg_template)
    try:
        yield copies
    finally:
        copies.close()


@pytest.fixture
def pg_url(pg_server: PgServer, pg_copies: TemplateCopies) -> Iterator[str]:
    """URL of a fresh, migrated PostgreSQL ledger, dropped after the test."""
    name = pg_copies.take()
    yield pg_server.url_of(name)
    pg_copies.discard(name)


@pytest.fixture
def empty_pg_url(pg_server: PgServer) -> Iterator[str]:
    """URL of a fresh PostgreSQL database with no schema at all, dropped after the test."""
    name = _unique_name("empty")
    pg_server.create(name).result()
    yield pg_server.url_of(name)
    pg_server.drop(name).result()


@pytest.fixture
async def outage(pg_url: str) -> AsyncIterator[Outage]:
    """A relay to a fresh PostgreSQL ledger that a test can cut (`tests.outage`)."""
    relay = Outage(pg_url)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()


# --- SQLite ---------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite ledger file that does not exist yet (opening it migrates it)."""
    return f"sqlite:///{tmp_path}/ledger.db"


# --- both backends --------------------------------------------------------------------


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def ledger_url(request: pytest.FixtureRequest) -> str:
    """A fresh ledger URL, once per backend."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: Any = request.getfixturevalue(fixture)
    return str(url)


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[Ledger]:
    """An opened ledger at the newest schema, once per backend."""
    opened = await Ledger.open(ledger_url)
    try:
        yield opened
    finally:
        await opened.close()
