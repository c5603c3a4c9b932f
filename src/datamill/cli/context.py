"""What every client command shares: the global options, the client factory, error handling.

The CLI builds its :class:`~datamill.client.DatamillClient` through one factory,
``factory(url, token)``. The default one connects over HTTP; tests (or embedding programs)
pass their own as the click context object::

    runner.invoke(app, ["projects", "list"], obj=lambda url, token: DatamillClient(
        url, token, http=test_client))
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from datamill.client import (
    DatamillAPIError,
    DatamillClient,
    DatamillClientError,
    DatamillConnectionError,
    InvalidName,
)

ClientFactory = Callable[[str, str | None], DatamillClient]

EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3


class Output(StrEnum):
    """How results are printed."""

    table = "table"
    json = "json"


def default_client_factory(url: str, token: str | None) -> DatamillClient:
    """The client of a real server at ``url``."""
    return DatamillClient(url, token)


def token_file() -> Path:
    """``<data dir>/admin.token``, the data dir being ``DATAMILL_DATA_DIR`` or ``./.datamill``."""
    data_dir = os.environ.get("DATAMILL_DATA_DIR") or "./.datamill"
    return Path(data_dir).expanduser() / "admin.token"


def read_token_file() -> str | None:
    """The token in :func:`token_file`, or ``None`` when there is no readable one."""
    path = token_file()
    try:
        text = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    except OSError:
        return None
    return text or None


@dataclass
class State:
    """The global options of one invocation, and the client built from them on first use."""

    url: str
    token: str | None
    output: Output
    factory: ClientFactory = default_client_factory
    _client: DatamillClient | None = field(default=None, repr=False)

    @property
    def json(self) -> bool:
        return self.output == Output.json

    @property
    def client(self) -> DatamillClient:
        if self._client is None:
            token = self.token or read_token_file()
            try:
                self._client = self.factory(self.url, token)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="'--url'") from None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def get_state(ctx: typer.Context) -> State:
    state = ctx.find_object(State)
    if state is None:  # pragma: no cover - the root callback always sets it
        raise RuntimeError("the datamill CLI state is missing")
    return state


def get_client(ctx: typer.Context) -> DatamillClient:
    return get_state(ctx).client


def api_error_text(exc: DatamillAPIError) -> str:
    """``error E18102: data source 'x' does not exist (request abc)``."""
    text = f"error {exc.error_code}: {exc.error_msg}"
    return f"{text} (request {exc.request_id})" if exc.request_id else text


class ClientErrorGroup(TyperGroup):
    """The root command group: turns client failures into one line on stderr and an exit code.

    API errors exit with 1, connection failures with 3; usage errors (click's, and names the
    client refuses) with 2.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except DatamillAPIError as exc:
            typer.echo(api_error_text(exc), err=True)
            raise typer.Exit(EXIT_API_ERROR) from None
        except DatamillConnectionError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_CONNECTION) from None
        except InvalidName as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
        except DatamillClientError as exc:  # an answer the client cannot read
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_API_ERROR) from None
