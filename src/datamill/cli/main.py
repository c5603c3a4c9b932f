"""``datamill``: the command line.

``datamill server`` runs the service; every other command group talks to a running server
through :class:`datamill.client.DatamillClient` (see docs/cli.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datamill import __version__
from datamill.cli.commands import GROUPS
from datamill.cli.context import (
    ClientErrorGroup,
    Output,
    State,
    default_client_factory,
    get_client,
    get_state,
)
from datamill.cli.exports import EXPORT_GROUPS
from datamill.cli.jobs import JOB_GROUPS
from datamill.cli.render import console, fields_table, print_json, to_json
from datamill.cli.streaming import STREAMING_GROUPS
from datamill.client import DEFAULT_URL
from datamill.config import Settings

app = typer.Typer(
    cls=ClientErrorGroup,
    help="datamill: a self-hosted data-processing service.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option("--url", envvar="DATAMILL_URL", help="the server's address"),
    ] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="DATAMILL_TOKEN",
            help="API token; default: the file <DATAMILL_DATA_DIR or ./.datamill>/admin.token",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Output, typer.Option("--output", "-o", help="table for people, json for scripts")
    ] = Output.table,
) -> None:
    """datamill: a self-hosted data-processing service."""
    factory = ctx.obj if callable(ctx.obj) else default_client_factory
    state = State(url=url, token=token, output=output, factory=factory)
    ctx.obj = state
    ctx.call_on_close(state.close)


@app.command()
def server(
    demo: Annotated[bool, typer.Option(help="create the demo project and sample data")] = False,
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="data folder (DATAMILL_DATA_DIR)")] = None,
) -> None:
    """Start the datamill server (API, and later scheduler and workers)."""
    from datamill.server import serve

    overrides = {
        k: v for k, v in {"host": host, "port": port, "data_dir": data_dir}.items() if v is not None
    }
    serve(Settings(**overrides), demo=demo)  # type: ignore[arg-type]


@app.command()
def health(ctx: typer.Context) -> None:
    """Check that the server and its metadata store are up (needs no token)."""
    result = get_client(ctx).health()
    show = get_state(ctx)
    if show.json:
        print_json(to_json(result))
    else:
        console().print(fields_table([("status", result.status), ("database", result.database)]))
    if result.status != "ok":
        raise typer.Exit(1)


@app.command()
def version(ctx: typer.Context) -> None:
    """Show the server's version (and this client's)."""
    result = get_client(ctx).version()
    state = get_state(ctx)
    if state.json:
        print_json(to_json(result))
        return
    rows = [("server", result.version), ("database", result.database), ("client", __version__)]
    console().print(fields_table(rows))


for _name, _group in [*GROUPS, *JOB_GROUPS, *EXPORT_GROUPS, *STREAMING_GROUPS]:
    app.add_typer(_group, name=_name)


if __name__ == "__main__":  # pragma: no cover
    app()
