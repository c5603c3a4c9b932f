"""Writers that copy a run's result files into an export's output with DuckDB."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
from sqlglot import exp

from datamill.engines.duckdb.sql import literal, literal_list, render


def copy_parquet(
    sources: Sequence[Path], target: str, compression: str, filesystem: Any = None
) -> None:
    """Copy the rows of the Parquet ``sources`` (in their order) into one Parquet file.

    ``target`` is a local path, or ``s3://bucket/key`` written through the fsspec
    ``filesystem`` registered with the connection, so the upload runs while DuckDB still
    writes. ``compression`` is none, snappy or gzip. DuckDB reads and writes the row groups
    in parallel, on all cores; only this statement runs on its own in-memory connection.
    Raises ``duckdb.Error`` carrying DuckDB's (or the store's) message.
    """
    codec = "uncompressed" if compression == "none" else compression
    read = exp.func(
        "read_parquet",
        literal_list(str(f) for f in sources),
        exp.EQ(this=exp.column("hive_partitioning"), expression=exp.false()),
    )
    copy = exp.Copy(
        this=exp.Subquery(this=exp.select("*").from_(read)),
        kind=False,
        files=[literal(target)],
        params=[
            exp.CopyParameter(this=exp.var("FORMAT"), expression=exp.var("parquet")),
            exp.CopyParameter(this=exp.var("COMPRESSION"), expression=exp.var(codec)),
        ],
    )
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET enable_progress_bar=false")
        if filesystem is not None:
            con.register_filesystem(filesystem)
        con.execute(render(copy))
    finally:
        con.close()
