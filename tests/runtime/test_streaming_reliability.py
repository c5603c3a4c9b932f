"""W2 through the streaming engine equals W1 key by key, also when the engine process is
killed (SIGKILL) again and again during the run; and, through the API, per-key sequence
numbers posted while the engine is killed are neither lost nor applied twice."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import threading
import time
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from benchmarks.bench_batch import W1_SQL, sql_list
from benchmarks.bench_streaming import compare, w2_pipeline
from benchmarks.w1_data import generate

from datamill.runtime.streaming.engine import Engine, EngineConfig
from datamill.runtime.streaming.feed import ParquetFeed
from tests.builders import create_ready, op
from tests.conftest import Api
from tests.runtime.test_streaming_engine import jobs, metrics, start, stop, wait_for, wait_state

pytestmark = pytest.mark.slow  # engines killed again and again over large inputs

EVENTS = 200_000


@pytest.fixture(scope="module")
def w1(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    """W1's data (small) and plain DuckDB's W1 result over it."""
    folder = tmp_path_factory.mktemp("w1")
    data = generate(folder / "data", EVENTS, files=4, threads=2)
    out = folder / "baseline.parquet"
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone='UTC'")
    query = W1_SQL.format(table=f"read_parquet({sql_list([str(f) for f in data.files])})")
    con.execute(f"COPY ({query}) TO '{out}' (FORMAT parquet)")
    con.close()
    return data.files, out


def engine_config(work: Path, checkpoint_seconds: int = 10) -> EngineConfig:
    root = work / "files" / "p"
    root.mkdir(parents=True, exist_ok=True)
    return EngineConfig(
        project="p",
        job_id="w2",
        job_dir=work / "job",
        project_root=root,
        body=w2_pipeline("w2_out", checkpoint_seconds),
        batch_records=5_000,
        threads=1,
        stop_when_exhausted=True,
    )


def test_w2_through_the_engine_equals_w1(w1: tuple[list[Path], Path], tmp_path: Path) -> None:
    files, baseline = w1
    config = engine_config(tmp_path)
    config.batch_records = 50_000
    feed = ParquetFeed(files, time_field="event_time", read_rows=50_000)
    engine = Engine(config, log=lambda _line: None, sources={"events": feed})
    engine.run(threading.Event())
    assert engine.finished
    result = compare(baseline, config.project_root / "w2_out")
    assert result["baseline_windows"] > 10_000
    assert result == {**result, "mismatched": 0, "duplicates": 0, "equal": True}, result
    counters = engine.counters
    assert counters["events"]["recordsOut"] == EVENTS
    kept = counters["valid"]["recordsOut"]
    assert 0.75 * EVENTS < kept < 0.85 * EVENTS  # a fifth of the events are status 'x'
    assert counters["fahrenheit"]["recordsIn"] == kept == counters["per_10s"]["recordsIn"]
    assert counters["out"]["recordsIn"] == result["stream_windows"]


class SlowFeed(ParquetFeed):
    """W1 in small pieces with a pause per read: a run long enough to be killed in."""

    def read_arrow(self, max_records: int, timeout_seconds: float) -> pa.Table | None:
        time.sleep(0.1)
        return super().read_arrow(max_records, timeout_seconds)


def run_child(files: list[str], work: str, ready: EventType) -> None:
    config = engine_config(Path(work), checkpoint_seconds=1)
    feed = SlowFeed([Path(f) for f in files], time_field="event_time", read_rows=5_000)
    engine = Engine(config, log=lambda _line: None, sources={"events": feed})
    engine.run(threading.Event(), on_ready=ready.set)
    (Path(work) / "done").write_text("done")


def test_w2_survives_repeated_kill_9_with_exactly_once_results(
    w1: tuple[list[Path], Path], tmp_path: Path
) -> None:
    files, baseline = w1
    context = multiprocessing.get_context("spawn")
    rng = random.Random(6)
    kills = 0
    epochs_seen: list[int] = []
    deadline = time.monotonic() + 80
    while not (tmp_path / "done").exists():
        assert time.monotonic() < deadline, f"the run did not finish ({kills} kills)"
        ready = context.Event()
        child = context.Process(
            target=run_child, args=([str(f) for f in files], str(tmp_path), ready)
        )
        child.start()
        assert ready.wait(30), "the engine did not recover"
        if kills < 6:
            child.join(rng.uniform(1.0, 2.0))
            if child.is_alive():
                assert child.pid is not None
                os.kill(child.pid, signal.SIGKILL)
                kills += 1
                metrics_file = tmp_path / "job" / "metrics.json"
                epochs_seen.append(json.loads(metrics_file.read_text())["epoch"])
        child.join(60)
    assert kills >= 4, kills
    assert len(set(epochs_seen)) > 1, epochs_seen  # kills landed at different checkpoints
    result = compare(baseline, tmp_path / "files" / "p" / "w2_out")
    assert result == {**result, "mismatched": 0, "duplicates": 0, "equal": True}, result
    staging = tmp_path / "job" / "staging" / "out"
    assert not staging.exists() or not any(staging.iterdir())


def seq_pipeline(target: str) -> dict[str, Any]:
    """Records with a per-key sequence number -> Aggregate per key over one long event-time
    window (count, sum, max of seq) -> one sink; the records themselves -> another."""
    fields = [
        {"field": "key", "type": "STRING"},
        {"field": "seq", "type": "LONG"},
        {"field": "ts", "type": "TIMESTAMP"},
    ]
    aggregates = [
        {"field": "n", "type": "LONG", "aggregateType": "COUNT"},
        {"field": "total", "type": "LONG", "aggregateField": "seq", "aggregateType": "SUM"},
        {"field": "last", "type": "LONG", "aggregateField": "seq", "aggregateType": "MAX"},
    ]
    return {
        "definition": {"jobName": "sequences"},
        "operatorInstances": [
            op("src", "PipelineSource", [], {"fields": fields, "eventTimeField": "ts"}),
            op(
                "per_key",
                "Aggregate",
                ["src"],
                {
                    "keyFields": ["key"],
                    "windowsType": "TumblingTimeWindows",
                    "windowAssigner": {"timeType": "EventTime", "size": 3600},
                    "aggregateFields": aggregates,
                },
            ),
            op("sums", "DISSink", ["per_key"], {"target": target + "/sums"}, {"format": "JSON"}),
            op("all", "DISSink", ["src"], {"target": target + "/all"}, {"format": "JSON"}),
        ],
        "runtime": {
            "checkpointIntervalSeconds": 1,
            "restartWhenException": True,
            "resumeMaxNum": -1,
        },
    }


def read_json_lines(folder: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(folder.glob("*.json")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    return rows


def engine_pid(api: Api, project: str, job_id: str) -> int:
    path = api.runtime.settings.projects_dir / project / "streaming" / job_id / "metrics.json"
    return int(json.loads(path.read_text())["pid"])


def test_per_key_sequences_survive_engine_kills_through_the_api(
    api: Api, project: str, streaming_engine: Any
) -> None:
    job_id = create_ready(api, project, seq_pipeline("seq"))
    start(api, project, job_id)
    url = f"{jobs(project)}/{job_id}/records"
    keys, per_key = 20, 150
    base_ms = 1_767_225_600_000
    rng = random.Random(3)
    kills = 0
    for seq in range(1, per_key + 1):
        batch = [{"key": f"k{k}", "seq": seq, "ts": base_ms + seq * 10} for k in range(keys)]
        response = api.post(url, json=batch)
        assert response.status_code == 202, response.text
        if seq % 30 == 0:
            pid = engine_pid(api, project, job_id)
            time.sleep(rng.uniform(0.2, 1.2))
            os.kill(pid, signal.SIGKILL)
            kills += 1
            wait_for("a new engine", lambda: engine_pid(api, project, job_id) != pid)  # noqa: B023
    # an event an hour later moves the watermark past the first window, closing it
    late = [{"key": "k0", "seq": per_key + 1, "ts": base_ms + 2 * 3_600_000}]
    assert api.post(url, json=late).status_code == 202
    target = api.data_root / project / "seq"
    sums = wait_for("the closed window", lambda: read_json_lines(target / "sums"))
    wait_state(api, project, job_id, "RUNNING")
    wait_for(
        "every record processed",
        lambda: (
            metrics(api, project, job_id)["operators"]["all"]["recordsIn"] == keys * per_key + 1
        ),
    )
    stop(api, project, job_id)
    assert kills == 5
    by_key = {row["key"]: row for row in sums}
    assert sorted(by_key) == sorted(f"k{k}" for k in range(keys))
    for key, row in by_key.items():
        assert row["n"] == per_key, (key, row)
        assert row["total"] == per_key * (per_key + 1) // 2, (key, row)
        assert row["last"] == per_key, (key, row)
    records = read_json_lines(target / "all")
    seen = [(r["key"], r["seq"]) for r in records]
    assert len(seen) == len(set(seen)) == keys * per_key + 1
    logs = "\n".join(api.get(f"{jobs(project)}/{job_id}/logs?size=1000").json()["lines"])
    assert logs.count("restarting from the last checkpoint") == kills
