"""Benchmark W1 (batch) end to end against plain DuckDB, plus run latency and API latency.

``python -m benchmarks.bench_batch [--events N] [--repeat R] [--metadata sqlite|URL]``

In one process and one run (the machines are shared and noisy, so only ratios within one
run mean much):

1. W1's input is generated, or reused, under the work folder (``benchmarks.w1_data``).
2. A real datamill server is started as a subprocess with one worker (``DATAMILL_WORKERS=1``)
   so that one run gets the machine; a project, a ``file`` data source over the Parquet files
   (schema inferred) and a job with W1's SQL (container 2U4G: 2 threads, 4 GB) are created.
3. ``R`` rounds (after one warm-up round that is not counted), each timing in turn:
   * baseline: plain DuckDB, a fresh in-process connection with ``threads=2``, W1's SQL over
     the same files, result written as Parquet (zstd, as datamill writes it);
   * engine: the same in process, but on a connection set up the way datamill's worker sets
     it up (locked down, profiling on, the data source's typed view), to tell the engine's
     share of any overhead from the service's;
   * datamill: ``POST .../actions/start`` until the client knows the run is Successful:
     ``GET .../runs/N?waitSeconds=60`` (a long poll, answered as soon as the run ended), or
     with ``--poll-ms P`` ``GET .../history?runId=N`` every P ms as before.
   Interleaving the three keeps a burst of noise from hitting only one of them.
   The medians give the ratio datamill / baseline (target <= 1.10), and the results are
   compared key by key (device_id, window) with a relative tolerance of 1e-9 on floats.
4. API responsiveness: 50 ``GET /projects/{p}/jobs/{job}`` while a W1 run executes (only
   requests that began and ended inside the run's start..end count), and 50 when idle.
5. The server is restarted on the same data folder with ``DATAMILL_WORKERS=2`` and the
   default worker poll interval; a job ``SELECT * FROM t`` over a 10-row CSV is run 30
   times in a row, each timed from the start request until the long poll (or history polled
   every 5 ms with ``--poll-ms``) says Successful: median and p95 (target median <= 100 ms).

Each datamill run is also split into phases from the run's history (startTime = claimed by
a worker, endTime = finished) and its log lines (the last source note = inputs prepared):
request -> claim, claim -> prepared, prepared -> finished (DuckDB, publish, bookkeeping),
finished -> seen by the poller. CPU seconds are read from /proc: the baseline's, the worker's
that ran the job, the API process's and this process's (the poller), and the idle server's.
A run whose baseline got less than 80 % of its cores is flagged "busy machine": its
wall-clock figures are distorted by other work, the CPU figures much less.

The figures are printed as a table and, with ``--json-out``, written as JSON. The server is
stopped with SIGTERM (and waited for; anything left in its session is killed) even on errors.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import httpx

from benchmarks.w1_data import W1Data, generate

PROJECT_PREFIX = "bench"
W1_SOURCE = "w1events"
W1_TABLE = "events"
W1_JOB = "w1"
TRIVIAL_SOURCE = "tiny"
TRIVIAL_JOB = "trivial"
CONTAINER = {"type": "2U4G", "count": 1}
BASELINE_THREADS = 2
TRIVIAL_POLL_SECONDS = 0.005  # with --poll-ms: the history polling of earlier figures
LONG_POLL_SECONDS = 60
TOLERANCE = 1e-9
IDLE_SECONDS = 3.0
QUIET_SHARE = 0.8

TARGET_RATIO = 1.10
TARGET_TRIVIAL_MEDIAN_MS = 100.0
TARGET_API_MS = 50.0

# W1's computation; {table} is the job's source table or, for the baseline, read_parquet.
W1_SQL = """SELECT
    device_id,
    time_bucket(INTERVAL 10 seconds, event_time) AS window_start,
    count(*) AS events,
    sum(temp_f) AS sum_temp_f,
    avg(temp_f) AS avg_temp_f,
    max(temp_f) AS max_temp_f
FROM (
    SELECT device_id, event_time, value * 1.8 + 32 AS temp_f
    FROM {table}
    WHERE status <> 'x'
) AS e
GROUP BY device_id, window_start"""

FLOAT_COLUMNS = ("sum_temp_f", "avg_temp_f", "max_temp_f")


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to measure."""


# --- small helpers -------------------------------------------------------------------------


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: list[str]) -> str:
    return "[" + ", ".join(sql_string(v) for v in values) + "]"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank: an observed value, never interpolated."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def parse_time(value: str | None) -> float | None:
    """An ISO timestamp from the API as seconds since the epoch."""
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the server ----------------------------------------------------------------------------


