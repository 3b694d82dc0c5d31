"""Alembic environment for the ideobatch ledger.

Run from code (`pipeline.ledger.engine.upgrade`, which passes a connection in
``config.attributes["connection"]``) or from the command line:
``alembic -x url=postgresql://postgres@127.0.0.1/ledger upgrade head``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from pipeline.ledger.engine import compare_type, create_engine
from pipeline.ledger.tables import metadata

config = context.config


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=compare_type,
    )


def _run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_url(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Migrate the connection we were given, or the database named by ``-x url=``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the ledger URL: alembic -x url=sqlite:///path/ledger.db upgrade head")
    asyncio.run(_run_with_url(url))


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
run_migrations_online()
