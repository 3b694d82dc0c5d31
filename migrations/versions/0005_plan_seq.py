"""plan_seq: which plan last had each job, so that a complete re-plan withdraws the jobs it dropped

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 13:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('manifests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('plan_seq', sa.Integer(), server_default='0', nullable=False))

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('plan_seq', sa.Integer(), nullable=True))

    # the jobs planned so far belong to plan 0; chained children and rerolls belong to no plan
    op.execute(
        "UPDATE jobs SET plan_seq = 0 WHERE parent_id IS NULL AND id NOT IN "
        "(SELECT reroll_job_id FROM picks WHERE reroll_job_id IS NOT NULL)"
    )


def downgrade() -> None:
    # withdrawn jobs stay withdrawn: an older ideobatch claims only pending ones, so never pays for them
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('plan_seq')

    with op.batch_alter_table('manifests', schema=None) as batch_op:
        batch_op.drop_column('plan_seq')
