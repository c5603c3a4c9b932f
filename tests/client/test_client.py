"""The Python client against the real app (SQLite and PostgreSQL), plus its transport edges."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from datamill import __version__
from datamill.client import (
    BadRequest,
    Conflict,
    DatamillAPIError,
    DatamillClient,
    DatamillConnectionError,
    DatamillProtocolError,
    DataSource,
    Forbidden,
    InvalidName,
    NotFound,
    Page,
    Project,
    SchemaField,
    ServerError,
    Unauthorized,
)
from datamill.client import base as client_base
from tests.conftest import Api

CSV = "id,name,amount\n1,alpha,1.5\n2,beta,2.25\n3,gamma,3.0\n"


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def file_spec(project: str, path: str = "x.csv") -> dict[str, object]:
    return {
        "root": "default",
        "paths": [path],
        "fileType": "csv",
        "delimiter": ",",
        "containsHeader": True,
    }


@pytest.fixture
def csv_file(api: Api, project: str) -> Path:
    path = api.data_root / project / "x.csv"
    path.write_text(CSV)
    return path


def new_user_client(dm: DatamillClient, client: TestClient) -> tuple[str, DatamillClient]:
    name = _name("u")
    dm.users.create(name)
    issued = dm.users.issue_token(name, "test")
    return name, DatamillClient(token=issued.token, http=client)


# --------------------------------------------------------------------------- service


def test_health_needs_no_token_and_version_does(client: TestClient, api: Api) -> None:
    anonymous = DatamillClient(http=client)
    health = anonymous.health()
    assert (health.status, health.database) == ("ok", "ok")
    with pytest.raises(Unauthorized) as caught:
        anonymous.version()
    assert caught.value.status == 401
    assert caught.value.error_code == "E18001"
    assert "missing token" in caught.value.error_msg
    version = DatamillClient(token=api.token, http=client).version()
    assert version.version == __version__
    assert version.database == api.runtime.engine.dialect.name


def test_bad_token_raises_unauthorized_with_the_catalog_error(client: TestClient, api: Api) -> None:
    with pytest.raises(Unauthorized) as caught:
        DatamillClient(token="dm_nope", http=client).users.me()
    error = caught.value
    assert isinstance(error, DatamillAPIError)
    assert (error.status, error.error_code) == (401, "E18001")
    assert "unknown token" in error.error_msg
    assert error.request_id
    assert len(error.request_id) == 32
    assert str(error) == f"E18001: {error.error_msg} (request {error.request_id})"


# --------------------------------------------------------------------------- projects


def test_project_lifecycle(dm: DatamillClient) -> None:
    name = _name("p")
    created = dm.projects.create(name, "first")
    assert isinstance(created, Project)
    assert (created.name, created.description, created.role) == (name, "first", "owner")
    assert dm.projects.get(name).description == "first"
    assert dm.projects.update(name, "second").description == "second"
    assert dm.projects.get(name).description == "second"
    page = dm.projects.list(size=1000)
    assert isinstance(page, Page)
    assert page.total >= 1
    assert page.size == 1000
    assert name in [p.name for p in page]
    assert name in [p.name for p in dm.projects.iter_all()]
    assert name in [p.name for p in dm.projects.list_all()]
    with pytest.raises(Conflict) as conflict:
        dm.projects.create(name)
    assert conflict.value.error_code == "E18401"
    dm.projects.delete(name)
    with pytest.raises(NotFound) as missing:
        dm.projects.get(name)
    assert (missing.value.status, missing.value.error_code) == (404, "E18402")
    assert name in missing.value.error_msg


def test_invalid_project_name_is_bad_request(dm: DatamillClient) -> None:
    with pytest.raises(BadRequest) as caught:
        dm.projects.create("1-not-a-name")
    assert (caught.value.status, caught.value.error_code) == (400, "E18103")


def test_names_cannot_escape_their_path_segment(dm: DatamillClient, project: str) -> None:
    with pytest.raises(BadRequest) as dots:
        dm.datasources.get(project, "..")
    assert dots.value.error_code == "E18103"
    with pytest.raises(InvalidName, match="cannot contain '/'"):
        dm.datasources.get(project, "x/preview")


def test_members(dm: DatamillClient, client: TestClient, project: str) -> None:
    user, as_user = new_user_client(dm, client)
    member = dm.projects.members.put(project, user, "visitor")
    assert (member.user, member.role) == (user, "visitor")
    members = dm.projects.members.list(project)
    assert members.total == 2
    assert {m.user: m.role for m in members} == {"admin": "owner", user: "visitor"}
    assert as_user.projects.get(project).role == "visitor"
    with pytest.raises(Forbidden) as forbidden:
        as_user.projects.update(project, "nope")
    assert (forbidden.value.status, forbidden.value.error_code) == (403, "E18002")
    assert dm.projects.members.put(project, user, "editor").role == "editor"
    assert as_user.projects.update(project, "yes").description == "yes"
    assert sorted(m.user for m in dm.projects.members.iter_all(project)) == sorted(["admin", user])
    with pytest.raises(Conflict) as last_owner:
        dm.projects.members.remove(project, "admin")
    assert last_owner.value.error_code == "E18422"
    dm.projects.members.remove(project, user)
    with pytest.raises(NotFound) as gone:
        as_user.projects.get(project)
    assert gone.value.error_code == "E18402"
    with pytest.raises(NotFound) as ghost:
        dm.projects.members.put(project, _name("ghost"), "editor")
    assert ghost.value.error_code == "E18412"


# --------------------------------------------------------------------------- users and tokens


def test_users_and_tokens(dm: DatamillClient, client: TestClient) -> None:
    me = dm.users.me()
    assert (me.name, me.isAdmin) == ("admin", True)
    name = _name("u")
    user = dm.users.create(name)
    assert (user.name, user.isAdmin) == (name, False)
    with pytest.raises(Conflict) as exists:
        dm.users.create(name)
    assert exists.value.error_code == "E18411"
    assert name in [u.name for u in dm.users.list_all()]
    assert dm.users.list(size=1).size == 1
    issued = dm.users.issue_token(name, "laptop", expires_in_days=5)
    assert issued.token.startswith("dm_")
    assert (issued.user, issued.name) == (name, "laptop")
    assert issued.expiresAt is not None
    as_user = DatamillClient(token=issued.token, http=client)
    assert as_user.users.me().name == name
    with pytest.raises(Forbidden) as forbidden:
        as_user.users.list()
    assert forbidden.value.error_code == "E18002"

    second = as_user.tokens.create("ci")
    assert second.token != issued.token
    assert second.expiresAt is None
    tokens = as_user.tokens.list()
    assert tokens.total == 2
    assert {t.name for t in tokens} == {"laptop", "ci"}
    assert [t.id for t in as_user.tokens.iter_all()] == sorted([issued.id, second.id])
    assert len(as_user.tokens.list_all()) == 2
    revoked = as_user.tokens.revoke(second.id)
    assert revoked.id == second.id
    assert revoked.revokedAt is not None
    with pytest.raises(Unauthorized) as dead:
        DatamillClient(token=second.token, http=client).users.me()
    assert "revoked" in dead.value.error_msg
    with pytest.raises(NotFound) as other:
        dm.tokens.revoke(2**31 - 1)
    assert other.value.error_code == "E18431"

    dm.users.delete(name)
    assert name not in [u.name for u in dm.users.iter_all()]
    with pytest.raises(NotFound) as missing:
        dm.users.delete(name)
    assert missing.value.error_code == "E18412"
    with pytest.raises(Unauthorized):
        as_user.users.me()


# --------------------------------------------------------------------------- data sources


def test_datasource_lifecycle(dm: DatamillClient, project: str, csv_file: Path) -> None:
    created = dm.datasources.create(project, "sales", type="file", spec=file_spec(project))
    assert isinstance(created, DataSource)
    assert created.type == "file"
    assert created.noVerifySchema is False
    assert [(f.key, f.valtype) for f in created.schema_] == [
        ("id", "long"),
        ("name", "string"),
        ("amount", "float"),
    ]
    assert created.spec["paths"] == ["x.csv"]
    got = dm.datasources.get(project, "sales")
    assert got.schema_ == created.schema_
    assert got.createdAt == created.createdAt

    with pytest.raises(Conflict) as exists:
        dm.datasources.create(project, "sales", type="file", spec=file_spec(project))
    assert exists.value.error_code == "E18101"

    # a given schema is checked against the data and may mark fields required
    flagged = dm.datasources.update(
        project,
        "sales",
        spec=file_spec(project),
        schema=[
            SchemaField(key="id", valtype="long", required=True),
            {"key": "name", "valtype": "string"},
        ],
    )
    assert {f.key: f.required for f in flagged.schema_} == {
        "id": True,
        "name": False,
        "amount": False,
    }
    with pytest.raises(NotFound) as wrong_field:
        dm.datasources.update(
            project, "sales", spec=file_spec(project), schema=[{"key": "nope", "valtype": "long"}]
        )
    assert wrong_field.value.error_code == "E18111"

    preview = dm.datasources.preview(project, "sales")
    assert preview.files == 1
    assert [row["name"] for row in preview.rows] == ["alpha", "beta", "gamma"]
    assert preview.rows[0]["id"] == 1
    assert preview.rows[1]["amount"] == 2.25
    assert len(dm.datasources.preview(project, "sales", limit=1, at=datetime.now(UTC)).rows) == 1

    dm.datasources.delete(project, "sales")
    with pytest.raises(NotFound) as missing:
        dm.datasources.get(project, "sales")
    assert missing.value.error_code == "E18102"
    assert "sales" in missing.value.error_msg


def test_datasource_list_sorting_paging_and_kept_schema(
    dm: DatamillClient, project: str, csv_file: Path
) -> None:
    for name in ["b_src", "a_src", "c_src"]:
        dm.datasources.create(
            project,
            name,
            type="file",
            spec=file_spec(project, "later.csv"),
            schema=[{"key": "x", "valtype": "string"}],
            no_verify_schema=True,
            region="eu",
        )
    page = dm.datasources.list(project, size=2)
    assert (page.total, page.page, page.size) == (3, 1, 2)
    assert [d.name for d in page] == ["a_src", "b_src"]
    assert page.has_next
    assert page.pages == 2
    second = dm.datasources.list(project, page=2, size=2)
    assert [d.name for d in second] == ["c_src"]
    assert not second.has_next
    descending = dm.datasources.list(project, sort_by="-name")
    assert [d.name for d in descending] == ["c_src", "b_src", "a_src"]
    kept = dm.datasources.get(project, "a_src")
    assert kept.noVerifySchema
    assert kept.region == "eu"
    assert [(f.key, f.valtype) for f in kept.schema_] == [("x", "string")]
    assert [d.name for d in dm.datasources.list_all(project, sort_by="-name")] == [
        "c_src",
        "b_src",
        "a_src",
    ]
    with pytest.raises(BadRequest) as unreadable:
        dm.datasources.preview(project, "a_src")
    assert unreadable.value.error_code == "E18115"
    with pytest.raises(BadRequest) as empty:
        dm.datasources.create(
            project, "z_src", type="file", spec=file_spec(project), no_verify_schema=True
        )
    assert empty.value.error_code == "E18105"


def test_schema_inference(dm: DatamillClient, project: str, csv_file: Path) -> None:
    fields = dm.schemas.infer(project, "file", file_spec(project))
    assert all(isinstance(f, SchemaField) for f in fields)
    assert [(f.key, f.valtype) for f in fields] == [
        ("id", "long"),
        ("name", "string"),
        ("amount", "float"),
    ]
    assert dm.datasources.list(project).total == 0  # nothing was saved
    with pytest.raises(BadRequest) as nothing:
        dm.schemas.infer(project, "file", file_spec(project, "missing.csv"))
    assert nothing.value.error_code == "E18115"


def test_stream_connection(dm: DatamillClient, project: str) -> None:
    spec = {"bootstrapServers": "127.0.0.1:9092", "topic": "events"}
    created = dm.datasources.create(project, "events", type="kafka", spec=spec)
    assert created.type == "kafka"
    assert created.schema_ == []
    assert created.spec["securityProtocol"] == "PLAINTEXT"
    with pytest.raises(BadRequest) as no_schema:
        dm.schemas.infer(project, "kafka", spec)
    assert no_schema.value.error_code == "E18120"


# --------------------------------------------------------------------------- variables


def test_variables(dm: DatamillClient, project: str) -> None:
    created = dm.variables.create(
        project, "yesterday", type="time", value="$(now)-1d", format="yyyy-MM-dd"
    )
    assert (created.name, created.type, created.system) == ("yesterday", "time", False)
    resolved = dm.variables.get(project, "yesterday", at=datetime(2024, 5, 2, 10, tzinfo=UTC))
    assert resolved.resolved == "2024-05-01"
    assert resolved.at == datetime(2024, 5, 2, 10, tzinfo=UTC)
    as_text = dm.variables.get(project, "yesterday", at="2024-01-01T00:30:00Z")
    assert as_text.resolved == "2023-12-31"
    # the '+' of an offset survives the query string (a bare '+' would decode as a space)
    offset = timezone(timedelta(hours=2))
    shifted = dm.variables.get(project, "yesterday", at=datetime(2024, 5, 2, 0, 30, tzinfo=offset))
    assert shifted.at == datetime(2024, 5, 1, 22, 30, tzinfo=UTC)

    dm.variables.create(project, "label", type="string", value="day $(yesterday)")
    assert dm.variables.get(project, "label", at="2024-03-01T12:00:00Z").resolved == (
        "day 2024-02-29"
    )
    updated = dm.variables.update(project, "yesterday", type="time", value="$(now)-2d")
    assert updated.format is None
    assert dm.variables.get(project, "yesterday", at="2024-05-03T00:00:00Z").resolved == (
        "2024-05-01 00:00:00"
    )

    system = dm.variables.list(project, type="system")
    assert system.total == 8
    assert all(v.system for v in system)
    user = dm.variables.list(project, type="user")
    assert [v.name for v in user] == ["label", "yesterday"]
    everything = dm.variables.list(project)
    assert everything.total == 10
    assert [v.name for v in dm.variables.iter_all(project)][-2:] == ["label", "yesterday"]
    assert len(dm.variables.list_all(project, type="system")) == 8

    with pytest.raises(BadRequest) as used:
        dm.variables.delete(project, "yesterday")
    assert used.value.error_code == "E18112"
    with pytest.raises(BadRequest) as read_only:
        dm.variables.create(project, "date", type="string", value="x")
    assert read_only.value.error_code == "E18603"
    with pytest.raises(Conflict) as exists:
        dm.variables.create(project, "label", type="string", value="x")
    assert exists.value.error_code == "E18601"
    dm.variables.delete(project, "label")
    dm.variables.delete(project, "yesterday")
    with pytest.raises(NotFound) as missing:
        dm.variables.get(project, "yesterday")
    assert missing.value.error_code == "E18602"


# --------------------------------------------------------------------------- secrets


def test_secrets_are_write_only(dm: DatamillClient, project: str) -> None:
    created = dm.secrets.create(
        project, "store", {"accessKeyId": "AKIA123", "secretAccessKey": "s3cr3t-v4lue"}
    )
    assert created.name == "store"
    assert sorted(created.keys) == ["accessKeyId", "secretAccessKey"]
    assert "s3cr3t-v4lue" not in json.dumps(created.model_dump(mode="json"))
    got = dm.secrets.get(project, "store")
    assert sorted(got.keys) == ["accessKeyId", "secretAccessKey"]
    assert "s3cr3t-v4lue" not in got.model_dump_json()
    with pytest.raises(Conflict) as exists:
        dm.secrets.create(project, "store", {"a": "b"})
    assert exists.value.error_code == "E18501"

    updated = dm.secrets.update(project, "store", {"password": "pw"}, description="db")
    assert (updated.keys, updated.description) == (["password"], "db")
    listed = dm.secrets.list(project)
    assert listed.total == 1
    assert [s.name for s in listed] == ["store"]
    assert [s.name for s in dm.secrets.list_all(project)] == ["store"]
    with pytest.raises(BadRequest) as empty:
        dm.secrets.create(project, "empty", {})
    assert empty.value.error_code == "E18011"
    dm.secrets.delete(project, "store")
    with pytest.raises(NotFound) as missing:
        dm.secrets.get(project, "store")
    assert missing.value.error_code == "E18502"


def test_iter_all_walks_every_page(
    dm: DatamillClient, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"s_{i:02d}" for i in range(7)]
    for name in names:
        dm.secrets.create(project, name, {"k": "v"})
    monkeypatch.setattr(client_base, "ITER_PAGE_SIZE", 3)
    sizes: list[int] = []
    original = dm.secrets.list

    def spy(project: str, *, page: int = 1, size: int = 50) -> Page[object]:
        result = original(project, page=page, size=size)
        sizes.append(len(result))
        return result  # type: ignore[return-value]

    monkeypatch.setattr(dm.secrets, "list", spy)
    assert sorted(s.name for s in dm.secrets.iter_all(project)) == names
    assert sizes == [3, 3, 1]


# --------------------------------------------------------------------------- transport


def test_connection_failure_is_a_readable_error() -> None:
    with (
        DatamillClient("http://127.0.0.1:9", token="x", timeout=5) as dm,
        pytest.raises(DatamillConnectionError) as caught,
    ):
        dm.projects.list()
    assert "cannot reach the datamill server at http://127.0.0.1:9" in str(caught.value)


def test_base_url_is_normalised_and_checked() -> None:
    assert DatamillClient("http://example.test:8270/api/v1/").base_url == (
        "http://example.test:8270"
    )
    assert repr(DatamillClient("http://h:1", token="dm_secret")) == (
        "DatamillClient('http://h:1', token=***)"
    )
    with pytest.raises(ValueError, match="invalid server URL"):
        DatamillClient("localhost:8270")


def _mock(handler: object, base_url: str = "http://mock") -> DatamillClient:
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    return DatamillClient(
        "http://direct:1", token="dm_t", http=httpx.Client(transport=transport, base_url=base_url)
    )


def test_requests_carry_token_and_escaped_names() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "name": "a?b#c",
                "description": "",
                "role": "owner",
                "createdAt": "2024-01-01T00:00:00Z",
                "updatedAt": "2024-01-01T00:00:00Z",
                "addedInAFutureVersion": 1,  # unknown fields are ignored
            },
        )

    project = _mock(handler).projects.get("a?b#c")
    assert project.name == "a?b#c"
    assert seen[0].url.raw_path == b"/api/v1/projects/a%3Fb%23c"
    assert seen[0].headers["authorization"] == "Bearer dm_t"
    # an http client without a base URL gets absolute URLs from base_url
    _mock(handler, base_url="").projects.get("x")
    assert str(seen[1].url) == "http://direct:1/api/v1/projects/x"


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (
            400,
            {"error_code": "E18011", "error_msg": "bad", "request_id": "r1"},
            BadRequest,
            "E18011",
        ),
        (
            411,
            {"error_code": "E18003", "error_msg": "len", "request_id": "r1"},
            BadRequest,
            "E18003",
        ),
        (
            413,
            {"error_code": "E18005", "error_msg": "big", "request_id": "r1"},
            BadRequest,
            "E18005",
        ),
        (
            415,
            {"error_code": "E18012", "error_msg": "json", "request_id": "r1"},
            BadRequest,
            "E18012",
        ),
        (
            403,
            {"error_code": "E18002", "error_msg": "role", "request_id": "r1"},
            Forbidden,
            "E18002",
        ),
        (
            405,
            {"error_code": "E18010", "error_msg": "verb", "request_id": "r1"},
            DatamillAPIError,
            "E18010",
        ),
        (
            500,
            {"error_code": "E18000", "error_msg": "oops", "request_id": "r1"},
            ServerError,
            "E18000",
        ),
        (502, "<html>bad gateway</html>", ServerError, "HTTP502"),
    ],
)
def test_error_status_selects_the_exception(
    status: int, body: object, kind: type[DatamillAPIError], code: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers={"x-request-id": "hdr"})
        return httpx.Response(status, json=body)

    with pytest.raises(DatamillAPIError) as caught:
        _mock(handler).users.me()
    assert type(caught.value) is kind
    assert (caught.value.status, caught.value.error_code) == (status, code)
    assert caught.value.request_id == ("hdr" if isinstance(body, str) else "r1")
    if isinstance(body, str):
        assert "bad gateway" in caught.value.error_msg


def test_non_json_success_is_a_protocol_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>hello</html>")

    with pytest.raises(DatamillProtocolError, match="not JSON"):
        _mock(handler).users.me()


def test_passed_http_client_is_not_closed(client: TestClient, admin_token: str) -> None:
    with DatamillClient(token=admin_token, http=client) as dm:
        assert dm.users.me().name == "admin"
    assert not client.is_closed
    own = DatamillClient("http://127.0.0.1:9")
    own.close()
    assert own._http.is_closed


# --------------------------------------------------------------------------- data roots


def test_data_root_grants(dm: DatamillClient, client: TestClient, project: str) -> None:
    roots = {r.name: r for r in dm.data_roots.list_all()}
    assert {"default", "other"} <= set(roots)
    assert roots["other"].path is not None
    grant = dm.data_roots.grant("other", project)
    assert (grant.root, grant.project) == ("other", project)
    listed = {r.name: r for r in dm.data_roots.iter_all()}
    assert project in [g.project for g in listed["other"].grants]
    dm.data_roots.revoke("other", project)
    with pytest.raises(NotFound) as gone:
        dm.data_roots.revoke("other", project)
    assert gone.value.error_code == "E18441"
    with pytest.raises(BadRequest) as unknown:
        dm.data_roots.grant("nowhere", project)
    assert unknown.value.error_code == "E18116"
    name = _name("u")
    dm.users.create(name)
    as_user = DatamillClient(token=dm.users.issue_token(name).token, http=client)
    with pytest.raises(Forbidden):
        as_user.data_roots.list()
    dm.users.delete(name)
