"""The output files of a batch: partitions, files per partition and who writes each."""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa

from datamill.connectors.outbound.errors import first_line
from datamill.connectors.sinks.base import (
    ExportBatch,
    ExportContext,
    ParquetCopier,
    SinkError,
    TransientSinkError,
)
from datamill.connectors.sinks.outputs.encoding import scalar_text, write_file
from datamill.connectors.sinks.outputs.formats import FileExportOptions


def _partition_text(value: Any) -> str:
    text = scalar_text(value)
    if text is None or text == "":
        return "__HIVE_DEFAULT_PARTITION__"
    return quote(text, safe="")


def _partitions(table: pa.Table, fields: list[str]) -> Iterator[tuple[str, pa.Table]]:
    """(folder prefix such as ``a=1/b=x/``, rows) for every partition, in sorted order."""
    if not fields:
        yield "", table
        return
    columns = [table.column(f).to_pylist() for f in fields]
    groups: dict[str, list[int]] = {}
    for i in range(table.num_rows):
        folder = "".join(
            f"{f}={_partition_text(col[i])}/" for f, col in zip(fields, columns, strict=True)
        )
        groups.setdefault(folder, []).append(i)
    rest = table.drop_columns(fields)
    for folder in sorted(groups):
        yield folder, rest.take(pa.array(groups[folder], pa.int64()))


Writer = Callable[[Any], None]
"""Writes one output file to the binary stream it is given."""


def bytes_of(writer: Writer) -> bytes:
    if isinstance(writer, ParquetCopy):
        return writer.to_bytes()
    sink = pa.BufferOutputStream()
    writer(sink)
    return bytes(sink.getvalue())


_TRANSIENT_TEXT = re.compile(
    r"connect|timed? ?out|temporar|unavailable|slow ?down|internal ?error|\b50[0-4]\b", re.I
)
"""What a store's error passed through the engine says when it is worth retrying."""


@dataclass
class ParquetCopy:
    """A Parquet output that is the whole result: the engine copies the result files into it.

    The job's result is Parquet already, so with one output file and no partitions there
    is nothing for Arrow to do: the engine's writer (DuckDB's reads and writes the row
    groups in parallel, in their order, with the asked codec: twice as fast as pyarrow's
    single-threaded writer on two cores) copies the run's result files to a path the sink
    chose. To S3 the copy goes through the sink's own ``s3fs`` file system, so the upload
    runs while the engine still writes (``s3fs`` sends parts as its buffer fills).
    """

    files: list[Path]
    compression: str
    temp_dir: Path
    copy: ParquetCopier

    def to_path(self, path: str, filesystem: Any = None) -> None:
        """Write to a local ``path``, or to ``s3://bucket/key`` through ``filesystem``."""
        try:
            self.copy(self.files, path, self.compression, filesystem)
        except Exception as exc:  # the engine's own error, whatever its engine
            text = first_line(exc)
            if filesystem is not None and _TRANSIENT_TEXT.search(text):
                raise TransientSinkError(f"cannot write {path}: {text}") from exc
            raise SinkError(f"cannot write the result as parquet to {path}: {text}") from exc

    def to_bytes(self) -> bytes:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        path = self.temp_dir / f"copy-{secrets.token_hex(6)}.parquet"
        try:
            self.to_path(str(path))
            return path.read_bytes()
        finally:
            path.unlink(missing_ok=True)

    def __call__(self, sink: Any) -> None:
        sink.write(self.to_bytes())


def output_files(
    batch: ExportBatch, spec: FileExportOptions, prefix: str, ctx: ExportContext
) -> tuple[int, Iterator[tuple[str, Writer]]]:
    """(rows, the output files) of a batch: a :class:`ParquetCopy` when the output is one
    Parquet file of the whole result and the engine gave a copier, else :func:`_plan` over
    the result read by Arrow."""
    if (
        ctx.copy_parquet is not None
        and spec.format == "parquet"
        and spec.fileCount == 1
        and not spec.partitionBy
        and batch.parquet_files
    ):
        import pyarrow.parquet as pq

        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in batch.parquet_files)
        copy = ParquetCopy(
            list(batch.parquet_files), spec.compression, ctx.temp_dir, ctx.copy_parquet
        )
        return rows, iter([(f"{prefix}00000{spec.capability.extension}", copy)])
    table = batch.read()
    return table.num_rows, _plan(table, spec, prefix)


def _plan(table: pa.Table, spec: FileExportOptions, prefix: str) -> Iterator[tuple[str, Writer]]:
    """(path relative to the location, its writer) of every output file, in a fixed order."""
    extension = spec.capability.extension
    for folder, rows in _partitions(table, spec.partitionBy):
        total = rows.num_rows
        count = max(1, min(spec.fileCount, total))
        for i in range(count):
            start, end = i * total // count, (i + 1) * total // count
            yield (
                f"{folder}{prefix}{i:05d}{extension}",
                functools.partial(write_file, rows.slice(start, end - start), spec),
            )
