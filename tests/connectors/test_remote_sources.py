"""Data sources on a real S3-compatible server (rclone, on loopback) and on WebHDFS.

No HDFS server can run on these machines, so WebHDFS is tested against the protocol double
in tests/webhdfs_double.py; S3 runs against the real rclone server started for the session.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from datamill.runtime.worker import WorkerPool
from tests.builders import TERMINAL, job_body, start, wait_for
from tests.conftest import Api, assert_error
from tests.redirects import REDIRECT_STATUSES, REFUSED_REDIRECT_TARGETS, RedirectServer
from tests.servers import RunningServer
from tests.webhdfs_double import ConnectionProbe, WebHdfsDouble


@pytest.fixture(scope="session")
def s3(s3_server: RunningServer) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_server.url,
        aws_access_key_id=s3_server.extra["access_key"],
        aws_secret_access_key=s3_server.extra["secret_key"],
        region_name="us-east-1",
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"bkt-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(
        Bucket=name,
        Key="logs/app-2026-11-01.json",
        Body=b'{"level": "info", "n": 1}\n{"level": "warn", "n": 2}\n',
    )
    s3.put_object(Bucket=name, Key="logs/app-2026-11-02.json", Body=b'{"level": "error", "n": 3}\n')
    s3.put_object(Bucket=name, Key="other/x.json", Body=b'{"zzz": 1}\n')
    return name


@pytest.fixture
def s3_secret(api: Api, project: str, s3_server: RunningServer) -> str:
    response = api.post(
        f"/projects/{project}/secrets/store_keys",
        json={
            "description": "test object store",
            "values": {
                "accessKeyId": s3_server.extra["access_key"],
                "secretAccessKey": s3_server.extra["secret_key"],
            },
        },
    )
    assert response.status_code == 201, response.text
    return "store_keys"


def s3_spec(server: RunningServer, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "bucket": bucket,
        "keyPrefixes": ["logs/app-"],
        "fileType": "json",
        "endpoint": server.url,
        "secret": "store_keys",
        **extra,
    }


@pytest.mark.slow
def test_s3_source_infers_and_previews(
    api: Api, project: str, bucket: str, s3_secret: str, s3_server: RunningServer
) -> None:
    created = api.post(
        f"/projects/{project}/datasources/logs",
        json={"type": "s3", "spec": s3_spec(s3_server, bucket)},
    )
    assert created.status_code == 201, created.text
    assert [(f["key"], f["valtype"]) for f in created.json()["schema"]] == [
        ("level", "string"),
        ("n", "long"),
    ]
    assert "accessKeyId" not in created.text
    preview = api.get(f"/projects/{project}/datasources/logs/preview").json()
    assert preview["files"] == 2
    assert sorted(r["n"] for r in preview["rows"]) == [1, 2, 3]


def test_s3_file_filter_selects_the_batch(
    api: Api, project: str, bucket: str, s3_secret: str, s3_server: RunningServer
) -> None:
    spec = s3_spec(s3_server, bucket, fileFilter="$(date)")
    created = api.post(
        f"/projects/{project}/datasources/daily",
        json={
            "type": "s3",
            "spec": spec,
            "noVerifySchema": True,
            "schema": [{"key": "level", "valtype": "string"}, {"key": "n", "valtype": "long"}],
        },
    )
    assert created.status_code == 201, created.text
    day2 = api.get(
        f"/projects/{project}/datasources/daily/preview", params={"at": "2026-11-02T08:00:00Z"}
    ).json()
    assert day2["rows"] == [{"level": "error", "n": 3}]


def test_s3_wrong_credentials_and_missing_secret(
    api: Api, project: str, bucket: str, s3_server: RunningServer
) -> None:
    missing = api.post(
        f"/projects/{project}/datasources/logs",
        json={"type": "s3", "spec": s3_spec(s3_server, bucket)},
    )
    assert_error(missing, 404, "E18502", "store_keys")
    api.post(
        f"/projects/{project}/secrets/store_keys",
        json={"values": {"accessKeyId": "wrong-key", "secretAccessKey": "nope"}},
    )
    denied = api.post(
        f"/projects/{project}/datasources/logs",
        json={"type": "s3", "spec": s3_spec(s3_server, bucket)},
    )
    assert_error(denied, 400, "E18117", "cannot list")
    api.put(f"/projects/{project}/secrets/store_keys", json={"values": {"user": "x"}})
    incomplete = api.post(
        f"/projects/{project}/datasources/logs",
        json={"type": "s3", "spec": s3_spec(s3_server, bucket)},
    )
    assert_error(incomplete, 400, "E18503", "accessKeyId")


def test_secret_in_use_cannot_be_deleted(
    api: Api, project: str, bucket: str, s3_secret: str, s3_server: RunningServer
) -> None:
    api.post(
        f"/projects/{project}/datasources/logs",
        json={"type": "s3", "spec": s3_spec(s3_server, bucket)},
    )
    assert_error(api.delete(f"/projects/{project}/secrets/{s3_secret}"), 400, "E18112", "logs")
    assert api.delete(f"/projects/{project}/datasources/logs").status_code == 204
    assert api.delete(f"/projects/{project}/secrets/{s3_secret}").status_code == 204


@pytest.mark.parametrize(
    ("spec_change", "code", "needle"),
    [
        ({"bucket": "a"}, "E18011", "bucket"),
        ({"keyPrefixes": ["bad<prefix"]}, "E18011", "keyPrefixes"),
        ({"keyPrefixes": ["../up"]}, "E18116", "keyPrefixes"),
        ({"endpoint": "ftp://x"}, "E18011", "endpoint"),
        ({"endpoint": "http://10.1.2.3:9000"}, "E18118", "private"),
        ({"endpoint": "http://169.254.169.254"}, "E18118", "private"),
    ],
)
def test_s3_spec_rules(
    api: Api,
    project: str,
    s3_server: RunningServer,
    spec_change: dict[str, Any],
    code: str,
    needle: str,
) -> None:
    api.post(
        f"/projects/{project}/secrets/store_keys",
        json={"values": {"accessKeyId": "a", "secretAccessKey": "b"}},
    )
    spec = {**s3_spec(s3_server, "somebucket"), **spec_change}
    response = api.post(f"/projects/{project}/datasources/s", json={"type": "s3", "spec": spec})
    assert_error(response, 400, code, needle)


S3_REDIRECT_CASES = [(host, bind, 307) for host, bind in REFUSED_REDIRECT_TARGETS] + [
    ("127.0.0.2", "127.0.0.2", status) for status in REDIRECT_STATUSES if status != 307
]
"""(host in the Location URL, address the probe listens on, redirect status)."""

LOGS_SCHEMA = [{"key": "level", "valtype": "string"}, {"key": "n", "valtype": "long"}]


def object_read(method: str, path: str) -> bool:
    """A GET of one object (``/bucket/key``), not a listing (``/bucket?list-type=2…``)."""
    return method == "GET" and "?" not in path and path.strip("/").count("/") >= 1


@dataclass
class HostileS3:
    """A project with the keys of the real S3 server and a bucket of logs, to be reached
    through an endpoint that redirects (:meth:`endpoint`)."""

    api: Api
    project: str
    bucket: str
    server: RunningServer

    @contextmanager
    def endpoint(
        self, host: str, bind: str, status: int = 307, reads_only: bool = False
    ) -> Iterator[tuple[ConnectionProbe, RedirectServer, dict[str, Any]]]:
        """A probe on a refused address, a server redirecting to it (every request, or with
        ``reads_only`` only object reads, the rest going to the real server) and the spec
        of a data source through that server."""
        with (
            ConnectionProbe(host, bind) as probe,
            RedirectServer(
                probe.url(f"/{self.bucket}/logs"),
                status,
                upstream=self.server.url if reads_only else None,
                redirect_when=object_read,
            ) as endpoint,
        ):
            yield probe, endpoint, {**s3_spec(self.server, self.bucket), "endpoint": endpoint.url}

    def create(self, spec: dict[str, Any], **extra: Any) -> httpx.Response:
        return self.api.post(
            f"/projects/{self.project}/datasources/logs",
            json={"type": "s3", "spec": spec, **extra},
        )


@pytest.fixture
def hostile_s3(
    api: Api, project: str, bucket: str, s3_secret: str, s3_server: RunningServer
) -> HostileS3:
    return HostileS3(api, project, bucket, s3_server)


@pytest.mark.parametrize(("host", "bind", "status"), S3_REDIRECT_CASES)
def test_s3_endpoint_redirect_to_a_refused_address_is_not_followed(
    hostile_s3: HostileS3, host: str, bind: str, status: int
) -> None:
    with hostile_s3.endpoint(host, bind, status) as (probe, endpoint, spec):
        assert_error(hostile_s3.create(spec), 400, "E18118", "spec.endpoint", host.strip("[]"))
    assert probe.connections == 0
    assert endpoint.redirected


@pytest.mark.parametrize(("host", "bind"), REFUSED_REDIRECT_TARGETS)
def test_s3_object_read_redirected_to_a_refused_address_is_not_followed(
    hostile_s3: HostileS3, host: str, bind: str
) -> None:
    """The endpoint lists honestly (the real server behind it) and redirects object reads,
    which DuckDB makes through the registered filesystem: inference and preview fail with
    the refusal, not with the engine's "cannot read"."""
    api, project = hostile_s3.api, hostile_s3.project
    with hostile_s3.endpoint(host, bind, reads_only=True) as (probe, endpoint, spec):
        inferred = hostile_s3.create(spec)
        assert_error(inferred, 400, "E18118", "spec.endpoint", host.strip("[]"))
        created = hostile_s3.create(spec, noVerifySchema=True, schema=LOGS_SCHEMA)
        assert created.status_code == 201, created.text
        preview = api.get(f"/projects/{project}/datasources/logs/preview")
        assert_error(preview, 400, "E18118", "spec.endpoint", host.strip("[]"))
    assert probe.connections == 0
    assert endpoint.redirected