@dataclass
class Server:
    """A datamill server in a subprocess (its own session, so its workers can be found)."""

    data_dir: Path
    roots: dict[str, str]
    workers: int
    log_path: Path
    database_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)  # more DATAMILL_* settings
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start(self, timeout: float = 90.0) -> None:
        self.port = self.port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAMILL_")}
        env.update(
            DATAMILL_DATA_DIR=str(self.data_dir),
            DATAMILL_DATA_ROOTS=json.dumps(self.roots),
            DATAMILL_WORKERS=str(self.workers),
        )
        if self.database_url:
            env["DATAMILL_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        handle = self.log_path.open("ab")
        command = [sys.executable, "-m", "datamill.cli.main", "server", "--port", str(self.port)]
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=self.data_dir,  # no stray .env file is picked up
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        handle.close()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise BenchError(
                        f"the server exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    health = client.get(self.url + "/health")
                    if health.status_code == 200 and health.json().get("status") == "ok":
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(f"the server did not become healthy:\n{self.log_tail()}")
                time.sleep(0.1)
        token_file = self.data_dir / "admin.token"
        while not token_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not token_file.is_file():
            raise BenchError(
                f"no {token_file}: the server writes it only when it creates the admin, so "
                "--metadata must name an empty database"
            )
        self.token = token_file.read_text().strip()

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """SIGTERM, wait; what was left of the server's process group is reported and killed."""
        outcome: dict[str, Any] = {"returncode": None, "leftover_processes": []}
        if self.process is None:
            return outcome
        pid = self.process.pid
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        outcome["returncode"] = self.process.returncode
        # The workers are the server's children in the session started for it.
        deadline = time.monotonic() + 3.0
        leftovers = _session_members(pid)
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.1)
            leftovers = _session_members(pid)
        outcome["leftover_processes"] = [_cmdline(p) for p in leftovers]
        if leftovers:
            log(f"the server left {len(leftovers)} processes behind; killing its session")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.process = None
        return outcome

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cpu(self) -> CpuSnapshot:
        """CPU so far; the children are the server's spawned processes (workers, scheduler)."""
        assert self.process is not None
        pid = self.process.pid
        children = {
            member: cpu_seconds(member)
            for member in _session_members(pid)
            if member != pid and "spawn_main" in _cmdline(member)
        }
        return CpuSnapshot(cpu_seconds(pid), children, time.process_time())

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=httpx.Timeout(120.0),
        )


def _session_members(sid: int) -> list[int]:
    """Live processes of the session ``sid`` (started for the server), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        # fields: state ppid pgrp session ...
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"{pid}: (gone)"
    return f"{pid}: " + raw.replace(b"\0", b" ").decode(errors="replace").strip()[:200]


WORKER_LINE = re.compile(r"attempt \d+ started on .*:(\d+)/\d+")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


@dataclass
class CpuSnapshot:
    """CPU seconds so far of the API process, of each child (workers, scheduler), of us."""

    api: float
    children: dict[int, float]
    client: float

    def __sub__(self, other: CpuSnapshot) -> dict[str, Any]:
        children = {pid: cpu - other.children.get(pid, 0.0) for pid, cpu in self.children.items()}
        return {
            "api": self.api - other.api,
            "children": sum(children.values()),
            "client": self.client - other.client,
            "by_child": children,
        }


def expect(response: httpx.Response, status: int) -> dict[str, Any]:
    if response.status_code != status:
        raise BenchError(
            f"{response.request.method} {response.request.url} -> {response.status_code}: "
            f"{response.text[:2000]}"
        )
    return response.json() if response.content else {}


# --- runs and their phases -----------------------------------------------------------------


@dataclass
class RunTiming:
    run_id: int
    wall: float  # start request sent -> Successful seen
    accepted: float  # start request sent -> its 202 received
    polls: int
    sent_at: float  # epoch seconds
    seen_at: float
    batch_time: str
    start_time: float | None = None  # claimed by a worker (history startTime)
    end_time: float | None = None  # finished (history endTime)
    prepared_at: float | None = None  # the last log line of the prepare step
    phases: dict[str, float] = field(default_factory=dict)
    # CPU seconds used during the run: api, children (all workers and the scheduler),
    # worker (the one that ran it, known from the log), client (this process)
    cpu: dict[str, Any] = field(default_factory=dict)

    def add_phases(self, log_lines: list[str]) -> None:
        by_child = self.cpu.pop("by_child", None)
        for _, text in _log_times(log_lines):
            claimed = WORKER_LINE.search(text)
            if claimed and by_child is not None:
                self.cpu["worker"] = by_child.get(int(claimed.group(1)), 0.0)
        prepared = [
            t for t, text in _log_times(log_lines) if ": data source '" in text or ": job '" in text
        ]
        self.prepared_at = prepared[-1] if prepared else None
        if self.start_time is None or self.end_time is None:
            return
        self.phases["request_to_claim"] = self.start_time - self.sent_at
        if self.prepared_at is not None:
            self.phases["claim_to_prepared"] = self.prepared_at - self.start_time
            self.phases["prepared_to_finished"] = self.end_time - self.prepared_at
        self.phases["claim_to_finished"] = self.end_time - self.start_time
        self.phases["finished_to_seen"] = self.seen_at - self.end_time


def _log_times(lines: list[str]) -> Iterator[tuple[float, str]]:
    for line in lines:
        stamp, _, rest = line.partition(" ")
        moment = parse_time(stamp)
        if moment is not None:
            yield moment, rest.strip()


def history_entry(client: httpx.Client, project: str, job: str, run_id: int) -> dict[str, Any]:
    body = expect(
        client.get(f"/projects/{project}/jobs/{job}/history", params={"runId": run_id}), 200
    )
    entry: dict[str, Any] = body["history"][0]
    return entry


def wait_entry(client: httpx.Client, project: str, job: str, run_id: int) -> dict[str, Any]:
    """The run once it ended, or after the long poll's time: one request."""
    path = f"/projects/{project}/jobs/{job}/runs/{run_id}"
    return expect(client.get(path, params={"waitSeconds": LONG_POLL_SECONDS}), 200)


