"""The client command groups: token, projects, users, data roots, datasources, schemas,
variables, secrets, engines."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

import typer

from datamill.cli.common import (
    FileOpt,
    NameArg,
    PageOpt,
    ProjectArg,
    SizeOpt,
    body_file,
    delete_command,
    get_command,
    json_arg,
    key_values,
    list_command,
)
from datamill.cli.context import get_client, get_state
from datamill.cli.render import (
    Column,
    done,
    print_json,
    schema_table,
    show_list,
    show_object,
    show_preview,
    to_json,
)
from datamill.client import (
    DataSource,
    IssuedToken,
    Role,
    VariableType,
)

ExpiresOpt = Annotated[
    int | None,
    typer.Option("--expires-in-days", min=1, max=3650, help="days until it expires; default never"),
]
AtOpt = Annotated[
    str | None,
    typer.Option("--at", help="batch time, ISO 8601 (2024-05-01T10:00:00+02:00); default now"),
]


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
DATA_ROOT_COLUMNS: list[Column] = [
    ("name", lambda r: r.name),
    ("path", lambda r: r.path if r.path is not None else "(not configured)"),
    ("granted to", lambda r: ", ".join(g.project for g in r.grants)),
]
ENGINE_COLUMNS: list[Column] = [
    ("name", lambda e: e.name),
    ("type", lambda e: e.type),
    ("url", lambda e: e.url),
    ("secret", lambda e: e.secret),
    ("default", lambda e: e.default),
    ("description", lambda e: e.description),
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
    get_command(ctx, lambda dm: dm.users.me())


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="a label for the token")] = "default",
    expires_in_days: ExpiresOpt = None,
) -> None:
    """Issue a new token for yourself; it is printed this once only."""
    get_command(
        ctx, lambda dm: dm.tokens.create(name, expires_in_days=expires_in_days), _show_issued
    )


@token_app.command("list")
def token_list(ctx: typer.Context, page: PageOpt = 1, size: SizeOpt = 50) -> None:
    """List your tokens (their prefixes, never the tokens)."""
    list_command(ctx, lambda dm: dm.tokens.list(page=page, size=size), "tokens", TOKEN_COLUMNS)


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context, token_id: Annotated[int, typer.Argument(metavar="ID", min=1)]
) -> None:
    """Revoke a token by id (see `token list`)."""
    get_command(ctx, lambda dm: dm.tokens.revoke(token_id))


# --------------------------------------------------------------------------- projects

projects_app = typer.Typer(help="Projects and their members.")
members_app = typer.Typer(help="A project's members and their roles.")
projects_app.add_typer(members_app, name="members")


@projects_app.command("list")
def projects_list(ctx: typer.Context, page: PageOpt = 1, size: SizeOpt = 50) -> None:
    """List the projects you are a member of."""
    list_command(
        ctx, lambda dm: dm.projects.list(page=page, size=size), "projects", PROJECT_COLUMNS
    )


@projects_app.command("create")
def projects_create(
    ctx: typer.Context,
    name: NameArg,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
) -> None:
    """Create a project; you become its owner."""
    get_command(ctx, lambda dm: dm.projects.create(name, description))


@projects_app.command("get")
def projects_get(ctx: typer.Context, name: NameArg) -> None:
    """Show a project and your role in it."""
    get_command(ctx, lambda dm: dm.projects.get(name))


@projects_app.command("update")
def projects_update(
    ctx: typer.Context,
    name: NameArg,
    description: Annotated[str, typer.Option("--description", "-d", show_default=False)],
) -> None:
    """Change a project's description."""
    get_command(ctx, lambda dm: dm.projects.update(name, description))


@projects_app.command("delete")
def projects_delete(
    ctx: typer.Context,
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Delete a project with ALL its resources and data (owners only)."""
    if not yes:
        typer.confirm(f"delete project '{name}' with all its resources and data?", abort=True)
    delete_command(ctx, lambda dm: dm.projects.delete(name), f"project '{name}'")


@members_app.command("list")
def members_list(
    ctx: typer.Context, project: ProjectArg, page: PageOpt = 1, size: SizeOpt = 50
) -> None:
    """List a project's members."""
    list_command(
        ctx,
        lambda dm: dm.projects.members.list(project, page=page, size=size),
        "members",
        MEMBER_COLUMNS,
    )


@members_app.command("add")
def members_add(
    ctx: typer.Context,
    project: ProjectArg,
    user: Annotated[str, typer.Argument(help="user name", show_default=False)],
    role: Annotated[Role, typer.Option("--role", help="the member's role")] = Role.editor,
) -> None:
    """Add a member, or change a member's role (owners only)."""
    get_command(ctx, lambda dm: dm.projects.members.put(project, user, role))


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
    list_command(ctx, lambda dm: dm.users.list(page=page, size=size), "users", USER_COLUMNS)


@users_app.command("create")
def users_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="user name", show_default=False)],
    admin: Annotated[bool, typer.Option("--admin", help="make the user an administrator")] = False,
) -> None:
    """Create a user; give them a token with `users issue-token`."""
    get_command(ctx, lambda dm: dm.users.create(name, is_admin=admin))


