"""Imports every table module so that ``Base.metadata`` knows the whole schema."""

from datamill.store import datasources, jobs, projects, runs, secrets, users, variables
from datamill.store.base import Base

__all__ = [
    "Base",
    "datasources",
    "jobs",
    "projects",
    "runs",
    "secrets",
    "users",
    "variables",
]
