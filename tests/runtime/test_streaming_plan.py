"""The engine in process: every stateless operator compiled to SQL, open schemas, sources,
sinks and transforms chosen by connection type through the registries, Deduplicate and a
processing-time window, and clear failures when a connection type has no connector."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from datamill.connectors.streams.base import (
    SINKS,
    SOURCES,
    TRANSFORMS,
    Position,
    StreamConnection,
    StreamContext,
)
from datamill.engines.streaming import JsonLines
from datamill.runtime.streaming.engine import Engine, EngineConfig
from datamill.runtime.streaming.plan import PlanError
from tests.builders import op

COLLECTED: dict[str, list[tuple[int, list[dict[str, Any]]]]] = {}
COMMITTED: dict[str, list[int]] = {}


class MemorySource:
    """Records given in the connection spec, handed out in order (a test connector)."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.index = 0

    def seek(self, position: Position | None) -> None:
        self.index = int(position["index"]) if position else 0

    def read(self, max_records: int, timeout_seconds: float) -> list[dict[str, Any]]:
        out = self.records[self.index : self.index + max_records]
        self.index += len(out)
        return out

    def position(self) -> Position:
        return {"index": self.index}

    def committed(self, position: Position) -> None:
        return None

    def lag(self) -> int | None:
        return len(self.records) - self.index

    def exhausted(self) -> bool:
        return self.index >= len(self.records)

    def close(self) -> None:
        return None


class CollectSink:
    def __init__(self, name: str) -> None:
        self.name = name
        COLLECTED[name] = []
        COMMITTED[name] = []

    def write(self, table: pa.Table, epoch: int) -> None:
        COLLECTED[self.name].append((epoch, table.to_pylist()))

    def commit(self, epoch: int) -> None:
        COMMITTED[self.name].append(epoch)

    def close(self) -> None:
        return None


class AddLength:
    """A function call double: adds the length of the named field."""

    def __init__(self, basic: dict[str, Any]) -> None:
        self.source = basic["apiParamFields"][0]
        self.output = basic["apiOutputField"]["field"]

    def apply(self, table: pa.Table) -> pa.Table:
        values = [len(str(v)) for v in table.column(self.source).to_pylist()]
        return table.append_column(self.output, pa.array(values, pa.int64()))

    def close(self) -> None:
        return None


@pytest.fixture(autouse=True)
def registries() -> Any:
    SOURCES["memory"] = lambda spec, basic, ctx: MemorySource(spec["records"])

    def sink(spec: dict[str, Any], configs: dict[str, Any], ctx: StreamContext) -> CollectSink:
        assert ctx.operator_id
        assert ctx.state_dir.is_dir()
        return CollectSink(spec["name"])

    SINKS["collect"] = sink
    TRANSFORMS["length"] = lambda spec, basic, ctx: AddLength(basic)
    yield
    for registry, key in ((SOURCES, "memory"), (SINKS, "collect"), (TRANSFORMS, "length")):
        registry.pop(key, None)


def run(
    tmp_path: Path,
    operators: list[dict[str, Any]],
    connections: dict[str, StreamConnection],
    runtime: dict[str, Any] | None = None,
    batch_records: int = 100_000,
) -> Engine:
    root = tmp_path / "files" / "p"
    root.mkdir(parents=True, exist_ok=True)
    config = EngineConfig(
        project="p",
        job_id="j",
        job_dir=tmp_path / "job",
        project_root=root,
        body={
            "definition": {"jobName": "t"},
            "operatorInstances": operators,
            "runtime": runtime or {},
        },
        connections=connections,
        stop_when_exhausted=True,
        threads=1,
        batch_records=batch_records,
    )
    engine = Engine(config, log=lambda _line: None)
    engine.run(threading.Event())
    assert engine.finished
    return engine


def conn(name: str, type_: str, spec: dict[str, Any]) -> StreamConnection:
    return StreamConnection(name=name, type=type_, spec=spec, secret_values={})


def rows(name: str) -> list[dict[str, Any]]:
    return [row for _, batch in COLLECTED[name] for row in batch]