def start_run(client: httpx.Client, project: str, job: str) -> int:
    body = expect(
        client.post(f"/projects/{project}/jobs/{job}/actions/start", json={"params": []}), 202
    )
    return int(body["runId"])


def timed_run(
    client: httpx.Client,
    project: str,
    job: str,
    poll: float,
    server: Server | None = None,
    timeout: float = 600.0,
) -> RunTiming:
    """Start a run and wait until it is Successful: long polls (``poll`` 0), or reading
    its history every ``poll`` seconds.

    With ``server``, the CPU its processes and this one used meanwhile is recorded too (read
    from /proc before the start request and after Successful was seen, outside the timing).
    """
    cpu_before = server.cpu() if server else None
    sent_at = time.time()
    began = time.perf_counter()
    run_id = start_run(client, project, job)
    accepted = time.perf_counter() - began
    polls = 0
    tick = began
    while True:
        if poll > 0:
            tick += poll
            pause = tick - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            entry = history_entry(client, project, job, run_id)
        else:
            entry = wait_entry(client, project, job, run_id)
        polls += 1
        status = entry["status"]
        if status == "Successful":
            wall = time.perf_counter() - began
            seen_at = time.time()
            break
        if status in {"Failed", "Canceled"}:
            raise BenchError(f"run {run_id} of {job} ended {status}: {entry.get('message')}")
        if time.perf_counter() - began > timeout:
            raise BenchError(f"run {run_id} of {job} still {status} after {timeout} s")
    cpu = (server.cpu() - cpu_before) if server and cpu_before else {}
    return RunTiming(
        cpu=cpu,
        run_id=run_id,
        wall=wall,
        accepted=accepted,
        polls=polls,
        sent_at=sent_at,
        seen_at=seen_at,
        batch_time=entry["batchTime"],
        start_time=parse_time(entry.get("startTime")),
        end_time=parse_time(entry.get("endTime")),
    )


def add_phases(client: httpx.Client, project: str, job: str, runs: list[RunTiming]) -> None:
    for run in runs:
        logs = expect(client.get(f"/projects/{project}/jobs/{job}/runs/{run.run_id}/logs"), 200)
        run.add_phases(logs["lines"])


def phase_medians(runs: list[RunTiming]) -> dict[str, float]:
    names: list[str] = []
    for run in runs:
        names += [n for n in run.phases if n not in names]
    return {n: median([r.phases[n] for r in runs if n in r.phases]) for n in names}


def wait_terminal(
    client: httpx.Client, project: str, job: str, run_id: int, timeout: float = 600.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = history_entry(client, project, job, run_id)
        if entry["status"] in {"Successful", "Failed", "Canceled"}:
            return entry
        time.sleep(0.02)
    raise BenchError(f"run {run_id} of {job} did not end within {timeout} s")


# --- W1: plain DuckDB and the engine in process --------------------------------------------


def copy_sql(query: str, out: Path) -> str:
    return f"COPY (\n{query}\n) TO {sql_string(str(out))} (FORMAT parquet, COMPRESSION zstd)"


@dataclass
class Timed:
    wall: float  # seconds
    cpu: float  # CPU seconds of this process (DuckDB's threads included)


def run_baseline(files: list[Path], out: Path) -> Timed:
    """W1 on a fresh plain DuckDB connection (threads=2), connect included."""
    out.unlink(missing_ok=True)
    cpu = time.process_time()
    began = time.perf_counter()
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"SET threads={BASELINE_THREADS}")
        con.execute("SET enable_progress_bar=false")  # datamill's workers print none either
        table = f"read_parquet({sql_list([str(f) for f in files])})"
        con.execute(copy_sql(W1_SQL.format(table=table), out))
    finally:
        con.close()
    return Timed(time.perf_counter() - began, time.process_time() - cpu)


def run_engine(files: list[Path], schema: list[dict[str, Any]], folder: Path) -> Timed:
    """W1 on a connection set up as datamill's worker sets it up, in this process."""
    from datamill.domain.datasources import FileSpec, SchemaField
    from datamill.engines import duckdb as engine

    shutil.rmtree(folder, ignore_errors=True)
    out_dir = folder / "out"
    out_dir.mkdir(parents=True)
    urls = [str(f) for f in files]
    cpu = time.process_time()
    began = time.perf_counter()
    sandbox = engine.Sandbox(
        temp_dir=folder / "tmp",
        allowed_paths=urls,
        allowed_dirs=[out_dir],
        limits=engine.Limits(memory_limit="4GB", threads=2, max_temp_size="16GB"),
    )
    con = engine.connect_locked(sandbox, profiling=True)
    try:
        files_sql = engine.read_sql(FileSpec(fileType="parquet", paths=["*"]), urls)
        columns = engine.column_types(con, files_sql)
        fields = [SchemaField.model_validate(f) for f in schema]
        select_sql = engine.typed_select(files_sql, fields, columns)
        con.execute(f"CREATE VIEW {engine.identifier(W1_TABLE)} AS {select_sql}")
        con.execute(copy_sql(W1_SQL.format(table=W1_TABLE), out_dir / "part-0.parquet"))
        con.get_profiling_information(format="json")
    finally:
        con.close()
    return Timed(time.perf_counter() - began, time.process_time() - cpu)


