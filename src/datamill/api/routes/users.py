"""Users (administrators manage them) and API tokens (everyone manages their own)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from datamill.api.deps import CurrentUser, PageDep, SessionDep, UserName
from datamill.domain.common import Model
from datamill.domain.users import IssuedToken, Principal, Token, TokenCreate, User, UserCreate
from datamill.services import users as service

router = APIRouter(tags=["users and tokens"])


class UserList(Model):
    total: int
    page: int
    size: int
    users: list[User]


class TokenList(Model):
    total: int
    page: int
    size: int
    tokens: list[Token]


@router.get("/users/me", summary="Who the token belongs to")
def whoami(user: CurrentUser) -> Principal:
    return user


@router.post(
    "/users", status_code=status.HTTP_201_CREATED, summary="Create a user (administrators only)"
)
def create_user(body: UserCreate, session: SessionDep, user: CurrentUser) -> User:
    return service.create_user(session, user, body)


@router.get("/users", summary="List users (administrators only)")
def list_users(session: SessionDep, user: CurrentUser, page: PageDep) -> UserList:
    result = service.list_users(session, user, page)
    return UserList(total=result.total, page=result.page, size=result.size, users=result.items)


@router.delete(
    "/users/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a user and their tokens (administrators only)",
)
def delete_user(name: UserName, session: SessionDep, user: CurrentUser) -> None:
    service.delete_user(session, user, name)


@router.post(
    "/users/{name}/tokens",
    status_code=status.HTTP_201_CREATED,
    summary="Issue a token for a user (themselves, or anyone for an administrator); "
    "the token is shown only in this response",
)
def issue_user_token(
    name: UserName, body: TokenCreate, session: SessionDep, user: CurrentUser
) -> IssuedToken:
    return service.issue_token_for(session, user, name, body)


@router.post(
    "/tokens",
    status_code=status.HTTP_201_CREATED,
    summary="Issue a new token for the caller; shown only in this response",
)
def issue_token(body: TokenCreate, session: SessionDep, user: CurrentUser) -> IssuedToken:
    return service.issue_token_for(session, user, user.name, body)


@router.get("/tokens", summary="List the caller's tokens (never the tokens themselves)")
def list_tokens(session: SessionDep, user: CurrentUser, page: PageDep) -> TokenList:
    result = service.list_tokens(session, user, page)
    return TokenList(total=result.total, page=result.page, size=result.size, tokens=result.items)


@router.delete("/tokens/{token_id}", summary="Revoke a token")
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=2**31 - 1)], session: SessionDep, user: CurrentUser
) -> Token:
    return service.revoke_token(session, user, token_id)
