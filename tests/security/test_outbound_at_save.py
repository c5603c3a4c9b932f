"""Addresses the outbound guard refuses are refused when a spec is saved, not only when it
runs: every export kind that connects somewhere, the HTTP stream connections and the remote
file data sources, against one probe list kept as data (add a probe to
:data:`HOSTILE_HOSTS` and every kind in :data:`KINDS` meets it at create and at update).

Each test sets the administrator's allow list itself (``DATAMILL_OUTBOUND_ALLOW``): the
session's app allows ``127.0.0.1`` and ``localhost`` for the real test servers, which would
let many loopback spellings through. Saves only resolve names; nothing here connects, and
the accepted saves name ``203.0.113.7`` (a documentation address nothing answers on).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from datamill.services.runtime import Runtime
from tests.builders import TOTALS_SQL, job_body, make_source
from tests.conftest import Api, assert_error

HOSTILE_HOSTS: tuple[str, ...] = (
    # loopback, in the spellings resolvers accept
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "127.255.255.254",
    "0x7f000001",
    "0x7f.0.0.1",
    "017700000001",
    "0177.0.0.1",
    "2130706433",
    "127.000.000.001",
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    # names of loopback (/etc/hosts), and trailing dots
    "localhost",
    "LOCALHOST",
    "localhost.",
    "127.0.0.1.",
    # "this host", which reaches loopback listeners
    "0.0.0.0",
    "0",
    "[::]",
    # private, shared (CGNAT), link-local and unique-local networks
    "10.0.0.1",
    "10.255.255.254",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.0.1",
    "100.64.0.1",
    "169.254.169.254",
    "0xa9fea9fe",
    "2852039166",
    "0251.0376.0251.0376",
    "[fd00::1]",
    "[fe80::1]",
    "[::ffff:10.0.0.1]",
    "[::ffff:169.254.169.254]",
    # NAT64: the gateway would reach the embedded IPv4 address
    "[64:ff9b::7f00:1]",
    "[64:ff9b::a9fe:a9fe]",
)
"""Hosts as written in a URL's authority: each must be refused at save, with E18118 (or E18011
where a kind's host rule refuses the spelling before any name is resolved)."""

USERINFO_PROBES: tuple[str, ...] = (
    "allowed@127.0.0.1",
    "203.0.113.7@127.0.0.1",
    "user:pw@[::1]",
    "localhost@10.0.0.1",
)
"""Authorities whose host hides behind a user part. Specs that refuse credentials in the
URL refuse these as such (E18011); the ``report`` URL lives in a secret and may carry a
user, so its host meets the guard (E18118)."""

PUBLIC = "203.0.113.7"
UNRESOLVABLE = "no-such-host.invalid"
JOB = "totals"


@dataclass(frozen=True)
class Kind:
    """A kind of saved spec that connects somewhere, and how a host goes into it."""

    name: str
    path: str  # the collection under the project
    type: str
    field: str  # the field the refusal names
    spec: Callable[[str], dict[str, Any]]  # the spec with its address built from a host
    secret_url: Callable[[str], str] | None = None  # the address lives in a secret's 'url'
    credentials_refused: bool = True  # the spec refuses credentials in its URL (E18011)
    create: tuple[tuple[str, Any], ...] = ()  # more fields of a create's body
    text_refused: frozenset[str] = frozenset()  # probes its host rule refuses first (E18011)

    def refusal(self, host: str) -> str:
        """The error code a save of ``host`` answers with."""
        return "E18011" if host in self.text_refused else "E18118"


def _tsdb(host: str) -> dict[str, Any]:
    return {
        "endpoint": f"http://{host}:8086",
        "destRepoName": "metrics",
        "series": "totals",
        "fields": {"total": "total"},
        "timestamp": "device",
    }


REPORT = {"secret": "db", "tableName": "totals", "columns": {"device": "device"}}

