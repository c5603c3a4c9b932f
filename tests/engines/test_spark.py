"""The Spark engine against a real Spark Connect server (local[2]): job SQL transpiled from
DuckDB's dialect, sources as views Spark reads itself, output schemas from Spark's analyzer,
errors with their position in the job's SQL, results as Parquet, and stop."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmarks.bench_batch import W1_SQL, compare_results

from datamill import engines
from datamill.domain.datasources import FormatSpec, SchemaField, ValType
from datamill.engines.base import (
    BatchSession,
    Endpoint,
    Interrupted,
    OutputColumn,
    QueryFailed,
    Sandbox,
    TableInput,
    Unavailable,
)
from datamill.engines.spark import SparkEngine
from datamill.engines.spark.sql import locate, to_spark
from tests.runtime import test_streaming_reliability
from tests.servers import RunningServer, free_port

W1_SCHEMA = [
    SchemaField(key="device_id", valtype=ValType.string),
    SchemaField(key="event_time", valtype=ValType.date),
    SchemaField(key="value", valtype=ValType.float),
    SchemaField(key="status", valtype=ValType.string),
]
PARQUET = FormatSpec(fileType="parquet")
w1 = test_streaming_reliability.w1  # W1's data (small) and plain DuckDB's W1 result


# --------------------------------------------------------------------------- no server


def test_spark_is_registered_as_a_remote_batch_engine() -> None:
    engine = engines.get("spark")
    assert isinstance(engine, SparkEngine)
    caps = engine.capabilities
    assert (caps.dialect, caps.batch, caps.streaming, caps.sandboxed, caps.remote) == (
        "spark",
        True,
        False,
        False,
        True,
    )
    assert engines.batch_engine("spark") is engine
    assert "spark" not in engines.streaming_types()


def test_a_session_without_an_endpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(QueryFailed, match="engine connection"):
        engines.get("spark").session(Sandbox(temp_dir=tmp_path))


TRANSPILED = [
    # (DuckDB SQL, a piece the Spark SQL must hold)
    (
        "SELECT time_bucket(INTERVAL 10 seconds, t) AS w FROM e",
        "TIMESTAMP_MILLIS(FLOOR((UNIX_MILLIS(t) - 946857600000) / 10000) * 10000 + 946857600000)",
    ),
    ("SELECT time_bucket(INTERVAL '1 hour', t) AS w FROM e", "/ 3600000)"),
    ("SELECT strftime(t, '%Y-%m') AS m FROM e", "DATE_FORMAT(t, 'yyyy-MM')"),
    ("SELECT a // 2 AS h FROM e", "a DIV 2"),
    ('SELECT "odd name" AS x FROM e', "`odd name`"),
]


@pytest.mark.parametrize(("duck", "piece"), TRANSPILED)
def test_job_sql_is_transpiled_to_spark_sql(duck: str, piece: str) -> None:
    assert piece in to_spark(duck)


UNTRANSLATABLE = [
    "SELECT time_bucket(INTERVAL 1 month, t) AS m FROM e",
    "SELECT time_bucket(INTERVAL 1 hour, t, TIMESTAMP '2000-01-01') AS m FROM e",
]


@pytest.mark.parametrize("duck", UNTRANSLATABLE)
def test_what_spark_cannot_say_is_refused_by_name(duck: str) -> None:
    with pytest.raises(QueryFailed, match="time_bucket"):
        to_spark(duck)


def test_a_spark_error_is_placed_in_the_jobs_own_sql() -> None:
    message = "[UNRESOLVED_COLUMN] cannot resolve `nope`. SQLSTATE: 42703; line 1 pos 7;\nplan"
    user = "SELECT a,\n  nope AS b FROM t"
    assert locate(message, "nope", user) == (
        "[UNRESOLVED_COLUMN] cannot resolve `nope` (line 2, column 3)"
    )
    assert locate(message, None, user).endswith("(line 1, column 8 of the Spark SQL)")


# --------------------------------------------------------------------------- real server

slow = pytest.mark.slow  # a JVM starts once per session (10-20 s)


def endpoint(server: RunningServer) -> Endpoint:
    return Endpoint(name="test", url=server.url, address="127.0.0.1")


@pytest.fixture
def spark(spark_server: RunningServer, tmp_path: Path) -> Iterator[BatchSession]:
    with engines.get("spark").session(
        Sandbox(temp_dir=tmp_path / "tmp"), endpoint=endpoint(spark_server)
    ) as session:
        yield session


@slow
def test_w1_on_spark_equals_duckdb_key_by_key(
    spark: BatchSession, w1: tuple[list[Path], Path], tmp_path: Path
) -> None:
    files, duckdb_result = w1
    spark.add_table(TableInput("events", W1_SCHEMA, files=[str(f) for f in files], fmt=PARQUET))
    out = tmp_path / "out"
    out.mkdir()
    written = spark.write(W1_SQL.format(table="events"), out)
    parts = sorted(out.iterdir())
    assert parts
    assert all(p.name.startswith("part-") and p.suffix == ".parquet" for p in parts)
    result = compare_results(duckdb_result, parts)
    assert result["rows_baseline"] > 10_000
    assert result == {**result, "equal": True}, result
    assert written.rows_written == result["rows_datamill"]
    assert any("TIMESTAMP_MILLIS" in line for line in written.log)


@slow
def test_output_schema_comes_from_sparks_analyzer(spark: BatchSession) -> None:
    spark.add_table(TableInput("events", W1_SCHEMA))
    columns = spark.describe(
        "SELECT device_id, count(*) AS n, avg(value) AS v, max(event_time) AS last, "
        "bool_or(status = 'x') AS any_x, CAST(1 AS INTEGER) AS one FROM events GROUP BY 1"
    )
    assert columns == [
        OutputColumn("device_id", ValType.string),
        OutputColumn("n", ValType.long),
        OutputColumn("v", ValType.float),
        OutputColumn("last", ValType.date),
        OutputColumn("any_x", ValType.boolean),
        OutputColumn("one", ValType.long),
    ]


@slow
def test_a_sql_error_names_its_position_in_the_jobs_sql(spark: BatchSession) -> None:
    spark.add_table(TableInput("events", W1_SCHEMA))
    with pytest.raises(QueryFailed) as failed:
        spark.describe("SELECT device_id,\n       sum(nope) AS total\nFROM events GROUP BY 1")
    assert "nope" in failed.value.message
    assert failed.value.message.endswith("(line 2, column 12)"), failed.value.message


@slow
def test_csv_and_json_sources_are_read_in_their_schema(spark: BatchSession, tmp_path: Path) -> None:
    csv = tmp_path / "a.csv"
    csv.write_text("d0;1.5;2026-01-01T00:00:00Z\nd1;oops;2026-01-02T00:00:00Z\n")
    js = tmp_path / "b.json"
    js.write_text('{"device": "d2", "n": 7, "extra": true}\n')
    schema = [
        SchemaField(key="column0", valtype=ValType.string),
        SchemaField(key="column1", valtype=ValType.float),
        SchemaField(key="column2", valtype=ValType.date),
    ]
    csv_fmt = FormatSpec(fileType="csv", delimiter=";", containsHeader=False)
    rows = spark.preview(TableInput("a", schema, files=[str(csv)], fmt=csv_fmt), 10)
    assert rows == [
        {"column0": "d0", "column1": 1.5, "column2": "2026-01-01T00:00:00+00:00"},
        {"column0": "d1", "column1": None, "column2": "2026-01-02T00:00:00+00:00"},
    ]
    json_schema = [
        SchemaField(key="device", valtype=ValType.string),
        SchemaField(key="n", valtype=ValType.long),
        SchemaField(key="missing", valtype=ValType.string),
    ]
    json_fmt = FormatSpec(fileType="json")
    rows = spark.preview(TableInput("b", json_schema, files=[str(js)], fmt=json_fmt), 10)
    assert rows == [{"device": "d2", "n": 7, "missing": None}]


HEAVY = (
    "SELECT a.device_id, count(*) AS n, sum(a.value * b.value) AS s "
    "FROM events AS a CROSS JOIN events AS b GROUP BY a.device_id"
)
"""W1 (10^5 rows or more) crossed with itself: minutes of work on two cores."""


def running_tasks(server: RunningServer, offset: int, timeout: float = 60) -> None:
    """Wait until the server's log (after ``offset``) says a query's shuffle stage was
    submitted: the query is planned and its tasks run (reading a source's schema runs
    tasks too, but no shuffle stage)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with server.log_file.open("rb") as log:
            log.seek(offset)
            if b"missing tasks from ShuffleMapStage" in log.read():
                return
        time.sleep(0.1)
    raise AssertionError("Spark started no stage of the query")


