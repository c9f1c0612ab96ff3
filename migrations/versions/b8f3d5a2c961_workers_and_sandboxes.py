"""workers and sandboxes: server processes sharing one database, and their sandbox containers

Revision ID: b8f3d5a2c961
Revises: 5a7c3e9b2f10
Create Date: 2026-12-06 17:10:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = 'b8f3d5a2c961'
down_revision: Union[str, None] = '5a7c3e9b2f10'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'workers',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('started_at', sa.Double(), nullable=False),
        sa.Column('seen_at', sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_table(
        'sandboxes',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('worker', sa.String(length=64), nullable=False),
        sa.Column('thread_id', sa.String(length=64), nullable=True),
        sa.Column('tenant', sa.String(length=64), nullable=True),
        sa.Column('holder', sa.String(length=64), nullable=True),
        sa.Column('lease_until', sa.Double(), nullable=True),
        sa.Column('last_used', sa.Double(), nullable=False),
        sa.Column('placed_files', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.create_index('ix_sandboxes_tenant', ['tenant'], unique=False)
        batch_op.create_index('ux_sandboxes_thread', ['thread_id'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.drop_index('ux_sandboxes_thread')
        batch_op.drop_index('ix_sandboxes_tenant')
    op.drop_table('sandboxes')
    op.drop_table('workers')