KINDS: tuple[Kind, ...] = (
    Kind("http", f"jobs/{JOB}/exports", "http", "spec.host", lambda h: {"host": f"{h}:8080"}),
    Kind(
        "http-url",
        f"jobs/{JOB}/exports",
        "http",
        "spec.host",
        lambda h: {"host": f"https://{h}"},
    ),
    Kind(
        "logdb",
        f"jobs/{JOB}/exports",
        "logdb",
        "spec.endpoint",
        lambda h: {
            "endpoint": f"http://{h}:9200",
            "destRepoName": "totals",
            "doc": {"device": "device"},
        },
    ),
    Kind("tsdb", f"jobs/{JOB}/exports", "tsdb", "spec.endpoint", _tsdb),
    Kind(
        "s3",
        f"jobs/{JOB}/exports",
        "s3",
        "spec.endpoint",
        lambda h: {"bucket": "reports", "endpoint": f"http://{h}:9000", "format": "json"},
    ),
    Kind(
        "hdfs",
        f"jobs/{JOB}/exports",
        "hdfs",
        "spec.path",
        lambda h: {"path": f"hdfs://{h}:9870/out", "format": "json"},
    ),
    Kind(
        "report",
        f"jobs/{JOB}/exports",
        "report",
        "spec.secret",
        lambda h: REPORT,
        secret_url=lambda h: f"postgresql://reporter@{h}:5432/reports",
        credentials_refused=False,
    ),
    Kind(
        "function",
        "datasources",
        "function",
        "spec.url",
        lambda h: {"url": f"http://{h}:8000/fn"},
    ),
    Kind(
        "notification",
        "datasources",
        "notification",
        "spec.url",
        lambda h: {"channel": "webhook", "url": f"https://{h}/hook"},
    ),
)
UNVERIFIED = (("noVerifySchema", True), ("schema", [{"key": "device", "valtype": "string"}]))
"""A file data source saved without reading its files: only the address check stands."""
FILE_SOURCE_KINDS: tuple[Kind, ...] = (
    Kind(
        "s3-source",
        "datasources",
        "s3",
        "spec.endpoint",
        lambda h: {
            "bucket": "reports",
            "keyPrefixes": ["totals/"],
            "endpoint": f"http://{h}:9000",
            "fileType": "json",
        },
        create=UNVERIFIED,
    ),
    Kind(
        "hdfs-source",
        "datasources",
        "hdfs",
        "spec.paths[1]",
        lambda h: {"paths": [f"hdfs://{PUBLIC}/in", f"hdfs://{h}:9870/in"], "fileType": "json"},
        create=UNVERIFIED,
    ),
)
NO_TRAILING_DOT = frozenset({"localhost."})
"""A bare host field (not a URL) takes names without a final dot."""
HOST_KINDS: tuple[Kind, ...] = (
    Kind(
        "mqtt",
        "datasources",
        "mqtt",
        "spec.host",
        lambda h: {"host": h, "topic": "totals"},
        text_refused=NO_TRAILING_DOT,
    ),
    Kind(
        "kafka",
        "datasources",
        "kafka",
        "spec.bootstrapServers",
        lambda h: {"bootstrapServers": f"{PUBLIC}:9092,{h}:9092", "topic": "totals"},
        text_refused=NO_TRAILING_DOT,
    ),
    Kind(
        "smtp",
        "datasources",
        "notification",
        "spec.smtpHost",
        lambda h: {"channel": "email", "smtpHost": h, "from": "a@b.co", "to": ["c@d.co"]},
        text_refused=NO_TRAILING_DOT,
    ),
)
KINDS += FILE_SOURCE_KINDS + HOST_KINDS
KIND_IDS = [k.name for k in KINDS]


@dataclass(frozen=True)
class Owner:
    """The admin's client, and the URL of a project of this module with the job ``totals``."""

    api: Api
    base: str


@pytest.fixture(scope="module")
def module_owner(client: TestClient, admin_token: str, runtime: Runtime) -> Owner:
    api = Api(client, admin_token, runtime)
    project = f"p_{uuid.uuid4().hex[:10]}"
    assert api.post("/projects", json={"name": project}).status_code == 201
    (api.data_root / project).mkdir(parents=True, exist_ok=True)
    make_source(api, project)
    response = api.post(f"/projects/{project}/jobs/{JOB}", json=job_body(TOTALS_SQL))
    assert response.status_code == 201, response.text
    return Owner(api, f"/projects/{project}")


@pytest.fixture
def owner(module_owner: Owner, monkeypatch: pytest.MonkeyPatch) -> Owner:
    """The module's project, with no address allow-listed (DATAMILL_OUTBOUND_ALLOW unset)."""
    monkeypatch.setattr(module_owner.api.runtime.settings, "outbound_allow", [])
    return module_owner


def save(owner: Owner, kind: Kind, name: str, host: str, method: str = "POST") -> Any:
    """Save ``kind`` at ``host`` as ``name`` (its secret too, for a URL kept there)."""
    api, base = owner.api, owner.base
    spec = kind.spec(host)
    if kind.secret_url is not None:
        secret = f"s_{uuid.uuid4().hex[:10]}"
        created = api.post(
            f"{base}/secrets/{secret}", json={"values": {"url": kind.secret_url(host)}}
        )
        assert created.status_code == 201, created.text
        spec = {**spec, "secret": secret}
    url = f"{base}/{kind.path}/{name}"
    if method == "PUT":
        return api.put(url, json={"spec": spec})
    return api.post(url, json={"type": kind.type, "spec": spec, **dict(kind.create)})


