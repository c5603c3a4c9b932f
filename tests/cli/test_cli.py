"""The ``datamill`` CLI driven by CliRunner against the real app through the factory hook."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from datamill.cli.main import app
from datamill.config import Settings
from tests.cli_runner import (
    Run,
    as_json,
    cli_env,
    ok,
)
from tests.conftest import Api

CSV = "id,name,amount\n1,alpha,1.5\n2,beta,2.25\n3,gamma,3.0\n"


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def file_spec(project: str, path: str = "x.csv") -> dict[str, Any]:
    return {
        "root": "default",
        "paths": [path],
        "fileType": "csv",
        "delimiter": ",",
        "containsHeader": True,
    }


# --------------------------------------------------------------------------- projects


def test_projects_create_list_get_in_table_and_json(run: Run, api: Api) -> None:
    name = _name("p")
    created = ok(run("projects", "create", name, "--description", "made by the cli"))
    assert name in created.stdout
    assert "made by the cli" in created.stdout
    assert "owner" in created.stdout

    table = ok(run("projects", "list", "--size", "1000")).stdout
    assert name in table
    assert re.search(r"\d+-\d+ of \d+ projects", table)

    listed = as_json(run("--output", "json", "projects", "list", "--size", "1000"))
    assert set(listed) == {"total", "page", "size", "projects"}
    assert listed["size"] == 1000
    assert name in [p["name"] for p in listed["projects"]]

    # --output json prints exactly what the API answers
    got = as_json(run("-o", "json", "projects", "get", name))
    assert got == api.get(f"/projects/{name}").json()
    raw = run("-o", "json", "projects", "get", name).stdout
    assert raw == json.dumps(got, indent=2, sort_keys=True) + "\n"

    updated = as_json(run("-o", "json", "projects", "update", name, "-d", "changed"))
    assert updated["description"] == "changed"


def test_project_delete_asks_first(run: Run, api: Api) -> None:
    name = _name("p")
    ok(run("projects", "create", name))
    refused = run("projects", "delete", name, input="n\n")
    assert refused.exit_code == 1
    assert api.get(f"/projects/{name}").status_code == 200
    deleted = ok(run("projects", "delete", name, "--yes"))
    assert f"deleted project '{name}'" in deleted.stdout
    assert api.get(f"/projects/{name}").status_code == 404


def test_members_and_users(run: Run, api: Api, project: str) -> None:
    user = _name("u")
    created = as_json(run("-o", "json", "users", "create", user))
    assert (created["name"], created["isAdmin"]) == (user, False)
    assert user in ok(run("users", "list", "--size", "1000")).stdout

    issued = run("users", "issue-token", user, "--name", "laptop")
    ok(issued)
    token = re.search(r"^token: (dm_\S+)$", issued.stdout, re.MULTILINE)
    assert token, issued.stdout
    assert "not shown again" in issued.stderr
    assert api.as_user(token.group(1)).get("/users/me").json()["name"] == user

    added = as_json(
        run("-o", "json", "projects", "members", "add", project, user, "--role", "visitor")
    )
    assert (added["user"], added["role"]) == (user, "visitor")
    members = as_json(run("-o", "json", "projects", "members", "list", project))
    assert {m["user"]: m["role"] for m in members["members"]} == {"admin": "owner", user: "visitor"}
    assert user in ok(run("projects", "members", "list", project)).stdout
    ok(run("projects", "members", "remove", project, user))
    assert api.get(f"/projects/{project}/members").json()["total"] == 1

    bad_role = run("projects", "members", "add", project, user, "--role", "king")
    assert bad_role.exit_code == 2

    assert f"deleted user '{user}'" in ok(run("users", "delete", user)).stdout
    assert api.post(f"/users/{user}/tokens", json={}).status_code == 404


def test_data_roots(run: Run, api: Api, project: str) -> None:
    granted = as_json(run("-o", "json", "data-roots", "grant", "other", project))
    assert (granted["root"], granted["project"]) == ("other", project)
    table = ok(run("data-roots", "list", "--size", "1000")).stdout
    assert "granted to" in table
    assert "default" in table
    listed = as_json(run("-o", "json", "data-roots", "list", "--size", "1000"))
    roots = {r["name"]: r for r in listed["dataRoots"]}
    assert project in [g["project"] for g in roots["other"]["grants"]]
    revoked = ok(run("data-roots", "revoke", "other", project)).stdout
    assert f"revoked data root 'other' from project '{project}'" in revoked
    again = run("data-roots", "revoke", "other", project)
    assert again.exit_code != 0
    assert "E18441" in again.stderr


# --------------------------------------------------------------------------- tokens


def test_token_whoami_from_env_flag_and_token_file(
    run: Run, api: Api, admin_token: str, tmp_path: Path
) -> None:
    table = ok(run("token", "whoami")).stdout
    assert "admin" in table
    assert "isAdmin" in table
    me = as_json(run("-o", "json", "token", "whoami"))
    assert me == api.get("/users/me").json()
    assert me["name"] == "admin"
    assert me["isAdmin"] is True

    user, user_token = api.new_user()
    assert as_json(run("--token", user_token, "-o", "json", "token", "whoami"))["name"] == user

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "admin.token").write_text(admin_token + "\n")
    from_file = run(
        "-o", "json", "token", "whoami", DATAMILL_TOKEN=None, DATAMILL_DATA_DIR=str(data_dir)
    )
    assert as_json(from_file)["name"] == "admin"

    anonymous = run("token", "whoami", DATAMILL_TOKEN=None)
    assert anonymous.exit_code == 1
    assert anonymous.stderr.startswith("error E18001: missing token")


def test_token_create_list_revoke(run: Run, api: Api) -> None:
    _, user_token = api.new_user()
    issued = as_json(
        run(
            "--token",
            user_token,
            "-o",
            "json",
            "token",
            "create",
            "--name",
            "ci",
            "--expires-in-days",
            "3",
        )
    )
    assert issued["token"].startswith("dm_")
    assert issued["expiresAt"]
    listed = as_json(run("--token", user_token, "-o", "json", "token", "list"))
    assert listed["total"] == 2
    assert all("token" not in t for t in listed["tokens"])
    assert "ci" in ok(run("--token", user_token, "token", "list")).stdout
    revoked = as_json(
        run("--token", user_token, "-o", "json", "token", "revoke", str(issued["id"]))
    )
    assert revoked["revokedAt"] is not None
    dead = run("--token", issued["token"], "token", "whoami")
    assert dead.exit_code == 1
    assert "E18001" in dead.stderr


# --------------------------------------------------------------------------- data sources


def test_datasources_create_list_get_preview(run: Run, api: Api, project: str) -> None:
    (api.data_root / project / "x.csv").write_text(CSV)
    created = run(
        "datasources",
        "create",
        project,
        "sales",
        "--type",
        "file",
        "--spec",
        json.dumps(file_spec(project)),
    )
    out = ok(created).stdout
    assert "amount" in out
    assert "float" in out
    assert "long" in out

    got = as_json(run("-o", "json", "datasources", "get", project, "sales"))
    assert got == api.get(f"/projects/{project}/datasources/sales").json()
    assert [(f["key"], f["valtype"]) for f in got["schema"]] == [
        ("id", "long"),
        ("name", "string"),
        ("amount", "float"),
    ]

    listed = as_json(run("-o", "json", "datasources", "list", project))
    assert (listed["total"], [d["name"] for d in listed["datasources"]]) == (1, ["sales"])
    assert "sales" in ok(run("datasources", "list", project)).stdout
    descending = as_json(run("-o", "json", "datasources", "list", project, "--sort-by", "-name"))
    assert [d["name"] for d in descending["datasources"]] == ["sales"]
    bad_sort = run("datasources", "list", project, "--sort-by", "colour")
    assert bad_sort.exit_code == 1
    assert bad_sort.stderr.startswith("error E18011:")

    preview = ok(run("datasources", "preview", project, "sales")).stdout
    assert "gamma" in preview
    assert "2.25" in preview
    assert "3 rows from 1 file" in preview
    limited = as_json(
        run(
            "-o",
            "json",
            "datasources",
            "preview",
            project,
            "sales",
            "--limit",
            "1",
            "--at",
            "2024-05-01T00:00:00Z",
        )
    )
    assert limited["rows"] == [{"id": 1, "name": "alpha", "amount": 1.5}]
    assert limited["files"] == 1

    inferred = as_json(
        run(
            "-o",
            "json",
            "schemas",
            "infer",
            project,
            "--type",
            "file",
            "--spec",
            json.dumps(file_spec(project)),
        )
    )
    assert inferred == {"schema": got["schema"]}
    assert (
        "valtype"
        in ok(
            run(
                "schemas",
                "infer",
                project,
                "--type",
                "file",
                "--spec",
                json.dumps(file_spec(project)),
            )
        ).stdout
    )

    updated = as_json(
        run(
            "-o",
            "json",
            "datasources",
            "update",
            project,
            "sales",
            "--spec",
            json.dumps(file_spec(project)),
            "--schema",
            '[{"key": "id", "valtype": "long", "required": true}]',
        )
    )
    assert updated["schema"][0] == {"key": "id", "valtype": "long", "required": True}

    deleted = ok(run("datasources", "delete", project, "sales"))
    assert "deleted data source 'sales'" in deleted.stdout
    assert api.get(f"/projects/{project}/datasources/sales").status_code == 404


def test_datasource_from_body_file(run: Run, api: Api, project: str, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text(
        json.dumps(
            {
                "type": "file",
                "spec": file_spec(project, "later/*.csv"),
                "schema": [{"key": "x", "valtype": "string"}],
                "noVerifySchema": True,
                "region": "eu",
            }
        )
    )
    created = as_json(
        run("-o", "json", "datasources", "create", project, "later", "--file", str(body))
    )
    assert (created["noVerifySchema"], created["region"]) == (True, "eu")
    assert created["schema"] == [{"key": "x", "valtype": "string", "required": False}]
    assert api.get(f"/projects/{project}/datasources/later").status_code == 200

    body.write_text(json.dumps({"type": "file", "spec": {}, "colour": "red"}))
    unknown = run("datasources", "create", project, "other", "--file", str(body))
    assert unknown.exit_code == 2
    assert "colour" in unknown.output
    bad_json = run("datasources", "create", project, "other", "--type", "file", "--spec", "{nope")
    assert bad_json.exit_code == 2
    assert "not valid JSON" in bad_json.output
    no_type = run("datasources", "create", project, "other", "--spec", "{}")
    assert no_type.exit_code == 2
    assert api.get(f"/projects/{project}/datasources/other").status_code == 404


# --------------------------------------------------------------------------- variables and secrets


def test_variables_create_get_at_list(run: Run, project: str) -> None:
    created = as_json(
        run(
            "-o",
            "json",
            "variables",
            "create",
            project,
            "yesterday",
            "--type",
            "time",
            "--value",
            "$(now)-1d",
            "--format",
            "yyyy-MM-dd",
        )
    )
    assert (created["name"], created["type"], created["system"]) == ("yesterday", "time", False)
    resolved = as_json(
        run("-o", "json", "variables", "get", project, "yesterday", "--at", "2024-05-02T10:00:00Z")
    )
    assert resolved["resolved"] == "2024-05-01"
    assert resolved["at"].startswith("2024-05-02T10:00:00")
    table = ok(run("variables", "get", project, "yesterday", "--at", "2024-03-01T00:00:00Z")).stdout
    assert "2024-02-29" in table

    ok(run("variables", "update", project, "yesterday", "--type", "string", "--value", "fixed"))
    assert (
        as_json(run("-o", "json", "variables", "get", project, "yesterday"))["resolved"] == "fixed"
    )
    user = as_json(run("-o", "json", "variables", "list", project, "--type", "user"))
    assert [v["name"] for v in user["variables"]] == ["yesterday"]
    system = as_json(run("-o", "json", "variables", "list", project, "--type", "system"))
    assert system["total"] == 8
    assert "yesterday" in ok(run("variables", "list", project)).stdout
    ok(run("variables", "delete", project, "yesterday"))
    assert run("variables", "get", project, "yesterday").exit_code == 1


def test_secrets_values_are_never_printed(run: Run, api: Api, project: str, tmp_path: Path) -> None:
    created = run(
        "secrets",
        "create",
        project,
        "store",
        "--value",
        "accessKeyId=AKIA_VISIBLE_ID",
        "--value",
        "secretAccessKey=T0P-S3CRET-VALUE",
        "--description",
        "object store",
    )
    ok(created)
    assert "secretAccessKey" in created.stdout
    assert "T0P-S3CRET-VALUE" not in created.output
    assert "AKIA_VISIBLE_ID" not in created.output

    listed = ok(run("secrets", "list", project))
    assert "store" in listed.stdout
    assert "accessKeyId" in listed.stdout
    assert "T0P-S3CRET-VALUE" not in listed.output
    as_data = as_json(run("-o", "json", "secrets", "list", project))
    assert as_data["total"] == 1
    assert sorted(as_data["secrets"][0]["keys"]) == ["accessKeyId", "secretAccessKey"]
    assert "T0P-S3CRET-VALUE" not in json.dumps(as_data)

    value_file = tmp_path / "pw"
    value_file.write_text("from-a-file\n")
    updated = as_json(
        run(
            "-o",
            "json",
            "secrets",
            "update",
            project,
            "store",
            "--value-file",
            f"password={value_file}",
        )
    )
    assert updated["keys"] == ["password"]
    assert "from-a-file" not in json.dumps(updated)
    got = as_json(run("-o", "json", "secrets", "get", project, "store"))
    assert got == api.get(f"/projects/{project}/secrets/store").json()

    no_values = run("secrets", "create", project, "empty")
    assert no_values.exit_code == 2
    bad_pair = run("secrets", "create", project, "empty", "--value", "novalue")
    assert bad_pair.exit_code == 2
    assert "KEY=VALUE" in bad_pair.output
    ok(run("secrets", "delete", project, "store"))
    assert api.get(f"/projects/{project}/secrets/store").status_code == 404


# --------------------------------------------------------------------------- errors


def test_api_error_is_one_line_on_stderr_with_exit_code_1(run: Run, project: str) -> None:
    result = run("datasources", "get", project, "nope")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert re.fullmatch(
        r"error E18102: data source 'nope' does not exist \(request [0-9a-f]{32}\)\n",
        result.stderr,
    ), result.stderr
    assert "Traceback" not in result.output
    slash = run("datasources", "get", project, "x/preview")
    assert slash.exit_code == 2
    assert slash.stderr == "error: invalid name 'x/preview': names cannot contain '/'\n"
    conflict = run("projects", "create", project)
    assert conflict.exit_code == 1
    assert conflict.stderr.startswith("error E18401:")


def test_connection_failure_exits_3_without_traceback() -> None:
    result = CliRunner().invoke(
        app, ["--url", "http://127.0.0.1:9", "projects", "list"], env=cli_env(DATAMILL_TOKEN="x")
    )
    assert result.exit_code == 3
    assert result.stderr.startswith("error: cannot reach the datamill server at http://127.0.0.1:9")
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_usage_errors_exit_2() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["datasources", "get"], env=cli_env()).exit_code == 2
    assert (
        runner.invoke(app, ["--output", "yaml", "projects", "list"], env=cli_env()).exit_code == 2
    )
    bad_url = runner.invoke(app, ["--url", "localhost:8270", "projects", "list"], env=cli_env())
    assert bad_url.exit_code == 2
    assert "invalid server URL" in bad_url.output


def test_url_comes_from_the_environment() -> None:
    result = CliRunner().invoke(app, ["health"], env=cli_env(DATAMILL_URL="http://127.0.0.1:9"))
    assert result.exit_code == 3
    assert "http://127.0.0.1:9" in result.stderr


def test_health_and_version(run: Run, api: Api) -> None:
    assert as_json(run("-o", "json", "health", DATAMILL_TOKEN=None)) == {
        "status": "ok",
        "database": "ok",
    }
    version = as_json(run("-o", "json", "version"))
    assert version == api.get("/version").json()
    assert "client" in ok(run("version")).stdout


def test_server_command_still_starts_the_service(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import datamill.server

    started: list[tuple[Settings, bool]] = []
    monkeypatch.setattr(
        datamill.server, "serve", lambda settings, demo: started.append((settings, demo))
    )
    result = CliRunner().invoke(
        app, ["server", "--port", "9999", "--data-dir", str(tmp_path), "--demo"], env=cli_env()
    )
    assert result.exit_code == 0, result.output
    [(settings, demo)] = started
    assert (settings.port, settings.data_dir, demo) == (9999, tmp_path, True)
