"""Benchmark exports of W1's result through datamill against writing it directly.

``python -m benchmarks.bench_export [--events N] [--repeat R] [--metadata sqlite|URL]``

In one process and one run (the machines are shared and noisy, so only ratios within one
run mean much):

1. W1's input is generated, or reused, under the work folder (``benchmarks.w1_data``).
2. An S3-compatible server (``rclone serve s3``, started by ``tests.servers.start_s3``
   with ``--etag-hash ""``: no MD5 of every object read at each listing) and a
   real datamill server (a subprocess with one worker, as in ``bench_batch``; the loopback
   S3 endpoint allowed with ``DATAMILL_OUTBOUND_ALLOW``) are started. A project, W1's data
   source and job, and a secret holding the S3 keys are created; W1 is run once, so that
   the exports read the Parquet result of a real batch (about 3.2 M rows for 10 M events).
3. Four exports of that job are created: parquet + snappy and csv + gzip, each to a data
   root (``file``) and to the S3 server (``s3``), one file per output.
4. ``R`` rounds (after one warm-up round that is not counted), each timing in turn, for
   every case:
   * baseline ``pyarrow``: the result Parquet read with ``pyarrow.parquet.read_table`` and
     written with pyarrow (``pyarrow.parquet.write_table``; ``pyarrow.csv.write_csv`` then
     ``pyarrow.Codec("gzip", 6)``, as pyarrow's gzip stream only has level 9) to a local
     folder or to a file opened with ``s3fs`` on the S3 server (``pyarrow.fs.S3FileSystem``
     cannot be used: its multipart uploads are refused by rclone, HTTP 411);
   * baseline ``duckdb``: one ``COPY (FROM read_parquet(...)) TO ...`` (threads=2) to a local
     folder or, through an ``s3fs`` file system registered with DuckDB, to the S3 server;
   * datamill: ``POST .../exports/{name}/actions/rerun`` for the batch, then
     ``GET .../exports/{name}/runs/{runId}?waitSeconds=60`` (a long poll: the server answers
     as soon as the export run has ended, as the client's and the CLI's waits use it)
     until the rerun is Successful. The time runs from sending the rerun to receiving that
     answer: all a user waits for, bookkeeping and the HTTP round trips included. The
     export run's own duration (``endTime - startTime``: claimed by the worker ->
     finished) is recorded too.
   The baseline of a case is the faster of the two (median over the rounds); the ratio
   datamill / baseline is the figure (target <= 1.2).
5. Every datamill output is checked against the job's result: the row count and a checksum
   (the sum of DuckDB's ``hash`` of every row, the CSV read back with the result's types),
   read from the files the servers wrote (for S3, the object under rclone's root folder).

CPU seconds are read from /proc as in ``bench_batch``: the baseline's (this process), and
during each export the worker's (the server's child that used the most), the other
children's and the API's. A run is flagged "busy machine" when the load average at its
start or end exceeds the cores plus one (the benchmark's own share). The figures are
printed as a table and, with ``--json-out``, written as JSON. Both servers are stopped
even on errors.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import httpx

from benchmarks.bench_batch import (
    BASELINE_THREADS,
    PROJECT_PREFIX,
    W1_JOB,
    BenchError,
    Server,
    create_project,
    create_w1,
    expect,
    loadavg,
    log,
    machine,
    median,
    parse_time,
    sql_list,
    sql_string,
    timed_run,
)
from benchmarks.w1_data import W1Data, generate

TARGET_RATIO = 1.2
QUIET_EXTRA_LOAD = 1.0
BUCKET = "bench"
SECRET_NAME = "s3keys"  # noqa: S105 - the name of a stored secret, not a value
EXPORT_ROOT = "exports"
GZIP_LEVEL = 6


@dataclass(frozen=True)
class Case:
    """One export: a format and compression to a kind of destination."""

    name: str
    destination: str  # "file" or "s3"
    format: str  # "parquet" or "csv"
    compression: str  # "snappy" or "gzip"

    @property
    def extension(self) -> str:
        return ".parquet" if self.format == "parquet" else ".csv.gz"


CASES = [
    Case("parquet_file", "file", "parquet", "snappy"),
    Case("csv_gzip_file", "file", "csv", "gzip"),
    Case("parquet_s3", "s3", "parquet", "snappy"),
    Case("csv_gzip_s3", "s3", "csv", "gzip"),
]


@dataclass
class Timed:
    wall: float  # seconds
    cpu: float  # CPU seconds of this process


@dataclass
class ExportTiming:
    wall: float  # rerun request sent -> the answer saying it is Successful received
    ended: float  # rerun request sent -> the run's endTime (same machine, same clock)
    run_seconds: float | None  # the export run's endTime - startTime (claim -> finished)
    requests: int  # wait requests (long polls) sent
    rerun_count: int
    rows: int | None
    bytes: int | None
    cpu: dict[str, Any] = field(default_factory=dict)


# --- the destinations ----------------------------------------------------------------------


@dataclass
class S3Target:
    url: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    root: Path  # rclone's folder: bucket/key is a file under it

    def s3fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(
            key=self.access_key,
            secret=self.secret_key,
            client_kwargs={"endpoint_url": self.url, "region_name": "us-east-1"},
            config_kwargs={"s3": {"addressing_style": "path"}},
            skip_instance_cache=True,
        )


def export_spec(case: Case, s3: S3Target) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "format": case.format,
        "compression": case.compression,
        "fileCount": 1,
        "retries": 0,
    }
    if case.format == "csv":
        spec["delimiter"] = ","
    if case.destination == "file":
        spec.update(root=EXPORT_ROOT, path=f"datamill/{case.name}/out-")
    else:
        spec.update(
            bucket=BUCKET,
            keyPrefix=f"datamill/{case.name}/out-",
            endpoint=s3.url,
            secret=SECRET_NAME,
        )
    return spec


def datamill_output(case: Case, export_root: Path, s3: S3Target) -> Path:
    """The one data file the export of ``case`` wrote (found on disk)."""
    base = (export_root if case.destination == "file" else s3.root / BUCKET) / "datamill"
    found = sorted((base / case.name).glob(f"out-*/part-*{case.extension}"))
    if len(found) != 1:
        raise BenchError(f"expected one output file of {case.name}, found {found}")
    return found[0]


# --- baselines -----------------------------------------------------------------------------


def baseline_pyarrow(case: Case, files: list[Path], local: Path, s3: S3Target) -> Timed:
    """Read the result with pyarrow and write it with pyarrow, in this process."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    cpu = time.process_time()
    began = time.perf_counter()
    table = pq.read_table([str(f) for f in files], partitioning=None)
    if case.destination == "file":
        local.mkdir(parents=True, exist_ok=True)
        target = str(local / f"pyarrow{case.extension}")
        filesystem = None
    else:
        target = f"{BUCKET}/baseline/pyarrow-{case.name}{case.extension}"
        filesystem = s3.s3fs()
    if case.format == "parquet":
        pq.write_table(table, target, compression=case.compression, filesystem=filesystem)
    else:
        text = pa.BufferOutputStream()
        pacsv.write_csv(table, text)
        packed = pa.Codec("gzip", compression_level=GZIP_LEVEL).compress(text.getvalue())
        if filesystem is None:
            with pa.OSFile(target, "wb") as out:
                out.write(packed)
        else:
            with filesystem.open(target, "wb") as out:
                out.write(packed)
    return Timed(time.perf_counter() - began, time.process_time() - cpu)


