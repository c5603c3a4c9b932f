"""The stateful streaming operators (Aggregate windows, Deduplicate) on DuckDB state tables.

Pure DuckDB: each test drives a step the way the engine does, batch by batch, with a
controlled watermark and processing time, and compares what it emits with a plain DuckDB
query over the whole stream.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datamill.domain.expressions import FieldType
from datamill.domain.streaming import OPERATORS, Configs, Schema, StreamingRuntime
from datamill.engines.duckdb.streaming.state import StatefulStep
from datamill.engines.duckdb.streaming.stateful import build_stateful, duckdb_type, state_prefix
from datamill.engines.streaming import BatchContext

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
INPUT = Schema(
    {
        "device_id": FieldType.STRING,
        "event_time": FieldType.TIMESTAMP,
        "value": FieldType.DOUBLE,
        "n": FieldType.INTEGER,
        "status": FieldType.STRING,
    },
    event_time="event_time",
)
COLUMNS = "device_id VARCHAR, event_time TIMESTAMP, value DOUBLE, n INTEGER, status VARCHAR"

Row = tuple[str | None, dt.datetime | None, float | None, int | None, str | None]


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def naive(value: dt.datetime) -> dt.datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def rec(
    key: str | None,
    seconds: float | None,
    value: float | None = 1.0,
    n: int | None = 1,
    s: str = "ok",
) -> Row:
    return (key, None if seconds is None else naive(at(seconds)), value, n, s)


NAMES = ("device_id", "event_time", "value", "n", "status")
ARROW = pa.schema(
    [
        ("device_id", pa.string()),
        ("event_time", pa.timestamp("us")),
        ("value", pa.float64()),
        ("n", pa.int32()),
        ("status", pa.string()),
    ]
)


def load(
    con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Row], numbered: bool = False
) -> None:
    """``rows`` into a new table (in their order; ``numbered``: plus k, the row number)."""
    columns = {name: [r[i] for r in rows] for i, name in enumerate(NAMES)}
    data = pa.Table.from_pydict(columns, schema=ARROW)
    con.register("rows_in", data)
    number = ", row_number() OVER () - 1 AS k" if numbered else ""
    con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT *{number} FROM rows_in")
    con.unregister("rows_in")


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(":memory:")
    yield connection
    connection.close()


def make_step(
    class_name: str,
    basic: dict[str, Any],
    advance: dict[str, Any] | None = None,
    schema: Schema = INPUT,
    op_id: str = "op-1",
) -> StatefulStep:
    kind = OPERATORS[class_name]
    config, problems = kind.parse_config(Configs(basicConfigs=basic, advanceConfigs=advance))
    assert config is not None, problems
    out, problems = kind.output_schema([schema], config)
    assert not problems, problems
    return build_stateful(op_id, class_name, config, schema, out, StreamingRuntime())


def aggregate(
    window: str = "TumblingTimeWindows",
    fields: Sequence[dict[str, Any]] | None = None,
    keys: Sequence[str] = ("device_id",),
    **assigner: Any,
) -> dict[str, Any]:
    assigner.setdefault("timeType", "EventTime")
    if window != "SessionWindows":
        assigner.setdefault("size", 10)
    return {
        "keyFields": list(keys),
        "windowsType": window,
        "windowAssigner": assigner,
        "aggregateFields": list(
            fields or [{"field": "c", "type": "LONG", "aggregateType": "COUNT"}]
        ),
    }


class Driver:
    """Feeds batches to a step like the engine: watermark = max event time - lag."""

    def __init__(self, con: duckdb.DuckDBPyConnection, step: StatefulStep, lag: float = 2.0):
        self.con, self.step, self.lag = con, step, lag
        self.max_time: dt.datetime | None = None
        self.epoch = 0
        self.clock = T0
        self.columns: list[tuple[str, str]] = []
        step.create_state(con)

    def watermark(self) -> dt.datetime | None:
        if self.max_time is None:
            return None
        return self.max_time - dt.timedelta(seconds=self.lag)

    def batch(
        self,
        rows: Sequence[Row],
        *,
        final: bool = False,
        clock: dt.datetime | None = None,
        watermark: dt.datetime | None = None,
    ) -> list[dict[str, Any]]:
        load(self.con, "batch_in", rows)
        times = [r[1].replace(tzinfo=UTC) for r in rows if r[1] is not None]
        if times:
            latest = max(times)
            self.max_time = latest if self.max_time is None else max(self.max_time, latest)
        if clock is not None:
            self.clock = clock
        self.epoch += 1
        ctx = BatchContext(self.epoch, self.clock, watermark or self.watermark(), final)
        out = self.step.process(self.con, "batch_in", ctx)
        self.columns = self.con.execute(
            f"SELECT column_name, column_type FROM (DESCRIBE {out})"
        ).fetchall()
        result = self.con.execute(f"SELECT * FROM {out}")
        names = [d[0] for d in result.description]
        emitted = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
        self.con.execute(f"DROP TABLE {out}")
        return emitted

    def metrics(self) -> dict[str, Any]:
        return self.step.metrics(self.con)


def by_window(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (str(r.get("device_id")), r["windowStart"]))


# --------------------------------------------------------------------------- tumbling


def test_tumbling_event_time_emits_when_watermark_passes_end(
    con: duckdb.DuckDBPyConnection,
) -> None:
    driver = Driver(con, make_step("Aggregate", aggregate()))
    assert driver.batch([rec("a", 1), rec("a", 3), rec("b", 9)]) == []
    assert driver.metrics()["windows"] == 2
    # watermark 11 - 2 = 9: the window [0, 10) is still open
    assert driver.batch([rec("a", 11)]) == []
    out = driver.batch([rec("a", 12)])  # watermark 10: [0, 10) closes
    assert by_window(out) == [
        {"device_id": "a", "windowStart": naive(at(0)), "windowEnd": naive(at(10)), "c": 2},
        {"device_id": "b", "windowStart": naive(at(0)), "windowEnd": naive(at(10)), "c": 1},
    ]
    assert driver.metrics()["windows"] == 1
    assert driver.batch([], final=True) == [
        {"device_id": "a", "windowStart": naive(at(10)), "windowEnd": naive(at(20)), "c": 2}
    ]
    assert driver.metrics()["state_rows"] == 0


def test_out_of_order_within_allowance_and_late_records(con: duckdb.DuckDBPyConnection) -> None:
    driver = Driver(con, make_step("Aggregate", aggregate()))
    driver.batch([rec("a", 5), rec("a", 11)])  # watermark 9
    driver.batch([rec("a", 8)])  # out of order, its window [0, 10) is still open
    out = driver.batch([rec("a", 13)])  # watermark 11: emits [0, 10) with 2 records
    assert [r["c"] for r in out] == [2]
    late = driver.batch([rec("a", 9), rec("a", 2), rec("a", 10), rec("a", None)])
    assert late == []  # window [0, 10) is closed: 9 and 2 are late
    assert driver.metrics()["late_records"] == 2
    assert driver.metrics()["null_time_records"] == 1
    final = driver.batch([], final=True)
    assert [(r["windowStart"], r["c"]) for r in final] == [(naive(at(10)), 3)]


def test_offset_shifts_window_starts(con: duckdb.DuckDBPyConnection) -> None:
    driver = Driver(con, make_step("Aggregate", aggregate(offset=3)))
    out = driver.batch([rec("a", 1), rec("a", 2.5), rec("a", 3), rec("a", 12.9)], final=True)
    assert [(r["windowStart"], r["windowEnd"], r["c"]) for r in by_window(out)] == [
        (naive(at(-7)), naive(at(3)), 2),
        (naive(at(3)), naive(at(13)), 2),
    ]


def test_state_table_names_are_safe_and_distinct() -> None:
    assert state_prefix("a.b") != state_prefix("a_b")
    assert state_prefix("x:y-z").replace("_", "").isalnum()


AGGREGATES = [
    {"field": "cnt", "type": "LONG", "aggregateType": "COUNT"},
    {"field": "cnt_v", "type": "LONG", "aggregateField": "value", "aggregateType": "COUNT"},
    {"field": "sum_v", "type": "DOUBLE", "aggregateField": "value", "aggregateType": "SUM"},
    {"field": "sum_n", "type": "LONG", "aggregateField": "n", "aggregateType": "SUM"},
    {"field": "avg_v", "type": "DOUBLE", "aggregateField": "value", "aggregateType": "AVG"},
    {"field": "avg_n", "type": "DOUBLE", "aggregateField": "n", "aggregateType": "AVG"},
    {"field": "max_v", "type": "DOUBLE", "aggregateField": "value", "aggregateType": "MAX"},
    {"field": "min_s", "type": "STRING", "aggregateField": "status", "aggregateType": "MIN"},
    {"field": "first_v", "type": "DOUBLE", "aggregateField": "value", "aggregateType": "FIRST"},
    {"field": "last_v", "type": "DOUBLE", "aggregateField": "value", "aggregateType": "LAST"},
    {"field": "dist_n", "type": "LONG", "aggregateField": "n", "aggregateType": "COUNT_DISTINCT"},
]

REFERENCE = """
    SELECT device_id, time_bucket(INTERVAL 10 seconds, event_time) AS "windowStart",
        count(*) AS cnt, count(value) AS cnt_v, sum(value) AS sum_v, sum(n) AS sum_n,
        avg(value) AS avg_v, avg(n) AS avg_n, max(value) AS max_v, min(status) AS min_s,
        arg_min(value, (event_time, k)) FILTER (WHERE value IS NOT NULL) AS first_v,
        arg_max(value, (event_time, k)) FILTER (WHERE value IS NOT NULL) AS last_v,
        count(DISTINCT n) AS dist_n
    FROM stream GROUP BY ALL
