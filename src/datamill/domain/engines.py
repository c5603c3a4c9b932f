"""Engine connections: how a project's jobs reach a remote engine's server."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from datamill.domain.common import Description, Model
from datamill.domain.datasources import SecretRef

SPARK_CONNECT_URL = r"^sc://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}/?$"


class EngineConnectionPut(Model):
    """A Spark Connect server: ``sc://host:port``. Its token, if it needs one, is the
    value ``token`` of the secret named by ``secret``."""

    type: str = Field(
        min_length=1, max_length=32, description="the engine's type: spark", examples=["spark"]
    )
    url: str = Field(
        pattern=SPARK_CONNECT_URL,
        max_length=1024,
        description="the server's address, sc://host:port (no parameters: the token is a secret)",
        examples=["sc://spark.example.com:15002"],
    )
    secret: SecretRef | None = Field(
        None, description="a secret of the project whose value 'token' authenticates"
    )
    description: Description = ""
    default: bool = Field(
        False,
        description=(
            "the project's default connection of its type: a job whose engine is the type "
            "(spark) runs here; making one the default makes it the only one"
        ),
    )


class EngineConnection(EngineConnectionPut):
    name: str
    createdAt: datetime
    updatedAt: datetime


__all__ = ["EngineConnection", "EngineConnectionPut"]
