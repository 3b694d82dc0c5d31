"""Opening a ledger: URLs as users write them, engine settings per backend, migrations.

``sqlite:///path`` and ``postgresql://user@host/db`` are mapped to the async
drivers (aiosqlite, asyncpg) here and nowhere else. SQLite runs in WAL mode
with a busy timeout and ``synchronous=NORMAL``; its write transactions begin
with ``BEGIN IMMEDIATE`` so that two processes on one file queue for the
lock instead of failing with "database is locked". SQLite ledgers migrate
themselves on open; PostgreSQL ones with ``ideobatch db upgrade``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, String, event, make_url
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pipeline.errors import LedgerError, UsageError

if TYPE_CHECKING:  # alembic is imported only when migrating (it costs a fraction of a second)
    from alembic.config import Config

SQLITE_BUSY_TIMEOUT_MS = 60_000
#: execution option that makes a SQLite transaction take the write lock at BEGIN
WRITE = {"ideobatch_write": True}


def async_url(url: str) -> URL:
    """A user's ledger URL mapped to its async driver; `UsageError` if it is not one we take."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        # the password masked, even in a URL that does not parse
        shown = re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)
        raise UsageError(f"not a ledger URL: {shown!r} (use sqlite:///path or postgresql://...)") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise UsageError("a SQLite ledger needs a file: sqlite:///path/to/ledger.db")
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        query = dict(parsed.query)
        if "sslmode" in query:  # libpq's name, in most providers' URLs; asyncpg calls it `ssl`
            query["ssl"] = query.pop("sslmode")
        unknown = sorted(set(query) - _ASYNCPG_QUERY_KEYS)
        if unknown:
            raise UsageError(f"the ledger URL's {', '.join(unknown)} is not supported (only ssl, sslmode)")
        return parsed.set(drivername="postgresql+asyncpg", query=query)
    raise UsageError(f"unsupported ledger {backend!r}: use sqlite:///path or postgresql://...")


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite ledger URL (None for another backend)."""
    target = async_url(url)
    if target.get_backend_name() != "sqlite" or target.database is None:
        return None
    return Path(target.database).expanduser()


def missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite ledger URL when it does not exist (else None)."""
    file = sqlite_file(url)
    return file if file is not None and not file.exists() else None


#: query parameters of a PostgreSQL ledger URL that asyncpg's connect takes (others are a TypeError)
_ASYNCPG_QUERY_KEYS = frozenset({"ssl"})


def is_sqlite(engine: AsyncEngine) -> bool:
    """Whether the engine talks to SQLite."""
    return engine.dialect.name == "sqlite"


def busy_timeout_ms(retry_window_s: float) -> int:
    """SQLite's wait for a lock: the ledger's retry window, at most `SQLITE_BUSY_TIMEOUT_MS`."""
    return int(min(SQLITE_BUSY_TIMEOUT_MS, max(1.0, retry_window_s * 1000)))