"""


def close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def same_rows(mine: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]]) -> None:
    assert len(mine) == len(reference)
    for got, want in zip(by_window(mine), by_window(reference), strict=True):
        for name, value in want.items():
            assert close(got[name], value), (name, got, want)


def stream_rows(count: int, keys: int = 4, seconds: float = 60.0) -> list[Row]:
    rows: list[Row] = []
    for i in range(count):
        value = None if i % 11 == 5 else float((i * 37) % 101) / 7
        rows.append(rec(f"d{i % keys}", (i * seconds / count), value, (i * 13) % 5, f"s{i % 3}"))
    return rows


def reference_rows(rows: Sequence[Row], query: str = REFERENCE) -> list[dict[str, Any]]:
    """``query`` over the whole stream (table ``stream``, ``k`` the arrival order), in a
    connection of its own."""
    con = duckdb.connect(":memory:")
    try:
        load(con, "stream", rows, numbered=True)
        result = con.execute(query)
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]
    finally:
        con.close()


def test_every_aggregate_exact_across_batches(con: duckdb.DuckDBPyConnection) -> None:
    rows = stream_rows(600)
    driver = Driver(con, make_step("Aggregate", aggregate(fields=AGGREGATES)))
    out: list[dict[str, Any]] = []
    for first in range(0, len(rows), 37):
        out += driver.batch(rows[first : first + 37])
    out += driver.batch([], final=True)
    assert driver.metrics()["late_records"] == 0
    same_rows(out, reference_rows(rows))
    assert driver.metrics()["state_rows"] == 0
    # the output schema's fields, in its order and with its types
    kind = OPERATORS["Aggregate"]
    config, _ = kind.parse_config(Configs(basicConfigs=aggregate(fields=AGGREGATES)))
    assert config is not None
    schema, _ = kind.output_schema([INPUT], config)
    assert driver.columns == [(name, duckdb_type(t)) for name, t in schema.fields.items()]


def windows_of(out: Sequence[dict[str, Any]], *names: str) -> list[tuple[Any, ...]]:
    """(key, start s, end s, *values) of each emitted row, sorted."""
    rows = [
        (
            r.get("device_id"),
            (r["windowStart"] - naive(T0)).total_seconds(),
            (r["windowEnd"] - naive(T0)).total_seconds(),
            *(r[n] for n in names),
        )
        for r in out
    ]
    return sorted(rows, key=lambda row: (str(row[0]), row[1]))


# --------------------------------------------------------------------------- sliding


def test_sliding_windows_event_time(con: duckdb.DuckDBPyConnection) -> None:
    fields = [
        {"field": "c", "type": "LONG", "aggregateType": "COUNT"},
        {"field": "s", "type": "DOUBLE", "aggregateField": "value", "aggregateType": "SUM"},
    ]
    step = make_step("Aggregate", aggregate("SlidingTimeWindows", fields, size=10, slide=5))
    driver = Driver(con, step)
    out = driver.batch([rec("a", 1, 1.0), rec("a", 6, 2.0), rec("a", 12, 4.0)])  # watermark 10
    # windows ending by 10: [-5, 5) holds t=1, [0, 10) holds 1 and 6
    assert windows_of(out, "c", "s") == [("a", -5, 5, 1, 1.0), ("a", 0, 10, 2, 3.0)]
    out += driver.batch([rec("a", 8, 8.0)])  # only [5, 15) of its windows is still open
    assert driver.metrics()["late_records"] == 0
    out += driver.batch([rec("a", 3, 16.0)])  # both its windows are closed: late
    assert driver.metrics()["late_records"] == 1
    final = driver.batch([], final=True)
    assert windows_of(final, "c", "s") == [("a", 5, 15, 3, 14.0), ("a", 10, 20, 1, 4.0)]


def test_sliding_equals_group_by_over_expanded_windows(con: duckdb.DuckDBPyConnection) -> None:
    rows = stream_rows(400, keys=3, seconds=50)
    fields = [
        {"field": "c", "type": "LONG", "aggregateType": "COUNT"},
        {"field": "mx", "type": "DOUBLE", "aggregateField": "value", "aggregateType": "MAX"},
        {"field": "dn", "type": "LONG", "aggregateField": "n", "aggregateType": "COUNT_DISTINCT"},
    ]
    step = make_step("Aggregate", aggregate("SlidingTimeWindows", fields, size=9, slide=4))
    driver = Driver(con, step)
    out: list[dict[str, Any]] = []
    for first in range(0, len(rows), 53):
        out += driver.batch(rows[first : first + 53])
    out += driver.batch([], final=True)
    query = """
        SELECT device_id, s / 1e6 - 1767225600 AS ws, count(*), max(value), count(DISTINCT n)
        FROM (SELECT *, (epoch_us(event_time) // 4000000 - j) * 4000000 AS s
              FROM stream, range(3) AS r(j))
        WHERE s + 9000000 > epoch_us(event_time)
        GROUP BY ALL ORDER BY 1, 2
    """
    expected = [tuple(row.values()) for row in reference_rows(rows, query)]
    got = [(r[0], r[1], r[3], r[4], r[5]) for r in windows_of(out, "c", "mx", "dn")]
    assert got == [(k, float(s), c, m, d) for k, s, c, m, d in expected]


# --------------------------------------------------------------------------- sessions


def session(**more: Any) -> dict[str, Any]:
    fields = [
        {"field": "c", "type": "LONG", "aggregateType": "COUNT"},
        {"field": "s", "type": "DOUBLE", "aggregateField": "value", "aggregateType": "SUM"},
        {"field": "f", "type": "DOUBLE", "aggregateField": "value", "aggregateType": "FIRST"},
        {"field": "l", "type": "DOUBLE", "aggregateField": "value", "aggregateType": "LAST"},
        {"field": "dn", "type": "LONG", "aggregateField": "n", "aggregateType": "COUNT_DISTINCT"},
    ]
    return aggregate("SessionWindows", fields, gap=5, **more)


def test_session_windows_merge_across_batches(con: duckdb.DuckDBPyConnection) -> None:
    driver = Driver(con, make_step("Aggregate", session()), lag=10)
    assert driver.batch([rec("a", 0, 1.0, 1), rec("a", 3, 2.0, 2), rec("b", 1, 5.0, 1)]) == []
    assert driver.metrics()["windows"] == 2  # a [0, 8), b [1, 6)
    assert driver.batch([rec("a", 12, 4.0, 1)]) == []  # a second session of a: [12, 17)
    assert driver.metrics()["windows"] == 3
    # 7.5 extends [0, 8) to [0, 12.5); 8 (to 13) then bridges it with [12, 17)
    assert driver.batch([rec("a", 8, 8.0, 3), rec("a", 7.5, 16.0, 3)]) == []
    assert driver.metrics()["windows"] == 2
    out = driver.batch([rec("c", 30)])  # watermark 20
    assert windows_of(out, "c", "s", "f", "l", "dn") == [
        ("a", 0, 17, 5, 31.0, 1.0, 4.0, 3),
        ("b", 1, 6, 1, 5.0, 5.0, 5.0, 1),
    ]
    assert driver.metrics()["late_records"] == 0
    assert driver.batch([rec("a", 9)]) == []  # 9 + 5 <= 20: late
    assert driver.metrics()["late_records"] == 1
    final = driver.batch([], final=True)
    assert windows_of(final, "c") == [("c", 30, 35, 1)]
    assert driver.metrics()["state_rows"] == 0


def test_session_windows_without_keys(con: duckdb.DuckDBPyConnection) -> None:
    step = make_step("Aggregate", aggregate("SessionWindows", keys=(), gap=2))
    driver = Driver(con, step, lag=0)
    driver.batch([rec("a", 0), rec("b", 1)])
    driver.batch([rec("c", 2.5)])
    out = driver.batch([rec("a", 10)])
    assert [(r["windowStart"], r["windowEnd"], r["c"]) for r in out] == [
        (naive(at(0)), naive(at(4.5)), 3)
    ]


# --------------------------------------------------------------------------- processing time


def test_processing_time_windows_follow_the_clock(con: duckdb.DuckDBPyConnection) -> None:
    fields = [{"field": "s", "type": "DOUBLE", "aggregateField": "value", "aggregateType": "SUM"}]
    step = make_step("Aggregate", aggregate(fields=fields, timeType="ProcessingTime", size=10))
    driver = Driver(con, step)
    # event times are ignored: the batch's processing time places the records
    assert driver.batch([rec("a", 500, 1.0), rec("b", -50, 2.0)], clock=at(3)) == []
    assert driver.batch([rec("a", 0, 4.0)], clock=at(9.9)) == []
    assert driver.metrics()["windows"] == 2
    out = driver.batch([], clock=at(10))  # an idle tick at the window's end closes it
    assert windows_of(out, "s") == [("a", 0, 10, 5.0), ("b", 0, 10, 2.0)]
    assert driver.batch([rec("a", 1, 8.0)], clock=at(14)) == []
    assert driver.metrics()["late_records"] == 0
    assert windows_of(driver.batch([], clock=at(25)), "s") == [("a", 10, 20, 8.0)]
    assert driver.metrics()["state_rows"] == 0


def test_processing_time_first_last_follow_arrival(con: duckdb.DuckDBPyConnection) -> None:
    fields = [
        {"field": "f", "type": "DOUBLE", "aggregateField": "value", "aggregateType": "FIRST"},
        {"field": "l", "type": "DOUBLE", "aggregateField": "value", "aggregateType": "LAST"},
    ]
    basic = aggregate("SlidingTimeWindows", fields, timeType="ProcessingTime", size=10, slide=5)
    driver = Driver(con, make_step("Aggregate", basic))
    driver.batch([rec("a", 50, 1.0), rec("a", 0, None), rec("a", 9, 2.0)], clock=at(1))
    out = driver.batch([rec("a", 0, 3.0), rec("a", 0, None)], clock=at(6))  # closes [-5, 5)
    out += driver.batch([], final=True, clock=at(7))
    assert windows_of(out, "f", "l") == [
        ("a", -5, 5, 1.0, 2.0),
        ("a", 0, 10, 1.0, 3.0),
        ("a", 5, 15, 3.0, 3.0),
    ]


def test_processing_time_sessions(con: duckdb.DuckDBPyConnection) -> None:
    step = make_step("Aggregate", aggregate("SessionWindows", timeType="ProcessingTime", gap=3))
    driver = Driver(con, step)
    driver.batch([rec("a", 0)], clock=at(0))
    driver.batch([rec("a", 0)], clock=at(2))
    assert driver.batch([], clock=at(4.9)) == []
    assert windows_of(driver.batch([], clock=at(5)), "c") == [("a", 0, 5, 2)]


# --------------------------------------------------------------------------- eventConditions


def test_event_conditions_gate_records_per_key(con: duckdb.DuckDBPyConnection) -> None:
    basic = aggregate(
        fields=[{"field": "s", "type": "DOUBLE", "aggregateField": "value", "aggregateType": "SUM"}]
    )
    basic["eventConditions"] = {
        "eventOnCondition": "status = 'on'",
        "eventOffCondition": "status = 'off'",
    }
    driver = Driver(con, make_step("Aggregate", basic), lag=100)
    driver.batch(
        [
            rec("a", 1, 1.0, s="x"),  # gate closed: ignored
            rec("a", 2, 2.0, s="on"),  # opens, counted
            rec("b", 2, 64.0, s="x"),  # b's gate is closed
            rec("a", 3, 4.0, s="x"),  # counted
        ]
    )
    driver.batch([rec("a", 4, 8.0, s="x"), rec("a", 5, 16.0, s="off"), rec("a", 6, 32.0, s="x")])
    driver.batch([rec("b", 7, 128.0, s="on"), rec("a", 8, 256.0, s="on")])
    assert driver.metrics()["state_rows"] == 2 + 2  # two windows, two open gates
    out = driver.batch([], final=True)
    assert windows_of(out, "s") == [("a", 0, 10, 2.0 + 4.0 + 8.0 + 256.0), ("b", 0, 10, 128.0)]


# --------------------------------------------------------------------------- ttl


def test_ttl_drops_idle_windows_without_emitting(con: duckdb.DuckDBPyConnection) -> None:
    step = make_step("Aggregate", aggregate(), {"ttlTime": 30})
    driver = Driver(con, step, lag=1000)  # the watermark never closes anything here
    driver.batch([rec("a", 1), rec("b", 1)], clock=at(0))
    driver.batch([rec("a", 2)], clock=at(20))
    assert driver.metrics()["state_rows"] == 2
    assert driver.batch([], clock=at(35)) == []  # b untouched since 0: expired
    metrics = driver.metrics()
    assert (metrics["state_rows"], metrics["expired_state_rows"]) == (1, 1)
    assert windows_of(driver.batch([], final=True, clock=at(36)), "c") == [("a", 0, 10, 2)]


# --------------------------------------------------------------------------- exactly once


@pytest.mark.slow
def test_rollback_then_reprocess_gives_the_same_result(con: duckdb.DuckDBPyConnection) -> None:
    """The engine's checkpoint is one transaction: a crash before it commits loses the
    batches' effects on state and counters, and replaying them must give the same output."""
    fields = [*AGGREGATES]
    rows = stream_rows(300_000, keys=50, seconds=120)  # batches larger than a row group
    rows_small = stream_rows(900, keys=5, seconds=120)
    for data, size in ((rows_small, 100), (rows[:200_000], 70_000)):
        step = make_step("Aggregate", aggregate(fields=fields), op_id=f"rb{size}")
        driver = Driver(con, step)
        first = data[: size * 2]
        con.execute("BEGIN TRANSACTION")
        kept = driver.batch(first[:size])
        kept += driver.batch(first[size:])
        con.execute("COMMIT")
        snapshot = driver.metrics(), driver.max_time, driver.epoch
        con.execute("BEGIN TRANSACTION")
        lost = driver.batch(data[size * 2 : size * 3])
        lost += driver.batch(data[size * 3 :], final=True)
        con.execute("ROLLBACK")
        assert driver.metrics() == snapshot[0]
        driver.max_time, driver.epoch = snapshot[1], snapshot[2]
        con.execute("BEGIN TRANSACTION")
        again = driver.batch(data[size * 2 : size * 3])
        again += driver.batch(data[size * 3 :], final=True)
        con.execute("COMMIT")
        same_rows(again, lost)
        same_rows(kept + again, reference_rows(data))
        assert driver.metrics()["state_rows"] == 0


# --------------------------------------------------------------------------- Deduplicate


def dedup(
    fields: Sequence[str],
    relationship: str = "AND",
    period: int = 10,
    event_time: bool = False,
    keys: Sequence[str] = ("device_id",),
    ttl: int | None = None,
    op_id: str = "op-1",
) -> StatefulStep:
    basic = {
        "keyFields": list(keys),
        "relationship": relationship,
        "deduplicateFields": list(fields),
    }
    advance: dict[str, Any] = {
        "deduplicatePeriod": {"isUseEventTime": event_time, "period": period}
    }
    if ttl:
        advance["ttlTime"] = ttl
    return make_step("Deduplicate", basic, advance, op_id=op_id)


def values(out: Sequence[dict[str, Any]]) -> list[float]:
    return [r["value"] for r in out]


def test_deduplicate_and_processing_time(con: duckdb.DuckDBPyConnection) -> None:
    driver = Driver(con, dedup(["status", "n"]))
    out = driver.batch(
        [
            rec("a", 0, 1.0, 1, "ok"),
            rec("a", 0, 2.0, 1, "ok"),  # same key, same fields: dropped
            rec("a", 0, 3.0, 2, "ok"),  # n differs: kept (AND needs all equal)
            rec("b", 0, 4.0, 1, "ok"),  # another key
            rec(None, 0, 5.0, None, "ok"),
            rec(None, 0, 6.0, None, "ok"),  # NULL equals NULL under AND
        ],
        clock=at(0),
    )
    assert values(out) == [1.0, 3.0, 4.0, 5.0]
    assert list(out[0]) == ["device_id", "event_time", "value", "n", "status"]  # unchanged
    assert out[0] == {
        "device_id": "a",
        "event_time": naive(at(0)),
        "value": 1.0,
        "n": 1,
        "status": "ok",
    }
    assert driver.metrics()["state_rows"] == 4
    assert values(driver.batch([rec("a", 0, 7.0, 1, "ok")], clock=at(5))) == []
    # seen (and dropped) at 5: 12 is within 10 s of it
    assert values(driver.batch([rec("a", 0, 8.0, 1, "ok")], clock=at(12))) == []
    assert driver.metrics()["state_rows"] == 1  # the others' periods ended behind the clock
    assert values(driver.batch([rec("a", 0, 9.0, 1, "ok")], clock=at(22))) == [9.0]
    assert driver.metrics()["dropped_duplicates"] == 4


def test_deduplicate_or_event_time(con: duckdb.DuckDBPyConnection) -> None:
    driver = Driver(con, dedup(["status", "n"], "OR", period=5, event_time=True), lag=100)
    out = driver.batch(
        [
            rec("a", 0, 1.0, 1, "ok"),
            rec("a", 1, 2.0, 2, "ok"),  # same status within 5 s: dropped
            rec("a", 2, 3.0, 1, "warn"),  # same n: dropped
            rec("a", 3, 4.0, 3, "err"),  # nothing in common: kept
            rec("a", 4, 5.0, None, "idle"),  # a NULL n matches nothing: kept
            rec("a", 4.5, 6.0, None, "x"),
            rec("b", 1, 7.0, 1, "ok"),
        ]
    )
    assert values(out) == [1.0, 4.0, 5.0, 6.0, 7.0]
    # a's latest 'ok' was at 1 (dropped records count too): 5.9 repeats it, 12 does not
    out = driver.batch([rec("a", 5.9, 8.0, 9, "ok"), rec("a", 12, 9.0, 9, "ok")])
    assert values(out) == [9.0]
    # an older record arriving after a newer one of its key repeats it
    assert values(driver.batch([rec("a", 6.1, 10.0, 10, "ok")])) == []
    assert values(driver.batch([rec("a", 20, 11.0, 11, "ok")])) == [11.0]


@pytest.mark.slow
def test_deduplicate_is_the_same_whatever_the_batches(con: duckdb.DuckDBPyConnection) -> None:
    rows = [
        rec(f"d{i % 3}", i * 0.7 + (i % 7) * 0.9, float(i), i % 4, f"s{i % 2}") for i in range(120)
    ]
    outputs = []
    for size in (120, 1, 7, 33):
        step = dedup(["status", "n"], "OR", period=4, event_time=True, op_id=f"d{size}")
        driver = Driver(con, step, lag=1000)
        out: list[dict[str, Any]] = []
        for first in range(0, len(rows), size):
            out += driver.batch(rows[first : first + size])
        outputs.append(values(out))
        con.execute("DROP TABLE IF EXISTS batch_in")
    assert 10 < len(outputs[0]) < len(rows) - 10
    assert all(o == outputs[0] for o in outputs)


def test_deduplicate_ttl_and_rollback(con: duckdb.DuckDBPyConnection) -> None:
    driver = Driver(con, dedup(["status"], period=1000, ttl=30))
    driver.batch([rec("a", 0), rec("b", 0)], clock=at(0))
    driver.batch([rec("a", 0)], clock=at(20))  # a dropped, its key touched
    con.execute("BEGIN TRANSACTION")
    assert values(driver.batch([rec("b", 0, 2.0)], clock=at(40))) == [2.0]  # b expired at 30
    assert driver.metrics()["expired_state_rows"] == 1
    con.execute("ROLLBACK")
    assert driver.metrics()["expired_state_rows"] == 0
    assert driver.metrics()["state_rows"] == 2
    assert values(driver.batch([rec("b", 0, 2.0)], clock=at(40))) == [2.0]
    assert values(driver.batch([rec("a", 0, 3.0)], clock=at(41))) == []


# --------------------------------------------------------------------------- any split


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Row], list[int]]:
    """Records with out-of-orderness bounded by the watermark lag (2 s), so that no split
    makes any of them late, and the split points of the stream into batches."""
    count = draw(st.integers(1, 30))
    rows: list[Row] = []
    clock = 0.0
    for _ in range(count):
        clock += draw(st.sampled_from([0.0, 0.25, 0.5, 1.0, 3.0, 7.0]))
        jitter = draw(st.sampled_from([0.0, -0.5, -1.0, -1.75]))
        value = draw(st.one_of(st.none(), st.integers(-20, 20).map(float)))
        rows.append(
            rec(
                draw(st.sampled_from(["a", "b", None])),
                max(0.0, clock + jitter),
                value,
                draw(st.integers(0, 3)),
                draw(st.sampled_from(["on", "off", "x"])),
            )
        )
    cuts = sorted(set(draw(st.lists(st.integers(0, count), max_size=5))))
    return rows, cuts