def compare_results(expected: Path, actual: list[Path]) -> dict[str, Any]:
    """Key-by-key comparison of two W1 results (window compared as epoch milliseconds)."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET threads=2")

        def load(name: str, paths: list[Path]) -> None:
            con.execute(
                f"CREATE TABLE {name} AS SELECT device_id, epoch_ms(window_start) AS w, "
                f"events, {', '.join(FLOAT_COLUMNS)} "
                f"FROM read_parquet({sql_list([str(p) for p in paths])})"
            )

        load("a", [expected])
        load("b", actual)
        close = " AND ".join(
            f"(a.{c} = b.{c} OR abs(a.{c} - b.{c}) <= {TOLERANCE} * "
            f"greatest(abs(a.{c}), abs(b.{c})))"
            for c in FLOAT_COLUMNS
        )
        row = con.execute(
            f"""
            SELECT
                (SELECT count(*) FROM a), (SELECT count(*) FROM b),
                (SELECT count(*) - count(DISTINCT (device_id, w)) FROM a),
                (SELECT count(*) - count(DISTINCT (device_id, w)) FROM b),
                count(*) FILTER (WHERE a.device_id IS NULL OR b.device_id IS NULL),
                count(*) FILTER (
                    WHERE a.device_id IS NOT NULL AND b.device_id IS NOT NULL
                    AND NOT (a.events = b.events AND {close})
                ),
                max(abs(a.sum_temp_f - b.sum_temp_f) / greatest(abs(a.sum_temp_f), 1e-300))
            FROM a FULL OUTER JOIN b ON a.device_id = b.device_id AND a.w = b.w
            """
        ).fetchone()
        assert row is not None
        example = con.execute(
            f"""
            SELECT a.device_id, a.w, a.events, b.events, a.sum_temp_f, b.sum_temp_f
            FROM a FULL OUTER JOIN b ON a.device_id = b.device_id AND a.w = b.w
            WHERE a.device_id IS NULL OR b.device_id IS NULL OR NOT (a.events = b.events
                AND {close})
            ORDER BY 1, 2 LIMIT 3
            """
        ).fetchall()
    finally:
        con.close()
    rows_a, rows_b, dup_a, dup_b, missing, different, max_rel = row
    equal = rows_a == rows_b and dup_a == 0 and dup_b == 0 and missing == 0 and different == 0
    return {
        "equal": bool(equal),
        "rows_baseline": int(rows_a),
        "rows_datamill": int(rows_b),
        "duplicate_keys": int(dup_a) + int(dup_b),
        "keys_in_one_only": int(missing),
        "keys_with_different_values": int(different),
        "max_relative_diff_sum": float(max_rel or 0.0),
        "examples": [list(map(str, e)) for e in example],
    }


# --- API latency ---------------------------------------------------------------------------


def api_latency_idle(client: httpx.Client, project: str, job: str, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        expect(client.get(f"/projects/{project}/jobs/{job}"), 200)
        latencies.append(time.perf_counter() - began)
    return latencies


def api_latency_busy(
    client: httpx.Client, project: str, job: str, count: int, max_runs: int = 20
) -> tuple[list[float], int]:
    """``count`` GETs of the job that began and ended while a W1 run was Running.

    Starts W1, waits until a worker claimed it, then issues GETs back to back (checking the
    run's status every fifth request); afterwards keeps only the requests inside the run's
    [startTime, endTime]. Starts W1 again until there are enough. Returns the latencies and
    the number of runs used.
    """
    inside: list[float] = []
    runs = 0
    while len(inside) < count and runs < max_runs:
        runs += 1
        run_id = start_run(client, project, job)
        while history_entry(client, project, job, run_id)["status"] in {"Ready", "Restarting"}:
            time.sleep(0.005)
        samples: list[tuple[float, float, float]] = []
        running = True
        while running and len(inside) + len(samples) < count:
            for _ in range(5):
                wall_start = time.time()
                began = time.perf_counter()
                expect(client.get(f"/projects/{project}/jobs/{job}"), 200)
                latency = time.perf_counter() - began
                samples.append((wall_start, time.time(), latency))
            running = history_entry(client, project, job, run_id)["status"] == "Running"
        entry = wait_terminal(client, project, job, run_id)
        if entry["status"] != "Successful":
            raise BenchError(f"the busy run {run_id} ended {entry['status']}: {entry['message']}")
        start, end = parse_time(entry["startTime"]), parse_time(entry["endTime"])
        if start is None or end is None:
            raise BenchError(f"the busy run {run_id} has no start or end time: {entry}")
        inside += [lat for at, done, lat in samples if start <= at <= done <= end]
    if len(inside) < count:
        raise BenchError(f"only {len(inside)} requests fell inside runs after {runs} runs")
    return inside[:count], runs


# --- setup through the API -----------------------------------------------------------------


def create_project(client: httpx.Client, name: str, roots: list[str]) -> None:
    """A project that sees the whole of ``roots`` (the shared benchmark data), granted by
    the administrator the benchmark runs as."""
    expect(client.post("/projects", json={"name": name, "description": "benchmarks"}), 201)
    for root in roots:
        expect(client.put(f"/data-roots/{root}/grants/{name}"), 200)


def create_job(
    client: httpx.Client, project: str, name: str, source: str, table: str, code: str
) -> None:
    expect(
        client.post(
            f"/projects/{project}/jobs/{name}",
            json={
                "srcs": [{"name": source, "type": "DataSource", "tableName": table}],
                "computation": {"type": "SQL", "code": code},
                "container": CONTAINER,
                "scheduler": {"type": "manual"},
            },
        ),
        201,
    )


def create_w1(client: httpx.Client, project: str, w1_paths: list[str]) -> dict[str, Any]:
    """W1's data source (root ``default``, schema inferred) and job; returns the source."""
    w1 = expect(
        client.post(
            f"/projects/{project}/datasources/{W1_SOURCE}",
            json={
                "type": "file",
                "noVerifySchema": False,
                "spec": {"root": "default", "paths": w1_paths, "fileType": "parquet"},
            },
        ),
        201,
    )
    create_job(client, project, W1_JOB, W1_SOURCE, W1_TABLE, W1_SQL.format(table=W1_TABLE))
    return w1


def create_sources_and_jobs(
    client: httpx.Client, project: str, w1_paths: list[str], csv_path: str
) -> dict[str, Any]:
    w1 = create_w1(client, project, w1_paths)
    expect(
        client.post(
            f"/projects/{project}/datasources/{TRIVIAL_SOURCE}",
            json={
                "type": "file",
                "noVerifySchema": False,
                "spec": {
                    "root": "bench",
                    "paths": [csv_path],
                    "fileType": "csv",
                    "delimiter": ",",
                    "containsHeader": True,
                },
            },
        ),
        201,
    )
    create_job(client, project, TRIVIAL_JOB, TRIVIAL_SOURCE, "t", "SELECT * FROM t")
    return w1


def write_tiny_csv(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.csv"
    rows = ["id,device,value"] + [f"{i},dev{i:05d},{i * 1.5}" for i in range(10)]
    path.write_text("\n".join(rows) + "\n")
    return path


# --- the benchmark -------------------------------------------------------------------------


@dataclass
class Options:
    events: int
    files: int
    seed: int
    repeat: int
    trivial_runs: int
    api_requests: int
    workdir: Path
    metadata: str
    json_out: Path | None
    keep: bool
    poll_ms: float = 0.0


def stats(values: list[float], scale: float = 1.0) -> dict[str, float]:
    return {
        "median": median(values) * scale,
        "p95": percentile(values, 95) * scale,
        "p99": percentile(values, 99) * scale,
        "min": min(values) * scale if values else float("nan"),
        "max": max(values) * scale if values else float("nan"),
    }


def machine() -> dict[str, Any]:
    memory = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    try:
        from datamill import __version__ as datamill_version
    except ImportError:  # pragma: no cover
        datamill_version = "?"
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "httpx": httpx.__version__,
        "datamill": datamill_version,
        "platform": platform.platform(),
    }


def idle_cpu(server: Server, seconds: float) -> dict[str, float]:
    """Cores the idle server uses (API, workers and scheduler polling the store)."""
    before = server.cpu()
    time.sleep(seconds)
    used = server.cpu() - before
    return {
        "seconds": seconds,
        "api_cores": used["api"] / seconds,
        "children_cores": used["children"] / seconds,
    }


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return []


def run(options: Options) -> dict[str, Any]:
    workdir = options.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "loadavg_start": loadavg(),
        "config": {
            "events": options.events,
            "files": options.files,
            "seed": options.seed,
            "repeat": options.repeat,
            "trivial_runs": options.trivial_runs,
            "api_requests": options.api_requests,
            "metadata": "sqlite" if options.metadata == "sqlite" else "postgresql",
            "container": CONTAINER,
            "baseline_threads": BASELINE_THREADS,
        },
        "targets": {
            "ratio_max": TARGET_RATIO,
            "trivial_median_ms_max": TARGET_TRIVIAL_MEDIAN_MS,
            "api_busy_ms_max": TARGET_API_MS,
        },
    }

    log(f"W1 input: {options.events} events in {options.files} files")
    data_folder = workdir / f"w1-{options.events}-{options.files}-s{options.seed}"
    data: W1Data = generate(data_folder, options.events, options.files, options.seed)
    figures["input"] = {
        "folder": str(data.folder),
        "generated": data.generated,
        "seconds": round(data.seconds, 3),
        "bytes": sum(f.stat().st_size for f in data.files),
    }
    log(("generated" if data.generated else "reused") + f" in {data.seconds:.1f} s")

    bench_root = workdir / "bench-files"
    write_tiny_csv(bench_root / "trivial")
    data_dir = workdir / "server-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    scratch = workdir / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    project = f"{PROJECT_PREFIX}{int(time.time())}"
    roots = {"default": str(data.folder), "bench": str(bench_root)}
    database_url = None if options.metadata == "sqlite" else options.metadata
    server_log = workdir / "server.log"
    server_log.unlink(missing_ok=True)
    shutdowns: list[dict[str, Any]] = []

    server = Server(data_dir, roots, 1, server_log, database_url)
    log(f"starting datamill (1 worker) on {data_dir}")
    try:
        server.start()
        with server.client() as client:
            create_project(client, project, sorted(roots))
            w1 = create_sources_and_jobs(client, project, ["events-*.parquet"], "trivial/tiny.csv")
            schema = w1["schema"]
            figures["datasource_schema"] = schema

            # W1, interleaved: baseline, engine in process, datamill (first round: warm-up)
            base_out = scratch / "baseline.parquet"
            base: list[Timed] = []
            engine_runs: list[Timed] = []
            engine_error = None
            dm_runs: list[RunTiming] = []
            for round_ in range(options.repeat + 1):
                counted = round_ > 0
                label = f"round {round_}/{options.repeat}" if counted else "warm-up"
                plain = run_baseline(data.files, base_out)
                if engine_error is None:
                    try:
                        in_process = run_engine(data.files, schema, scratch / "engine")
                        if counted:
                            engine_runs.append(in_process)
                    except Exception as exc:  # diagnostic only: datamill internals changed
                        engine_error = f"{type(exc).__name__}: {exc}"
                        log(f"engine-in-process variant skipped: {engine_error}")
                timing = timed_run(client, project, W1_JOB, options.poll_ms / 1000, server)
                if counted:
                    base.append(plain)
                    dm_runs.append(timing)
                log(
                    f"W1 {label}: baseline {plain.wall:.3f} s ({plain.cpu:.2f} cpu-s), "
                    f"datamill {timing.wall:.3f} s "
                    f"(workers+scheduler {timing.cpu.get('children', 0):.2f}, "
                    f"api {timing.cpu.get('api', 0):.2f} cpu-s)"
                )
            add_phases(client, project, W1_JOB, dm_runs)
            last = dm_runs[-1]
            from datamill.services.batch_runs import batch_key

            batch = batch_key(dt.datetime.fromisoformat(last.batch_time.replace("Z", "+00:00")))
            result_dir = data_dir / "projects" / project / "warehouse" / W1_JOB / batch
            result_files = sorted(result_dir.glob("*.parquet"))
            if not result_files:
                raise BenchError(f"no result files under {result_dir}")
            comparison = compare_results(base_out, result_files)
            if engine_runs:
                engine_cmp = compare_results(
                    base_out, sorted((scratch / "engine" / "out").glob("*.parquet"))
                )
                comparison["engine_equal"] = engine_cmp["equal"]
            base_median = median([b.wall for b in base])
            base_cpu = median([b.cpu for b in base])
            dm_median = median([r.wall for r in dm_runs])
            engine_median = median([e.wall for e in engine_runs]) if engine_runs else None
            cpu_medians = {
                k: median([r.cpu[k] for r in dm_runs if k in r.cpu])
                for k in ("worker", "children", "api", "client")
            }
            figures["w1"] = {
                "baseline_seconds": [b.wall for b in base],
                "baseline_cpu_seconds": [b.cpu for b in base],
                "engine_seconds": [e.wall for e in engine_runs],
                "engine_cpu_seconds": [e.cpu for e in engine_runs],
                "engine_error": engine_error,
                "datamill_seconds": [r.wall for r in dm_runs],
                "baseline_median_s": base_median,
                "engine_median_s": engine_median,
                "datamill_median_s": dm_median,
                "ratio": dm_median / base_median,
                "paired_ratio_median": median(
                    [r.wall / b.wall for r, b in zip(dm_runs, base, strict=True)]
                ),
                "engine_ratio": engine_median / base_median if engine_median else None,
                "baseline_cpu_median_s": base_cpu,
                "engine_cpu_median_s": (
                    median([e.cpu for e in engine_runs]) if engine_runs else None
                ),
                "datamill_cpu_median_s": cpu_medians,
                "cpu_ratio_worker": cpu_medians["worker"] / base_cpu if base_cpu else None,
                # CPU seconds per wall second: about 2 on an idle 2-core machine, far less
                # when other work takes the cores (then the wall-clock figures mean little)
                "baseline_cores_used": median([b.cpu / b.wall for b in base]),
                "phases_median_s": phase_medians(dm_runs),
                "polls_median": median([float(r.polls) for r in dm_runs]),
                "start_request_median_s": median([r.accepted for r in dm_runs]),
                "rows_out": comparison["rows_baseline"],
                "comparison": comparison,
                "runs": [asdict(r) for r in dm_runs],
            }
            log(
                f"W1 medians: baseline {base_median:.3f} s, datamill {dm_median:.3f} s, "
                f"ratio {dm_median / base_median:.3f}; results equal: {comparison['equal']}"
            )

            # API responsiveness, idle and while a W1 run executes
            idle = api_latency_idle(client, project, W1_JOB, options.api_requests)
            figures["idle_cpu"] = idle_cpu(server, IDLE_SECONDS)
            busy, busy_runs = api_latency_busy(client, project, W1_JOB, options.api_requests)
            figures["api"] = {
                "endpoint": "GET /api/v1/projects/{p}/jobs/{job}",
                "idle_ms": stats(idle, 1000),
                "busy_ms": stats(busy, 1000),
                "busy_runs_used": busy_runs,
                "busy_samples_ms": [x * 1000 for x in busy],
            }
            log(
                f"API under load: p50 {median(busy) * 1000:.1f} ms, "
                f"p99 {percentile(busy, 99) * 1000:.1f} ms ({busy_runs} W1 runs)"
            )
    finally:
        shutdowns.append(server.stop())

    # Trivial job latency with the default worker count (2) and poll interval
    server = Server(data_dir, roots, 2, server_log, database_url)
    log("restarting datamill with 2 workers for the trivial job")
    try:
        server.start()
        with server.client() as client:
            trivial_poll = TRIVIAL_POLL_SECONDS if options.poll_ms else 0.0
            timed_run(client, project, TRIVIAL_JOB, trivial_poll)  # warm-up
            trivial = [
                timed_run(client, project, TRIVIAL_JOB, trivial_poll, server)
                for _ in range(options.trivial_runs)
            ]
            add_phases(client, project, TRIVIAL_JOB, trivial)
            walls = [r.wall for r in trivial]
            figures["trivial"] = {
                "workers": 2,
                "poll_ms": trivial_poll * 1000,
                "ms": stats(walls, 1000),
                "samples_ms": [w * 1000 for w in walls],
                "phases_median_ms": {k: v * 1000 for k, v in phase_medians(trivial).items()},
                "polls_median": median([float(r.polls) for r in trivial]),
                "cpu_median_ms": {
                    k: median([r.cpu[k] for r in trivial if k in r.cpu]) * 1000
                    for k in ("worker", "children", "api", "client")
                },
                "start_request_median_ms": median([r.accepted for r in trivial]) * 1000,
            }
            log(
                f"trivial job: median {median(walls) * 1000:.1f} ms, "
                f"p95 {percentile(walls, 95) * 1000:.1f} ms"
            )
            if database_url:
                with contextlib.suppress(httpx.HTTPError):
                    client.delete(f"/projects/{project}")
    finally:
        shutdowns.append(server.stop())
    figures["server_shutdowns"] = shutdowns
    figures["loadavg_end"] = loadavg()
    if not options.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    figures["verdict"] = verdict(figures)
    return figures


