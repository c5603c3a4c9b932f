"""The client command groups: token, projects, users, datasources, schemas, variables, secrets."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from datamill.cli.context import get_client, get_state
from datamill.cli.render import (
    Column,
    done,
    print_json,
    schema_table,
    show_list,
    show_object,
    show_page,
    show_preview,
    to_json,
)
from datamill.client import (
    DataSource,
    IssuedToken,
    Member,
    Project,
    Role,
    Secret,
    Token,
    User,
    Variable,
    VariableType,
)

# --------------------------------------------------------------------------- shared options

PageOpt = Annotated[int, typer.Option("--page", min=1, help="page number, from 1")]
SizeOpt = Annotated[int, typer.Option("--size", min=1, max=1000, help="items per page")]
ProjectArg = Annotated[str, typer.Argument(help="project name", show_default=False)]
NameArg = Annotated[str, typer.Argument(help="resource name", show_default=False)]
ExpiresOpt = Annotated[
    int | None,
    typer.Option("--expires-in-days", min=1, max=3650, help="days until it expires; default never"),
]
AtOpt = Annotated[
    str | None,
    typer.Option("--at", help="batch time, ISO 8601 (2024-05-01T10:00:00+02:00); default now"),
]


def _read_text(source: str, what: str) -> str:
    """``-`` reads stdin, anything else is a file path."""
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {source}: {exc.strerror or exc}", param_hint=what)


def _json_arg(text: str, what: str, kind: type[dict[Any, Any]] | type[list[Any]]) -> Any:
    """A JSON option: inline JSON, or ``@path`` for a file (``@-`` for stdin)."""
    if text.startswith("@"):
        text = _read_text(text[1:], what)
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint=what)
    if not isinstance(value, kind):
        expected = "a JSON object" if kind is dict else "a JSON array"
        raise typer.BadParameter(f"must be {expected}", param_hint=what)
    return value


def _body_file(path: str, allowed: set[str]) -> dict[str, Any]:
    body = _json_arg("@" + path, "'--file'", dict)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise typer.BadParameter(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            param_hint="'--file'",
        )
    return dict(body)


def _key_values(
    pairs: list[str], what: str, from_files: bool = False, form: str = "KEY=VALUE"
) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected {form}, got '{key}'", param_hint=what)
        values[key] = _read_text(value, what).rstrip("\n") if from_files else value
    return values


# --------------------------------------------------------------------------- columns

PROJECT_COLUMNS: list[Column] = [
    ("name", lambda p: p.name),
    ("role", lambda p: p.role),
    ("description", lambda p: p.description),
    ("updated", lambda p: p.updatedAt),
]
MEMBER_COLUMNS: list[Column] = [
    ("user", lambda m: m.user),
    ("role", lambda m: m.role),
    ("since", lambda m: m.createdAt),
]
USER_COLUMNS: list[Column] = [
    ("name", lambda u: u.name),
    ("admin", lambda u: u.isAdmin),
    ("created", lambda u: u.createdAt),
]
TOKEN_COLUMNS: list[Column] = [
    ("id", lambda t: t.id),
    ("name", lambda t: t.name),
    ("prefix", lambda t: t.prefix),
    ("created", lambda t: t.createdAt),
    ("expires", lambda t: t.expiresAt),
    ("revoked", lambda t: t.revokedAt),
    ("last used", lambda t: t.lastUsedAt),
]
DATASOURCE_COLUMNS: list[Column] = [
    ("name", lambda d: d.name),
    ("type", lambda d: d.type),
    ("format", lambda d: d.spec.get("fileType")),
    ("fields", lambda d: len(d.schema_)),
    ("verified", lambda d: not d.noVerifySchema),
    ("updated", lambda d: d.updatedAt),
]
VARIABLE_COLUMNS: list[Column] = [
    ("name", lambda v: v.name),
    ("type", lambda v: v.type),
    ("system", lambda v: v.system),
    ("value", lambda v: v.value),
    ("format", lambda v: v.format),
]
SECRET_COLUMNS: list[Column] = [
    ("name", lambda s: s.name),
    ("keys", lambda s: ", ".join(s.keys)),
    ("description", lambda s: s.description),
    ("updated", lambda s: s.updatedAt),
]


def _show_issued(ctx: typer.Context, issued: IssuedToken) -> None:
    state = get_state(ctx)
    if state.json:
        print_json(to_json(issued))
        return
    rows = [(n, getattr(issued, n)) for n in ("user", "id", "name", "prefix", "expiresAt")]
    show_object(state, issued, rows)
    typer.echo(f"token: {issued.token}")
    typer.echo("store the token now: it is not shown again", err=True)


def _show_datasource(ctx: typer.Context, source: DataSource) -> None:
    rows = [
        ("name", source.name),
        ("type", source.type),
        ("region", source.region),
        ("spec", source.spec),
        ("noVerifySchema", source.noVerifySchema),
        ("createdAt", source.createdAt),
        ("updatedAt", source.updatedAt),
    ]
    show_object(get_state(ctx), source, rows, extra=[schema_table(source.schema_)])


# --------------------------------------------------------------------------- token

token_app = typer.Typer(help="Who the token belongs to, and the caller's own tokens.")


@token_app.command("whoami")
def token_whoami(ctx: typer.Context) -> None:
    """Show the user the token belongs to."""
    show_object(get_state(ctx), get_client(ctx).users.me())


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="a label for the token")] = "default",
    expires_in_days: ExpiresOpt = None,
) -> None:
    """Issue a new token for yourself; it is printed this once only."""
    _show_issued(ctx, get_client(ctx).tokens.create(name, expires_in_days=expires_in_days))


@token_app.command("list")
def token_list(ctx: typer.Context, page: PageOpt = 1, size: SizeOpt = 50) -> None:
    """List your tokens (their prefixes, never the tokens)."""
    result = get_client(ctx).tokens.list(page=page, size=size)
    show_page(get_state(ctx), result, "tokens", TOKEN_COLUMNS)


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context, token_id: Annotated[int, typer.Argument(metavar="ID", min=1)]
) -> None:
    """Revoke a token by id (see `token list`)."""
    token: Token = get_client(ctx).tokens.revoke(token_id)
    show_object(get_state(ctx), token)


# --------------------------------------------------------------------------- projects

projects_app = typer.Typer(help="Projects and their members.")
members_app = typer.Typer(help="A project's members and their roles.")
projects_app.add_typer(members_app, name="members")


@projects_app.command("list")
def projects_list(ctx: typer.Context, page: PageOpt = 1, size: SizeOpt = 50) -> None:
    """List the projects you are a member of."""
    result = get_client(ctx).projects.list(page=page, size=size)
    show_page(get_state(ctx), result, "projects", PROJECT_COLUMNS)


@projects_app.command("create")
def projects_create(
    ctx: typer.Context,
    name: NameArg,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
) -> None:
    """Create a project; you become its owner."""
    show_object(get_state(ctx), get_client(ctx).projects.create(name, description))


@projects_app.command("get")
def projects_get(ctx: typer.Context, name: NameArg) -> None:
    """Show a project and your role in it."""
    show_object(get_state(ctx), get_client(ctx).projects.get(name))


@projects_app.command("update")
def projects_update(
    ctx: typer.Context,
    name: NameArg,
    description: Annotated[str, typer.Option("--description", "-d", show_default=False)],
) -> None:
    """Change a project's description."""
    project: Project = get_client(ctx).projects.update(name, description)
    show_object(get_state(ctx), project)