def test_stateless_operators_over_an_open_schema_with_connectors(tmp_path: Path) -> None:
    records = [
        {"id": 1, "payload": {"sensor": {"temp": 21.5, "unit": "C"}}, "site": "north"},
        {"id": 2, "payload": {"sensor": {"temp": "x", "unit": "C"}}, "site": "south"},
        {"id": 3, "payload": {"sensor": {"temp": 30}}, "site": "north"},
    ]
    operators = [
        op("src", "PipelineSource", [], {"dataSourceId": "topic"}),
        op(
            "flat",
            "Flat",
            ["src"],
            {
                "flatFieldConfig": [
                    {"field": "temp", "type": "DOUBLE", "path": "payload.sensor.temp"},
                    {"field": "unit", "type": "STRING", "path": "payload.sensor.unit"},
                ]
            },
        ),
        op(
            "nest",
            "Nest",
            ["flat"],
            {
                "nestFieldConfig": {
                    "field": "meta",
                    "type": "MAP",
                    "nestFields": [
                        {"path": "where.site", "type": "FIELD", "value": "site"},
                        {"path": "where.unit", "type": "PATH", "value": "payload.sensor.unit"},
                        {"path": "version", "type": "CONSTANT", "value": 2},
                    ],
                }
            },
        ),
        op(
            "map",
            "Map",
            ["nest"],
            {
                "mapFieldConfig": [
                    {"field": "temp_f", "type": "DOUBLE", "expression": "temp * 1.8 + 32"},
                    {"field": "site", "type": "STRING", "expression": "upper(site)"},
                ]
            },
        ),
        op(
            "call",
            "CallFunctionGraph",
            ["map"],
            {
                "dataSourceId": "fn",
                "apiParamFields": ["site"],
                "apiOutputField": {"field": "site_len", "type": "LONG"},
            },
        ),
        op(
            "pick",
            "SelectFields",
            ["call"],
            {"selectFields": ["id", "temp_f", "site", "site_len", "meta"]},
        ),
        op("notify", "SMNSink", ["pick"], {"dataSourceId": "alerts", "defaultMessage": "${id}"}),
    ]
    connections = {
        "topic": conn("topic", "memory", {"records": records}),
        "fn": conn("fn", "length", {}),
        "alerts": conn("alerts", "collect", {"name": "alerts"}),
    }
    engine = run(tmp_path, operators, connections)
    out = sorted(rows("alerts"), key=lambda r: r["id"])
    assert [r["id"] for r in out] == [1, 2, 3]
    assert out[0]["temp_f"] == pytest.approx(70.7)
    assert out[1]["temp_f"] is None  # 'x' does not convert: NULL, not a failure
    assert out[2]["temp_f"] == pytest.approx(86.0)
    assert [r["site"] for r in out] == ["NORTH", "SOUTH", "NORTH"]
    assert [r["site_len"] for r in out] == [5, 5, 5]
    assert json.loads(out[0]["meta"]) == {"where": {"site": "north", "unit": "C"}, "version": 2}
    assert json.loads(out[2]["meta"])["where"]["unit"] is None
    assert engine.last_checkpoint is not None
    assert COMMITTED["alerts"][-1] == engine.last_checkpoint["epoch"]
    assert engine.counters["notify"]["recordsIn"] == 3


def order_lines() -> list[dict[str, Any]]:
    """Source "src" of orders (``order``, ``items``) and Flat "lines": a record per item,
    with the order and the item's ``sku`` and ``n``."""
    return [
        op(
            "src",
            "PipelineSource",
            [],
            {
                "dataSourceId": "orders",
                "fields": [
                    {"field": "order", "type": "STRING"},
                    {"field": "items", "type": "ARRAY"},
                ],
            },
        ),
        op(
            "lines",
            "Flat",
            ["src"],
            {
                "multiRecordsPath": "items",
                "flatFieldConfig": [
                    {"field": "sku", "type": "STRING", "path": "sku"},
                    {"field": "n", "type": "LONG", "path": "n"},
                ],
            },
        ),
    ]