def baseline_duckdb(case: Case, files: list[Path], local: Path, s3: S3Target) -> Timed:
    """One COPY from the result Parquet to the destination on a fresh connection."""
    cpu = time.process_time()
    began = time.perf_counter()
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"SET threads={BASELINE_THREADS}")
        con.execute("SET enable_progress_bar=false")
        if case.destination == "file":
            local.mkdir(parents=True, exist_ok=True)
            target = str(local / f"duckdb{case.extension}")
        else:
            con.register_filesystem(s3.s3fs())
            target = f"s3://{BUCKET}/baseline/duckdb-{case.name}{case.extension}"
        options = (
            f"FORMAT parquet, COMPRESSION {case.compression}"
            if case.format == "parquet"
            else f"FORMAT csv, HEADER true, COMPRESSION {case.compression}"
        )
        source = f"read_parquet({sql_list([str(f) for f in files])}, hive_partitioning=false)"
        con.execute(f"COPY (FROM {source}) TO {sql_string(target)} ({options})")
    finally:
        con.close()
    return Timed(time.perf_counter() - began, time.process_time() - cpu)


BASELINES: dict[str, Callable[[Case, list[Path], Path, S3Target], Timed]] = {
    "pyarrow": baseline_pyarrow,
    "duckdb": baseline_duckdb,
}


