"""Users and API tokens (``/users``, ``/tokens``)."""

from __future__ import annotations

import builtins
from collections.abc import Iterator

from datamill.client.base import Resource, api_path, walk_pages
from datamill.client.models import IssuedToken, Page, Principal, Token, User

__all__ = ["TokensAPI", "UsersAPI"]


class UsersAPI(Resource):
    """Users; all but :meth:`me` and issuing one's own token need an administrator."""

    def me(self) -> Principal:
        """Who the token belongs to."""
        return self._get(Principal, "/users/me")

    def create(self, name: str, *, is_admin: bool = False) -> User:
        """Create a user (they need a token from :meth:`issue_token` to log in)."""
        return self._send("POST", User, "/users", {"name": name, "isAdmin": is_admin})

    def list(self, *, page: int = 1, size: int = 50) -> Page[User]:
        """One page of the users, by name."""
        return self._page(User, "/users", "users", page, size)

    def iter_all(self) -> Iterator[User]:
        """Every user, walking the pages."""
        return walk_pages(lambda p, s: self.list(page=p, size=s))

    def list_all(self) -> builtins.list[User]:
        """Every user, as one list."""
        return list(self.iter_all())

    def delete(self, name: str) -> None:
        """Delete a user and their tokens."""
        self._delete(api_path("users", name))

    def issue_token(
        self, user: str, name: str = "default", *, expires_in_days: int | None = None
    ) -> IssuedToken:
        """A new token for ``user``; :attr:`IssuedToken.token` is shown this once only."""
        body = {"name": name, "expiresInDays": expires_in_days}
        return self._send("POST", IssuedToken, api_path("users", user, "tokens"), body)


class TokensAPI(Resource):
    """The caller's own API tokens."""

    def create(self, name: str = "default", *, expires_in_days: int | None = None) -> IssuedToken:
        """A new token for the caller; :attr:`IssuedToken.token` is shown this once only."""
        body = {"name": name, "expiresInDays": expires_in_days}
        return self._send("POST", IssuedToken, "/tokens", body)

    def list(self, *, page: int = 1, size: int = 50) -> Page[Token]:
        """One page of the caller's tokens (their prefixes, never the tokens)."""
        return self._page(Token, "/tokens", "tokens", page, size)

    def iter_all(self) -> Iterator[Token]:
        """Every token of the caller, walking the pages."""
        return walk_pages(lambda p, s: self.list(page=p, size=s))

    def list_all(self) -> builtins.list[Token]:
        """Every token of the caller, as one list."""
        return list(self.iter_all())

    def revoke(self, token_id: int) -> Token:
        """Revoke a token by id; it stops working at once."""
        return self._send("DELETE", Token, api_path("tokens", token_id), None)