@slow
def test_stop_interrupts_the_operation_and_frees_the_cluster(
    spark_server: RunningServer, w1: tuple[list[Path], Path], tmp_path: Path
) -> None:
    files, _ = w1
    out = tmp_path / "out"
    out.mkdir()
    outcome: list[BaseException | None] = []
    with engines.get("spark").session(
        Sandbox(temp_dir=tmp_path / "tmp"), endpoint=endpoint(spark_server)
    ) as session:
        session.add_table(TableInput("events", W1_SCHEMA, [str(f) for f in files], PARQUET))

        def run() -> None:
            try:
                session.write(HEAVY, out)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        log_offset = spark_server.log_file.stat().st_size
        thread = threading.Thread(target=run)
        thread.start()
        running_tasks(spark_server, log_offset)  # planned and running (it needs minutes)
        assert not outcome, "the heavy query finished before it could be stopped"
        stopped_at = time.monotonic()
        session.interrupt()
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert isinstance(outcome[0], Interrupted), outcome
        assert time.monotonic() - stopped_at < 10
    # the cluster is free again: a tiny query in a new session does not wait for the old tasks
    began = time.monotonic()
    with engines.get("spark").session(
        Sandbox(temp_dir=tmp_path / "tmp2"), endpoint=endpoint(spark_server)
    ) as after:
        after.add_table(TableInput("events", W1_SCHEMA, [str(f) for f in files[:1]], PARQUET))
        assert after.describe("SELECT count(*) AS n FROM events") == [
            OutputColumn("n", ValType.long)
        ]
        small = tmp_path / "small"
        small.mkdir()
        assert after.write("SELECT count(*) AS n FROM events", small).rows_written == 1
    assert time.monotonic() - began < 30


