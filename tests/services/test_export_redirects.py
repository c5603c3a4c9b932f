"""Exports whose destination answers with a redirect to an address the guard refuses.

Each network export kind is given a :class:`~tests.redirects.RedirectServer` (on the
allow-listed 127.0.0.1) as its destination; every request is redirected to a
:class:`~tests.webhdfs_double.ConnectionProbe` on a refused address, which must get no
connection. HTTP clients do not follow redirects; the S3 client follows them only through
the outbound guard, which refuses the hop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from datamill.runtime.worker import WorkerPool
from tests.conftest import Api
from tests.redirects import REFUSED_REDIRECT_TARGETS, RedirectServer
from tests.services.test_export_services import (
    add_export,
    add_secret,
    make_job,
    run_job,
    wait_export,
)
from tests.webhdfs_double import ConnectionProbe

NOT_FOLLOWED = "redirects are not followed"

EXPORTS: list[tuple[str, str, Callable[[str], dict[str, Any]], str]] = [
    ("to_http", "http", lambda url: {"host": url, "uri": "/hook", "format": "json"}, NOT_FOLLOWED),
    (
        "to_logdb",
        "logdb",
        lambda url: {"endpoint": url, "destRepoName": "events", "doc": {"n": "n"}},
        NOT_FOLLOWED,
    ),
    (
        "to_tsdb",
        "tsdb",
        lambda url: {
            "endpoint": url,
            "destRepoName": "metrics",
            "series": "events",
            "fields": {"value": "value"},
            "timestamp": "ts",
        },
        NOT_FOLLOWED,
    ),
    (  # rows written by the sink through s3fs
        "to_s3_json",
        "s3",
        lambda url: {"endpoint": url, "bucket": "exports", "secret": "keys", "format": "json"},
        "spec.endpoint: host",
    ),
    (  # one parquet file written by the engine through s3fs
        "to_s3_parquet",
        "s3",
        lambda url: {
            "endpoint": url,
            "bucket": "exports",
            "secret": "keys",
            "format": "parquet",
            "keyPrefix": "whole/",
        },
        "spec.endpoint: host",
    ),
]
"""(export name, kind, spec for a destination URL, what the failed export run says)."""


@pytest.mark.parametrize(("host", "bind"), REFUSED_REDIRECT_TARGETS)
def test_export_redirected_to_a_refused_address_goes_nowhere(
    api: Api, project: str, workers: WorkerPool, host: str, bind: str
) -> None:
    make_job(api, project)
    add_secret(api, project, "keys", {"accessKeyId": "k", "secretAccessKey": "s3cr3t-key"})
    with (
        ConnectionProbe(host, bind) as probe,
        RedirectServer(probe.url("/elsewhere")) as destination,
    ):
        for name, kind, spec, _says in EXPORTS:
            add_export(api, project, name, kind, {**spec(destination.url), "retries": 0})
        run_id = run_job(api, project)
        entries = {name: wait_export(api, project, name, run_id) for name, *_ in EXPORTS}
    for name, _kind, _spec, says in EXPORTS:
        assert entries[name]["status"] == "Failed", entries[name]
        assert says in entries[name]["message"], entries[name]
    assert probe.connections == 0
    assert destination.redirected
