"""Benchmark W2: W1's logic as a streaming pipeline through datamill's engine.

``python -m benchmarks.bench_streaming [--events N] [--batch-rows R] [--rss] [--http]``

In one process and one run (the machines are noisy; only ratios within a run mean much):

1. W1's input is generated, or reused (``benchmarks.w1_data``).
2. baseline: plain DuckDB runs W1's query (``benchmarks.bench_batch.W1_SQL``) over the
   Parquet files as one batch query, writing Parquet; ``threads=2``.
3. engine: the W2 pipeline (PipelineSource -> Filter ``status <> 'x'`` -> Map
   ``value * 1.8 + 32`` -> Aggregate, 10 s tumbling event-time windows per device: count,
   sum, avg, max -> DISSink Parquet) runs in datamill's engine, exactly as a job runs in
   its engine process (locked-down DuckDB on the job's state file, checkpoints every
   10 s and every 2 M records, the file sink's staging and commit), fed in process
   through the engine's source interface from the same Parquet files in micro-batches of
   ``R`` rows
   (:class:`datamill.runtime.streaming.feed.ParquetFeed`). The run is bounded: the last
   batch is ``final`` and closes the open windows.
   Throughput = events / wall-clock seconds of each; the target is engine >= 35 % of
   the baseline. The windows the sink wrote are compared with the baseline's key by key
   (device, window start) with a relative tolerance of 1e-9 on floats.
4. ``--rss``: the engine runs in a child process on ``N`` and on ``5 N`` events (the
   same files repeated, shifted by an hour each time) and the peak RSS of each run is
   read from ``getrusage``; the target is a difference under 20 %.
5. ``--http``: a real datamill server is started, the pipeline created and started, and
   ``--http-events`` W1 events are posted to its ingest endpoint in JSON arrays of 5 000
   records by 4 client threads; the rate of accepted records and the time until the
   engine's metrics show every record processed are reported.
6. ``--latency``: a processing-time pipeline (PipelineSource -> Map -> DISSink JSON,
   checkpoints every 0.25 s) on a real server gets 10 000 events/s through HTTP ingest
   for ``--latency-seconds``, each record carrying its send time; the ingest -> sink
   latency is the time the sink file holding the record became visible in the target
   folder (a thread lists it every 5 ms) minus the send time; p50 / p99 are reported
   (target p99 <= 1 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx

from benchmarks.bench_batch import W1_SQL, sql_list
from benchmarks.w1_data import generate
from datamill.runtime.streaming.engine import Engine, EngineConfig
from datamill.runtime.streaming.feed import ParquetFeed

THREADS = 2
TOLERANCE = 1e-9
TARGET_RATIO = 0.35
TARGET_RSS_GROWTH = 0.20
TARGET_P99_SECONDS = 1.0
FLOAT_COLUMNS = ("sum_temp_f", "avg_temp_f", "max_temp_f")
LATENCY_CHECKPOINT_SECONDS = 0.25
"""The latency pipeline's checkpoint interval: file output becomes visible at checkpoints."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _op(
    op_id: str,
    class_name: str,
    inputs: list[str],
    basic: dict[str, Any],
    advance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": op_id,
        "className": class_name,
        "fromOperators": [{"id": i} for i in inputs],
        "configs": {"basicConfigs": basic, "advanceConfigs": advance or {}},
    }


