"""models: an optional background sample stored with the model

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: models stored before this revision have no background.
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('background_key', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('background_rows', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_column('background_rows')
        batch_op.drop_column('background_key')