def test_a_batch_run_whose_s3_read_is_refused_fails_with_the_refusal(
    hostile_s3: HostileS3, workers: WorkerPool
) -> None:
    api, project = hostile_s3.api, hostile_s3.project
    with hostile_s3.endpoint("127.0.0.2", "127.0.0.2", reads_only=True) as (probe, endpoint, spec):
        created = hostile_s3.create(spec, noVerifySchema=True, schema=LOGS_SCHEMA)
        assert created.status_code == 201, created.text
        body = job_body(
            "SELECT level, count(*) AS n FROM lg GROUP BY level", source="logs", table="lg"
        )
        assert api.post(f"/projects/{project}/jobs/levels", json=body).status_code == 201
        entry = wait_for(api, project, "levels", start(api, project, "levels"), TERMINAL)
    assert entry["status"] == "Failed", entry
    assert entry["message"].startswith("spec.endpoint: host '127.0.0.2'"), entry
    assert "DATAMILL_OUTBOUND_ALLOW" in entry["message"]
    assert probe.connections == 0
    assert endpoint.redirected


@pytest.fixture
def webhdfs(tmp_path: Path) -> Iterator[WebHdfsDouble]:
    root = tmp_path / "hdfs"
    (root / "warehouse" / "clicks").mkdir(parents=True)
    (root / "warehouse" / "clicks" / "part-0.csv").write_text("user;page\nu1;/a\nu2;/b\n")
    (root / "warehouse" / "clicks" / "part-1.csv").write_text("user;page\nu3;/c\n")
    double = WebHdfsDouble(root)
    double.start()
    yield double
    double.stop()