def w2_pipeline(target: str, checkpoint_seconds: int = 10) -> dict[str, Any]:
    """W2 as a pipeline body (seed 000)."""
    aggregates = [
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
    return {
        "definition": {"jobName": "w2", "jobDescription": "W1 as a stream"},
        "operatorInstances": [
            _op(
                "events",
                "PipelineSource",
                [],
                {
                    "fields": [
                        {"field": "device_id", "type": "STRING"},
                        {"field": "event_time", "type": "TIMESTAMP"},
                        {"field": "value", "type": "DOUBLE"},
                        {"field": "status", "type": "STRING"},
                    ],
                    "eventTimeField": "event_time",
                },
            ),
            _op(
                "valid",
                "Filter",
                ["events"],
                {
                    "conditions": [
                        {"leftValue": "status", "symbol": "NOT_EQUAL", "rightValue": "'x'"}
                    ]
                },
            ),
            _op(
                "fahrenheit",
                "Map",
                ["valid"],
                {
                    "mapFieldConfig": [
                        {"field": "temp_f", "type": "DOUBLE", "expression": "value * 1.8 + 32"}
                    ]
                },
            ),
            _op(
                "per_10s",
                "Aggregate",
                ["fahrenheit"],
                {
                    "keyFields": ["device_id"],
                    "windowsType": "TumblingTimeWindows",
                    "windowAssigner": {"timeType": "EventTime", "size": 10},
                    "aggregateFields": aggregates,
                },
            ),
            _op("out", "DISSink", ["per_10s"], {"target": target}, {"format": "PARQUET"}),
        ],
        "runtime": {"checkpointIntervalSeconds": checkpoint_seconds, "outOfOrdernessSeconds": 2},
    }


def baseline(files: list[Path], out: Path) -> float:
    con = duckdb.connect(":memory:")
    con.execute(f"SET threads={THREADS}")
    con.execute("SET TimeZone='UTC'")
    began = time.perf_counter()
    query = W1_SQL.format(table=f"read_parquet({sql_list([str(f) for f in files])})")
    con.execute(f"COPY ({query}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
    seconds = time.perf_counter() - began
    con.close()
    return seconds


def run_engine(
    files: list[Path], work: Path, batch_rows: int, repeat: int = 1, checkpoint_seconds: int = 10
) -> dict[str, Any]:
    """W2 through the engine in this process; returns the figures."""
    project_root = work / "files" / "bench"
    shutil.rmtree(work / "job", ignore_errors=True)
    shutil.rmtree(project_root, ignore_errors=True)
    project_root.mkdir(parents=True)
    config = EngineConfig(
        project="bench",
        job_id="w2",
        job_dir=work / "job",
        project_root=project_root,
        body=w2_pipeline("w2_out", checkpoint_seconds),
        batch_records=batch_rows,
        memory_limit="1GB",  # the server's default (DATAMILL_STREAMING_MEMORY_LIMIT)
        threads=THREADS,
        stop_when_exhausted=True,
    )
    feed = ParquetFeed(files, repeat=repeat, time_field="event_time", read_rows=batch_rows)
    engine = Engine(config, log=lambda _line: None, sources={"events": feed})
    began = time.perf_counter()
    engine.run(threading.Event())
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "events": feed.total,
        "batches": engine.batches,
        "checkpoints": (engine.last_checkpoint or {}).get("epoch"),
        "output": project_root / "w2_out",
        "counters": engine.counters,
    }


def compare(baseline_file: Path, output: Path) -> dict[str, Any]:
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone='UTC'")
    con.execute(f"CREATE TABLE b AS SELECT * FROM read_parquet('{baseline_file}')")
    con.execute(f"CREATE TABLE s AS SELECT * FROM read_parquet('{output}/*.parquet')")
    base_rows = int(con.execute("SELECT count(*) FROM b").fetchall()[0][0])
    stream_rows = int(con.execute("SELECT count(*) FROM s").fetchall()[0][0])
    duplicates = int(
        con.execute(
            "SELECT count(*) FROM (SELECT device_id, windowStart FROM s GROUP BY ALL "
            "HAVING count(*) > 1)"
        ).fetchall()[0][0]
    )
    floats = " OR ".join(
        f"abs(b.{c} - s.{c}) > {TOLERANCE} * greatest(abs(b.{c}), abs(s.{c}), 1e-300)"
        for c in FLOAT_COLUMNS
    )
    mismatched = int(
        con.execute(
            "SELECT count(*) FROM b FULL OUTER JOIN s ON b.device_id = s.device_id "
            "AND b.window_start = s.windowStart "
            f"WHERE b.device_id IS NULL OR s.device_id IS NULL OR b.events <> s.events OR {floats}"
        ).fetchall()[0][0]
    )
    con.close()
    return {
        "baseline_windows": base_rows,
        "stream_windows": stream_rows,
        "duplicates": duplicates,
        "mismatched": mismatched,
        "equal": base_rows == stream_rows and mismatched == 0 and duplicates == 0,
    }


# --------------------------------------------------------------------------- peak RSS


def _rss_child(files: list[str], work: str, batch_rows: int, repeat: int, queue: Any) -> None:
    figures = run_engine([Path(f) for f in files], Path(work), batch_rows, repeat)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put(
        {"events": figures["events"], "seconds": figures["seconds"], "peak_mb": peak_kb / 1024}
    )


def peak_rss(files: list[Path], work: Path, batch_rows: int, repeat: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=_rss_child, args=([str(f) for f in files], str(work), batch_rows, repeat, queue)
    )
    process.start()
    result: dict[str, Any] = queue.get()
    process.join()
    return result


# --------------------------------------------------------------------------- HTTP


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A real datamill server in a subprocess, on a fresh data folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/v1"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAMILL_")}
        env |= {
            "DATAMILL_DATA_DIR": str(folder / "data"),
            "DATAMILL_DATA_ROOTS": json.dumps({"default": str(folder / "files")}),
            "DATAMILL_PORT": str(self.port),
            "DATAMILL_WORKERS": "0",
            "DATAMILL_SCHEDULER": "false",
            "DATAMILL_LOG_LEVEL": "warning",
            "DATAMILL_MAX_BODY_BYTES": str(8 * 1024 * 1024),
            "DATAMILL_STREAMING_POLL_SECONDS": "0.1",
        }
        (folder / "files").mkdir(parents=True, exist_ok=True)
        (folder / "data").mkdir(parents=True, exist_ok=True)
        handle = (folder / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "datamill.cli.main", "server", "--port", str(self.port)],
            env=env,
            cwd=folder / "data",
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        handle.close()
        token_file = folder / "data" / "admin.token"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if token_file.exists():
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{self.url}/health", timeout=1).status_code < 500:
                        break
            time.sleep(0.2)
        self.headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        self.client = httpx.Client(base_url=self.url, headers=self.headers, timeout=60)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _start_job(server: Server, project: str, body: dict[str, Any]) -> str:
    client = server.client
    client.post("/projects", json={"name": project, "description": "bench"}).raise_for_status()
    (server.folder / "files" / project).mkdir(parents=True, exist_ok=True)
    created = client.post(f"/projects/{project}/streaming/jobs?check=true", json=body)
    created.raise_for_status()
    job_id = str(created.json()["job_id"])
    client.post(f"/projects/{project}/streaming/jobs/{job_id}/actions/start").raise_for_status()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = client.get(f"/projects/{project}/streaming/jobs/{job_id}").json()["job_state"]
        if state == "RUNNING":
            return job_id
        if state == "FAILED":
            raise RuntimeError("the benchmark job failed to start")
        time.sleep(0.1)
    raise RuntimeError("the benchmark job did not start")


