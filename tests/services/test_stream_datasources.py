"""Stream connections in the catalog: mqtt, kafka, notification and function data sources."""

from __future__ import annotations

from typing import Any

import pytest

from datamill.services.datasources import resolve_stream_connection
from tests.conftest import Api, assert_error

MQTT = {"host": "127.0.0.1", "port": 1883, "topic": "plant/+/temperature"}
KAFKA = {"bootstrapServers": "127.0.0.1:9092", "topic": "events"}
WEBHOOK = {"channel": "webhook", "url": "http://127.0.0.1:8080/hook"}
EMAIL = {
    "channel": "email",
    "smtpHost": "127.0.0.1",
    "smtpSecurity": "none",
    "from": "alerts@example.com",
    "to": ["ops@example.com"],
}
FUNCTION = {"url": "http://127.0.0.1:8080/fn"}


def create(api: Api, project: str, name: str, type_: str, spec: dict[str, Any], **extra: Any):
    return api.post(
        f"/projects/{project}/datasources/{name}", json={"type": type_, "spec": spec, **extra}
    )


def put_secret(api: Api, project: str, name: str, values: dict[str, str]) -> None:
    response = api.post(f"/projects/{project}/secrets/{name}", json={"values": values})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("type_", "spec", "stored"),
    [
        ("mqtt", MQTT, {**MQTT, "qos": 1, "tls": False}),
        ("kafka", KAFKA, {**KAFKA, "securityProtocol": "PLAINTEXT"}),
        ("notification", WEBHOOK, {**WEBHOOK, "rateLimitPerMinute": 60}),
        ("notification", EMAIL, {**EMAIL, "smtpPort": 25, "rateLimitPerMinute": 60}),
        ("function", FUNCTION, {**FUNCTION, "method": "POST", "batchSize": 1}),
    ],
)
def test_stream_connections_are_created_without_schema(
    api: Api, project: str, type_: str, spec: dict[str, Any], stored: dict[str, Any]
) -> None:
    created = create(api, project, "conn", type_, spec)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["type"] == type_
    assert body["schema"] == []
    for key, value in stored.items():
        assert body["spec"][key] == value, key
    assert api.get(f"/projects/{project}/datasources/conn").json()["spec"] == body["spec"]
    listed = api.get(f"/projects/{project}/datasources").json()["datasources"]
    assert [d["name"] for d in listed] == ["conn"]
    # No files: preview, schema inference and batch jobs refuse a stream connection.
    assert_error(api.get(f"/projects/{project}/datasources/conn/preview"), 400, "E18120", "preview")
    assert_error(
        api.post(f"/projects/{project}/schemas", json={"type": type_, "spec": spec}),
        400,
        "E18120",
        "schema inference",
    )
    assert api.delete(f"/projects/{project}/datasources/conn").status_code == 204


def test_schema_and_file_fields_are_refused(api: Api, project: str) -> None:
    assert_error(
        create(api, project, "m", "mqtt", MQTT, schema=[{"key": "a", "valtype": "long"}]),
        400,
        "E18120",
        "schema",
    )
    assert_error(
        create(api, project, "m", "mqtt", {**MQTT, "fileType": "json"}),
        400,
        "E18120",
        "spec.fileType",
        "no files",
    )
    assert_error(
        create(api, project, "m", "kafka", {**KAFKA, "secret": "s"}), 400, "E18120", "spec.secret"
    )
    assert_error(create(api, project, "m", "mqtt", {**MQTT, "bogus": 1}), 400, "E18011", "bogus")


