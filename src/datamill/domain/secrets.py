"""Secrets: named, encrypted credentials referenced by other resources."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from datamill.domain.common import Description, Model, Name

SecretValue = Annotated[str, StringConstraints(max_length=8192)]
VALUE_NAME_RULE = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
SecretKey = Annotated[str, StringConstraints(pattern=VALUE_NAME_RULE)]


class SecretPut(Model):
    description: Description = ""
    values: dict[SecretKey, SecretValue] = Field(
        min_length=1,
        max_length=32,
        json_schema_extra={
            "propertyNames": {"pattern": VALUE_NAME_RULE, "minLength": 1, "maxLength": 64}
        },
        description=(
            "the secret's values, e.g. accessKeyId and secretAccessKey for object storage, "
            "password for a database; write-only: never returned"
        ),
    )


class Secret(Model):
    name: str
    description: str
    keys: list[str] = Field(description="the names of the stored values (never the values)")
    createdAt: datetime
    updatedAt: datetime


__all__ = ["Name", "Secret", "SecretPut"]