def http_ingest(files: list[Path], work: Path, events: int) -> dict[str, Any]:
    """Post ``events`` W1 events to a running W2 job through HTTP; rates."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone='UTC'")
    rows = con.execute(
        "SELECT device_id, epoch_ms(event_time) AS event_time, value, status "
        f"FROM read_parquet({sql_list([str(f) for f in files])}) LIMIT {int(events)}"
    ).fetchall()
    con.close()
    bodies = []
    chunk = 5000
    for first in range(0, len(rows), chunk):
        part = rows[first : first + chunk]
        records = [
            {"device_id": d, "event_time": t, "value": v, "status": s} for d, t, v, s in part
        ]
        bodies.append(json.dumps(records).encode())
    shutil.rmtree(work / "http", ignore_errors=True)
    server = Server(work / "http")
    try:
        job_id = _start_job(server, "bench", w2_pipeline("w2_http", 10))
        url = f"/projects/bench/streaming/jobs/{job_id}/records"
        queue = list(bodies)
        lock = threading.Lock()

        def worker() -> None:
            with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as client:
                while True:
                    with lock:
                        if not queue:
                            return
                        body = queue.pop()
                    response = client.post(
                        url, content=body, headers={"Content-Type": "application/json"}
                    )
                    response.raise_for_status()

        began = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        posted = time.perf_counter() - began
        metrics_url = f"/projects/bench/streaming/jobs/{job_id}/metrics"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            figures = server.client.get(metrics_url).json()
            if figures.get("operators", {}).get("events", {}).get("recordsOut", 0) >= len(rows):
                break
            time.sleep(0.2)
        processed = time.perf_counter() - began
        return {
            "events": len(rows),
            "post_seconds": posted,
            "ingest_rate": len(rows) / posted,
            "processed_seconds": processed,
            "end_to_end_rate": len(rows) / processed,
        }
    finally:
        server.stop()


def latency(work: Path, rate: int, seconds: float) -> dict[str, Any]:
    """A processing-time pipeline fed ``rate`` events/s over HTTP: ingest -> sink latency."""
    body = {
        "definition": {"jobName": "latency"},
        "operatorInstances": [
            _op(
                "in",
                "PipelineSource",
                [],
                {"fields": [{"field": "seq", "type": "LONG"}, {"field": "sent", "type": "DOUBLE"}]},
            ),
            _op(
                "tag",
                "Map",
                ["in"],
                {"mapFieldConfig": [{"field": "twice", "type": "LONG", "expression": "seq * 2"}]},
            ),
            _op("out", "DISSink", ["tag"], {"target": "latency_out"}, {"format": "JSON"}),
        ],
        "runtime": {"checkpointIntervalSeconds": LATENCY_CHECKPOINT_SECONDS},
    }
    shutil.rmtree(work / "latency", ignore_errors=True)
    server = Server(work / "latency")
    try:
        job_id = _start_job(server, "lat", body)
        url = f"/projects/lat/streaming/jobs/{job_id}/records"
        target = server.folder / "files" / "lat" / "latency_out"
        first_seen: dict[str, float] = {}
        watching = threading.Event()

        def watch() -> None:  # when each file becomes visible in the target folder
            while not watching.is_set():
                now = time.time()
                with contextlib.suppress(FileNotFoundError):
                    for entry in os.scandir(target):
                        first_seen.setdefault(entry.name, now)
                time.sleep(0.005)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        per_post = max(1, rate // 20)  # 20 posts a second
        seq = 0
        began = time.monotonic()
        sends = 0
        while time.monotonic() - began < seconds:
            due = began + sends / 20
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            now = time.time()
            records = [{"seq": seq + i, "sent": now} for i in range(per_post)]
            seq += per_post
            server.client.post(url, json=records).raise_for_status()
            sends += 1
        deadline = time.monotonic() + 60
        seen: dict[int, float] = {}
        while time.monotonic() < deadline:
            seen = {}
            for path in target.glob("*.json"):
                mtime = first_seen.get(path.name, time.time())
                for line in path.read_text().splitlines():
                    record = json.loads(line)
                    seen[int(record["seq"])] = mtime - float(record["sent"])
            if len(seen) >= seq:
                break
            time.sleep(0.5)
        watching.set()
        delays = sorted(seen.values())

        def pct(p: float) -> float:
            return (
                delays[min(len(delays) - 1, math.ceil(p * len(delays)) - 1)] if delays else math.nan
            )

        return {
            "events": seq,
            "seen": len(seen),
            "rate": seq / seconds,
            "p50": pct(0.50),
            "p99": pct(0.99),
            "max": delays[-1] if delays else math.nan,
        }
    finally:
        server.stop()


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--batch-rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="timed rounds (median)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "datamill-bench")
    parser.add_argument("--rss", action="store_true", help="peak RSS at N and 5 N events")
    parser.add_argument("--http", action="store_true", help="rate through the ingest endpoint")
    parser.add_argument("--http-events", type=int, default=1_000_000)
    parser.add_argument("--latency", action="store_true", help="p99 ingest->sink at 10k/s")
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # servers are stopped on the way
    data = generate(args.work / f"w1-{args.events}", args.events)
    log(f"W1 data: {data.events} events in {len(data.files)} files")
    out = args.work / "baseline.parquet"
    figures: dict[str, Any] = {"events": data.events, "batch_rows": args.batch_rows}
    base_times, engine_times = [], []
    result: dict[str, Any] = {}
    for round_ in range(args.repeat):
        base_times.append(baseline(data.files, out))
        result = run_engine(data.files, args.work / "engine", args.batch_rows)
        engine_times.append(result["seconds"])
        log(f"round {round_ + 1}: baseline {base_times[-1]:.2f} s, engine {engine_times[-1]:.2f} s")
    base, engine = statistics.median(base_times), statistics.median(engine_times)
    figures["baseline_seconds"] = base
    figures["engine_seconds"] = engine
    figures["baseline_rate"] = data.events / base
    figures["engine_rate"] = data.events / engine
    figures["ratio"] = base / engine
    figures["batches"] = result["batches"]
    figures["checkpoints"] = result["checkpoints"]
    figures["comparison"] = compare(out, result["output"])
    lines = [
        f"baseline (one DuckDB query)  {base:7.2f} s  {figures['baseline_rate'] / 1e6:6.2f} M/s",
        f"engine (W2 pipeline)         {engine:7.2f} s  {figures['engine_rate'] / 1e6:6.2f} M/s",
        f"engine / baseline throughput {base / engine:7.1%}  (target >= {TARGET_RATIO:.0%})",
        f"batches {result['batches']}, checkpoints {result['checkpoints']}",
        f"result equals W1 key by key: {figures['comparison']}",
    ]
    if args.rss:
        small = peak_rss(data.files, args.work / "rss1", args.batch_rows, 1)
        large = peak_rss(data.files, args.work / "rss5", args.batch_rows, 5)
        growth = large["peak_mb"] / small["peak_mb"] - 1
        figures["rss"] = {"small": small, "large": large, "growth": growth}
        lines.append(
            f"peak RSS {small['events'] / 1e6:.0f} M events {small['peak_mb']:.0f} MB, "
            f"{large['events'] / 1e6:.0f} M events {large['peak_mb']:.0f} MB: "
            f"{growth:+.1%} (target < {TARGET_RSS_GROWTH:.0%})"
        )
    if args.http:
        http = http_ingest(data.files, args.work, args.http_events)
        figures["http"] = http
        lines.append(
            f"HTTP ingest: {http['events']} events posted at {http['ingest_rate']:,.0f}/s; "
            f"processed end to end at {http['end_to_end_rate']:,.0f}/s"
        )
    if args.latency:
        lat = latency(args.work, 10_000, args.latency_seconds)
        figures["latency"] = lat
        lines.append(
            f"processing-time pipeline at {lat['rate']:,.0f} events/s over HTTP: "
            f"p50 {lat['p50']:.3f} s, p99 {lat['p99']:.3f} s, max {lat['max']:.3f} s "
            f"({lat['seen']}/{lat['events']} seen; target p99 <= {TARGET_P99_SECONDS} s)"
        )
    print("\n".join(lines))
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, default=str, indent=2))
    return 0 if figures["comparison"]["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
