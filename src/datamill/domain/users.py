"""Users and API tokens."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from datamill.domain.common import Model, Name


class UserCreate(Model):
    name: Name
    isAdmin: bool = False


class User(Model):
    name: str
    isAdmin: bool
    createdAt: datetime


class TokenCreate(Model):
    name: Name = "default"
    expiresInDays: int | None = Field(
        None, ge=1, le=3650, description="days until the token expires; none = never"
    )


class Token(Model):
    id: int
    name: str
    prefix: str = Field(description="the first characters of the token, to recognise it")
    createdAt: datetime
    expiresAt: datetime | None
    revokedAt: datetime | None
    lastUsedAt: datetime | None


class IssuedToken(Token):
    token: str = Field(description="the token itself: shown this once, never again")
    user: str


class Principal(Model):
    """The authenticated caller."""

    id: int
    name: str
    isAdmin: bool
