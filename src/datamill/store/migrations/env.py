"""Alembic environment: the engine is handed over by :func:`datamill.store.migrate.upgrade`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, create_engine

from datamill.store.models import Base

config = context.config
engine: Engine | None = config.attributes.get("engine")
if engine is None:  # invoked from the alembic command line
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