# --- datamill ------------------------------------------------------------------------------


WAIT_SECONDS = 60  # the most one long poll may hold (the server's limit)


def timed_export(
    client: httpx.Client,
    project: str,
    name: str,
    run_id: int,
    server: Server,
    timeout: float = 900.0,
) -> ExportTiming:
    """Rerun the export of batch ``run_id``; wait (long polls) until that rerun succeeded."""
    base = f"/projects/{project}/jobs/{W1_JOB}/exports/{name}"
    cpu_before = server.cpu()
    sent_at = time.time()
    began = time.perf_counter()
    answer = expect(client.post(f"{base}/actions/rerun", json={"runId": run_id}), 200)
    expected = int(answer["rerunCount"])
    requests = 0
    while True:
        entry: dict[str, Any] = expect(
            client.get(f"{base}/runs/{run_id}", params={"waitSeconds": WAIT_SECONDS}), 200
        )
        requests += 1
        status = entry["status"]
        if entry["rerunCount"] >= expected and status in {"Successful", "Failed", "Canceled"}:
            if status != "Successful":
                raise BenchError(f"export {name} of run {run_id} ended {status}: {entry}")
            wall = time.perf_counter() - began
            break
        if time.perf_counter() - began > timeout:
            raise BenchError(f"export {name} of run {run_id} still {status} after {timeout} s")
    cpu = server.cpu() - cpu_before
    by_child = cpu.pop("by_child", None) or {}
    # one worker: the child that used the most CPU ran the export (the scheduler idles)
    cpu["worker"] = max(by_child.values(), default=0.0)
    start, end = parse_time(entry.get("startTime")), parse_time(entry.get("endTime"))
    if end is None:
        raise BenchError(f"export {name} of run {run_id} is Successful without an endTime")
    return ExportTiming(
        wall=wall,
        ended=end - sent_at,
        run_seconds=(end - start) if start is not None else None,
        requests=requests,
        rerun_count=int(entry["rerunCount"]),
        rows=entry.get("rowsWritten"),
        bytes=entry.get("bytesWritten"),
        cpu=cpu,
    )


# --- checking the outputs ------------------------------------------------------------------