@users_app.command("delete")
def users_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="user name", show_default=False)],
) -> None:
    """Delete a user and their tokens."""
    delete_command(ctx, lambda dm: dm.users.delete(name), f"user '{name}'")


@users_app.command("issue-token")
def users_issue_token(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="user name", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="a label for the token")] = "default",
    expires_in_days: ExpiresOpt = None,
) -> None:
    """Issue a token for a user; it is printed this once only."""
    get_command(
        ctx,
        lambda dm: dm.users.issue_token(user, name, expires_in_days=expires_in_days),
        _show_issued,
    )


# --------------------------------------------------------------------------- data roots

data_roots_app = typer.Typer(
    help="Data roots (administrators only): a project sees only its own folder of a root "
    "unless the root is granted to it."
)
RootArg = Annotated[str, typer.Argument(help="data root name", show_default=False)]
GranteeArg = Annotated[str, typer.Argument(help="project name", show_default=False)]


@data_roots_app.command("list")
def data_roots_list(ctx: typer.Context, page: PageOpt = 1, size: SizeOpt = 50) -> None:
    """List the data roots and the projects each is granted to."""
    list_command(
        ctx,
        lambda dm: dm.data_roots.list(page=page, size=size),
        "dataRoots",
        DATA_ROOT_COLUMNS,
        "data roots",
    )


@data_roots_app.command("grant")
def data_roots_grant(ctx: typer.Context, root: RootArg, project: GranteeArg) -> None:
    """Grant a whole root to a project: its paths there become relative to the root."""
    get_command(ctx, lambda dm: dm.data_roots.grant(root, project))


@data_roots_app.command("revoke")
def data_roots_revoke(ctx: typer.Context, root: RootArg, project: GranteeArg) -> None:
    """Revoke a grant: the project sees only its own folder of the root again."""
    dm = get_client(ctx)
    dm.data_roots.revoke(root, project)
    done(get_state(ctx), f"revoked data root '{root}' from project '{project}'")


# --------------------------------------------------------------------------- datasources

datasources_app = typer.Typer(help="Data sources of a project's batch catalog.")

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
    list_command(
        ctx,
        lambda dm: dm.datasources.list(project, page=page, size=size, sort_by=sort_by),
        "datasources",
        DATASOURCE_COLUMNS,
    )


@datasources_app.command("get")
def datasources_get(ctx: typer.Context, project: ProjectArg, name: NameArg) -> None:
    """Show a data source and its schema."""
    get_command(ctx, lambda dm: dm.datasources.get(project, name), _show_datasource)


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
    body = body_file(file, CREATE_FIELDS) if file else {}
    kind = type_ or body.get("type")
    spec_value = json_arg(spec, "'--spec'", dict) if spec else body.get("spec")
    schema_value = json_arg(schema, "'--schema'", list) if schema else body.get("schema")
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
    body = body_file(file, {"spec", "schema"}) if file else {}
    spec_value = json_arg(spec, "'--spec'", dict) if spec else body.get("spec")
    schema_value = json_arg(schema, "'--schema'", list) if schema else body.get("schema")
    if not isinstance(spec_value, dict):
        raise typer.BadParameter("give --spec, or a 'spec' object in --file", param_hint="'--spec'")
    source = get_client(ctx).datasources.update(project, name, spec=spec_value, schema=schema_value)
    _show_datasource(ctx, source)


@datasources_app.command("delete")
def datasources_delete(ctx: typer.Context, project: ProjectArg, name: NameArg) -> None:
    """Delete a data source that no job reads."""
    delete_command(ctx, lambda dm: dm.datasources.delete(project, name), f"data source '{name}'")


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
    fields = get_client(ctx).schemas.infer(project, type_, json_arg(spec, "'--spec'", dict))
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
    list_command(
        ctx,
        lambda dm: dm.variables.list(project, type=kind, page=page, size=size),
        "variables",
        VARIABLE_COLUMNS,
    )


