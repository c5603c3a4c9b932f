"""Users, API tokens and authentication."""

from __future__ import annotations

import os
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from datamill.domain.common import Page, PageOf
from datamill.domain.users import IssuedToken, Principal, Token, TokenCreate, User, UserCreate
from datamill.errors import DatamillError, E
from datamill.security.tokens import hash_token, new_token
from datamill.services.runtime import Runtime
from datamill.store.base import fetch_page, utcnow
from datamill.store.users import TokenRow, UserRow, first_admin, get_token_by_hash, get_user

ADMIN_NAME = "admin"


def _user_out(row: UserRow) -> User:
    return User(name=row.name, isAdmin=row.is_admin, createdAt=row.created_at)


def _token_out(row: TokenRow) -> Token:
    return Token(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        createdAt=row.created_at,
        expiresAt=row.expires_at,
        revokedAt=row.revoked_at,
        lastUsedAt=row.last_used_at,
    )


def authenticate(session: Session, token: str | None) -> Principal:
    """The user a presented token belongs to; 401 for a missing, unknown or dead token."""
    if not token:
        raise DatamillError(
            E.UNAUTHORIZED,
            "missing token: send 'Authorization: Bearer <token>' or 'X-Auth-Token: <token>'",
        )
    row = get_token_by_hash(session, hash_token(token))
    now = utcnow()
    if row is None:
        raise DatamillError(E.UNAUTHORIZED, "bad token: unknown token")
    if row.revoked_at is not None:
        raise DatamillError(E.UNAUTHORIZED, "bad token: the token was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise DatamillError(E.UNAUTHORIZED, "bad token: the token has expired")
    user = session.get(UserRow, row.user_id)
    if user is None:  # pragma: no cover - cascades delete tokens with their user
        raise DatamillError(E.UNAUTHORIZED, "bad token: its user no longer exists")
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        row.last_used_at = now
        session.commit()
    return Principal(id=user.id, name=user.name, isAdmin=user.is_admin)


def _require_admin(principal: Principal) -> None:
    if not principal.isAdmin:
        raise DatamillError(E.FORBIDDEN, "only an administrator may manage users")


def create_user(session: Session, principal: Principal, body: UserCreate) -> User:
    _require_admin(principal)
    row = UserRow(name=body.name, is_admin=body.isAdmin)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise DatamillError(E.USER_EXISTS, f"user '{body.name}' already exists") from None
    return _user_out(row)


def list_users(session: Session, principal: Principal, page: Page) -> PageOf[User]:
    _require_admin(principal)
    total, rows = fetch_page(
        session, select(UserRow).order_by(UserRow.name), page.offset, page.size
    )
    return PageOf[User](
        total=total, page=page.page, size=page.size, items=[_user_out(r) for r in rows]
    )


def get_user_row(session: Session, name: str) -> UserRow:
    row = get_user(session, name)
    if row is None:
        raise DatamillError(E.USER_NOT_FOUND, f"user '{name}' does not exist")
    return row


def delete_user(session: Session, principal: Principal, name: str) -> None:
    _require_admin(principal)
    row = get_user_row(session, name)
    if row.id == principal.id:
        raise DatamillError(E.FORBIDDEN, "an administrator cannot delete their own user")
    session.delete(row)
    session.commit()


def issue_token(session: Session, user: UserRow, body: TokenCreate) -> IssuedToken:
    """A new token for ``user``. The clear token is in the answer and nowhere else."""
    token = new_token()
    expires = utcnow() + timedelta(days=body.expiresInDays) if body.expiresInDays else None
    row = TokenRow(
        user_id=user.id,
        name=body.name,
        token_hash=hash_token(token),
        prefix=token[:10],
        expires_at=expires,
    )
    session.add(row)
    session.commit()
    return IssuedToken(**_token_out(row).model_dump(), token=token, user=user.name)


def issue_token_for(
    session: Session, principal: Principal, user_name: str, body: TokenCreate
) -> IssuedToken:
    if user_name != principal.name:
        _require_admin(principal)
    return issue_token(session, get_user_row(session, user_name), body)


def list_tokens(session: Session, principal: Principal, page: Page) -> PageOf[Token]:
    stmt = select(TokenRow).where(TokenRow.user_id == principal.id).order_by(TokenRow.id)
    total, rows = fetch_page(session, stmt, page.offset, page.size)
    return PageOf[Token](
        total=total, page=page.page, size=page.size, items=[_token_out(r) for r in rows]
    )


def revoke_token(session: Session, principal: Principal, token_id: int) -> Token:
    row = session.get(TokenRow, token_id)
    if row is None or (row.user_id != principal.id and not principal.isAdmin):
        raise DatamillError(E.TOKEN_NOT_FOUND, f"token {token_id} does not exist")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return _token_out(row)


def admin_principal(session: Session) -> Principal | None:
    """The first administrator, for work the server does in their name (None before the
    first start has created one)."""
    row = first_admin(session)
    return None if row is None else Principal(id=row.id, name=row.name, isAdmin=True)


def bootstrap_admin(runtime: Runtime) -> str | None:
    """On the very first start: create the admin user and write its token to a 0600 file.

    Returns the token file's path when it was created now, else None.
    """
    with runtime.sessions() as session:
        if first_admin(session) is not None:
            return None
        admin = UserRow(name=ADMIN_NAME, is_admin=True)
        session.add(admin)
        try:
            session.flush()
        except IntegrityError:  # another server bootstrapped at the same moment
            session.rollback()
            return None
        issued = issue_token(session, admin, TokenCreate(name="bootstrap"))
    token_file = runtime.settings.admin_token_file
    token_file.parent.mkdir(parents=True, exist_ok=True)
    if token_file.exists():
        token_file.unlink()
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(issued.token + "\n")
    return str(token_file)