@projects_app.command("delete")
def projects_delete(
    ctx: typer.Context,
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Delete a project with ALL its resources and data (owners only)."""
    if not yes:
        typer.confirm(f"delete project '{name}' with all its resources and data?", abort=True)
    get_client(ctx).projects.delete(name)
    done(get_state(ctx), f"deleted project '{name}'")


@members_app.command("list")
def members_list(
    ctx: typer.Context, project: ProjectArg, page: PageOpt = 1, size: SizeOpt = 50
) -> None:
    """List a project's members."""
    result = get_client(ctx).projects.members.list(project, page=page, size=size)
    show_page(get_state(ctx), result, "members", MEMBER_COLUMNS)


@members_app.command("add")
def members_add(
    ctx: typer.Context,
    project: ProjectArg,
    user: Annotated[str, typer.Argument(help="user name", show_default=False)],
    role: Annotated[Role, typer.Option("--role", help="the member's role")] = Role.editor,
) -> None:
    """Add a member, or change a member's role (owners only)."""
    member: Member = get_client(ctx).projects.members.put(project, user, role)
    show_object(get_state(ctx), member)


@members_app.command("remove")
def members_remove(
    ctx: typer.Context,
    project: ProjectArg,
    user: Annotated[str, typer.Argument(help="user name", show_default=False)],
) -> None:
    """Remove a member (owners only); the last owner stays."""
    get_client(ctx).projects.members.remove(project, user)
    done(get_state(ctx), f"removed '{user}' from project '{project}'")


# --------------------------------------------------------------------------- users

users_app = typer.Typer(help="Users (administrators only, except issuing your own token).")


@users_app.command("list")
def users_list(ctx: typer.Context, page: PageOpt = 1, size: SizeOpt = 50) -> None:
    """List users."""
    result = get_client(ctx).users.list(page=page, size=size)
    show_page(get_state(ctx), result, "users", USER_COLUMNS)


@users_app.command("create")
def users_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="user name", show_default=False)],
    admin: Annotated[bool, typer.Option("--admin", help="make the user an administrator")] = False,
) -> None:
    """Create a user; give them a token with `users issue-token`."""
    user: User = get_client(ctx).users.create(name, is_admin=admin)
    show_object(get_state(ctx), user)


