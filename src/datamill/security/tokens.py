"""API tokens: 256 bits of randomness, shown once, stored only as their SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "dm_"  # noqa: S105 - a public marker, not a secret


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented token against a stored hash."""
    return hmac.compare_digest(hash_token(token), stored_hash)
