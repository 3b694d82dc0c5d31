"""picks: a person's verdict on each image (ideobatch serve, reroll, export --picked); review indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('picks',
    sa.Column('image_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=False),
    sa.Column('decided_at', sa.Float(), nullable=False),
    sa.Column('reroll_job_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], name=op.f('fk_picks_image_id_images'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['reroll_job_id'], ['jobs.id'], name=op.f('fk_picks_reroll_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('image_id', name=op.f('pk_picks'))
    )
    with op.batch_alter_table('picks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_picks_verdict'), ['verdict'], unique=False)

    # the review's overview reads these on every refresh
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_manifest_id_finished_at'), ['manifest_id', 'finished_at'], unique=False)

    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_images_job_id_state'), ['job_id', 'state'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_images_job_id_state'))

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_manifest_id_finished_at'))

    with op.batch_alter_table('picks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_picks_verdict'))

    op.drop_table('picks')