WINDOWS: list[tuple[str, dict[str, Any]]] = [
    ("TumblingTimeWindows", {"size": 5}),
    ("SlidingTimeWindows", {"size": 6, "slide": 4, "offset": 1}),
    ("SessionWindows", {"gap": 2}),
]


def expected_counts(
    rows: Sequence[Row], window: tuple[str, dict[str, Any]]
) -> dict[tuple[str | None, float, float], int]:
    """Records per (key, start, end) window, computed directly (a reference)."""
    kind, params = window
    counts: dict[tuple[str | None, float, float], int] = {}
    times: dict[str | None, list[float]] = {}
    for key, time, *_ in rows:
        assert time is not None
        t = (time - naive(T0)).total_seconds()
        times.setdefault(key, []).append(t)
    for key, ts in times.items():
        spans: list[tuple[float, float]] = []
        if kind == "SessionWindows":
            merged: list[list[float]] = []
            for t in sorted(ts):
                if merged and t <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], t + params["gap"])
                    merged[-1][2] += 1
                else:
                    merged.append([t, t + params["gap"], 1])
            for start, end, count in merged:
                counts[(key, start, end)] = int(count)
            continue
        size = params["size"]
        slide, offset = params.get("slide", size), params.get("offset", 0)
        for t in ts:
            start = t - (t - offset) % slide
            while start + size > t:
                spans.append((start, start + size))
                start -= slide
        for span in spans:
            counts[(key, *span)] = counts.get((key, *span), 0) + 1
    return counts


