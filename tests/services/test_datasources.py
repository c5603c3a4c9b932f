"""Data sources on local data roots: formats, inference, schema rules, preview, path safety."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.conftest import Api, assert_error


def csv_spec(project: str, pattern: str = "events*.csv", **extra: Any) -> dict[str, Any]:
    return {
        "root": "default",
        "paths": [f"{pattern}"],
        "fileType": "csv",
        "delimiter": ",",
        "containsHeader": True,
        **extra,
    }


@pytest.fixture
def events(api: Api, project: str) -> Path:
    folder = api.data_root / project
    (folder / "events-2026-11-01.csv").write_text(
        "device,ts,value,ok\nd1,2026-11-01T00:00:00Z,1.5,true\nd2,2026-11-01T00:01:00Z,2.5,false\n"
    )
    (folder / "events-2026-11-02.csv").write_text(
        "device,ts,value,ok\nd3,2026-11-02T00:00:00Z,3.5,true\n"
    )
    return folder


def test_create_infers_schema_from_csv(api: Api, project: str, events: Path) -> None:
    created = api.post(
        f"/projects/{project}/datasources/ev", json={"type": "file", "spec": csv_spec(project)}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert [(f["key"], f["valtype"]) for f in body["schema"]] == [
        ("device", "string"),
        ("ts", "date"),
        ("value", "float"),
        ("ok", "boolean"),
    ]
    assert body["noVerifySchema"] is False
    got = api.get(f"/projects/{project}/datasources/ev").json()
    assert got["schema"] == body["schema"]
    assert got["spec"]["paths"] == ["events*.csv"]
    assert_error(
        api.post(
            f"/projects/{project}/datasources/ev", json={"type": "file", "spec": csv_spec(project)}
        ),
        409,
        "E18101",
    )


def test_json_parquet_and_text_formats(api: Api, project: str) -> None:
    folder = api.data_root / project
    (folder / "a.json").write_text('{"n": 1, "s": "x", "nested": {"k": 1}}\n{"n": 2, "s": "y"}\n')
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT range AS id, range * 0.5 AS half FROM range(5)) "
        f"TO '{folder / 'p.parquet'}' (FORMAT parquet)"
    )
    (folder / "log.txt").write_text("first line\nsecond line\r\nthird\n")
    base = {"root": "default"}
    cases = {
        "js": (
            {**base, "paths": ["a.json"], "fileType": "json"},
            [("n", "long"), ("s", "string"), ("nested", "string")],
        ),
        "pq": (
            {**base, "paths": ["p.parquet"], "fileType": "parquet"},
            [("id", "long"), ("half", "float")],
        ),
        "tx": ({**base, "paths": ["log.txt"], "fileType": "text"}, [("text", "string")]),
    }
    for name, (spec, expected) in cases.items():
        response = api.post(
            f"/projects/{project}/datasources/{name}", json={"type": "file", "spec": spec}
        )
        assert response.status_code == 201, response.text
        assert [(f["key"], f["valtype"]) for f in response.json()["schema"]] == expected
    text_rows = api.get(f"/projects/{project}/datasources/tx/preview").json()["rows"]
    assert text_rows == [{"text": "first line"}, {"text": "second line"}, {"text": "third"}]
    pq = api.get(f"/projects/{project}/datasources/pq/preview", params={"limit": 2}).json()
    assert pq["rows"] == [{"id": 0, "half": 0.0}, {"id": 1, "half": 0.5}]
    assert pq["files"] == 1


def test_preview_casts_to_schema_and_limits(api: Api, project: str, events: Path) -> None:
    api.post(
        f"/projects/{project}/datasources/ev", json={"type": "file", "spec": csv_spec(project)}
    )
    preview = api.get(f"/projects/{project}/datasources/ev/preview", params={"limit": 2})
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["files"] == 2
    assert len(body["rows"]) == 2
    assert body["rows"][0]["device"] == "d1"
    assert body["rows"][0]["ok"] is True
    assert body["rows"][0]["ts"].startswith("2026-11-01T00:00:00")
    assert_error(
        api.get(f"/projects/{project}/datasources/ev/preview", params={"limit": 0}),
        400,
        "E18011",
        "limit",
    )


def test_file_filter_uses_magic_variables_at_batch_time(
    api: Api, project: str, events: Path
) -> None:
    spec = csv_spec(project, pattern="events-", fileFilter="$(date).csv")
    spec["paths"] = ["events-"]
    created = api.post(
        f"/projects/{project}/datasources/daily",
        json={
            "type": "file",
            "spec": spec,
            "noVerifySchema": True,
            "schema": [{"key": "device", "valtype": "string"}],
        },
    )
    assert created.status_code == 201, created.text
    first = api.get(
        f"/projects/{project}/datasources/daily/preview", params={"at": "2026-11-01T12:00:00Z"}
    ).json()
    assert sorted(r["device"] for r in first["rows"]) == ["d1", "d2"]
    second = api.get(
        f"/projects/{project}/datasources/daily/preview", params={"at": "2026-11-02T12:00:00Z"}
    ).json()
    assert [r["device"] for r in second["rows"]] == ["d3"]
    bad = api.post(
        f"/projects/{project}/datasources/bad",
        json={
            "type": "file",
            "noVerifySchema": True,
            "schema": [{"key": "a", "valtype": "string"}],
            "spec": {**spec, "fileFilter": "$(nosuch)"},
        },
    )
    assert_error(bad, 400, "E18604", "nosuch", "spec.fileFilter")


def test_no_verify_schema_keeps_given_schema(api: Api, project: str) -> None:
    schema: list[dict[str, Any]] = [
        {"key": "a", "valtype": "long", "required": True},
        {"key": "b", "valtype": "date"},
    ]
    created = api.post(
        f"/projects/{project}/datasources/manual",
        json={
            "type": "file",
            "noVerifySchema": True,
            "schema": schema,
            "spec": {"root": "default", "paths": ["none/*.json"], "fileType": "json"},
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["schema"] == [{**schema[0]}, {**schema[1], "required": False}]
    missing = api.post(
        f"/projects/{project}/datasources/manual2",
        json={
            "type": "file",
            "noVerifySchema": True,
            "spec": {"root": "default", "paths": ["x.json"], "fileType": "json"},
        },
    )
    assert_error(missing, 400, "E18105", "schema")


def test_given_schema_is_verified_against_data(api: Api, project: str, events: Path) -> None:
    wrong_type = api.post(
        f"/projects/{project}/datasources/v1",
        json={
            "type": "file",
            "spec": csv_spec(project),
            "schema": [{"key": "device", "valtype": "long"}],
        },
    )
    assert_error(wrong_type, 400, "E18110", "schema[0].valtype", "device")
    absent = api.post(
        f"/projects/{project}/datasources/v2",
        json={
            "type": "file",
            "spec": csv_spec(project),
            "schema": [{"key": "nope", "valtype": "string"}],
        },
    )
    assert_error(absent, 404, "E18111", "nope")
    required = api.post(
        f"/projects/{project}/datasources/v3",
        json={
            "type": "file",
            "spec": csv_spec(project),
            "schema": [{"key": "device", "valtype": "string", "required": True}],
        },
    )
    assert required.status_code == 201
    assert required.json()["schema"][0] == {"key": "device", "valtype": "string", "required": True}


def test_update_may_add_but_never_remove_or_retype(api: Api, project: str) -> None:
    spec = {"root": "default", "paths": ["*.json"], "fileType": "json"}
    schema = [{"key": "a", "valtype": "long"}, {"key": "b", "valtype": "string"}]
    assert (
        api.post(
            f"/projects/{project}/datasources/grow",
            json={"type": "file", "noVerifySchema": True, "schema": schema, "spec": spec},
        ).status_code
        == 201
    )
    added = api.put(
        f"/projects/{project}/datasources/grow",
        json={"spec": spec, "schema": [*schema, {"key": "c", "valtype": "date"}]},
    )
    assert added.status_code == 200, added.text
    assert [f["key"] for f in added.json()["schema"]] == ["a", "b", "c"]
    removed = api.put(
        f"/projects/{project}/datasources/grow", json={"spec": spec, "schema": schema[:1]}
    )
    assert_error(removed, 400, "E18114", "'b' would be removed", "'c' would be removed")
    retyped = api.put(
        f"/projects/{project}/datasources/grow",
        json={
            "spec": spec,
            "schema": [
                {"key": "a", "valtype": "string"},
                *schema[1:],
                {"key": "c", "valtype": "date"},
            ],
        },
    )
    assert_error(retyped, 400, "E18114", "'a' would change type long -> string")
    after = api.get(f"/projects/{project}/datasources/grow").json()
    assert [f["key"] for f in after["schema"]] == ["a", "b", "c"]
    assert_error(
        api.put(f"/projects/{project}/datasources/ghost", json={"spec": spec}), 404, "E18102"
    )


def test_update_with_inference_refuses_lost_fields(api: Api, project: str, events: Path) -> None:
    api.post(
        f"/projects/{project}/datasources/ev", json={"type": "file", "spec": csv_spec(project)}
    )
    (events / "narrow.csv").write_text("device\nd9\n")
    narrowed = api.put(
        f"/projects/{project}/datasources/ev",
        json={"spec": csv_spec(project, pattern="narrow.csv")},
    )
    assert_error(narrowed, 400, "E18114", "'ts' would be removed")


@pytest.mark.parametrize(
    ("field", "value", "code", "needle"),
    [
        ("fileType", "xml", "E18011", "fileType"),
        ("delimiter", None, "E18011", "delimiter is required"),
        ("paths", ["/etc/passwd"], "E18116", "absolute"),
        ("paths", ["../other/x.csv"], "E18116", "'..'"),
        ("paths", ["a/../../x.csv"], "E18116", "'..'"),
        ("paths", ["x\u0000.csv"], "E18011", "NUL"),
        ("root", "nosuch", "E18116", "unknown data root"),
        ("paths", [], "E18011", "paths"),
        ("unknownField", 1, "E18011", "unknown field"),
    ],
)
def test_bad_specs_are_refused_with_the_field_named(
    api: Api, project: str, field: str, value: Any, code: str, needle: str
) -> None:
    spec = csv_spec(project)
    if value is None:
        spec.pop(field)
    else:
        spec[field] = value
    response = api.post(
        f"/projects/{project}/datasources/bad",
        json={"type": "file", "spec": spec, "noVerifySchema": False},
    )
    assert_error(response, 400, code, needle)
    assert_error(api.get(f"/projects/{project}/datasources/bad"), 404, "E18102")


def test_symlink_leading_out_of_the_root_is_refused(api: Api, project: str, tmp_path: Path) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    link = api.data_root / project / "link.csv"
    os.symlink(outside, link)
    response = api.post(
        f"/projects/{project}/datasources/lnk",
        json={"type": "file", "spec": csv_spec(project, pattern="link.csv")},
    )
    assert_error(response, 400, "E18116", "outside")
    globbed = api.post(
        f"/projects/{project}/datasources/lnk",
        json={"type": "file", "spec": csv_spec(project, pattern="*.csv")},
    )
    assert_error(globbed, 400, "E18116", "outside")


def test_bad_names_and_schema_fields(api: Api, project: str) -> None:
    spec = {"root": "default", "paths": ["x.json"], "fileType": "json"}
    assert_error(
        api.post(f"/projects/{project}/datasources/9bad", json={"type": "file", "spec": spec}),
        400,
        "E18103",
        "9bad",
    )
    bad_key = api.post(
        f"/projects/{project}/datasources/ok",
        json={
            "type": "file",
            "spec": spec,
            "noVerifySchema": True,
            "schema": [{"key": "has space", "valtype": "string"}],
        },
    )
    assert_error(bad_key, 400, "E18106", "schema[0].key")
    bad_type = api.post(
        f"/projects/{project}/datasources/ok",
        json={
            "type": "file",
            "spec": spec,
            "noVerifySchema": True,
            "schema": [{"key": "a", "valtype": "int"}],
        },
    )
    assert_error(bad_type, 400, "E18107", "schema[0].valtype", "int")
    dup = api.post(
        f"/projects/{project}/datasources/ok",
        json={
            "type": "file",
            "spec": spec,
            "noVerifySchema": True,
            "schema": [{"key": "a", "valtype": "long"}, {"key": "a", "valtype": "long"}],
        },
    )
    assert_error(dup, 400, "E18106", "twice")
    bad_type_name = api.post(
        f"/projects/{project}/datasources/ok", json={"type": "ftp", "spec": spec}
    )
    assert_error(bad_type_name, 400, "E18011", "type")


def test_no_matching_files_and_unreadable_data(api: Api, project: str) -> None:
    none = api.post(
        f"/projects/{project}/datasources/empty",
        json={
            "type": "file",
            "spec": {"root": "default", "paths": ["nothing*.json"], "fileType": "json"},
        },
    )
    assert_error(none, 400, "E18115", "no files match")
    (api.data_root / project / "broken.parquet").write_text("not parquet at all")
    broken = api.post(
        f"/projects/{project}/datasources/broken",
        json={
            "type": "file",
            "spec": {
                "root": "default",
                "paths": ["broken.parquet"],
                "fileType": "parquet",
            },
        },
    )
    assert_error(broken, 400, "E18115", "cannot be read as parquet")


def test_schemas_endpoint_infers_without_saving(api: Api, project: str, events: Path) -> None:
    response = api.post(
        f"/projects/{project}/schemas", json={"type": "file", "spec": csv_spec(project)}
    )
    assert response.status_code == 200, response.text
    assert [f["key"] for f in response.json()["schema"]] == ["device", "ts", "value", "ok"]
    assert api.get(f"/projects/{project}/datasources").json()["total"] == 0


def test_list_is_paginated_and_sorted(api: Api, project: str) -> None:
    spec = {"root": "default", "paths": ["x.json"], "fileType": "json"}
    for name in ["c_src", "a_src", "b_src"]:
        api.post(
            f"/projects/{project}/datasources/{name}",
            json={
                "type": "file",
                "spec": spec,
                "noVerifySchema": True,
                "schema": [{"key": "a", "valtype": "long"}],
            },
        )
    page = api.get(f"/projects/{project}/datasources", params={"page": 1, "size": 2}).json()
    assert page["total"] == 3
    assert [d["name"] for d in page["datasources"]] == ["a_src", "b_src"]
    second = api.get(f"/projects/{project}/datasources", params={"page": 2, "size": 2}).json()
    assert [d["name"] for d in second["datasources"]] == ["c_src"]
    desc = api.get(f"/projects/{project}/datasources", params={"sortBy": "-name"}).json()
    assert [d["name"] for d in desc["datasources"]] == ["c_src", "b_src", "a_src"]
    assert_error(
        api.get(f"/projects/{project}/datasources", params={"sortBy": "evil"}),
        400,
        "E18011",
        "sortBy",
    )
    assert api.delete(f"/projects/{project}/datasources/a_src").status_code == 204
    assert api.get(f"/projects/{project}/datasources").json()["total"] == 2
    assert_error(api.delete(f"/projects/{project}/datasources/a_src"), 404, "E18102")


def test_request_body_errors(api: Api, project: str) -> None:
    url = f"/projects/{project}/datasources/x"
    malformed = api.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(malformed, 400, "E18007")
    empty = api.post(url)
    assert_error(empty, 400, "E18006")
    big = api.post(
        url,
        content=json.dumps({"type": "file", "spec": {"x": "y" * 70000}}),
        headers={"Content-Type": "application/json"},
    )
    assert_error(big, 413, "E18005", "limit")
    long_field = api.post("/projects", json={"name": "ok_name", "description": "d" * 2000})
    assert_error(long_field, 400, "E18008", "description")
    bad_length = api.client.post(
        "/api/v1" + url,
        content=b"{}",
        headers={**api.headers(), "Content-Type": "application/json", "Content-Length": "abc"},
    )
    assert bad_length.status_code == 400
    assert bad_length.json()["error_code"] == "E18004"
    assert api.get(f"/projects/{project}/datasources").json()["total"] == 0


def test_unknown_route_and_method(api: Api) -> None:
    assert_error(api.get("/nothing/here"), 404, "E18009")
    assert_error(api.request("PATCH", "/health"), 405, "E18010")


def test_a_chunked_body_over_the_limit_is_refused_with_413(api: Api, project: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"type": "file", "spec": {"x": "'
        for _ in range(10 * 1024):
            yield b"y" * 1024
        yield b'"}}'

    response = api.client.post(
        f"/api/v1/projects/{project}/datasources/x",
        content=chunks(),
        headers={**api.headers(), "Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "E18005", "limit")
    assert api.get(f"/projects/{project}/datasources").json()["total"] == 0


@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded", "text/csv"])
def test_a_body_that_is_not_json_is_refused_with_415(api: Api, project: str, media: str) -> None:
    response = api.post(
        f"/projects/{project}/datasources/x",
        content=b'{"type": "file", "spec": {}}',
        headers={"Content-Type": media},
    )
    assert_error(response, 415, "E18012", media)
    json_suffix = api.post(
        f"/projects/{project}/datasources/x",
        content=b'{"type": "file", "spec": {}}',
        headers={"Content-Type": "application/vnd.datamill+json"},
    )
    assert_error(json_suffix, 400, "E18011", "spec.fileType")
