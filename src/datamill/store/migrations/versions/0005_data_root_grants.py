"""data root grants: a project sees its own folder of a data root unless a root is granted

Existing projects keep what they had: every root that one of their ``file`` data sources
or ``file`` exports names is granted to them, so its paths keep meaning what they meant
(relative to the whole root). Projects created afterwards see only their own folder.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 01:30:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

import datamill.store.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_datasources = sa.table(
    "datasources",
    sa.column("project_id", sa.Integer),
    sa.column("type"),
    sa.column("spec", sa.JSON),
)
_exports = sa.table(
    "exports", sa.column("project_id", sa.Integer), sa.column("type"), sa.column("spec", sa.JSON)
)
_grants = sa.table(
    "data_root_grants",
    sa.column("root", sa.String),
    sa.column("project_id", sa.Integer),
    sa.column("created_at", datamill.store.base.UTCDateTime()),
)


def roots_in_use(connection: sa.Connection) -> set[tuple[str, int]]:
    """(root, project id) of every ``file`` data source and ``file`` export."""
    used: set[tuple[str, int]] = set()
    for table in (_datasources, _exports):
        rows = connection.execute(
            sa.select(table.c.project_id, table.c.spec).where(table.c.type == "file")
        )
        for project_id, spec in rows:
            root: Any = (spec or {}).get("root") if isinstance(spec, dict) else None
            used.add((root if isinstance(root, str) and root else "default", project_id))
    return used


def upgrade() -> None:
    op.create_table(
        "data_root_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("root", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("created_at", datamill.store.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("root", "project_id"),
    )
    with op.batch_alter_table("data_root_grants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_data_root_grants_root"), ["root"], unique=False)
    connection = op.get_bind()
    now = datamill.store.base.utcnow()
    grants = [
        {"root": root, "project_id": project_id, "created_at": now}
        for root, project_id in sorted(roots_in_use(connection))
    ]
    if grants:
        connection.execute(sa.insert(_grants), grants)


def downgrade() -> None:
    with op.batch_alter_table("data_root_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_data_root_grants_root"))
    op.drop_table("data_root_grants")
