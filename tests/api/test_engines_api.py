"""Engine connections (``/projects/{p}/engines/{name}``) through the API, the client and the
CLI: create, read, list, replace, delete, and what is refused. No Spark server is needed:
a connection is only contacted by the jobs that name it (tests/engines/test_spark_jobs.py)."""

from __future__ import annotations

import json

import pytest

from datamill.client import BadRequest, Conflict, DatamillClient, EngineConnection, NotFound
from datamill.errors import E
from tests.builders import TOTALS_SQL, job_body, make_source
from tests.cli_runner import Run
from tests.conftest import Api, assert_error

URL = "sc://127.0.0.1:15002"


def engines(project: str) -> str:
    return f"/projects/{project}/engines"


def test_an_engine_connection_is_created_read_listed_replaced_and_deleted(
    api: Api, project: str
) -> None:
    created = api.post(f"{engines(project)}/cluster", json={"type": "spark", "url": URL})
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["name"], body["type"], body["url"], body["secret"]) == (
        "cluster",
        "spark",
        URL,
        None,
    )
    assert api.get(f"{engines(project)}/cluster").json() == body
    listed = api.get(engines(project)).json()
    assert (listed["total"], [e["name"] for e in listed["engines"]]) == (1, ["cluster"])
    replaced = api.put(
        f"{engines(project)}/cluster",
        json={"type": "spark", "url": "sc://localhost:15003", "description": "moved"},
    )
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["url"], replaced.json()["description"]) == (
        "sc://localhost:15003",
        "moved",
    )
    assert_error(
        api.post(f"{engines(project)}/cluster", json={"type": "spark", "url": URL}),
        409,
        E.ENGINE_EXISTS.code,
        "already exists",
    )
    assert api.delete(f"{engines(project)}/cluster").status_code == 204
    assert_error(api.get(f"{engines(project)}/cluster"), 404, E.ENGINE_NOT_FOUND.code, "cluster")


REFUSED = [
    # (body, status, code, a piece of the message)
    ({"type": "spark", "url": "http://127.0.0.1:15002"}, 400, E.INVALID_PARAMETER.code, "url"),
    ({"type": "spark", "url": "sc://127.0.0.1:15002/;token=abc"}, 400, "E18011", "url"),
    ({"type": "spark", "url": "sc://127.0.0.1"}, 400, "E18011", "url"),
    ({"type": "duckdb", "url": URL}, 400, E.UNKNOWN_ENGINE.code, "takes no connection"),
    ({"type": "flink", "url": URL}, 400, E.UNKNOWN_ENGINE.code, "type"),
    ({"type": "spark", "url": "sc://10.1.2.3:15002"}, 400, E.OUTBOUND_REFUSED.code, "url"),
    ({"type": "spark", "url": "sc://no-such-host.invalid:15002"}, 400, "E18118", "resolve"),
    ({"type": "spark", "url": URL, "secret": "nope"}, 404, E.SECRET_NOT_FOUND.code, "secret"),
]


@pytest.mark.parametrize(("body", "status", "code", "needle"), REFUSED)
def test_a_bad_engine_connection_is_refused_naming_the_field(
    api: Api, project: str, body: dict[str, str], status: int, code: str, needle: str
) -> None:
    assert_error(api.post(f"{engines(project)}/cluster", json=body), status, code, needle)
    assert api.get(engines(project)).json()["total"] == 0


def test_a_connection_is_not_named_like_an_engine_type(api: Api, project: str) -> None:
    assert_error(
        api.post(f"{engines(project)}/spark", json={"type": "spark", "url": URL}),
        400,
        E.INVALID_NAME.code,
        "engine type",
    )


