"""Imports every table module so that ``Base.metadata`` knows the whole schema."""

from datamill.store import datasources, projects, secrets, users, variables
from datamill.store.base import Base

__all__ = ["Base", "datasources", "projects", "secrets", "users", "variables"]