@users_app.command("delete")
def users_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="user name", show_default=False)],
) -> None:
    """Delete a user and their tokens."""
    get_client(ctx).users.delete(name)
    done(get_state(ctx), f"deleted user '{name}'")


@users_app.command("issue-token")
def users_issue_token(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="user name", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="a label for the token")] = "default",
    expires_in_days: ExpiresOpt = None,
) -> None:
    """Issue a token for a user; it is printed this once only."""
    issued = get_client(ctx).users.issue_token(user, name, expires_in_days=expires_in_days)
    _show_issued(ctx, issued)


# --------------------------------------------------------------------------- datasources

datasources_app = typer.Typer(help="Data sources of a project's batch catalog.")

FileOpt = Annotated[
    str | None,
    typer.Option(
        "--file", "-f", help="the request body as a JSON file ('-' reads stdin)", show_default=False
    ),
]
SpecOpt = Annotated[
    str | None,
    typer.Option("--spec", help="the spec as JSON, or @file", show_default=False),
]
SchemaOpt = Annotated[
    str | None,
    typer.Option(
        "--schema",
        help='schema fields as a JSON array ([{"key": "id", "valtype": "long"}]), or @file',
        show_default=False,
    ),
]
CREATE_FIELDS = {"type", "spec", "schema", "noVerifySchema", "region", "workflow"}


@datasources_app.command("list")
def datasources_list(
    ctx: typer.Context,
    project: ProjectArg,
    sort_by: Annotated[
        str, typer.Option("--sort-by", help="name, createdAt or updatedAt; '-' prefix: descending")
    ] = "name",
    page: PageOpt = 1,
    size: SizeOpt = 50,
) -> None:
    """List a project's data sources."""
    result = get_client(ctx).datasources.list(project, page=page, size=size, sort_by=sort_by)
    show_page(get_state(ctx), result, "datasources", DATASOURCE_COLUMNS)


@datasources_app.command("get")
def datasources_get(ctx: typer.Context, project: ProjectArg, name: NameArg) -> None:
    """Show a data source and its schema."""
    _show_datasource(ctx, get_client(ctx).datasources.get(project, name))


@datasources_app.command("create")
def datasources_create(
    ctx: typer.Context,
    project: ProjectArg,
    name: NameArg,
    file: FileOpt = None,
    type_: Annotated[
        str | None, typer.Option("--type", help="file, s3 or hdfs", show_default=False)
    ] = None,
    spec: SpecOpt = None,
    schema: SchemaOpt = None,
    no_verify_schema: Annotated[
        bool,
        typer.Option("--no-verify-schema", help="keep --schema as given instead of inferring it"),
    ] = False,
    region: Annotated[str | None, typer.Option("--region", show_default=False)] = None,
) -> None:
    """Create a data source from --file, or from --type and --spec; options override the file.

    Unless --no-verify-schema is given the schema is inferred from the data.
    """
    body = _body_file(file, CREATE_FIELDS) if file else {}
    kind = type_ or body.get("type")
    spec_value = _json_arg(spec, "'--spec'", dict) if spec else body.get("spec")
    schema_value = _json_arg(schema, "'--schema'", list) if schema else body.get("schema")
    if not kind:
        raise typer.BadParameter("give --type, or a 'type' in --file", param_hint="'--type'")
    if not isinstance(spec_value, dict):
        raise typer.BadParameter("give --spec, or a 'spec' object in --file", param_hint="'--spec'")
    source = get_client(ctx).datasources.create(
        project,
        name,
        type=str(kind),
        spec=spec_value,
        schema=schema_value,
        no_verify_schema=no_verify_schema or bool(body.get("noVerifySchema", False)),
        region=region or body.get("region"),
        workflow=body.get("workflow"),
    )
    _show_datasource(ctx, source)


