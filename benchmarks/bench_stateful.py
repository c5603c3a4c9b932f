"""Micro-benchmark: W1 through the streaming Aggregate step in micro-batches vs one query.

``python -m benchmarks.bench_stateful [--events N] [--batch-rows R] [--repeat K]``

In one process and one run (the machines are noisy, only ratios within a run mean much):

1. W1's input is generated, or reused (``benchmarks.w1_data``), and loaded into an
   in-memory DuckDB table in file order (the order a stream would deliver it).
2. baseline: W1's query (``benchmarks.bench_batch.W1_SQL``) over that table, one
   statement, into a table; ``threads=2``.
3. stateful: the same events fed in slices of ``R`` rows to an Aggregate step built from
   a pipeline config (10 s tumbling event-time window per device_id: count, sum, avg,
   max). Per batch, as the engine would: the stateless part (``status <> 'x'``,
   ``value * 1.8 + 32``) into the batch table, the watermark (max event time - 2 s),
   ``process`` inside one transaction (the checkpoint), the emitted rows appended to a
   result table. The last batch is ``final``. All of it is timed.
4. The figures: events/s of both, their ratio, the most state rows seen (flat memory:
   bounded by the open windows, not by the stream), and the key-by-key comparison of the
   emitted windows with the baseline's (floats with a relative tolerance of 1e-9).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from benchmarks.bench_batch import W1_SQL, sql_list
from benchmarks.w1_data import generate
from datamill.domain.expressions import FieldType
from datamill.domain.streaming import OPERATORS, Configs, Schema, StreamingRuntime
from datamill.engines.duckdb.streaming.stateful import build_stateful, state_prefix
from datamill.engines.streaming import BatchContext

THREADS = 2
LAG = dt.timedelta(seconds=2)
TOLERANCE = 1e-9
TARGET_RATIO = 0.35

AGGREGATE = {
    "keyFields": ["device_id"],
    "windowsType": "TumblingTimeWindows",
    "windowAssigner": {"timeType": "EventTime", "size": 10},
    "aggregateFields": [
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
    ],
}
INPUT = Schema(
    {"device_id": FieldType.STRING, "event_time": FieldType.TIMESTAMP, "temp_f": FieldType.DOUBLE},
    event_time="event_time",
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute(f"SET threads={THREADS}")
    con.execute("SET enable_progress_bar=false")
    return con


def baseline(con: duckdb.DuckDBPyConnection) -> tuple[float, float]:
    """Wall and CPU seconds of W1's one query."""
    con.execute("DROP TABLE IF EXISTS baseline")
    cpu, began = time.process_time(), time.perf_counter()
    con.execute(f"CREATE TABLE baseline AS {W1_SQL.format(table='events')}")
    return time.perf_counter() - began, time.process_time() - cpu


