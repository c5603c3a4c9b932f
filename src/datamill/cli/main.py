"""``datamill``: the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datamill.config import Settings

app = typer.Typer(help="datamill: a self-hosted data-processing service.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """datamill: a self-hosted data-processing service."""


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


if __name__ == "__main__":  # pragma: no cover
    app()
