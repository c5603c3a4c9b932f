"""Secrets (encrypted, write-only) and magic variables through the API."""

from __future__ import annotations

from sqlalchemy import select

from datamill.store.secrets import SecretRow
from tests.conftest import Api, assert_error


def test_secret_values_are_encrypted_and_never_returned(api: Api, project: str) -> None:
    created = api.post(
        f"/projects/{project}/secrets/db",
        json={"description": "report db", "values": {"password": "hunter2-very-secret"}},
    )
    assert created.status_code == 201, created.text
    assert created.json()["keys"] == ["password"]
    for response in (
        created,
        api.get(f"/projects/{project}/secrets/db"),
        api.get(f"/projects/{project}/secrets"),
    ):
        assert "hunter2" not in response.text
    with api.runtime.sessions() as session:
        row = session.scalars(select(SecretRow).where(SecretRow.name == "db")).first()
        assert row is not None
        assert b"hunter2" not in row.ciphertext
        assert api.runtime.secret_box.open(row.ciphertext) == {"password": "hunter2-very-secret"}
    assert_error(
        api.post(f"/projects/{project}/secrets/db", json={"values": {"a": "b"}}), 409, "E18501"
    )
    updated = api.put(
        f"/projects/{project}/secrets/db", json={"values": {"user": "u", "password": "p"}}
    )
    assert updated.json()["keys"] == ["password", "user"]
    assert api.get(f"/projects/{project}/secrets").json()["total"] == 1
    assert api.delete(f"/projects/{project}/secrets/db").status_code == 204
    assert_error(api.get(f"/projects/{project}/secrets/db"), 404, "E18502")


def test_secret_rules(api: Api, project: str) -> None:
    assert_error(
        api.post(f"/projects/{project}/secrets/s", json={"values": {}}), 400, "E18011", "values"
    )
    assert_error(
        api.post(f"/projects/{project}/secrets/s", json={"values": {"bad key": "v"}}),
        400,
        "E18011",
        "values",
    )


def test_system_variables_are_listed_and_read_only(api: Api, project: str) -> None:
    system = api.get(f"/projects/{project}/variables", params={"type": "system"}).json()
    names = {v["name"] for v in system["variables"]}
    assert names == {"year", "mon", "day", "hour", "min", "sec", "date", "now"}
    assert all(v["system"] for v in system["variables"])
    assert_error(
        api.post(f"/projects/{project}/variables/now", json={"type": "string", "value": "x"}),
        400,
        "E18603",
    )
    assert_error(api.delete(f"/projects/{project}/variables/date"), 400, "E18603")
    resolved = api.get(
        f"/projects/{project}/variables/date", params={"at": "2024-02-29T23:59:59Z"}
    ).json()
    assert resolved["resolved"] == "2024-02-29"


def test_user_variables_resolve_at_a_batch_time(api: Api, project: str) -> None:
    start = api.post(
        f"/projects/{project}/variables/start",
        json={"type": "time", "value": "$(now)-5h", "format": "yyyy-MM-dd HH:mm:ss"},
    )
    assert start.status_code == 201, start.text
    api.post(
        f"/projects/{project}/variables/label",
        json={"type": "string", "value": "from $(start) on $(date)"},
    )
    got = api.get(
        f"/projects/{project}/variables/start", params={"at": "2026-01-01T03:00:00Z"}
    ).json()
    assert got["resolved"] == "2025-12-31 22:00:00"
    label = api.get(
        f"/projects/{project}/variables/label", params={"at": "2026-01-01T03:00:00"}
    ).json()
    assert label["resolved"] == "from 2025-12-31 22:00:00 on 2026-01-01"
    listed = api.get(f"/projects/{project}/variables", params={"type": "user"}).json()
    assert [v["name"] for v in listed["variables"]] == ["label", "start"]
    everything = api.get(f"/projects/{project}/variables").json()
    assert everything["total"] == 10


def test_variable_errors(api: Api, project: str) -> None:
    base = f"/projects/{project}/variables"
    assert_error(
        api.post(base + "/v", json={"type": "time", "value": "$(now)-5x"}), 400, "E18606", "value"
    )
    assert_error(
        api.post(base + "/v", json={"type": "time", "value": "$(now)", "format": "yyyy-QQ"}),
        400,
        "E18104",
        "format",
    )
    assert_error(
        api.post(base + "/v", json={"type": "string", "value": "$(ghost)"}), 400, "E18604", "ghost"
    )
    assert_error(api.post(base + "/v", json={"type": "color", "value": "x"}), 400, "E18011", "type")
    api.post(base + "/a", json={"type": "string", "value": "a"})
    api.post(base + "/b", json={"type": "string", "value": "$(a)"})
    cycle = api.put(base + "/a", json={"type": "string", "value": "$(b)"})
    assert_error(cycle, 400, "E18605", "a -> b -> a")
    assert api.get(base + "/a").json()["value"] == "a"
    assert_error(api.delete(base + "/a"), 400, "E18112", "b")
    assert_error(api.post(base + "/a", json={"type": "string", "value": "again"}), 409, "E18601")
    assert api.delete(base + "/b").status_code == 204
    assert api.delete(base + "/a").status_code == 204
    assert_error(api.get(base + "/a"), 404, "E18602")


AT_FORMS = (
    ("2023-11-14T22:13:20Z", "2023-11-14 22:13:20"),
    ("2023-11-14T22:13:20", "2023-11-14 22:13:20"),
    ("2023-11-14", "2023-11-14 00:00:00"),
    ("1700000000", "2023-11-14 22:13:20"),
    ("1700000000.5", "2023-11-14 22:13:20"),
    ("1.7e9", "2023-11-14 22:13:20"),
    ("17e8", "2023-11-14 22:13:20"),
    ("1.7E+12", "2023-11-14 22:13:20"),
    ("1700000000000", "2023-11-14 22:13:20"),
)
"""Every form of `at` the OpenAPI document allows: a date-time, a date, a number of
seconds (milliseconds above 2e10) in any JSON notation; and what it resolves to."""
AT_REFUSED = ("soon", "1_700_000_000", "nan", "inf", "2023-13-01", "1e300")


def test_at_accepts_every_form_the_document_allows(api: Api, project: str) -> None:
    created = api.post(
        f"/projects/{project}/variables/stamp",
        json={"type": "time", "value": "$(now)", "format": "yyyy-MM-dd HH:mm:ss"},
    )
    assert created.status_code == 201, created.text
    for sent, resolved in AT_FORMS:
        got = api.get(f"/projects/{project}/variables/stamp", params={"at": sent})
        assert got.status_code == 200, (sent, got.text)
        assert got.json()["resolved"] == resolved, sent
    for sent in AT_REFUSED:
        assert_error(
            api.get(f"/projects/{project}/variables/stamp", params={"at": sent}), 400, "E18011"
        )
