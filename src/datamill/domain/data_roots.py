"""Data roots as an administrator sees them, and the projects they are granted to."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import Field

from datamill.domain.common import Model

ROOT_NAME_RULE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$")
"""What a data root's name looks like (``spec.root`` of files, ``DATAMILL_DATA_ROOTS``)."""


class DataRootGrant(Model):
    root: str
    project: str
    createdAt: datetime


class DataRoot(Model):
    name: str
    path: str | None = Field(
        description="the folder on the server; none: the root is not configured any more"
    )
    grants: list[DataRootGrant] = Field(
        description="the projects that see the whole root; every other project sees only "
        "its own folder of it"
    )
