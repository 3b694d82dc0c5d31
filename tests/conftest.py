"""Fixtures shared by the whole suite.

Databases: every test that needs a ledger gets a fresh one. SQLite ledgers
are files under ``tmp_path``. PostgreSQL ledgers are copies of one migrated
template database, made per test with ``CREATE DATABASE ... TEMPLATE`` (as
procrastinate's tests do): a copy costs a few milliseconds where migrating
would cost a second. The server comes from ``IDEOBATCH_TEST_PG``; when it is
unreachable the PostgreSQL tests are skipped, except in CI (``CI`` set),
where they fail.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy import make_url

from pipeline.ledger import engine as engines
from pipeline.ledger.repository import Ledger

DEFAULT_TEST_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
#: prefix of every database the suite creates (and drops)
DB_PREFIX = "ideobatch_test"
PG_CONNECT_TIMEOUT_S = 5

T = TypeVar("T")


# --- PostgreSQL administration ------------------------------------------------------


def _run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous fixture code.

    In a thread of its own, so that its event loop never meets the one
    pytest-asyncio keeps for the tests.
    """

    async def main() -> T:
        return await make()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


class PgServer:
    """Creates and drops databases on the test PostgreSQL server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = make_url(base_url).set(drivername="postgresql")

    def url_of(self, database: str) -> str:
        """The ledger URL of a database on this server."""
        return self.base_url.set(database=database).render_as_string(hide_password=False)

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
        _run_async(lambda: self._execute("SELECT 1"))

    def create(self, name: str, template: str = "template0") -> str:
        """Create database ``name`` as a copy of ``template``; returns its URL."""
        _run_async(lambda: self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        return self.url_of(name)

    def drop(self, name: str) -> None:
        """Drop database ``name``, disconnecting whoever is still connected to it."""
        _run_async(
            lambda: self._execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
                f'DROP DATABASE IF EXISTS "{name}"',
            )
        )


def _unique_name(kind: str) -> str:
    return f"{DB_PREFIX}_{kind}_{uuid.uuid4().hex[:12]}"


async def _migrate(url: str) -> None:
    engine = engines.create_engine(url)
    try:
        await engines.upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    """The test PostgreSQL server; skips (fails in CI) when it cannot be reached."""
    server = PgServer(os.environ.get("IDEOBATCH_TEST_PG", DEFAULT_TEST_PG))
    try:
        server.check()
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        reason = f"PostgreSQL at {server.base_url.render_as_string()} is unreachable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: PostgreSQL tests must run)", pytrace=False)
        pytest.skip(f"{reason} (set IDEOBATCH_TEST_PG)")
    return server


@pytest.fixture(scope="session")
def pg_template(pg_server: PgServer) -> Iterator[str]:
    """Name of a database migrated to the newest schema, copied by each `pg_url`."""
    name = _unique_name("tpl")
    url = pg_server.create(name)
    try:
        _run_async(lambda: _migrate(url))
        yield name
    finally:
        pg_server.drop(name)


@pytest.fixture
def pg_url(pg_server: PgServer, pg_template: str) -> Iterator[str]:
    """URL of a fresh, migrated PostgreSQL ledger, dropped after the test."""
    name = _unique_name("db")
    url = pg_server.create(name, template=pg_template)
    yield url
    pg_server.drop(name)


@pytest.fixture
def empty_pg_url(pg_server: PgServer) -> Iterator[str]:
    """URL of a fresh PostgreSQL database with no schema at all, dropped after the test."""
    name = _unique_name("empty")
    url = pg_server.create(name)
    yield url
    pg_server.drop(name)


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
