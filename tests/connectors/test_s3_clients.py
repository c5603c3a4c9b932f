"""The shared S3 client factory: checked endpoints, keys from secrets, reused instances."""

from __future__ import annotations

import threading

import pytest

from datamill.connectors.outbound.s3 import s3_filesystem
from datamill.errors import DatamillError

KEYS = {"accessKeyId": "datamill-test", "secretAccessKey": "datamill-test-secret"}


def make(**overrides: object) -> object:
    args: dict[str, object] = {
        "endpoint": "http://127.0.0.1:9",
        "region": None,
        "secret": "keys",
        "secret_values": KEYS,
        "outbound_allow": ["127.0.0.1"],
    }
    args.update(overrides)
    return s3_filesystem(**args)  # type: ignore[arg-type]


def test_the_same_endpoint_and_keys_reuse_one_client() -> None:
    first = make()
    assert make() is first  # a later run in this worker reuses the client
    assert make(secret_values={**KEYS, "secretAccessKey": "rotated"}) is not first
    assert make(endpoint="http://127.0.0.1:10") is not first
    assert make(region="eu-west-1") is not first
    anonymous = make(secret=None, secret_values={})
    assert anonymous is not first
    assert anonymous.anon  # type: ignore[attr-defined]
    other_thread: list[object] = []
    thread = threading.Thread(target=lambda: other_thread.append(make()))
    thread.start()
    thread.join()
    assert other_thread[0] is first  # threads share it: its calls run on fsspec's IO loop


def test_refusals_name_the_field() -> None:
    with pytest.raises(DatamillError) as private:
        make(outbound_allow=[])
    assert private.value.field == "spec.endpoint"
    with pytest.raises(DatamillError) as missing:
        make(secret_values={"accessKeyId": "only"})
    assert missing.value.field == "spec.secret"
    assert "needs values accessKeyId and secretAccessKey" in missing.value.message
