"""The export kinds: one registry, one S3 spec, one value-to-JSON rule."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest
from pydantic import BaseModel, ValidationError

from datamill.client import EXPORT_TYPES
from datamill.connectors.sinks import SINKS
from datamill.connectors.sinks.s3 import S3ExportSpec
from datamill.domain.datasources import S3Spec
from datamill.domain.values import json_value


def test_every_kind_is_registered_once_under_its_own_name() -> None:
    assert set(SINKS) == {"file", "s3", "hdfs", "http", "logdb", "tsdb", "report"}
    for name, sink in SINKS.items():
        assert sink.type_name == name
        assert issubclass(sink.spec_model, BaseModel)


def test_the_clients_list_of_kinds_is_the_registry() -> None:
    assert set(EXPORT_TYPES) == set(SINKS)


S3_SOURCE = {"fileType": "json", "bucket": "bkt1", "keyPrefixes": ["in/"]}
S3_EXPORT = {"format": "json", "bucket": "bkt1"}


@pytest.mark.parametrize("spec", [S3_SOURCE, S3_EXPORT], ids=["datasource", "export"])
@pytest.mark.parametrize(
    "endpoint", ["http://KEY:secret@host:9000", "http://KEY@host:9000", "ftp://host"]
)
def test_one_s3_endpoint_rule_refuses_credentials(spec: dict[str, object], endpoint: str) -> None:
    model = S3Spec if "keyPrefixes" in spec else S3ExportSpec
    with pytest.raises(ValidationError) as refused:
        model.model_validate({**spec, "endpoint": endpoint})
    assert refused.value.errors()[0]["type"] == "E18011"


@pytest.mark.parametrize("spec", [S3_SOURCE, S3_EXPORT], ids=["datasource", "export"])
def test_one_s3_endpoint_rule_accepts_a_host_and_port(spec: dict[str, object]) -> None:
    model = S3Spec if "keyPrefixes" in spec else S3ExportSpec
    parsed = model.model_validate({**spec, "endpoint": "http://minio:9000", "secret": "keys"})
    assert parsed.endpoint == "http://minio:9000"
    assert parsed.secret == "keys"


def test_json_value_keeps_meaning_and_refuses_non_finite_floats_when_strict() -> None:
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    value = {"t": moment, "d": decimal.Decimal("1.5"), "b": b"\x00", "l": (1, None, True)}
    expected = {"t": "2026-01-02T03:04:05+00:00", "d": 1.5, "b": "AA==", "l": [1, None, True]}
    assert json_value(value) == expected
    assert json_value(value, strict=True) == expected
    assert json_value(float("nan")) == "nan"
    with pytest.raises(ValueError, match="cannot be represented in JSON"):
        json_value([float("inf")], strict=True)
