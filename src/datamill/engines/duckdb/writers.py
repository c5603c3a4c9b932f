"""Writers that copy a run's result files into an export's output with DuckDB."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from datamill.engines.duckdb import sql_string


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
    files = ", ".join(sql_string(str(f)) for f in sources)
    codec = "uncompressed" if compression == "none" else compression
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET enable_progress_bar=false")
        if filesystem is not None:
            con.register_filesystem(filesystem)
        con.execute(
            f"COPY (SELECT * FROM read_parquet([{files}], hive_partitioning=false)) "
            f"TO {sql_string(target)} (FORMAT parquet, COMPRESSION {codec})"
        )
    finally:
        con.close()