@variables_app.command("get")
def variables_get(ctx: typer.Context, project: ProjectArg, name: NameArg, at: AtOpt = None) -> None:
    """Show a variable and its value resolved at a batch time."""
    get_command(ctx, lambda dm: dm.variables.get(project, name, at=at))


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
    get_command(
        ctx, lambda dm: dm.variables.create(project, name, type=type_, value=value, format=format_)
    )


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
    get_command(
        ctx, lambda dm: dm.variables.update(project, name, type=type_, value=value, format=format_)
    )


@variables_app.command("delete")
def variables_delete(ctx: typer.Context, project: ProjectArg, name: NameArg) -> None:
    """Delete a user variable that no other variable uses."""
    delete_command(ctx, lambda dm: dm.variables.delete(project, name), f"variable '{name}'")


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
    result = key_values(values or [], "'--value'")
    result.update(key_values(value_files or [], "'--value-file'", from_files=True))
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
    list_command(
        ctx, lambda dm: dm.secrets.list(project, page=page, size=size), "secrets", SECRET_COLUMNS
    )


@secrets_app.command("get")
def secrets_get(ctx: typer.Context, project: ProjectArg, name: NameArg) -> None:
    """Show a secret's description and the names of its values."""
    get_command(ctx, lambda dm: dm.secrets.get(project, name))


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
    get_command(ctx, lambda dm: dm.secrets.create(project, name, values, description=description))


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
    get_command(ctx, lambda dm: dm.secrets.update(project, name, values, description=description))


@secrets_app.command("delete")
def secrets_delete(ctx: typer.Context, project: ProjectArg, name: NameArg) -> None:
    """Delete a secret that no resource uses."""
    delete_command(ctx, lambda dm: dm.secrets.delete(project, name), f"secret '{name}'")


# --------------------------------------------------------------------------- engines

engines_app = typer.Typer(
    help="Engine connections: Spark Connect servers that jobs name in their engine field."
)
UrlArg = Annotated[str, typer.Argument(help="the server's address, sc://host:port")]
EngineTypeOpt = Annotated[str, typer.Option("--type", help="the engine's type")]
DefaultOpt = Annotated[
    bool, typer.Option("--default", help="the project's default connection of its type")
]
TokenSecretOpt = Annotated[
    str | None,
    typer.Option("--secret", help="a secret of the project whose value 'token' authenticates"),
]


@engines_app.command("list")
def engines_list(
    ctx: typer.Context, project: ProjectArg, page: PageOpt = 1, size: SizeOpt = 50
) -> None:
    """List a project's engine connections."""
    list_command(
        ctx, lambda dm: dm.engines.list(project, page=page, size=size), "engines", ENGINE_COLUMNS
    )


@engines_app.command("get")
def engines_get(ctx: typer.Context, project: ProjectArg, name: NameArg) -> None:
    """Show an engine connection."""
    get_command(ctx, lambda dm: dm.engines.get(project, name))


@engines_app.command("create")
def engines_create(
    ctx: typer.Context,
    project: ProjectArg,
    name: NameArg,
    url: UrlArg,
    type: EngineTypeOpt = "spark",
    secret: TokenSecretOpt = None,
    description: DescriptionOpt = "",
    default: DefaultOpt = False,
) -> None:
    """Create an engine connection (jobs then name it in their engine field)."""
    get_command(
        ctx,
        lambda dm: dm.engines.create(
            project, name, url, type=type, secret=secret, description=description, default=default
        ),
    )


@engines_app.command("update")
def engines_update(
    ctx: typer.Context,
    project: ProjectArg,
    name: NameArg,
    url: UrlArg,
    type: EngineTypeOpt = "spark",
    secret: TokenSecretOpt = None,
    description: DescriptionOpt = "",
    default: DefaultOpt = False,
) -> None:
    """Replace an engine connection."""
    get_command(
        ctx,
        lambda dm: dm.engines.update(
            project, name, url, type=type, secret=secret, description=description, default=default
        ),
    )


@engines_app.command("delete")
def engines_delete(ctx: typer.Context, project: ProjectArg, name: NameArg) -> None:
    """Delete an engine connection that no job uses."""
    delete_command(ctx, lambda dm: dm.engines.delete(project, name), f"engine connection '{name}'")


GROUPS: list[tuple[str, typer.Typer]] = [
    ("token", token_app),
    ("projects", projects_app),
    ("users", users_app),
    ("data-roots", data_roots_app),
    ("datasources", datasources_app),
    ("schemas", schemas_app),
    ("variables", variables_app),
    ("secrets", secrets_app),
    ("engines", engines_app),
]
"""The command groups, in the order ``datamill --help`` lists them."""

__all__ = ["GROUPS"]
