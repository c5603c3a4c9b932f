"""The input of reference workload W1 (docs/benchmarks.md), generated with DuckDB.

W1 is ``events`` events as Parquet, split into ``files`` files of (almost) equal size:

* ``device_id`` VARCHAR: 10 000 distinct keys ``dev00000`` .. ``dev09999``
* ``event_time`` TIMESTAMP with millisecond precision (Parquet ``TIMESTAMP(MILLIS)``), over
  one hour from 2026-01-01 00:00:00. The rows advance through the hour in order with up to
  0.5 s of jitter, as a device stream would arrive: file k holds the k-th slice of the hour,
  and a micro-batch reader (W2) sees slightly out-of-order events, never very late ones.
* ``value`` DOUBLE: uniform in [-10, 30) with five decimals (a temperature in Celsius)
* ``status`` VARCHAR: ``ok``, ``warn``, ``err``, ``idle`` or ``x``, each 20 % of the rows

Every column is a function of the row number and the seed through DuckDB's ``hash()``, not of
``random()``: the output is the same whatever the number of threads or the order in which
they produce rows (``setseed`` + ``random()`` is only reproducible on one thread), and the
generation runs on all cores. The same DuckDB version gives the same bytes for the same seed.

Usage: ``python -m benchmarks.w1_data OUT_DIR --events 10000000 --files 8 --seed 1``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

DEVICES = 10_000
HOUR_MS = 3_600_000
JITTER_MS = 500
START = "2026-01-01 00:00:00"
STATUSES = ("ok", "warn", "err", "idle", "x")
MANIFEST = "_w1.json"


@dataclass(frozen=True)
class W1Data:
    """The generated files and what they hold."""

    folder: Path
    files: list[Path]
    events: int
    seed: int
    generated: bool
    seconds: float

    @property
    def glob(self) -> str:
        return str(self.folder / "events-*.parquet")


def file_name(index: int, count: int) -> str:
    return f"events-{index:05d}-of-{count:05d}.parquet"


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def select_sql(events: int, seed: int, first: int, last: int) -> str:
    """The SELECT producing rows ``first`` .. ``last - 1`` of the ``events`` rows."""
    statuses = "[" + ", ".join(_sql_string(s) for s in STATUSES) + "]"
    return f"""
        SELECT
            'dev' || lpad(CAST(hash(i, {seed}, 1) % {DEVICES} AS VARCHAR), 5, '0') AS device_id,
            CAST(
                TIMESTAMP '{START}' + to_milliseconds(
                    least(
                        {HOUR_MS - 1},
                        i * {HOUR_MS} // {events} + hash(i, {seed}, 2) % {JITTER_MS}
                    )
                ) AS TIMESTAMP_MS
            ) AS event_time,
            CAST(hash(i, {seed}, 3) % 4000000 AS DOUBLE) / 100000.0 - 10.0 AS value,
            {statuses}[CAST(hash(i, {seed}, 4) % {len(STATUSES)} AS BIGINT) + 1] AS status
        FROM range({first}, {last}) AS r(i)
    """


def _bounds(events: int, files: int) -> list[tuple[int, int]]:
    return [(events * k // files, events * (k + 1) // files) for k in range(files)]


def _complete(folder: Path, events: int, files: int, seed: int) -> list[Path] | None:
    """The files when they exist with the expected parameters and row counts, else None."""
    manifest = folder / MANIFEST
    paths = [folder / file_name(k, files) for k in range(files)]
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if meta != {"events": events, "files": files, "seed": seed, "version": duckdb.__version__}:
        return None
    if not all(p.is_file() for p in paths):
        return None
    con = duckdb.connect(":memory:")
    try:
        rows = con.execute(
            "SELECT file_name, num_rows FROM parquet_file_metadata(?)", [[str(p) for p in paths]]
        ).fetchall()
    except duckdb.Error:
        return None
    finally:
        con.close()
    counts = {Path(name).name: int(n) for name, n in rows}
    for path, (first, last) in zip(paths, _bounds(events, files), strict=True):
        if counts.get(path.name) != last - first:
            return None
    return paths


def generate(
    folder: Path | str, events: int = 10_000_000, files: int = 8, seed: int = 1, threads: int = 0
) -> W1Data:
    """Write W1 into ``folder`` unless it is already there (same parameters, right counts)."""
    if events < files or files < 1:
        raise ValueError("need at least one event per file and at least one file")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    existing = _complete(folder, events, files, seed)
    if existing is not None:
        return W1Data(folder, existing, events, seed, False, time.perf_counter() - began)
    (folder / MANIFEST).unlink(missing_ok=True)
    for stale in folder.glob("events-*.parquet"):
        stale.unlink()
    con = duckdb.connect(":memory:")
    paths = []
    try:
        con.execute(f"SET threads={int(threads or os.cpu_count() or 1)}")
        con.execute("SET preserve_insertion_order=true")
        for k, (first, last) in enumerate(_bounds(events, files)):
            path = folder / file_name(k, files)
            partial = path.with_suffix(".parquet.tmp")
            con.execute(
                f"COPY ({select_sql(events, seed, first, last)}) TO {_sql_string(str(partial))} "
                "(FORMAT parquet, COMPRESSION snappy)"
            )
            os.replace(partial, path)
            paths.append(path)
    finally:
        con.close()
    manifest = {"events": events, "files": files, "seed": seed, "version": duckdb.__version__}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return W1Data(folder, paths, events, seed, True, time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.w1_data", description="Generate W1's input as Parquet."
    )
    parser.add_argument("out_dir", type=Path, help="folder to write the Parquet files into")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="DuckDB threads; 0 = all cores")
    args = parser.parse_args(argv)
    data = generate(args.out_dir, args.events, args.files, args.seed, args.threads)
    verb = "generated" if data.generated else "reused"
    print(
        f"{verb} {data.events} events in {len(data.files)} files under {data.folder} "
        f"({data.seconds:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