def stateful(con: duckdb.DuckDBPyConnection, batch_rows: int, op_id: str) -> dict[str, Any]:
    kind = OPERATORS["Aggregate"]
    config, problems = kind.parse_config(Configs(basicConfigs=AGGREGATE))
    assert config is not None, problems
    output, problems = kind.output_schema([INPUT], config)
    assert not problems, problems
    step = build_stateful(op_id, "Aggregate", config, INPUT, output, StreamingRuntime())
    events = int(con.execute("SELECT count(*) FROM events").fetchall()[0][0])
    con.execute("DROP TABLE IF EXISTS emitted")
    con.execute(
        "CREATE TABLE emitted (device_id VARCHAR, window_start TIMESTAMP, events BIGINT, "
        "sum_temp_f DOUBLE, avg_temp_f DOUBLE, max_temp_f DOUBLE)"
    )
    step.create_state(con)
    state = f"{state_prefix(op_id)}_win"
    max_state, batches, watermark = 0, 0, None
    state_rows: list[int] = []
    process_seconds = 0.0
    per_batch: list[float] = []
    cpu, began = time.process_time(), time.perf_counter()
    for first in range(0, events, batch_rows):
        last = min(events, first + batch_rows)
        batches += 1
        con.execute("BEGIN TRANSACTION")
        con.execute(
            "CREATE OR REPLACE TEMP TABLE batch_in AS "
            "SELECT device_id, event_time, value * 1.8 + 32 AS temp_f FROM events "
            f"WHERE rowid >= {first} AND rowid < {last} AND status <> 'x'"
        )
        latest = con.execute("SELECT max(event_time) FROM batch_in").fetchall()[0][0]
        if latest is not None:
            candidate = latest.replace(tzinfo=dt.UTC) - LAG
            watermark = candidate if watermark is None else max(watermark, candidate)
        ctx = BatchContext(batches, dt.datetime.now(dt.UTC), watermark, final=last == events)
        step_began = time.perf_counter()
        out = step.process(con, "batch_in", ctx)
        per_batch.append(time.perf_counter() - step_began)
        process_seconds += per_batch[-1]
        con.execute(
            'INSERT INTO emitted SELECT device_id, "windowStart", events, sum_temp_f, '
            f"avg_temp_f, max_temp_f FROM {out}"
        )
        con.execute(f"DROP TABLE {out}")
        windows = con.execute(f"SELECT count(*) FROM {state}").fetchall()[0][0]
        con.execute("COMMIT")
        max_state = max(max_state, int(windows))
        state_rows.append(int(windows))
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    metrics = step.metrics(con)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "process_seconds": process_seconds,
        "process_batch_ms": statistics.median(per_batch) * 1000,
        "batches": batches,
        "max_state_rows": max_state,
        # open windows in the first and in the last quarter of the stream: flat when
        # closed windows are evicted
        "state_rows_first_quarter": max(state_rows[: max(1, len(state_rows) // 4)]),
        "state_rows_last_quarter": max(state_rows[-max(1, len(state_rows) // 4) - 1 : -1] or [0]),
        "late_records": metrics["late_records"],
        "final_state_rows": metrics["state_rows"],
    }


def compare(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    floats = ("sum_temp_f", "avg_temp_f", "max_temp_f")
    close = " AND ".join(
        f"(a.{c} = b.{c} OR abs(a.{c} - b.{c}) <= {TOLERANCE} * greatest(abs(a.{c}), abs(b.{c})))"
        for c in floats
    )
    row = con.execute(
        f"""
        SELECT (SELECT count(*) FROM baseline), (SELECT count(*) FROM emitted),
            count(*) FILTER (WHERE a.device_id IS NULL OR b.device_id IS NULL),
            count(*) FILTER (WHERE a.device_id IS NOT NULL AND b.device_id IS NOT NULL
                AND NOT (a.events = b.events AND {close}))
        FROM baseline a FULL OUTER JOIN emitted b
            ON a.device_id = b.device_id AND a.window_start = b.window_start
        """
    ).fetchall()[0]
    rows_a, rows_b, missing, different = (int(v) for v in row)
    return {
        "equal": rows_a == rows_b and missing == 0 and different == 0,
        "rows_baseline": rows_a,
        "rows_stateful": rows_b,
        "keys_in_one_only": missing,
        "keys_with_different_values": different,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_stateful",
        description="W1 through the streaming Aggregate step in micro-batches vs one query.",
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="1M events")
    parser.add_argument("--batch-rows", type=int, default=250_000)
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds of each side")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "datamill-bench"
    )
    args = parser.parse_args(argv)
    events = 1_000_000 if args.quick else args.events
    data = generate(args.workdir / f"w1-{events}-8-s1", events, 8, 1)
    con = connect()
    began = time.perf_counter()
    con.execute(
        "CREATE TABLE events AS SELECT device_id, event_time, value, status "
        f"FROM read_parquet({sql_list([str(f) for f in data.files])})"
    )
    log(f"loaded {events} events in {time.perf_counter() - began:.2f} s")
    base_runs, base_cpu, step_runs = [], [], []
    for round_ in range(args.repeat):
        wall, cpu = baseline(con)
        base_runs.append(wall)
        base_cpu.append(cpu)
        step_runs.append(stateful(con, args.batch_rows, f"bench-{round_}"))
        log(
            f"round {round_ + 1}: baseline {wall:.3f} s ({cpu:.2f} cpu-s), stateful "
            f"{step_runs[-1]['seconds']:.3f} s ({step_runs[-1]['cpu_seconds']:.2f} cpu-s, "
            f"{step_runs[-1]['batches']} batches, process {step_runs[-1]['process_seconds']:.3f} s)"
        )
    comparison = compare(con)
    base = statistics.median(base_runs)
    step = statistics.median(r["seconds"] for r in step_runs)
    process = statistics.median(r["process_seconds"] for r in step_runs)
    ratio = base / step
    paired = statistics.median(b / r["seconds"] for b, r in zip(base_runs, step_runs, strict=True))
    # CPU seconds suffer far less than wall time from other work on a shared machine
    cpu_ratio = statistics.median(base_cpu) / statistics.median(r["cpu_seconds"] for r in step_runs)
    lines = [
        f"W1 stateful micro-benchmark: {events} events, batches of {args.batch_rows} rows, "
        f"{args.repeat} rounds, threads={THREADS}",
        f"baseline one query      {base:8.3f} s  {events / base / 1e6:7.2f} M events/s",
        f"stateful micro-batches  {step:8.3f} s  {events / step / 1e6:7.2f} M events/s "
        f"(of which process() {process:.3f} s, median "
        f"{statistics.median(r['process_batch_ms'] for r in step_runs):.0f} ms a batch)",
        f"ratio stateful / baseline throughput: {ratio:.3f} (target >= {TARGET_RATIO}); "
        f"paired median {paired:.3f}; "
        f"process() alone {base / process:.3f}; by CPU seconds {cpu_ratio:.3f}",
        f"most state rows seen: {max(r['max_state_rows'] for r in step_runs)} (first quarter "
        f"of the stream {step_runs[-1]['state_rows_first_quarter']}, last quarter "
        f"{step_runs[-1]['state_rows_last_quarter']}); "
        f"late records: {step_runs[-1]['late_records']}; "
        f"state rows at the end: {step_runs[-1]['final_state_rows']}",
        f"results equal key by key: {comparison['equal']} ({comparison})",
    ]
    print("\n".join(lines))
    con.close()
    return 0 if comparison["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