@pytest.mark.parametrize(
    ("type_", "spec", "needle"),
    [
        ("mqtt", {**MQTT, "qos": 3}, "spec.qos"),
        ("mqtt", {**MQTT, "topic": "a/#/b"}, "spec.topic"),
        ("mqtt", {**MQTT, "host": "http://x"}, "spec.host"),
        ("mqtt", {**MQTT, "port": 0}, "spec.port"),
        ("mqtt", {"host": "127.0.0.1"}, "spec.topic"),
        ("kafka", {**KAFKA, "bootstrapServers": "nohostport"}, "spec.bootstrapServers"),
        ("kafka", {**KAFKA, "bootstrapServers": 9092}, "spec.bootstrapServers"),
        ("kafka", {**KAFKA, "bootstrapServers": [1]}, "spec.bootstrapServers"),
        ("kafka", {**KAFKA, "topic": "a b"}, "spec.topic"),
        ("kafka", {**KAFKA, "username": "u"}, "passwordSecret"),
        ("kafka", {**KAFKA, "securityProtocol": "SASL_SSL"}, "needs username"),
        ("notification", {"channel": "webhook"}, "url is required"),
        ("notification", {"channel": "sms", "url": "http://x"}, "spec.channel"),
        ("notification", {**EMAIL, "to": None}, "to is required"),
        ("notification", {**EMAIL, "to": ["not-an-address"]}, "spec.to[0]"),
        ("notification", {**WEBHOOK, "smtpHost": "a"}, "smtpHost applies"),
        ("notification", {**WEBHOOK, "url": "ftp://x/y"}, "http(s) URL"),
        ("notification", {**WEBHOOK, "rateLimitPerMinute": 0}, "spec.rateLimitPerMinute"),
        ("function", {"url": "http://user:pw@127.0.0.1/fn"}, "credentials"),
        ("function", {**FUNCTION, "method": "DELETE"}, "spec.method"),
        ("function", {**FUNCTION, "timeoutSeconds": 0}, "spec.timeoutSeconds"),
    ],
)
def test_spec_rules_name_the_field(
    api: Api, project: str, type_: str, spec: dict[str, Any], needle: str
) -> None:
    assert_error(create(api, project, "bad", type_, spec), 400, "E18011", needle)


