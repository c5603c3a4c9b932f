"""Tenancy and authentication: projects, members, roles, users and tokens."""

from __future__ import annotations

import stat

from sqlalchemy import select

from datamill.security.tokens import hash_token
from datamill.store.users import TokenRow
from tests.conftest import Api, assert_error


def test_health_needs_no_token_and_everything_else_does(api: Api) -> None:
    health = api.client.get("/api/v1/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": "ok"}
    assert health.headers["x-request-id"]
    assert_error(api.client.get("/api/v1/version"), 401, "E18001", "missing token")
    assert_error(api.client.get("/api/v1/projects"), 401, "E18001")
    version = api.get("/version")
    assert version.status_code == 200
    assert version.json()["database"] == api.runtime.engine.dialect.name


def test_request_id_is_echoed_or_generated(api: Api) -> None:
    given = api.client.get("/api/v1/health", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    hostile = api.client.get("/api/v1/health", headers={"X-Request-ID": "x" * 300})
    assert hostile.headers["x-request-id"] != "x" * 300
    assert len(hostile.headers["x-request-id"]) == 32


def test_admin_token_file_is_private_and_token_stored_hashed(api: Api) -> None:
    token_file = api.runtime.settings.admin_token_file
    mode = stat.S_IMODE(token_file.stat().st_mode)
    assert mode == 0o600
    with api.runtime.sessions() as session:
        hashes = set(session.scalars(select(TokenRow.token_hash)))
    assert hash_token(api.token) in hashes
    assert api.token not in hashes
    assert all(len(h) == 64 for h in hashes)


def test_both_token_headers_work_and_bad_tokens_fail(api: Api) -> None:
    ok = api.client.get("/api/v1/users/me", headers={"X-Auth-Token": api.token})
    assert ok.status_code == 200
    assert ok.json()["isAdmin"] is True
    assert api.get("/users/me").json()["name"] == "admin"
    bad = api.client.get("/api/v1/users/me", headers={"Authorization": "Bearer dm_nope"})
    assert_error(bad, 401, "E18001", "unknown token")


def test_project_lifecycle(api: Api) -> None:
    created = api.post("/projects", json={"name": "life_cycle_1", "description": "first"})
    assert created.status_code == 201, created.text
    assert created.json()["role"] == "owner"
    assert_error(api.post("/projects", json={"name": "life_cycle_1"}), 409, "E18401")
    got = api.get("/projects/life_cycle_1").json()
    assert got["description"] == "first"
    assert api.patch("/projects/life_cycle_1", json={"description": "second"}).status_code == 200
    assert api.get("/projects/life_cycle_1").json()["description"] == "second"
    listed = api.get("/projects", params={"size": 1000}).json()
    assert "life_cycle_1" in [p["name"] for p in listed["projects"]]
    assert listed["total"] >= 1
    assert api.delete("/projects/life_cycle_1").status_code == 204
    assert_error(api.get("/projects/life_cycle_1"), 404, "E18402")


def test_project_name_rule(api: Api) -> None:
    for bad in ["1abc", "with-dash", "", "a" * 129, "sp ace", "../x"]:
        response = api.post("/projects", json={"name": bad})
        assert_error(response, 400, "E18103", "name")


def test_roles_and_cross_project_isolation(api: Api, project: str) -> None:
    visitor, visitor_token = api.new_user()
    editor, editor_token = api.new_user()
    outsider, outsider_token = api.new_user()
    assert (
        api.put(f"/projects/{project}/members/{visitor}", json={"role": "visitor"}).status_code
        == 200
    )
    assert (
        api.put(f"/projects/{project}/members/{editor}", json={"role": "editor"}).status_code == 200
    )

    as_visitor, as_editor, as_outsider = (
        api.as_user(t) for t in (visitor_token, editor_token, outsider_token)
    )
    assert as_visitor.get(f"/projects/{project}").json()["role"] == "visitor"
    assert_error(
        as_visitor.patch(f"/projects/{project}", json={"description": "x"}),
        403,
        "E18002",
        "visitor",
    )
    assert as_editor.patch(f"/projects/{project}", json={"description": "x"}).status_code == 200
    assert_error(as_editor.delete(f"/projects/{project}"), 403, "E18002")
    assert_error(
        as_editor.put(f"/projects/{project}/members/{outsider}", json={"role": "owner"}),
        403,
        "E18002",
    )
    # someone outside the project cannot tell it exists
    assert_error(as_outsider.get(f"/projects/{project}"), 404, "E18402")
    assert_error(as_outsider.get(f"/projects/{project}/datasources"), 404, "E18402")
    assert project not in [p["name"] for p in as_outsider.get("/projects").json()["projects"]]
    members = api.get(f"/projects/{project}/members").json()
    assert {m["user"]: m["role"] for m in members["members"]}[visitor] == "visitor"
    assert members["total"] == 3


def test_last_owner_is_kept(api: Api, project: str) -> None:
    assert_error(api.delete(f"/projects/{project}/members/admin"), 409, "E18422")
    assert_error(
        api.put(f"/projects/{project}/members/admin", json={"role": "editor"}), 409, "E18422"
    )
    assert_error(
        api.put(f"/projects/{project}/members/ghost", json={"role": "editor"}), 404, "E18412"
    )
    assert_error(
        api.put(f"/projects/{project}/members/admin", json={"role": "king"}), 400, "E18011", "role"
    )


def test_tokens_are_shown_once_expire_and_revoke(api: Api) -> None:
    name, token = api.new_user()
    user = api.as_user(token)
    issued = user.post("/tokens", json={"name": "laptop", "expiresInDays": 30})
    assert issued.status_code == 201
    second = issued.json()
    assert second["token"].startswith("dm_")
    assert len(second["token"]) > 40
    assert second["expiresAt"] is not None
    listed = user.get("/tokens").json()
    assert listed["total"] == 2
    assert all("token" not in t for t in listed["tokens"])
    assert user.as_user(second["token"]).get("/users/me").json()["name"] == name
    revoked = user.delete(f"/tokens/{second['id']}")
    assert revoked.status_code == 200
    assert revoked.json()["revokedAt"]
    assert_error(user.as_user(second["token"]).get("/users/me"), 401, "E18001", "revoked")
    # a user cannot see or revoke another user's token
    _, other_token = api.new_user()
    assert_error(api.as_user(other_token).delete(f"/tokens/{second['id']}"), 404, "E18431")


def test_expired_token_is_refused(api: Api) -> None:
    from datetime import timedelta

    from datamill.store.base import utcnow

    _, token = api.new_user()
    with api.runtime.sessions() as session:
        row = session.scalars(
            select(TokenRow).where(TokenRow.token_hash == hash_token(token))
        ).one()
        row.expires_at = utcnow() - timedelta(seconds=1)
        session.commit()
    assert_error(api.as_user(token).get("/users/me"), 401, "E18001", "expired")


def test_only_admins_manage_users(api: Api) -> None:
    name, token = api.new_user()
    user = api.as_user(token)
    assert_error(user.post("/users", json={"name": "sneaky"}), 403, "E18002")
    assert_error(user.get("/users"), 403, "E18002")
    assert_error(user.post("/users/admin/tokens", json={}), 403, "E18002")
    assert_error(api.post("/users", json={"name": name}), 409, "E18411")
    assert api.delete(f"/users/{name}").status_code == 204
    assert_error(user.get("/users/me"), 401, "E18001")


def test_nul_characters_are_refused_everywhere(api: Api, project: str) -> None:
    for url in (f"/projects/{project}/jobs?srcJob=a%00b", "/projects/a%00b"):
        assert_error(api.get(url), 400, "E18011", "NUL")
    body = api.patch(f"/projects/{project}", json={"description": "a\u0000b"})
    assert_error(body, 400, "E18011", "description", "NUL")
    assert api.get(f"/projects/{project}").json()["description"] == "test"