def fresh_name() -> str:
    return f"e_{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_a_refused_address_is_refused_at_create(owner: Owner, kind: Kind, host: str) -> None:
    name = fresh_name()
    assert_error(save(owner, kind, name, host), 400, kind.refusal(host), kind.field)
    assert owner.api.get(f"{owner.base}/{kind.path}/{name}").status_code == 404


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("host", USERINFO_PROBES)
def test_a_host_behind_a_user_part_is_refused_at_create(
    owner: Owner, kind: Kind, host: str
) -> None:
    name = fresh_name()
    response = save(owner, kind, name, host)
    if kind.credentials_refused:
        assert_error(response, 400, "E18011", kind.field)
    else:
        assert_error(response, 400, "E18118", kind.field, host.rpartition("@")[2].strip("[]"))
    assert owner.api.get(f"{owner.base}/{kind.path}/{name}").status_code == 404


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_an_update_to_a_refused_address_is_refused_and_keeps_the_spec(
    owner: Owner, kind: Kind
) -> None:
    name = fresh_name()
    created = save(owner, kind, name, PUBLIC)
    assert created.status_code == 201, created.text
    for host in HOSTILE_HOSTS:
        response = save(owner, kind, name, host, method="PUT")
        assert response.status_code == 400, (host, response.text)
        assert response.json()["error_code"] == kind.refusal(host), (host, response.text)
        assert kind.field in response.json()["error_msg"], (host, response.text)
    assert (
        owner.api.get(f"{owner.base}/{kind.path}/{name}").json()["spec"] == created.json()["spec"]
    )


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_a_name_that_does_not_resolve_is_refused_at_save(owner: Owner, kind: Kind) -> None:
    name = fresh_name()
    response = save(owner, kind, name, UNRESOLVABLE)
    assert_error(response, 400, "E18118", kind.field, UNRESOLVABLE, "does not resolve")
    assert owner.api.get(f"{owner.base}/{kind.path}/{name}").status_code == 404


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize(
    ("allow", "host"),
    [
        (["127.0.0.1"], "127.1"),
        (["127.0.0.0/8"], "0x7f000001"),
        (["localhost"], "localhost"),
        (["10.0.0.0/8"], "10.1.2.3"),
        (["fd00::/8"], "[fd00::5]"),
    ],
)
def test_an_address_the_administrator_allows_is_saved(
    owner: Owner,
    monkeypatch: pytest.MonkeyPatch,
    kind: Kind,
    allow: list[str],
    host: str,
) -> None:
    monkeypatch.setattr(owner.api.runtime.settings, "outbound_allow", allow)
    name = fresh_name()
    created = save(owner, kind, name, host)
    assert created.status_code == 201, created.text
    monkeypatch.setattr(owner.api.runtime.settings, "outbound_allow", [])
    assert_error(save(owner, kind, name, host, method="PUT"), 400, "E18118", kind.field)


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_a_secret_update_may_not_point_a_report_at_a_refused_address(
    owner: Owner, host: str
) -> None:
    """The ``report`` URL lives in its secret: replacing the secret saves that URL."""
    report = next(k for k in KINDS if k.name == "report")
    name = fresh_name()
    assert save(owner, report, name, PUBLIC).status_code == 201
    secret = owner.api.get(f"{owner.base}/{report.path}/{name}").json()["spec"]["secret"]
    url = f"{owner.base}/secrets/{secret}"
    before = owner.api.get(url).json()
    assert report.secret_url is not None
    response = owner.api.put(url, json={"values": {"url": report.secret_url(host)}})
    assert_error(response, 400, "E18118", name)
    assert owner.api.get(url).json() == before
    unused = owner.api.post(f"{url}_free", json={"values": {"url": report.secret_url(PUBLIC)}})
    assert unused.status_code == 201, unused.text
    again = owner.api.put(f"{url}_free", json={"values": {"url": report.secret_url(host)}})
    assert again.status_code == 200, again.text  # no export names it: nothing to reach


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("s3", {"bucket": "reports", "endpoint": f"http://{PUBLIC}:99999", "format": "json"}),
        ("hdfs", {"path": f"hdfs://{PUBLIC}:99999/out", "format": "json"}),
    ],
)
def test_a_port_out_of_range_is_a_clear_400_at_save(
    owner: Owner, kind: str, spec: dict[str, Any]
) -> None:
    response = owner.api.post(
        f"{owner.base}/jobs/{JOB}/exports/{fresh_name()}", json={"type": kind, "spec": spec}
    )
    assert_error(response, 400, "E18011", "port")