def clicks_spec(webhdfs: WebHdfsDouble) -> dict[str, Any]:
    return {
        "paths": [f"hdfs://127.0.0.1:{webhdfs.port}/warehouse/clicks"],
        "fileType": "csv",
        "delimiter": ";",
        "containsHeader": True,
        "user": "etl",
    }


def test_hdfs_source_over_webhdfs(api: Api, project: str, webhdfs: WebHdfsDouble) -> None:
    spec = clicks_spec(webhdfs)
    created = api.post(
        f"/projects/{project}/datasources/clicks", json={"type": "hdfs", "spec": spec}
    )
    assert created.status_code == 201, created.text
    assert [f["key"] for f in created.json()["schema"]] == ["user", "page"]
    preview = api.get(f"/projects/{project}/datasources/clicks/preview").json()
    assert sorted(r["user"] for r in preview["rows"]) == ["u1", "u2", "u3"]
    assert preview["files"] == 2
    assert "etl" in webhdfs.users_seen


def test_hdfs_path_rules(api: Api, project: str, webhdfs: WebHdfsDouble) -> None:
    for path, code in [
        ("/local/path", "E18011"),
        ("hdfs://h:1/a/../b", "E18116"),
        ("hdfs://10.0.0.1:9870/x", "E18118"),
    ]:
        response = api.post(
            f"/projects/{project}/datasources/h",
            json={"type": "hdfs", "spec": {"paths": [path], "fileType": "json"}},
        )
        assert_error(response, 400, code, "paths")


