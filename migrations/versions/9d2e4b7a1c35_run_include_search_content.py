"""runs: include_search_content (include[] on run creation)

Revision ID: 9d2e4b7a1c35
Revises: 3b1f6a0c2d47
Create Date: 2026-11-27 15:15:00
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '9d2e4b7a1c35'
down_revision: Union[str, None] = '3b1f6a0c2d47'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('include_search_content', sa.Boolean(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('include_search_content')
