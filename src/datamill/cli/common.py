"""What the command groups share: options and arguments, reading JSON and ``KEY=VALUE``
input, the bodies of the list, get and delete commands every resource has, and the end of
a ``--wait`` (:func:`exit_if_failed`).

A resource's commands stay ordinary typer functions (their arguments differ: a project, a
job, a name ...); their bodies call one of :func:`list_command`, :func:`get_command` or
:func:`delete_command` with the client call to make::

    @secrets_app.command("delete")
    def secrets_delete(ctx: typer.Context, project: ProjectArg, name: NameArg) -> None:
        delete_command(ctx, lambda dm: dm.secrets.delete(project, name), f"secret '{name}'")
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel

from datamill.cli.context import EXIT_API_ERROR, get_client, get_state
from datamill.cli.render import Column, done, show_object, show_page
from datamill.client import DatamillClient, Page, RunStatus

M = TypeVar("M", bound=BaseModel)
FAILED = {RunStatus.Failed, RunStatus.Canceled}

# --------------------------------------------------------------------------- options

PageOpt = Annotated[int, typer.Option("--page", min=1, help="page number, from 1")]
SizeOpt = Annotated[int, typer.Option("--size", min=1, max=1000, help="items per page")]
ProjectArg = Annotated[str, typer.Argument(help="project name", show_default=False)]
NameArg = Annotated[str, typer.Argument(help="resource name", show_default=False)]
JobArg = Annotated[str, typer.Argument(metavar="JOB", help="job name", show_default=False)]
FileOpt = Annotated[
    str | None,
    typer.Option(
        "--file", "-f", help="the request body as a JSON file ('-' reads stdin)", show_default=False
    ),
]
RunIdArg = Annotated[
    str,
    typer.Argument(
        metavar="RUN_ID",
        help="the run's id (see `jobs history`), or 'latest'",
        show_default=False,
    ),
]
WaitOpt = Annotated[
    bool,
    typer.Option("--wait", help="wait for the run to finish; exit 1 if it ends Failed or Canceled"),
]
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", min=0.1, help="with --wait: seconds to wait at most"),
]


class OptionGroup:
    """Options that several commands share, declared once.

    typer reads a command's options from its signature. :meth:`add` puts the group's
    options into the signature of a command in place of its keyword-only parameter
    ``into``, and calls the command with their values as one dict in ``into``, keyed by
    the options' parameter names (``None``: not given)::

        SPEC = OptionGroup("fields", format=FormatOpt, bucket=BucketOpt)

        @app.command("create")
        @SPEC.add
        def create(ctx: typer.Context, *, fields: dict[str, Any]) -> None: ...
    """

    def __init__(self, into: str, **options: Any) -> None:
        self.into = into
        self.options = options
        """parameter name -> its ``Annotated[T | None, typer.Option(...)]``"""

    def add(self, command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        parameters: list[inspect.Parameter] = []
        for parameter in signature.parameters.values():
            if parameter.name != self.into:
                parameters.append(parameter)
                continue
            parameters += [
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=a)
                for name, a in self.options.items()
            ]
        if len(parameters) != len(signature.parameters) - 1 + len(self.options):
            raise TypeError(f"{command.__name__} has no keyword-only parameter '{self.into}'")

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> None:
            values = {name: kwargs.pop(name) for name in self.options}
            command(*args, **kwargs, **{self.into: values})

        run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
        return run


# --------------------------------------------------------------------------- input


def read_text(source: str, what: str) -> str:
    """``-`` reads stdin, anything else is a file path."""
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {source}: {exc.strerror or exc}", param_hint=what)


def json_arg(text: str, what: str, kind: type[dict[Any, Any]] | type[list[Any]]) -> Any:
    """A JSON option: inline JSON, or ``@path`` for a file (``@-`` for stdin)."""
    if text.startswith("@"):
        text = read_text(text[1:], what)
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint=what)
    if not isinstance(value, kind):
        expected = "a JSON object" if kind is dict else "a JSON array"
        raise typer.BadParameter(f"must be {expected}", param_hint=what)
    return value


def body_file(path: str, allowed: set[str]) -> dict[str, Any]:
    """The JSON object in ``--file`` (``-``: stdin), refusing fields outside ``allowed``."""
    body = json_arg("@" + path, "'--file'", dict)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise typer.BadParameter(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            param_hint="'--file'",
        )
    return dict(body)


def key_values(
    pairs: Sequence[str], what: str, from_files: bool = False, form: str = "KEY=VALUE"
) -> dict[str, str]:
    """``KEY=VALUE`` options as a dict; with ``from_files`` each value is a path to read."""
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected {form}, got '{key}'", param_hint=what)
        values[key] = read_text(value, what).rstrip("\n") if from_files else value
    return values


def run_id_arg(text: str, what: str = "'RUN_ID'") -> int:
    """A run id: a number, ``latest`` or ``-1`` (the job's latest run)."""
    if text.strip().lower() == "latest":
        return -1
    try:
        value = int(text)
    except ValueError:
        raise typer.BadParameter(f"'{text}' is not a run id or 'latest'", param_hint=what)
    if not -1 <= value <= 2**31 - 1:
        raise typer.BadParameter(f"{value} is not a run id", param_hint=what)
    return value


# --------------------------------------------------------------------------- command bodies


def list_command(
    ctx: typer.Context,
    fetch: Callable[[DatamillClient], Page[M]],
    key: str,
    columns: Sequence[Column],
    noun: str | None = None,
) -> None:
    """A list command: fetch one page and show it (the API's JSON, or a table)."""
    show_page(get_state(ctx), fetch(get_client(ctx)), key, columns, noun)


def get_command(
    ctx: typer.Context,
    fetch: Callable[[DatamillClient], M],
    show: Callable[[typer.Context, M], None] | None = None,
) -> None:
    """A get (or create, update ...) command: make the call and show the one resource it
    answers, with ``show`` or as a field table of all its fields."""
    result = fetch(get_client(ctx))
    if show is None:
        show_object(get_state(ctx), result)
    else:
        show(ctx, result)


def delete_command(ctx: typer.Context, delete: Callable[[DatamillClient], None], what: str) -> None:
    """A delete command: ``deleted <what>`` for people, nothing with ``--output json``."""
    delete(get_client(ctx))
    done(get_state(ctx), f"deleted {what}")


def exit_if_failed(what: str, status: RunStatus, message: str) -> None:
    """After ``--wait``: a run that ended Failed or Canceled is an error line and exit 1."""
    if status in FAILED:
        why = f": {message}" if message else ""
        typer.echo(f"error: {what} ended {status.value}{why}", err=True)
        raise typer.Exit(EXIT_API_ERROR)