@pytest.mark.parametrize("op", ["OPEN", "LISTSTATUS"])
@pytest.mark.parametrize(("host", "bind"), REFUSED_REDIRECT_TARGETS)
def test_hdfs_redirect_to_a_refused_address_is_not_followed(
    api: Api, project: str, webhdfs: WebHdfsDouble, op: str, host: str, bind: str
) -> None:
    spec = clicks_spec(webhdfs)
    created = api.post(
        f"/projects/{project}/datasources/clicks", json={"type": "hdfs", "spec": spec}
    )
    assert created.status_code == 201, created.text
    with ConnectionProbe(host, bind) as probe:
        webhdfs.redirect_ops[op] = probe.url()
        preview = api.get(f"/projects/{project}/datasources/clicks/preview")
        assert_error(preview, 400, "E18118", "spec.paths", host.strip("[]"))
        again = api.post(
            f"/projects/{project}/datasources/again", json={"type": "hdfs", "spec": spec}
        )
        assert_error(again, 400, "E18118", "spec.paths", host.strip("[]"))
    assert probe.connections == 0
    assert ("GET", op) in webhdfs.requests_seen


@pytest.mark.parametrize(("op", "code"), [("OPEN", "E18115"), ("LISTSTATUS", "E18117")])
def test_hdfs_redirect_chain_longer_than_the_cap_is_refused(
    api: Api, project: str, webhdfs: WebHdfsDouble, op: str, code: str
) -> None:
    webhdfs.redirect_ops[op] = f"{webhdfs.url}/webhdfs/v1/warehouse/clicks/part-0.csv?op={op}"
    created = api.post(
        f"/projects/{project}/datasources/clicks",
        json={"type": "hdfs", "spec": clicks_spec(webhdfs)},
    )
    assert_error(created, 400, code, "more than 5 redirects")


def test_a_batch_run_whose_hdfs_read_is_refused_fails_with_the_refusal(
    api: Api, project: str, webhdfs: WebHdfsDouble, workers: WorkerPool
) -> None:
    created = api.post(
        f"/projects/{project}/datasources/clicks",
        json={"type": "hdfs", "spec": clicks_spec(webhdfs)},
    )
    assert created.status_code == 201, created.text
    body = job_body("SELECT count(*) AS n FROM c", source="clicks", table="c")
    assert api.post(f"/projects/{project}/jobs/counts", json=body).status_code == 201
    with ConnectionProbe("127.0.0.2", "127.0.0.2") as probe:
        webhdfs.redirect_ops["OPEN"] = probe.url()
        entry = wait_for(api, project, "counts", start(api, project, "counts"), TERMINAL)
    assert entry["status"] == "Failed", entry
    assert entry["message"].startswith("spec.paths[0]: host '127.0.0.2'"), entry
    assert probe.connections == 0
    assert ("GET", "OPEN") in webhdfs.requests_seen
