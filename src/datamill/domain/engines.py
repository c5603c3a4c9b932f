"""Engine connections: how a project's jobs reach a remote engine's server."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from datamill.domain.common import Description, Model
from datamill.domain.datasources import SecretRef
from datamill.errors import E, field_error

PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
"""1-65535, written without leading zeros."""
SPARK_CONNECT_URL = rf"^sc://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):{PORT}/?$"


def _bracketed_host_is_ipv6(url: str) -> str:
    """What the pattern cannot say: a bracketed host is a real IPv6 address."""
    if "[" in url:
        try:
            urlsplit(url)
        except ValueError:
            raise field_error(
                E.INVALID_PARAMETER, "the host in brackets is not an IPv6 address"
            ) from None
    return url


class EngineConnectionPut(Model):
    """A Spark Connect server: ``sc://host:port``. Its token, if it needs one, is the
    value ``token`` of the secret named by ``secret``."""

    type: str = Field(
        min_length=1, max_length=32, description="the engine's type: spark", examples=["spark"]
    )
    url: Annotated[str, AfterValidator(_bracketed_host_is_ipv6)] = Field(
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