def create_engine(url: str, busy_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> AsyncEngine:
    """An async engine for a ledger URL, with the backend's settings applied.

    ``busy_ms``: how long a SQLite statement waits for another process's lock.
    """
    target = async_url(url)
    if target.get_backend_name() == "sqlite":
        assert target.database is not None
        Path(target.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            target, pool_size=4, max_overflow=4, connect_args={"timeout": busy_ms / 1000}
        )
        _configure_sqlite(engine.sync_engine, busy_ms)
        return engine
    # no pool_pre_ping: with asyncpg it costs three round trips (BEGIN, a ping, ROLLBACK) on every
    # checkout, a sixth of a PostgreSQL worker's CPU. A connection the server ended fails its first
    # statement instead; SQLAlchemy then recreates the pool ("optimistic" disconnect handling) and
    # the verb runs again at once on a new connection (`faults.is_stale_connection`).
    return create_async_engine(target, pool_size=10, max_overflow=10)


def create_sqlite_writer_engine(url: str, busy_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> Engine:
    """A synchronous (pysqlite) engine on a SQLite ledger, with the same settings.

    Used from one dedicated thread (`ledger.writer.SqliteWriter`), so that a
    whole transaction costs one hop between threads instead of several per
    statement.
    """
    target = async_url(url).set(drivername="sqlite+pysqlite")
    engine = create_sync_engine(target, pool_size=1, max_overflow=0, connect_args={"timeout": busy_ms / 1000})
    _configure_sqlite(engine, busy_ms)
    return engine


def _configure_sqlite(engine: Engine, busy_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy, not the driver, emits BEGIN (so it can be BEGIN IMMEDIATE)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("ideobatch_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# --- migrations ------------------------------------------------------------------


def migrations_dir() -> Path:
    """The Alembic environment: ``migrations/`` beside the package (shipped with it)."""
    import pipeline

    here = Path(pipeline.__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise LedgerError("the ledger migrations are missing from this installation")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for our migrations, bound to ``connection`` when given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest migration."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def compare_type(
    context: Any, inspected_column: Any, metadata_column: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    """Alembic's type comparison, except string lengths on SQLite (which does not enforce them).

    None lets Alembic compare as usual; a bool says whether the types differ.
    """
    sqlite = context.dialect.name == "sqlite"
    if sqlite and isinstance(inspected_type, String) and isinstance(metadata_type, String):
        return type(inspected_type.as_generic()) is not type(metadata_type.as_generic())
    return None


def known_revisions() -> frozenset[str]:
    """Every revision this ideobatch's migrations know (a ledger at another is newer)."""
    from alembic.script import ScriptDirectory

    return frozenset(rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions())


def _current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(engine: AsyncEngine) -> None:
    """Apply every pending migration (serialized against other processes)."""

    from alembic import command

    def run(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7241031)")
        command.upgrade(alembic_config(connection), "head")

    async with engine.connect() as conn:
        conn = await conn.execution_options(**WRITE)
        async with conn.begin():
            await conn.run_sync(run)


#: Alembic's version table as `alembic stamp` creates it on SQLite
_VERSION_TABLE = (
    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
)


async def create_fresh_sqlite(engine: AsyncEngine) -> bool:
    """Give an empty SQLite ledger the newest schema from the tables, stamped at head; False if not empty.

    What a first run costs instead of Alembic (imported, then every migration
    replayed): `metadata.create_all` and the version row, in one write
    transaction, so a second process opening the same new file waits for it
    and then finds the ledger made. A file that holds any table (an older
    ledger, one made meanwhile) is left alone for `upgrade`. A test checks
    that the result equals a migrated ledger.
    """
    from pipeline.ledger.tables import metadata

    def run(connection: Connection) -> bool:
        found = connection.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE type = 'table'").scalar()
        if found:
            return False
        metadata.create_all(connection)
        connection.exec_driver_sql(_VERSION_TABLE)
        connection.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES (?)", (HEAD_REVISION,))
        return True

    async with engine.connect() as conn:
        conn = await conn.execution_options(**WRITE)
        async with conn.begin():
            return await conn.run_sync(run)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The ledger's schema revision (None for an empty database)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current_revision)


#: the newest revision in migrations/versions (a test checks it against Alembic's head);
#: knowing it lets a ledger already at head open without importing Alembic at all
HEAD_REVISION = "0005"


async def stored_revision(engine: AsyncEngine) -> str | None:
    """The revision in ``alembic_version``, read with plain SQL (None if there is none)."""
    async with engine.connect() as conn:
        try:
            result = await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
        except DBAPIError as exc:
            if _no_such_table(exc):
                return None
            raise  # a connection that broke is not a ledger without a schema
        row = result.first()
        return str(row[0]) if row else None


def _no_such_table(exc: DBAPIError) -> bool:
    """Whether the database said the table does not exist (PostgreSQL 42P01, SQLite "no such table")."""
    return getattr(exc.orig, "sqlstate", None) == "42P01" or "no such table" in str(exc.orig)
