"""streaming engine: the owner's heartbeat and the restarts of a streaming job

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import datamill.store.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("streaming_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("heartbeat_at", datamill.store.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("restarts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("streaming_jobs", schema=None) as batch_op:
        batch_op.drop_column("restarts")
        batch_op.drop_column("heartbeat_at")
