"""account slots: the provider's cap on images in flight, shared through the ledger

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("base_url", sa.Text(), nullable=False),
        sa.Column("key_env", sa.String(length=128), nullable=False),
        sa.Column("cap", sa.Integer(), nullable=False),
        sa.Column("learned_cap", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("base_url", "key_env", name=op.f("uq_accounts_base_url_key_env")),
    )
    for name, since in (("slot_holds", "granted_at"), ("slot_waiters", "since")):
        op.create_table(
            name,
            sa.Column("id", Id, autoincrement=True, nullable=False),
            sa.Column("account_id", Id, nullable=False),
            sa.Column("job_id", Id, nullable=False),
            sa.Column("owner", sa.String(length=128), nullable=False),
            sa.Column("images", sa.Integer(), nullable=False),
            sa.Column(since, sa.Float(), nullable=False),
            sa.Column("expires_at", sa.Float(), nullable=False),
            sa.ForeignKeyConstraint(
                ["account_id"], ["accounts.id"], name=op.f(f"fk_{name}_account_id_accounts"), ondelete="CASCADE"
            ),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
            sa.UniqueConstraint("account_id", "job_id", name=op.f(f"uq_{name}_account_id_job_id")),
        )
        op.create_index(op.f(f"ix_{name}_owner"), name, ["owner"], unique=False)
    op.create_index(
        op.f("ix_slot_waiters_account_id_since"), "slot_waiters", ["account_id", "since"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_slot_waiters_account_id_since"), table_name="slot_waiters")
    for name in ("slot_waiters", "slot_holds"):
        op.drop_index(op.f(f"ix_{name}_owner"), table_name=name)
        op.drop_table(name)
    op.drop_table("accounts")