def checksum(relation: str, columns: list[str], con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(rows, sum of the hash of every row): equal for equal tables whatever the order."""
    names = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
    row = con.execute(
        f"SELECT count(*), coalesce(sum(hash({names})::HUGEINT), 0) FROM {relation}"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def check_output(case: Case, path: Path, result_files: list[Path]) -> dict[str, Any]:
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"SET threads={BASELINE_THREADS}")
        con.execute("SET enable_progress_bar=false")
        source = (
            f"read_parquet({sql_list([str(f) for f in result_files])}, hive_partitioning=false)"
        )
        types = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        names = [str(t[0]) for t in types]
        expected = checksum(source, names, con)
        if case.format == "parquet":
            relation = f"read_parquet({sql_string(str(path))}, hive_partitioning=false)"
        else:
            columns = (
                "{" + ", ".join(f"{sql_string(n)}: {sql_string(t)}" for n, t, *_ in types) + "}"
            )
            relation = (
                f"read_csv({sql_string(str(path))}, header=true, delim=',', quote='\"', "
                f"compression='gzip', columns={columns})"
            )
        actual = checksum(relation, names, con)
    finally:
        con.close()
    return {
        "file": str(path),
        "bytes": path.stat().st_size,
        "rows_expected": expected[0],
        "rows": actual[0],
        "checksum_expected": str(expected[1]),
        "checksum": str(actual[1]),
        "equal": expected == actual,
    }


# --- the benchmark -------------------------------------------------------------------------


@dataclass
class Options:
    events: int
    files: int
    seed: int
    repeat: int
    workdir: Path
    metadata: str
    json_out: Path | None
    keep: bool
    cases: list[str]


def run(options: Options) -> dict[str, Any]:
    from tests.servers import start_s3

    workdir = options.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    cases = [c for c in CASES if c.name in options.cases]
    figures: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "loadavg_start": loadavg(),
        "config": {
            "events": options.events,
            "files": options.files,
            "seed": options.seed,
            "repeat": options.repeat,
            "metadata": "sqlite" if options.metadata == "sqlite" else "postgresql",
            "baseline_threads": BASELINE_THREADS,
            "cases": [asdict(c) for c in cases],
        },
        "targets": {"ratio_max": TARGET_RATIO},
    }
    import pyarrow

    figures["machine"]["pyarrow"] = pyarrow.__version__

    log(f"W1 input: {options.events} events in {options.files} files")
    data_folder = workdir / f"w1-{options.events}-{options.files}-s{options.seed}"
    data: W1Data = generate(data_folder, options.events, options.files, options.seed)
    log(("generated" if data.generated else "reused") + f" in {data.seconds:.1f} s")

    data_dir = workdir / "server-data"
    export_root = workdir / "export-root"
    scratch = workdir / "scratch"
    for folder in (data_dir, export_root, scratch, workdir / "s3"):
        shutil.rmtree(folder, ignore_errors=True)
    export_root.mkdir(parents=True)
    scratch.mkdir(parents=True)
    project = f"{PROJECT_PREFIX}{int(time.time())}"
    database_url = None if options.metadata == "sqlite" else options.metadata
    server_log = workdir / "server.log"
    server_log.unlink(missing_ok=True)

    # --etag-hash "": rclone would otherwise read every object whole to compute its MD5 each
    # time a listing shows it (S3 stores the ETag at upload), and datamill lists the output
    # location before writing it (saveMode), which the baselines do not
    rclone = start_s3(workdir / "s3", extra_args=["--etag-hash", ""])
    s3 = S3Target(
        rclone.url,
        rclone.extra["access_key"],
        rclone.extra["secret_key"],
        Path(rclone.extra["root"]),
    )
    (s3.root / BUCKET).mkdir()  # a bucket is a folder of rclone's root
    roots = {"default": str(data.folder), EXPORT_ROOT: str(export_root)}
    server = Server(
        data_dir,
        roots,
        1,
        server_log,
        database_url,
        extra_env={"DATAMILL_OUTBOUND_ALLOW": json.dumps(["127.0.0.1"])},
    )
    log(f"starting datamill (1 worker) on {data_dir}, S3 at {s3.url}")
    try:
        server.start()
        with server.client() as client:
            create_project(client, project, sorted(roots))
            create_w1(client, project, ["events-*.parquet"])
            expect(
                client.post(
                    f"/projects/{project}/secrets/{SECRET_NAME}",
                    json={
                        "values": {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key}
                    },
                ),
                201,
            )
            job_run = timed_run(client, project, W1_JOB, 0.0, server)
            log(f"W1 ran in {job_run.wall:.2f} s (run {job_run.run_id})")
            from datamill.services.batch_runs import batch_key

            batch = batch_key(dt.datetime.fromisoformat(job_run.batch_time.replace("Z", "+00:00")))
            result_dir = data_dir / "projects" / project / "warehouse" / W1_JOB / batch
            result_files = sorted(result_dir.glob("*.parquet"))
            if not result_files:
                raise BenchError(f"no result files under {result_dir}")
            figures["result"] = {
                "files": len(result_files),
                "bytes": sum(f.stat().st_size for f in result_files),
                "job_seconds": job_run.wall,
            }
            for case in cases:
                expect(
                    client.post(
                        f"/projects/{project}/jobs/{W1_JOB}/exports/{case.name}",
                        json={"type": case.destination, "spec": export_spec(case, s3)},
                    ),
                    201,
                )

            base: dict[str, dict[str, list[Timed]]] = {
                c.name: {k: [] for k in BASELINES} for c in cases
            }
            ours: dict[str, list[ExportTiming]] = {c.name: [] for c in cases}
            for round_ in range(options.repeat + 1):
                counted = round_ > 0
                label = f"round {round_}/{options.repeat}" if counted else "warm-up"
                for case in cases:
                    plain = {
                        kind: write(case, result_files, scratch / case.name, s3)
                        for kind, write in BASELINES.items()
                    }
                    timing = timed_export(client, project, case.name, job_run.run_id, server)
                    if counted:
                        for kind, timed in plain.items():
                            base[case.name][kind].append(timed)
                        ours[case.name].append(timing)
                    log(
                        f"{case.name} {label}: "
                        + ", ".join(f"{k} {t.wall:.3f} s" for k, t in plain.items())
                        + f", datamill {timing.wall:.3f} s (run {timing.run_seconds or 0:.3f} s)"
                    )

            figures["cases"] = {}
            for case in cases:
                check = check_output(case, datamill_output(case, export_root, s3), result_files)
                medians = {k: median([t.wall for t in v]) for k, v in base[case.name].items()}
                fastest = min(medians, key=lambda k: medians[k])
                timings = ours[case.name]
                dm_median = median([t.wall for t in timings])
                run_median = median([t.run_seconds or float("nan") for t in timings])
                figures["cases"][case.name] = {
                    "case": asdict(case),
                    "baseline_seconds": {
                        k: [t.wall for t in v] for k, v in base[case.name].items()
                    },
                    "baseline_cpu_seconds": {
                        k: [t.cpu for t in v] for k, v in base[case.name].items()
                    },
                    "baseline_median_s": medians,
                    "baseline": fastest,
                    "datamill_seconds": [t.wall for t in timings],
                    "datamill_median_s": dm_median,
                    "export_run_median_s": run_median,
                    "ratio": dm_median / medians[fastest],
                    "ratio_by_baseline": {k: dm_median / m for k, m in medians.items()},
                    "run_ratio": run_median / medians[fastest],
                    "baseline_cores_used": median(
                        [t.cpu / t.wall for t in base[case.name][fastest]]
                    ),
                    "datamill_cpu_median_s": {
                        k: median([t.cpu[k] for t in timings if k in t.cpu])
                        for k in ("worker", "children", "api", "client")
                    },
                    "cpu_ratio_worker": median([t.cpu["worker"] for t in timings])
                    / median([t.cpu for t in base[case.name][fastest]]),
                    "baseline_cpu_median_s": median([t.cpu for t in base[case.name][fastest]]),
                    # CPU seconds of datamill's processes (workers, scheduler, API) over the
                    # baseline's: what the wall-clock ratio tends to on a busy machine
                    "cpu_ratio": median([t.cpu["children"] + t.cpu["api"] for t in timings])
                    / median([t.cpu for t in base[case.name][fastest]]),
                    "rows_written": timings[-1].rows,
                    "bytes_written": timings[-1].bytes,
                    "check": check,
                    "runs": [asdict(t) for t in timings],
                }
                log(
                    f"{case.name}: baseline {fastest} {medians[fastest]:.3f} s, datamill "
                    f"{dm_median:.3f} s, ratio {dm_median / medians[fastest]:.3f}; "
                    f"data equal: {check['equal']}"
                )
            if database_url:
                with contextlib.suppress(httpx.HTTPError):
                    client.delete(f"/projects/{project}")
    finally:
        figures["server_shutdown"] = server.stop()
        rclone.stop()
    figures["loadavg_end"] = loadavg()
    if not options.keep:
        for folder in (data_dir, export_root, scratch, workdir / "s3"):
            shutil.rmtree(folder, ignore_errors=True)
    figures["verdict"] = verdict(figures)
    return figures


def verdict(figures: dict[str, Any]) -> dict[str, Any]:
    cpus = figures["machine"]["cpus"] or 1
    cases = figures["cases"]
    loads = figures["loadavg_start"][:1] + figures["loadavg_end"][:1]
    return {
        # No baseline here keeps 2 cores busy (pyarrow's CSV path and both gzip writers are
        # mostly single-threaded, the parquet writes too short to tell), so other work is
        # judged by the load average: the benchmark itself adds about one
        "machine_quiet": bool(loads) and max(loads) < cpus + QUIET_EXTRA_LOAD,
        "data_equal": all(c["check"]["equal"] for c in cases.values()),
        "ratio_met": {name: c["ratio"] <= TARGET_RATIO for name, c in cases.items()},
    }


def report(figures: dict[str, Any]) -> str:
    ok = figures["verdict"]
    config = figures["config"]
    rows: list[tuple[str, str, str, str]] = []
    for name, c in figures["cases"].items():
        medians = c["baseline_median_s"]
        rows.append(
            (
                f"{name}: baseline pyarrow / duckdb",
                f"{medians['pyarrow']:.3f} / {medians['duckdb']:.3f} s",
                "",
                "",
            )
        )
        rows.append(
            (
                f"{name}: datamill end to end (run alone)",
                f"{c['datamill_median_s']:.3f} s ({c['export_run_median_s']:.3f} s)",
                "",
                "",
            )
        )
        mark = ("met" if ok["ratio_met"][name] else "MISSED") + (
            "" if ok["machine_quiet"] else " (busy machine)"
        )
        rows.append(
            (
                f"{name}: ratio datamill / {c['baseline']} (run alone)",
                f"{c['ratio']:.3f} ({c['run_ratio']:.3f})",
                f"<= {TARGET_RATIO}",
                mark,
            )
        )
        cpu = c["datamill_cpu_median_s"]
        rows.append(
            (
                f"{name}: CPU-s baseline / worker / other children / api",
                f"{c['baseline_cpu_median_s']:.2f} / {cpu['worker']:.2f} / "
                f"{cpu['children'] - cpu['worker']:.2f} / {cpu['api']:.2f}",
                "",
                "",
            )
        )
        rows.append(
            (
                f"{name}: CPU ratio worker (all of datamill) / {c['baseline']}",
                f"{c['cpu_ratio_worker']:.3f} ({c['cpu_ratio']:.3f})",
                "",
                "",
            )
        )
        check = c["check"]
        rows.append(
            (
                f"{name}: rows, checksum equal to the result",
                f"{check['rows']} rows, {check['bytes']} bytes",
                "equal",
                "yes" if check["equal"] else "NO",
            )
        )
    width = max(len(r[0]) for r in rows)
    lines = [
        f"datamill export benchmark, {figures['date']}: W1 {config['events']} events -> "
        f"{figures['cases'][next(iter(figures['cases']))]['check']['rows_expected']} rows, "
        f"{config['repeat']} repeats, metadata {config['metadata']}, "
        f"{figures['machine']['cpus']} cpus, {figures['machine']['memory_gib']} GiB, "
        f"load average {figures['loadavg_start'][:1]} -> {figures['loadavg_end'][:1]}",
        f"{'figure':{width}}  {'value':>26}  {'target':>7}  result",
    ]
    lines += [f"{a:{width}}  {b:>26}  {c:>7}  {d}" for a, b, c, d in rows]
    if not ok["machine_quiet"]:
        peak = max(figures["loadavg_start"][:1] + figures["loadavg_end"][:1])
        lines.append(
            f"warning: the load average reached {peak:.1f} "
            f"on {figures['machine']['cpus']} cpus: other work was running, so wall-clock "
            "figures and their ratios are distorted (the CPU ratios much less); run again "
            "when it is quieter"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_export",
        description="Exports of W1's result through datamill vs pyarrow and DuckDB.",
    )
    parser.add_argument("--events", type=int, default=None, help="default 10000000")
    parser.add_argument("--quick", action="store_true", help="1M events, for trying it out")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds per case")
    parser.add_argument(
        "--case",
        action="append",
        choices=[c.name for c in CASES],
        help="only these cases (repeatable); default all four",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "datamill-bench-export",
        help="where the data, the servers' folders and the server log go",
    )
    parser.add_argument(
        "--metadata", default="sqlite", help="'sqlite' (default) or a postgresql:// URL"
    )
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the servers' data folders")
    args = parser.parse_args(argv)
    events = args.events or (1_000_000 if args.quick else 10_000_000)
    if args.metadata != "sqlite" and not args.metadata.startswith("postgresql"):
        parser.error("--metadata is 'sqlite' or a postgresql URL")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return Options(
        events=events,
        files=args.files,
        seed=args.seed,
        repeat=args.repeat,
        workdir=args.workdir.resolve(),
        metadata=args.metadata,
        json_out=args.json_out,
        keep=args.keep,
        cases=args.case or [c.name for c in CASES],
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
    return 0 if figures["verdict"]["data_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
