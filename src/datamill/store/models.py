"""Imports every table module so that ``Base.metadata`` knows the whole schema."""

from datamill.store import (
    data_roots,
    datasources,
    engines,
    exports,
    jobs,
    projects,
    runs,
    secrets,
    streaming,
    users,
    variables,
)
from datamill.store.base import Base

__all__ = [
    "Base",
    "data_roots",
    "datasources",
    "engines",
    "exports",
    "jobs",
    "projects",
    "runs",
    "secrets",
    "streaming",
    "users",
    "variables",
]