@datasources_app.command("update")
def datasources_update(
    ctx: typer.Context,
    project: ProjectArg,
    name: NameArg,
    file: FileOpt = None,
    spec: SpecOpt = None,
    schema: SchemaOpt = None,
) -> None:
    """Replace a data source's spec (from --file or --spec); its schema may only gain fields."""
    body = _body_file(file, {"spec", "schema"}) if file else {}
    spec_value = _json_arg(spec, "'--spec'", dict) if spec else body.get("spec")
    schema_value = _json_arg(schema, "'--schema'", list) if schema else body.get("schema")
    if not isinstance(spec_value, dict):
        raise typer.BadParameter("give --spec, or a 'spec' object in --file", param_hint="'--spec'")
    source = get_client(ctx).datasources.update(project, name, spec=spec_value, schema=schema_value)
    _show_datasource(ctx, source)


@datasources_app.command("delete")
def datasources_delete(ctx: typer.Context, project: ProjectArg, name: NameArg) -> None:
    """Delete a data source that no job reads."""
    get_client(ctx).datasources.delete(project, name)
    done(get_state(ctx), f"deleted data source '{name}'")


@datasources_app.command("preview")
def datasources_preview(
    ctx: typer.Context,
    project: ProjectArg,
    name: NameArg,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="rows to show")] = 20,
    at: AtOpt = None,
) -> None:
    """Show the first rows of a data source."""
    preview = get_client(ctx).datasources.preview(project, name, limit=limit, at=at)
    show_preview(get_state(ctx), preview)


# --------------------------------------------------------------------------- schemas

schemas_app = typer.Typer(help="Schema inference.")


@schemas_app.command("infer")
def schemas_infer(
    ctx: typer.Context,
    project: ProjectArg,
    type_: Annotated[str, typer.Option("--type", help="file, s3 or hdfs", show_default=False)],
    spec: Annotated[str, typer.Option("--spec", help="the spec as JSON, or @file")],
) -> None:
    """Infer the schema a data source spec would get, without saving anything."""
    fields = get_client(ctx).schemas.infer(project, type_, _json_arg(spec, "'--spec'", dict))
    state = get_state(ctx)
    if state.json:
        print_json({"schema": to_json(fields)})
    else:
        show_list(
            state,
            fields,
            [
                ("key", lambda f: f.key),
                ("valtype", lambda f: f.valtype),
                ("required", lambda f: f.required),
            ],
            "fields",
        )


# --------------------------------------------------------------------------- variables

variables_app = typer.Typer(help="Magic variables: system (read-only) and user variables.")


class VariableKind(StrEnum):
    """Which variables ``variables list`` shows."""

    system = "system"
    user = "user"


VarTypeOpt = Annotated[
    VariableType, typer.Option("--type", help="time or string", show_default=False)
]
ValueOpt = Annotated[
    str,
    typer.Option(
        "--value", help="time: an expression like '$(now)-1d'; string: text", show_default=False
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="time only: a pattern like yyyy-MM-dd", show_default=False),
]


@variables_app.command("list")
def variables_list(
    ctx: typer.Context,
    project: ProjectArg,
    type_: Annotated[
        VariableKind | None,
        typer.Option("--type", help="system or user; default both", show_default=False),
    ] = None,
    page: PageOpt = 1,
    size: SizeOpt = 50,
) -> None:
    """List variables: system ones first, then the project's own."""
    kind: Literal["system", "user"] | None = None
    if type_ is not None:
        kind = "system" if type_ == VariableKind.system else "user"
    result = get_client(ctx).variables.list(project, type=kind, page=page, size=size)
    show_page(get_state(ctx), result, "variables", VARIABLE_COLUMNS)


@variables_app.command("get")
def variables_get(ctx: typer.Context, project: ProjectArg, name: NameArg, at: AtOpt = None) -> None:
    """Show a variable and its value resolved at a batch time."""
    show_object(get_state(ctx), get_client(ctx).variables.get(project, name, at=at))


