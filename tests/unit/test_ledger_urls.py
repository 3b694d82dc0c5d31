"""Ledger URLs as users paste them: a usage error with the password masked, never a traceback."""

from __future__ import annotations

import pytest

from pipeline.errors import UsageError
from pipeline.ledger.engine import async_url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://me:S3CRETPW@127.0.0.1:notaport/x",  # ValueError from SQLAlchemy's parser
        "postgresql://me:S3CRETPW@[::1/x",
        "postgresql//me:S3CRETPW@127.0.0.1/x",  # a colon missing: the raw URL was shown
        "postgresql://me:S3CRETPW@127.0.0.1/x?connect_timeout=5",  # a TypeError in asyncpg's connect
    ],
)
def test_a_bad_ledger_url_is_a_usage_error_without_its_password(url: str) -> None:
    """A URL that does not parse, or that asyncpg would choke on, is exit 2 with the password masked."""
    with pytest.raises(UsageError) as raised:
        async_url(url)
    assert "S3CRETPW" not in str(raised.value)


def test_libpq_sslmode_is_taken_as_asyncpg_ssl() -> None:
    """Cloud providers hand out `?sslmode=require`; asyncpg's connect calls it `ssl`."""
    url = async_url("postgresql://me@db.example/x?sslmode=require")
    assert dict(url.query) == {"ssl": "require"}