def test_update_rechecks_spec_and_outbound(api: Api, project: str) -> None:
    assert create(api, project, "fn", "function", FUNCTION).status_code == 201
    url = f"/projects/{project}/datasources/fn"
    updated = api.put(url, json={"spec": {**FUNCTION, "timeoutSeconds": 2.5}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["spec"]["timeoutSeconds"] == 2.5
    assert_error(api.put(url, json={"spec": {"url": "http://10.9.9.9/fn"}}), 400, "E18118")
    assert_error(
        api.put(url, json={"spec": FUNCTION, "schema": [{"key": "a", "valtype": "long"}]}),
        400,
        "E18120",
    )
    assert_error(api.put(url, json={"spec": {**FUNCTION, "fileType": "csv"}}), 400, "E18120")
    assert api.get(url).json()["spec"]["timeoutSeconds"] == 2.5


def test_secrets_by_name_decrypted_for_the_engine_and_kept_while_used(
    api: Api, project: str
) -> None:
    assert_error(
        create(api, project, "m", "mqtt", {**MQTT, "username": "u", "passwordSecret": "mq"}),
        404,
        "E18502",
        "spec.passwordSecret",
    )
    put_secret(api, project, "mq", {"password": "s3cr3t-pw"})
    put_secret(api, project, "tok", {"token": "t0k3n-value"})
    spec = {**MQTT, "username": "u", "passwordSecret": "mq"}
    created = create(api, project, "m", "mqtt", spec)
    assert created.status_code == 201, created.text
    assert "s3cr3t" not in created.text
    assert (
        create(api, project, "f", "function", {**FUNCTION, "tokenSecret": "tok"}).status_code == 201
    )
    hook = {**WEBHOOK, "tokenSecret": "tok"}
    assert create(api, project, "n", "notification", hook).status_code == 201
    for secret, users in (("mq", ["m"]), ("tok", ["f", "n"])):
        refused = api.delete(f"/projects/{project}/secrets/{secret}")
        assert_error(refused, 400, "E18112", *[f"data source '{u}'" for u in users])

    runtime = api.runtime
    with runtime.sessions() as session:
        project_id = _project_id(api, project)
        conn = resolve_stream_connection(runtime, session, project_id, "m")
        assert conn.type == "mqtt"
        assert conn.spec["passwordSecret"] == "mq"
        assert dict(conn.secret_values) == {"password": "s3cr3t-pw"}
        assert resolve_stream_connection(runtime, session, project_id, "f").secret_values == {
            "token": "t0k3n-value"
        }
        from datamill.errors import DatamillError

        with pytest.raises(DatamillError) as missing:
            resolve_stream_connection(runtime, session, project_id, "nope")
        assert missing.value.code == "E18102"

    # Once no connection names it, the secret may go.
    assert api.delete(f"/projects/{project}/datasources/m").status_code == 204
    assert api.delete(f"/projects/{project}/secrets/mq").status_code == 204


def test_file_source_is_not_a_stream_connection(api: Api, project: str) -> None:
    (api.data_root / project / "a.json").write_text('{"n": 1}\n')
    spec = {"root": "default", "paths": ["a.json"], "fileType": "json"}
    assert create(api, project, "files", "file", spec).status_code == 201
    from datamill.errors import DatamillError

    with api.runtime.sessions() as session, pytest.raises(DatamillError) as refused:
        resolve_stream_connection(api.runtime, session, _project_id(api, project), "files")
    assert refused.value.code == "E18121"
    assert "not a stream connection" in refused.value.message


def test_batch_jobs_refuse_stream_connections(api: Api, project: str) -> None:
    assert create(api, project, "k", "kafka", KAFKA).status_code == 201
    job = {
        "srcs": [{"type": "DataSource", "name": "k", "tableName": "t"}],
        "computation": {"type": "SQL", "code": "SELECT * FROM t"},
        "container": {"type": "1U2G", "count": 1},
        "scheduler": {"type": "manual"},
    }
    refused = api.post(f"/projects/{project}/jobs/j", json=job)
    assert_error(refused, 400, "E18120", "srcs[0].name", "stream connection")


def test_kodo_is_an_alias_of_s3(api: Api, project: str) -> None:
    spec = {"bucket": "bucket1", "keyPrefixes": ["a/"], "fileType": "json"}
    created = create(
        api,
        project,
        "kd",
        "kodo",
        spec,
        noVerifySchema=True,
        schema=[{"key": "a", "valtype": "long"}],
    )
    assert created.status_code == 201, created.text
    assert created.json()["type"] == "s3"
    assert_error(create(api, project, "x", "ftp", spec), 400, "E18011", "type")


def _project_id(api: Api, project: str) -> int:
    from datamill.store.projects import get_project

    with api.runtime.sessions() as session:
        row = get_project(session, project)
        assert row is not None
        return row.id


def _pipeline(source: str, sink: str, function: str | None = None) -> dict[str, Any]:
    operators: list[dict[str, Any]] = [
        {
            "id": "in",
            "className": "PipelineSource",
            "configs": {"basicConfigs": {"name": "in", "dataSourceId": source}},
        },
        {
            "id": "out",
            "className": "SMNSink",
            "fromOperators": [{"id": "call" if function else "in"}],
            "configs": {"basicConfigs": {"dataSourceId": sink, "defaultMessage": "m"}},
        },
    ]
    if function:
        operators.append(
            {
                "id": "call",
                "className": "CallFunctionGraph",
                "fromOperators": [{"id": "in"}],
                "configs": {"basicConfigs": {"dataSourceId": function}},
            }
        )
    return {
        "definition": {"jobName": "alarms", "jobType": "IDE", "jobInputType": "PIPELINE_DATA"},
        "operatorInstances": operators,
    }


def test_connections_named_by_streaming_jobs_cannot_be_deleted(api: Api, project: str) -> None:
    assert create(api, project, "broker", "mqtt", MQTT).status_code == 201
    assert create(api, project, "hook", "notification", WEBHOOK).status_code == 201
    saved = api.post(f"/projects/{project}/streaming/jobs", json=_pipeline("broker", "hook"))
    assert saved.status_code == 201, saved.text
    job_id = saved.json()["job_id"]
    for name in ("broker", "hook"):
        assert_error(
            api.delete(f"/projects/{project}/datasources/{name}"),
            400,
            "E18112",
            f"streaming job 'alarms' ({job_id})",
        )
    assert api.delete(f"/projects/{project}/streaming/jobs/{job_id}").status_code == 204
    assert api.delete(f"/projects/{project}/datasources/broker").status_code == 204


def test_connection_problems_for_the_streaming_check(api: Api, project: str) -> None:
    from datamill.services.datasources import stream_connection_problems

    assert create(api, project, "broker", "kafka", KAFKA).status_code == 201
    assert create(api, project, "fn", "function", FUNCTION).status_code == 201
    (api.data_root / project / "a.json").write_text('{"n": 1}\n')
    spec = {"root": "default", "paths": ["a.json"], "fileType": "json"}
    assert create(api, project, "files", "file", spec).status_code == 201
    with api.runtime.sessions() as session:
        project_id = _project_id(api, project)
        good = _pipeline("broker", "hook", function="fn")["operatorInstances"]
        assert stream_connection_problems(session, project_id, good) == {
            "out": ["configs.basicConfigs.dataSourceId: data source 'hook' does not exist"]
        }
        wrong = _pipeline("files", "broker", function="broker")["operatorInstances"]
        problems = stream_connection_problems(session, project_id, wrong)
    assert problems == {
        "in": [
            "configs.basicConfigs.dataSourceId: 'files' is a file data source; "
            "PipelineSource uses mqtt or kafka connections"
        ],
        "out": [
            "configs.basicConfigs.dataSourceId: 'broker' is a kafka data source; "
            "SMNSink uses notification connections"
        ],
        "call": [
            "configs.basicConfigs.dataSourceId: 'broker' is a kafka data source; "
            "CallFunctionGraph uses function connections"
        ],
    }
