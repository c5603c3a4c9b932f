"""Secrets: write-only credentials, referenced by name from other resources."""

from __future__ import annotations

from fastapi import APIRouter, status

from datamill.api.deps import (
    PageDep,
    ProjectEditor,
    ProjectReader,
    ResourceName,
    RuntimeDep,
    SessionDep,
)
from datamill.domain.common import Model
from datamill.domain.secrets import Secret, SecretPut
from datamill.services import secrets as service

router = APIRouter(tags=["secrets"])
BASE = "/projects/{project}/secrets"


class SecretList(Model):
    total: int
    page: int
    size: int
    secrets: list[Secret]


@router.post(
    BASE + "/{name}",
    status_code=status.HTTP_201_CREATED,
    summary="Store a secret (encrypted at rest; its values are never returned)",
)
def create_secret(
    name: ResourceName,
    body: SecretPut,
    runtime: RuntimeDep,
    session: SessionDep,
    access: ProjectEditor,
) -> Secret:
    return service.create_secret(runtime, session, access, name, body)


@router.put(BASE + "/{name}", summary="Replace a secret's values")
def update_secret(
    name: ResourceName,
    body: SecretPut,
    runtime: RuntimeDep,
    session: SessionDep,
    access: ProjectEditor,
) -> Secret:
    return service.update_secret(runtime, session, access, name, body)


@router.get(BASE + "/{name}", summary="Get a secret's description and value names")
def get_secret(name: ResourceName, session: SessionDep, access: ProjectReader) -> Secret:
    return service.get_secret(session, access, name)


@router.get(BASE, summary="List secrets (names and value names only)")
def list_secrets(session: SessionDep, access: ProjectReader, page: PageDep) -> SecretList:
    result = service.list_secrets(session, access, page)
    return SecretList(total=result.total, page=result.page, size=result.size, secrets=result.items)


@router.delete(
    BASE + "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a secret no resource uses",
)
def delete_secret(name: ResourceName, session: SessionDep, access: ProjectEditor) -> None:
    service.delete_secret(session, access, name)
