"""Metadata store: SQLAlchemy ORM models, repositories and Alembic migrations."""