def test_the_token_comes_from_a_secret_with_a_token_value(api: Api, project: str) -> None:
    secrets = f"/projects/{project}/secrets"
    assert api.post(f"{secrets}/other", json={"values": {"password": "x"}}).status_code == 201
    assert_error(
        api.post(f"{engines(project)}/c", json={"type": "spark", "url": URL, "secret": "other"}),
        400,
        E.SECRET_KEY_MISSING.code,
        "token",
    )
    assert api.post(f"{secrets}/tok", json={"values": {"token": "s3cr3t"}}).status_code == 201
    created = api.post(f"{engines(project)}/c", json={"type": "spark", "url": URL, "secret": "tok"})
    assert created.status_code == 201, created.text
    assert "s3cr3t" not in created.text
    assert_error(api.delete(f"{secrets}/tok"), 400, E.HAS_DEPENDANTS.code, "engine connection 'c'")


def test_a_spark_job_needs_a_connection_and_a_used_connection_stays(api: Api, project: str) -> None:
    make_source(api, project)
    refused = api.post(f"/projects/{project}/jobs/j", json=job_body(TOTALS_SQL, engine="spark"))
    assert_error(refused, 400, E.UNKNOWN_ENGINE.code, "engine connection")
    unknown = api.post(f"/projects/{project}/jobs/j", json=job_body(TOTALS_SQL, engine="nope"))
    assert_error(unknown, 400, E.UNKNOWN_ENGINE.code, "'nope'")


def test_another_projects_connection_is_not_found(api: Api, project: str) -> None:
    assert api.post(f"{engines(project)}/c", json={"type": "spark", "url": URL}).status_code == 201
    other = "p_other_" + project[2:]
    assert api.post("/projects", json={"name": other}).status_code == 201
    assert_error(api.get(f"{engines(other)}/c"), 404, E.ENGINE_NOT_FOUND.code, "'c'")
    _, token = api.new_user()
    assert api.get(f"{engines(project)}/c", token=token).status_code == 404


def test_the_client_mirrors_the_engines_resource(dm: DatamillClient, project: str) -> None:
    created = dm.engines.create(project, "cluster", URL, description="local")
    assert isinstance(created, EngineConnection)
    assert (created.type, created.url, created.description) == ("spark", URL, "local")
    assert dm.engines.get(project, "cluster") == created
    assert [e.name for e in dm.engines.list_all(project)] == ["cluster"]
    assert dm.engines.update(project, "cluster", "sc://localhost:15002").url == (
        "sc://localhost:15002"
    )
    with pytest.raises(Conflict):
        dm.engines.create(project, "cluster", URL)
    with pytest.raises(BadRequest):
        dm.engines.create(project, "bad", "sc://10.0.0.1:15002")
    dm.engines.delete(project, "cluster")
    with pytest.raises(NotFound):
        dm.engines.get(project, "cluster")


def test_the_cli_mirrors_the_engines_resource(run: Run, project: str) -> None:
    created = run("-o", "json", "engines", "create", project, "cluster", URL, "-d", "local")
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["url"] == URL
    listed = run("engines", "list", project)
    assert listed.exit_code == 0, listed.output
    assert "cluster" in listed.stdout
    assert URL in listed.stdout
    updated = run("-o", "json", "engines", "update", project, "cluster", "sc://localhost:15002")
    assert json.loads(updated.stdout)["url"] == "sc://localhost:15002"
    shown = run("-o", "json", "engines", "get", project, "cluster")
    assert json.loads(shown.stdout)["name"] == "cluster"
    assert run("engines", "delete", project, "cluster").exit_code == 0
    missing = run("engines", "get", project, "cluster")
    assert missing.exit_code != 0
    assert E.ENGINE_NOT_FOUND.code in missing.output


def test_one_default_connection_per_type(api: Api, project: str, dm: DatamillClient) -> None:
    first = api.post(f"{engines(project)}/a", json={"type": "spark", "url": URL, "default": True})
    assert first.status_code == 201, first.text
    assert first.json()["default"] is True
    second = dm.engines.create(project, "b", "sc://localhost:15002", default=True)
    assert second.default is True
    assert {e.name: e.default for e in dm.engines.list_all(project)} == {"a": False, "b": True}


def test_the_cli_marks_the_default_connection(run: Run, project: str) -> None:
    created = run("-o", "json", "engines", "create", project, "c", URL, "--default")
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["default"] is True