def test_an_unreachable_server_is_reported_as_unavailable(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    dead = Endpoint(name="gone", url=f"sc://127.0.0.1:{closed}", address="127.0.0.1")
    began = time.monotonic()
    with pytest.raises(Unavailable) as failed:
        engines.get("spark").session(Sandbox(temp_dir=tmp_path), endpoint=dead)
    assert "engine 'gone'" in failed.value.message
    assert f"sc://127.0.0.1:{closed}" in failed.value.message
    assert time.monotonic() - began < 30


def test_the_server_starts_without_pyspark_and_refuses_spark_sessions(tmp_path: Path) -> None:
    """pyspark is an optional extra: hidden from a fresh interpreter, the app still imports
    and a Spark session is refused with what to install."""
    script = f"""
import sys
sys.modules["pyspark"] = None  # as if the spark extra were not installed
import datamill.api.app, datamill.runtime.worker
from datamill import engines
from datamill.engines.base import Endpoint, QueryFailed, Sandbox
from pathlib import Path
try:
    engines.get("spark").session(
        Sandbox(temp_dir=Path({str(tmp_path)!r})),
        endpoint=Endpoint(name="c", url="sc://127.0.0.1:1", address="127.0.0.1"),
    )
except QueryFailed as exc:
    print(exc.message)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'datamill[spark]'" in done.stdout