def test_flat_multi_records_and_deduplicate(tmp_path: Path) -> None:
    """Each element of an array becomes a record; repeats of (order, sku) are dropped."""
    records = [
        {"order": "a", "items": [{"sku": "s1", "n": 1}, {"sku": "s2", "n": 2}]},
        {"order": "b", "items": [{"sku": "s1", "n": 5}]},
        {"order": "a", "items": [{"sku": "s1", "n": 1}]},
    ]
    operators = [
        *order_lines(),
        op(
            "once",
            "Deduplicate",
            ["lines"],
            {"keyFields": ["order"], "deduplicateFields": ["sku"], "relationship": "AND"},
            {"deduplicatePeriod": {"period": 3600}},
        ),
        op("pick", "SelectFields", ["once"], {"selectFields": "order,sku,n"}),
        op("out", "DISSink", ["pick"], {"dataSourceId": "sink"}),
    ]
    connections = {
        "orders": conn("orders", "memory", {"records": records}),
        "sink": conn("sink", "collect", {"name": "lines"}),
    }
    engine = run(tmp_path, operators, connections)
    got = sorted((r["order"], r["sku"], r["n"]) for r in rows("lines"))
    assert got == [("a", "s1", 1), ("a", "s2", 2), ("b", "s1", 5)]
    assert engine.counters["lines"]["recordsOut"] == 4
    assert engine.counters["once"]["recordsOut"] == 3


def test_flat_multi_records_without_dedup(tmp_path: Path) -> None:
    records = [
        {"order": "a", "items": [{"sku": "s1", "n": 1}, {"sku": "s2", "n": 2}]},
        {"order": "b", "items": []},
        {"order": "c", "items": [{"sku": "s3"}]},
    ]
    operators = [
        *order_lines(),
        op("out", "DISSink", ["lines"], {"dataSourceId": "sink"}),
    ]
    connections = {
        "orders": conn("orders", "memory", {"records": records}),
        "sink": conn("sink", "collect", {"name": "flat"}),
    }
    engine = run(tmp_path, operators, connections)
    got = sorted((r["order"], r["sku"], r["n"]) for r in rows("flat"))
    assert got == [("a", "s1", 1), ("a", "s2", 2), ("c", "s3", None)]
    assert set(rows("flat")[0]) == {"order", "items", "sku", "n"}
    assert engine.counters["lines"] == {"recordsIn": 3, "recordsOut": 3}


def test_processing_time_window_closes_on_the_wall_clock(tmp_path: Path) -> None:
    records = [{"k": "a"}, {"k": "a"}, {"k": "b"}]
    operators = [
        op(
            "src",
            "PipelineSource",
            [],
            {"dataSourceId": "in", "fields": [{"field": "k", "type": "STRING"}]},
        ),
        op(
            "count",
            "Aggregate",
            ["src"],
            {
                "keyFields": ["k"],
                "windowsType": "TumblingTimeWindows",
                "windowAssigner": {"timeType": "ProcessingTime", "size": 1},
                "aggregateFields": [{"field": "n", "type": "LONG", "aggregateType": "COUNT"}],
            },
        ),
        op("out", "DISSink", ["count"], {"dataSourceId": "sink"}),
    ]
    connections = {
        "in": conn("in", "memory", {"records": records}),
        "sink": conn("sink", "collect", {"name": "counts"}),
    }
    run(tmp_path, operators, connections)
    assert sorted((r["k"], r["n"]) for r in rows("counts")) == [("a", 2), ("b", 1)]


def test_a_connection_type_without_connector_fails_clearly(tmp_path: Path) -> None:
    operators = [
        op("src", "PipelineSource", [], {"dataSourceId": "odd"}),
        op("out", "DISSink", ["src"], {"target": "x"}),
    ]
    with pytest.raises(PlanError, match=r"'odd' is of type 'carrier-pigeon'.*streaming source"):
        run(tmp_path, operators, {"odd": conn("odd", "carrier-pigeon", {})})
    with pytest.raises(PlanError, match="could not be resolved"):
        run(tmp_path, operators, {})


SINK_ESCAPES = [
    pytest.param("link/escape", ".", id="link-out-of-the-root"),
    pytest.param("link/escape", "files/q", id="link-to-another-project"),
    pytest.param("link/q/escape", "files", id="link-to-the-root"),
]


