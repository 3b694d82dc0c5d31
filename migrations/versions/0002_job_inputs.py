"""job inputs: files besides the main image, and op names up to 32 characters

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 10:30:00

SQLite does not enforce VARCHAR lengths, so there the op column is left as it
is (changing its type would rebuild the jobs table, and dropping the old one
would cascade to every attempt and image); `migrations/env.py` compares
string types without their length on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("inputs", sa.Text(), nullable=True))
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "jobs", "op", existing_type=sa.String(length=16), type_=sa.String(length=32), existing_nullable=False
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "jobs", "op", existing_type=sa.String(length=32), type_=sa.String(length=16), existing_nullable=False
        )
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("inputs")