def run_stream(
    con: duckdb.DuckDBPyConnection, step: StatefulStep, batches: Sequence[Sequence[Row]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    driver = Driver(con, step)
    out: list[dict[str, Any]] = []
    for rows in batches:
        out += driver.batch(rows)
    out += driver.batch([], final=True)
    return out, driver.metrics()


@pytest.mark.slow
@settings(max_examples=12, deadline=None, database=None)
@given(data=streams(), window=st.sampled_from(WINDOWS), gated=st.booleans())
def test_any_split_gives_the_output_of_one_batch(
    data: tuple[list[Row], list[int]], window: tuple[str, dict[str, Any]], gated: bool
) -> None:
    rows, cuts = data
    basic = aggregate(window[0], AGGREGATES, **window[1])
    if gated:
        basic["eventConditions"] = {
            "eventOnCondition": "status = 'on'",
            "eventOffCondition": "status = 'off'",
        }
    bounds = [0, *cuts, len(rows)]
    batches = [rows[a:b] for a, b in itertools.pairwise(bounds)]
    con = duckdb.connect(":memory:")
    try:
        whole, _ = run_stream(con, make_step("Aggregate", basic, op_id="whole"), [rows])
        split, metrics = run_stream(con, make_step("Aggregate", basic, op_id="split"), batches)
    finally:
        con.close()
    assert metrics["late_records"] == 0
    assert metrics["windows"] == 0
    same_rows(split, whole)
    if not gated:
        got = {(r["device_id"], *windows_of([r])[0][1:3]): r["cnt"] for r in whole}
        assert got == expected_counts(rows, window)
    deduplicated = [
        values(run_stream(duckdb.connect(":memory:"), dedup(["status", "n"], rel, 3, True), b)[0])
        for rel in ("AND", "OR")
        for b in ([rows], batches)
    ]
    assert deduplicated[0] == deduplicated[1]
    assert deduplicated[2] == deduplicated[3]


# --------------------------------------------------------------------------- W1 shape

W1_EVENTS = """
    SELECT 'dev' || lpad(CAST(hash(i, 1) % 40 AS VARCHAR), 3, '0') AS device_id,
        CAST(TIMESTAMP '2026-01-01' + to_milliseconds(
            i * 600000 // 40000 + hash(i, 2) % 500) AS TIMESTAMP_MS) AS event_time,
        CAST(hash(i, 3) % 4000000 AS DOUBLE) / 100000.0 - 10.0 AS value,
        ['ok', 'warn', 'err', 'idle', 'x'][CAST(hash(i, 4) % 5 AS BIGINT) + 1] AS status
    FROM range(40000) AS r(i)
"""
W1_QUERY = """
    SELECT device_id, time_bucket(INTERVAL 10 seconds, event_time) AS "windowStart",
        count(*) AS events, sum(temp_f) AS sum_temp_f, avg(temp_f) AS avg_temp_f,
        max(temp_f) AS max_temp_f
    FROM (SELECT device_id, event_time, value * 1.8 + 32 AS temp_f FROM w1 WHERE status <> 'x')
    GROUP BY ALL
"""


def test_w1_in_micro_batches_equals_one_group_by(con: duckdb.DuckDBPyConnection) -> None:
    """W1's logic (filter, map, 10 s tumbling window per device: count, sum, avg, max) in
    micro-batches with a watermark 2 s behind, inside checkpoint transactions, equals
    plain DuckDB's one GROUP BY key by key."""
    schema = Schema(
        {
            "device_id": FieldType.STRING,
            "event_time": FieldType.TIMESTAMP,
            "temp_f": FieldType.DOUBLE,
        },
        event_time="event_time",
    )
    fields = [
        {"field": "events", "type": "LONG", "aggregateType": "COUNT"},
        {
            "field": "sum_temp_f",
            "type": "DOUBLE",
            "aggregateField": "temp_f",
            "aggregateType": "SUM",
        },
        {
            "field": "avg_temp_f",
            "type": "DOUBLE",
            "aggregateField": "temp_f",
            "aggregateType": "AVG",
        },
        {
            "field": "max_temp_f",
            "type": "DOUBLE",
            "aggregateField": "temp_f",
            "aggregateType": "MAX",
        },
    ]
    step = make_step("Aggregate", aggregate(fields=fields), schema=schema)
    con.execute(f"CREATE TABLE w1 AS {W1_EVENTS}")
    step.create_state(con)
    out: list[dict[str, Any]] = []
    watermark: dt.datetime | None = None
    most_windows = 0
    for epoch, first in enumerate(range(0, 40000, 3000)):
        con.execute("BEGIN TRANSACTION")
        con.execute(
            "CREATE OR REPLACE TEMP TABLE w1_batch AS "
            "SELECT device_id, event_time, value * 1.8 + 32 AS temp_f FROM w1 "
            f"WHERE rowid >= {first} AND rowid < {first + 3000} AND status <> 'x'"
        )
        latest = con.execute("SELECT max(event_time) FROM w1_batch").fetchall()[0][0]
        watermark = latest.replace(tzinfo=UTC) - dt.timedelta(seconds=2)
        ctx = BatchContext(epoch, T0, watermark, final=first + 3000 >= 40000)
        table = step.process(con, "w1_batch", ctx)
        result = con.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in result.description]
        out += [dict(zip(names, row, strict=True)) for row in result.fetchall()]
        con.execute(f"DROP TABLE {table}")
        con.execute("COMMIT")
        most_windows = max(most_windows, step.metrics(con)["windows"])
    result = con.execute(W1_QUERY)
    names = [d[0] for d in result.description]
    expected = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
    same_rows(out, expected)
    assert step.metrics(con)["late_records"] == 0
    assert most_windows <= 3 * 40  # state holds the open windows only, not the stream


# --------------------------------------------------------------------------- the factory


def test_open_input_schema_takes_the_types_of_the_data(con: duckdb.DuckDBPyConnection) -> None:
    """A source without declared fields: the state tables get the input's column types."""
    basic = aggregate(
        fields=[
            {"field": "s", "type": "DOUBLE", "aggregateField": "value", "aggregateType": "SUM"}
        ],
        timeField="event_time",
    )
    step = make_step("Aggregate", basic, schema=Schema.unknown())
    driver = Driver(con, step)
    driver.batch([rec("a", 1, 2.5), rec("a", 2, 0.5)])
    out = driver.batch([], final=True)
    assert out == [
        {"device_id": "a", "windowStart": naive(at(0)), "windowEnd": naive(at(10)), "s": 3.0}
    ]


def test_factory_refuses_other_operators() -> None:
    kind = OPERATORS["Filter"]
    config, _ = kind.parse_config(Configs(basicConfigs={"conditions": []}))
    assert config is not None
    with pytest.raises(ValueError, match="not a stateful operator"):
        build_stateful("f", "Filter", config, INPUT, INPUT, StreamingRuntime())


def test_event_conditions_without_key_fields(con: duckdb.DuckDBPyConnection) -> None:
    basic = aggregate(keys=(), size=100)
    basic["eventConditions"] = {"eventOnCondition": "n > 5", "eventOffCondition": "n < 0"}
    driver = Driver(con, make_step("Aggregate", basic))
    driver.batch([rec("a", 1, n=1), rec("b", 2, n=6), rec("c", 3, n=1)])
    driver.batch([rec("a", 4, n=-1), rec("b", 5, n=2), rec("a", 6, n=9)])
    out = driver.batch([], final=True)
    assert [(r["windowStart"], r["c"]) for r in out] == [(naive(at(0)), 3)]
    assert "device_id" not in out[0]


def test_deduplicate_without_key_fields(con: duckdb.DuckDBPyConnection) -> None:
    driver = Driver(con, dedup(["status"], keys=(), period=5))
    out = driver.batch(
        [rec("a", 0, 1.0, s="ok"), rec("b", 0, 2.0, s="ok"), rec("b", 0, 3.0, s="x")]
    )
    assert values(out) == [1.0, 3.0]  # 'ok' repeats whatever the device
    assert values(driver.batch([rec("c", 0, 4.0, s="ok")], clock=at(6))) == [4.0]


@pytest.mark.slow
def test_first_batch_larger_than_a_row_group_in_a_transaction(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """The state tables are created by the first batch, inside the engine's transaction;
    rows appended to them there must all be visible (DuckDB 2.0 loses them for tables
    made by ``CREATE TABLE … AS … LIMIT 0``)."""
    step = make_step("Aggregate", aggregate(fields=AGGREGATES))
    con.execute("BEGIN TRANSACTION")
    step.create_state(con)
    con.execute(
        "CREATE TABLE big AS SELECT 'd' || (i % 50000) AS device_id, "
        "TIMESTAMP '2026-01-01' + to_microseconds(i * 100) AS event_time, "
        "CAST(i % 7 AS DOUBLE) AS value, CAST(i % 3 AS INTEGER) AS n, 'ok' AS status "
        "FROM range(300000) AS r(i)"
    )
    ctx = BatchContext(1, T0, at(25))  # everything but the last window [20, 30) closes
    out = step.process(con, "big", ctx)
    emitted = con.execute(f"SELECT count(*), sum(cnt), sum(dist_n) FROM {out}").fetchall()[0]
    open_rows = step.metrics(con)["windows"]
    con.execute("COMMIT")
    expected = con.execute(
        "SELECT count(*) FILTER (WHERE w < 20), sum(c) FILTER (WHERE w < 20), "
        "sum(d) FILTER (WHERE w < 20), count(*) FILTER (WHERE w >= 20) FROM (SELECT device_id, "
        "epoch(time_bucket(INTERVAL 10 seconds, event_time)) - epoch(TIMESTAMP '2026-01-01') AS w, "
        "count(*) AS c, count(DISTINCT n) AS d FROM big GROUP BY ALL)"
    ).fetchall()[0]
    assert (*emitted, open_rows) == expected


def test_deduplicate_keeps_records_without_event_time(con: duckdb.DuckDBPyConnection) -> None:
    driver = Driver(con, dedup(["status"], event_time=True), lag=100)
    out = driver.batch(
        [rec("a", None, 1.0), rec("a", None, 2.0), rec("a", 1, 3.0), rec("a", 2, 4.0)]
    )
    assert values(out) == [1.0, 2.0, 3.0]
    assert driver.metrics()["dropped_duplicates"] == 1