def verdict(figures: dict[str, Any]) -> dict[str, bool]:
    cores = min(BASELINE_THREADS, figures["machine"]["cpus"] or 1)
    return {
        # the baseline got most of its cores: other work did not distort the wall times
        "machine_quiet": figures["w1"]["baseline_cores_used"] >= QUIET_SHARE * cores,
        "results_equal": bool(figures["w1"]["comparison"]["equal"]),
        "ratio_met": figures["w1"]["ratio"] <= TARGET_RATIO,
        "trivial_median_met": figures["trivial"]["ms"]["median"] <= TARGET_TRIVIAL_MEDIAN_MS,
        "api_busy_met": (
            figures["api"]["busy_ms"]["median"] <= TARGET_API_MS
            and figures["api"]["busy_ms"]["p99"] <= TARGET_API_MS
        ),
    }


def report(figures: dict[str, Any]) -> str:
    w1, api, trivial = figures["w1"], figures["api"], figures["trivial"]
    ok = figures["verdict"]

    def mark(flag: bool) -> str:
        return ("met" if flag else "MISSED") + ("" if ok["machine_quiet"] else " (busy machine)")

    config = figures["config"]
    rows = [
        ("W1 baseline DuckDB (median)", f"{w1['baseline_median_s']:.3f} s", "", ""),
    ]
    if w1["engine_median_s"] is not None:
        rows.append(
            (
                "W1 engine in process (median)",
                f"{w1['engine_median_s']:.3f} s",
                f"x{w1['engine_ratio']:.3f}",
                "",
            )
        )
    rows += [
        ("W1 datamill end to end (median)", f"{w1['datamill_median_s']:.3f} s", "", ""),
        ("W1 ratio datamill / baseline", f"{w1['ratio']:.3f}", "<= 1.10", mark(ok["ratio_met"])),
        (
            "W1 results equal key by key",
            f"{w1['comparison']['rows_datamill']} rows",
            "equal",
            "yes" if ok["results_equal"] else "NO",
        ),
    ]
    rows.append(("W1 paired ratio (median of rounds)", f"{w1['paired_ratio_median']:.3f}", "", ""))
    idle = figures["idle_cpu"]
    rows.append(
        (
            "idle server cores: api / children",
            f"{idle['api_cores']:.3f} / {idle['children_cores']:.3f}",
            "",
            "",
        )
    )
    rows.append(("W1 baseline cores used (cpu-s / s)", f"{w1['baseline_cores_used']:.2f}", "", ""))
    if w1["cpu_ratio_worker"] is not None:
        rows.append(("W1 CPU ratio worker / baseline", f"{w1['cpu_ratio_worker']:.3f}", "", ""))
    cpu = w1["datamill_cpu_median_s"]
    engine_cpu = w1["engine_cpu_median_s"]
    rows.append(
        (
            "W1 CPU-s baseline / engine",
            f"{w1['baseline_cpu_median_s']:.2f} / "
            + (f"{engine_cpu:.2f}" if engine_cpu is not None else "n/a"),
            "",
            "",
        )
    )
    rows.append(
        (
            "W1 CPU-s worker / other children / api / poller",
            f"{cpu['worker']:.2f} / {cpu['children'] - cpu['worker']:.2f} / {cpu['api']:.2f} / "
            f"{cpu['client']:.2f}",
            "",
            "",
        )
    )
    for name, seconds in w1["phases_median_s"].items():
        rows.append((f"  W1 phase {name}", f"{seconds * 1000:.1f} ms", "", ""))
    rows += [
        (
            "trivial job median",
            f"{trivial['ms']['median']:.1f} ms",
            "<= 100 ms",
            mark(ok["trivial_median_met"]),
        ),
        ("trivial job p95", f"{trivial['ms']['p95']:.1f} ms", "", ""),
    ]
    for name, ms in trivial["phases_median_ms"].items():
        rows.append((f"  trivial phase {name}", f"{ms:.1f} ms", "", ""))
    rows += [
        ("API GET job, busy p50", f"{api['busy_ms']['median']:.1f} ms", "<= 50 ms", ""),
        (
            "API GET job, busy p99",
            f"{api['busy_ms']['p99']:.1f} ms",
            "<= 50 ms",
            mark(ok["api_busy_met"]),
        ),
        (
            "API GET job, idle p50 / p99",
            f"{api['idle_ms']['median']:.1f} / {api['idle_ms']['p99']:.1f} ms",
            "",
            "",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [
        f"datamill batch benchmark, {figures['date']}: {config['events']} events, "
        f"{config['repeat']} repeats, metadata {config['metadata']}, "
        f"{figures['machine']['cpus']} cpus, {figures['machine']['memory_gib']} GiB, "
        f"load average {figures['loadavg_start'][:1]} -> {figures['loadavg_end'][:1]}",
        f"{'figure':{width}}  {'value':>24}  {'target':>9}  result",
    ]
    lines += [f"{a:{width}}  {b:>24}  {c:>9}  {d}" for a, b, c, d in rows]
    if not ok["machine_quiet"]:
        lines.append(
            f"warning: the baseline used only {w1['baseline_cores_used']:.2f} cores of "
            f"{config['baseline_threads']}: other work was running, so wall-clock figures and "
            "their ratio are distorted (trust the CPU figures); run again when it is quieter"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_batch",
        description="W1 through datamill vs plain DuckDB, run latency, API latency.",
    )
    parser.add_argument("--events", type=int, default=None, help="default 10000000")
    parser.add_argument("--quick", action="store_true", help="1M events, for trying it out")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="timed W1 runs per side")
    parser.add_argument("--trivial-runs", type=int, default=30)
    parser.add_argument("--api-requests", type=int, default=50)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "datamill-bench",
        help="where the data, the server's data folder and its log go",
    )
    parser.add_argument(
        "--metadata", default="sqlite", help="'sqlite' (default) or a postgresql:// URL"
    )
    parser.add_argument(
        "--poll-ms",
        type=float,
        default=0.0,
        help="poll the run's history every N ms (W1; the trivial job every 5 ms) instead of "
        "waiting with a long poll (the default, 0)",
    )
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the server's data folder")
    args = parser.parse_args(argv)
    events = args.events or (1_000_000 if args.quick else 10_000_000)
    if args.metadata != "sqlite" and not args.metadata.startswith("postgresql"):
        parser.error("--metadata is 'sqlite' or a postgresql URL")
    if args.repeat < 1 or args.trivial_runs < 1 or args.api_requests < 1:
        parser.error("--repeat, --trivial-runs and --api-requests must be at least 1")
    return Options(
        events=events,
        files=args.files,
        seed=args.seed,
        repeat=args.repeat,
        trivial_runs=args.trivial_runs,
        api_requests=args.api_requests,
        workdir=args.workdir.resolve(),
        metadata=args.metadata,
        json_out=args.json_out,
        keep=args.keep,
        poll_ms=args.poll_ms,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    began = time.perf_counter()
    figures = run(options)
    figures["total_seconds"] = round(time.perf_counter() - began, 1)
    print(report(figures))
    print(f"(total {figures['total_seconds']} s)")
    if options.json_out:
        options.json_out.parent.mkdir(parents=True, exist_ok=True)
        options.json_out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0 if figures["verdict"]["results_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