@pytest.mark.parametrize(("target", "link_to"), SINK_ESCAPES)
def test_sink_targets_stay_inside_the_project(tmp_path: Path, target: str, link_to: str) -> None:
    """The sink writes into the project's own folder of the root (files/p), never into
    another project's (files/q) nor out of the root."""
    (tmp_path / "files" / "p").mkdir(parents=True)
    (tmp_path / "files" / "q").mkdir(parents=True)
    (tmp_path / "files" / "p" / "link").symlink_to(tmp_path / link_to)
    operators = [
        op("src", "PipelineSource", [], {"dataSourceId": "in"}),
        op("out", "DISSink", ["src"], {"target": target}),
    ]
    with pytest.raises(PlanError, match="leads outside"):
        run(tmp_path, operators, {"in": conn("in", "memory", {"records": []})})
    assert list((tmp_path / "files" / "q").iterdir()) == []


class LinesSource(MemorySource):
    """Raw message texts, some of them not JSON (what a broker may carry)."""

    def read_lines(self, max_records: int, timeout_seconds: float) -> JsonLines:
        out = self.records[self.index : self.index + max_records]
        self.index += len(out)
        return JsonLines("".join(f"{line}\n" for line in out).encode(), len(out))


def test_a_message_that_is_not_json_becomes_a_record_of_nulls(tmp_path: Path) -> None:
    SOURCES["lines"] = lambda spec, basic, ctx: LinesSource(spec["records"])
    try:
        lines = ['{"k": "a", "v": 1}', "not json", '{"k": "b", "v": "2"}', "[1, 2]"]
        fields = [{"field": "k", "type": "STRING"}, {"field": "v", "type": "LONG"}]
        operators = [
            op("src", "PipelineSource", [], {"dataSourceId": "raw", "fields": fields}),
            op("out", "DISSink", ["src"], {"dataSourceId": "sink"}),
        ]
        connections = {
            "raw": conn("raw", "lines", {"records": lines}),
            "sink": conn("sink", "collect", {"name": "raw"}),
        }
        run(tmp_path, operators, connections)
    finally:
        SOURCES.pop("lines", None)
    got = [(r["k"], r["v"]) for r in rows("raw")]
    assert got == [("a", 1), (None, None), ("b", 2), (None, None)]


def test_watermark_and_late_records(tmp_path: Path) -> None:
    """Batches of two: the watermark (max event time - 2 s) closes the window [0, 10) once
    an event at 12 s is seen; an event at 5 s after that is late: counted and dropped."""
    at = [1, 3, 12, 13, 5, 14, 25]
    records = [{"k": "a", "ts": f"2026-01-01T00:00:{s:02d}Z"} for s in at]
    fields = [{"field": "k", "type": "STRING"}, {"field": "ts", "type": "TIMESTAMP"}]
    operators = [
        op(
            "src",
            "PipelineSource",
            [],
            {"dataSourceId": "in", "fields": fields, "eventTimeField": "ts"},
        ),
        op(
            "count",
            "Aggregate",
            ["src"],
            {
                "keyFields": ["k"],
                "windowsType": "TumblingTimeWindows",
                "windowAssigner": {"timeType": "EventTime", "size": 10},
                "aggregateFields": [{"field": "n", "type": "LONG", "aggregateType": "COUNT"}],
            },
        ),
        op("out", "DISSink", ["count"], {"dataSourceId": "sink"}),
    ]
    connections = {
        "in": conn("in", "memory", {"records": records}),
        "sink": conn("sink", "collect", {"name": "late"}),
    }
    engine = run(tmp_path, operators, connections, batch_records=2)
    windows = sorted((str(r["windowStart"])[-8:], r["n"]) for r in rows("late"))
    assert windows == [("00:00:00", 2), ("00:00:10", 3), ("00:00:20", 1)]
    figures = json.loads((tmp_path / "job" / "metrics.json").read_text())
    assert figures["lateRecords"] == 1
    assert figures["operators"]["count"]["lateRecords"] == 1
    assert figures["watermark"].startswith("2026-01-01T00:00:23")
    assert engine.counters["src"]["recordsOut"] == len(at)