@variables_app.command("create")
def variables_create(
    ctx: typer.Context,
    project: ProjectArg,
    name: NameArg,
    type_: VarTypeOpt,
    value: ValueOpt,
    format_: FormatOpt = None,
) -> None:
    """Create a user variable."""
    variable: Variable = get_client(ctx).variables.create(
        project, name, type=type_, value=value, format=format_
    )
    show_object(get_state(ctx), variable)


@variables_app.command("update")
def variables_update(
    ctx: typer.Context,
    project: ProjectArg,
    name: NameArg,
    type_: VarTypeOpt,
    value: ValueOpt,
    format_: FormatOpt = None,
) -> None:
    """Replace a user variable's definition."""
    variable: Variable = get_client(ctx).variables.update(
        project, name, type=type_, value=value, format=format_
    )
    show_object(get_state(ctx), variable)


@variables_app.command("delete")
def variables_delete(ctx: typer.Context, project: ProjectArg, name: NameArg) -> None:
    """Delete a user variable that no other variable uses."""
    get_client(ctx).variables.delete(project, name)
    done(get_state(ctx), f"deleted variable '{name}'")


# --------------------------------------------------------------------------- secrets

secrets_app = typer.Typer(help="Secrets: write-only credentials (values are never shown).")

ValuesOpt = Annotated[
    list[str] | None,
    typer.Option("--value", help="KEY=VALUE (repeatable); prefer --value-file on shared machines"),
]
ValueFilesOpt = Annotated[
    list[str] | None,
    typer.Option("--value-file", help="KEY=PATH: the value is read from a file ('-' = stdin)"),
]
DescriptionOpt = Annotated[str, typer.Option("--description", "-d")]


def _secret_values(values: list[str] | None, value_files: list[str] | None) -> dict[str, str]:
    result = _key_values(values or [], "'--value'")
    result.update(_key_values(value_files or [], "'--value-file'", from_files=True))
    if not result:
        raise typer.BadParameter(
            "give at least one --value or --value-file", param_hint="'--value'"
        )
    return result


@secrets_app.command("list")
def secrets_list(
    ctx: typer.Context, project: ProjectArg, page: PageOpt = 1, size: SizeOpt = 50
) -> None:
    """List a project's secrets (names and value names)."""
    result = get_client(ctx).secrets.list(project, page=page, size=size)
    show_page(get_state(ctx), result, "secrets", SECRET_COLUMNS)


@secrets_app.command("get")
def secrets_get(ctx: typer.Context, project: ProjectArg, name: NameArg) -> None:
    """Show a secret's description and the names of its values."""
    show_object(get_state(ctx), get_client(ctx).secrets.get(project, name))


@secrets_app.command("create")
def secrets_create(
    ctx: typer.Context,
    project: ProjectArg,
    name: NameArg,
    value: ValuesOpt = None,
    value_file: ValueFilesOpt = None,
    description: DescriptionOpt = "",
) -> None:
    """Store a secret; its values are encrypted and never shown again."""
    values = _secret_values(value, value_file)
    secret: Secret = get_client(ctx).secrets.create(project, name, values, description=description)
    show_object(get_state(ctx), secret)


@secrets_app.command("update")
def secrets_update(
    ctx: typer.Context,
    project: ProjectArg,
    name: NameArg,
    value: ValuesOpt = None,
    value_file: ValueFilesOpt = None,
    description: DescriptionOpt = "",
) -> None:
    """Replace a secret's values (all of them) and description."""
    values = _secret_values(value, value_file)
    secret: Secret = get_client(ctx).secrets.update(project, name, values, description=description)
    show_object(get_state(ctx), secret)


@secrets_app.command("delete")
def secrets_delete(ctx: typer.Context, project: ProjectArg, name: NameArg) -> None:
    """Delete a secret that no resource uses."""
    get_client(ctx).secrets.delete(project, name)
    done(get_state(ctx), f"deleted secret '{name}'")


GROUPS: list[tuple[str, typer.Typer]] = [
    ("token", token_app),
    ("projects", projects_app),
    ("users", users_app),
    ("datasources", datasources_app),
    ("schemas", schemas_app),
    ("variables", variables_app),
    ("secrets", secrets_app),
]
"""The command groups, in the order ``datamill --help`` lists them."""

__all__ = ["GROUPS"]
