"""The built-in sinks of DISSink, in the sink registry by kind: ``folder`` (records written
as files under the project's data root, ``target``) and ``job`` (records appended to
another streaming job's ingest log, ``targetJobId``). Their factories read the job's
folder and the project's data root from the context's ``extra``.

The folder sink:
Each write is staged as one file per partition under the job's private staging folder,
``<staging>/<epoch>/``; :meth:`FolderSink.commit` moves every staged epoch up to the
committed one into the target folder under deterministic names
(``part-<epoch>-<seq>.<ext>``). On recovery (:meth:`FolderSink.recover`) epochs up to the
last committed checkpoint are finished and later ones discarded: their records will be
produced again from the checkpoint's source positions, so each record lands once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from datamill.connectors.streams.base import StreamContext, StreamSink, register_sink
from datamill.connectors.streams.ingest_log import IngestLog
from datamill.domain.streaming import FOLDER_SINK, JOB_SINK
from datamill.domain.values import json_value
from datamill.runtime.streaming.ingest import JobSink
from datamill.security.paths import resolve_inside

EXTENSIONS = {"JSON": "json", "CSV": "csv", "PARQUET": "parquet"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _publish(source: Path, target: Path) -> None:
    """Move ``source`` to ``target`` atomically (copy first when they are on different
    file systems)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError:
        temp = target.with_name("." + target.name + ".tmp")
        shutil.copyfile(source, temp)
        os.replace(temp, target)
        source.unlink()


def _partition_value(value: object) -> str:
    text = "null" if value is None else str(value)
    return _UNSAFE.sub("_", text)[:100] or "_"


class FolderSink:
    """A :class:`~datamill.connectors.streams.base.StreamSink` writing files to a folder."""

    def __init__(
        self,
        target: Path,
        staging: Path,
        file_format: str = "JSON",
        separator: str | None = None,
        partitioner: str | None = None,
    ) -> None:
        self.target = target
        self.staging = staging
        self.format = file_format
        self.extension = EXTENSIONS[file_format]
        self.separator = separator or ","
        self.partitioner = partitioner
        self._seq: dict[int, int] = {}
        self.rows_written = 0

    def _staged_epochs(self) -> list[int]:
        if not self.staging.is_dir():
            return []
        return sorted(int(p.name) for p in self.staging.iterdir() if p.name.isdigit())

    def recover(self, committed_epoch: int) -> None:
        """Finish the staged epochs up to ``committed_epoch``; discard the later ones."""
        for epoch in self._staged_epochs():
            if epoch <= committed_epoch:
                self._publish_epoch(epoch)
            else:
                shutil.rmtree(self.staging / str(epoch), ignore_errors=True)

    @property
    def copy_format(self) -> str | None:
        """The format the engine may write straight from DuckDB into :meth:`stage_file`
        (Parquet without partitions: DuckDB writes it in parallel, faster than Arrow)."""
        return "PARQUET" if self.format == "PARQUET" and not self.partitioner else None

    def stage_file(self, epoch: int) -> Path:
        """The path of the next staged file of ``epoch`` (for the engine to write to)."""
        folder = self.staging / str(epoch)
        folder.mkdir(parents=True, exist_ok=True)
        seq = self._seq.get(epoch, 0)
        self._seq[epoch] = seq + 1
        return folder / f"part-{epoch:010d}-{seq:06d}.{self.extension}"

    def staged(self, path: Path, rows: int) -> None:
        """The engine wrote ``rows`` rows to ``path``: make it durable (or drop it, empty)."""
        if rows == 0:
            path.unlink(missing_ok=True)
            return
        with path.open("rb+") as handle:
            os.fsync(handle.fileno())
        self.rows_written += rows

    def write(self, table: pa.Table, epoch: int) -> None:
        if table.num_rows == 0:
            return
        staged = self.stage_file(epoch)
        folder, name = staged.parent, staged.name
        if self.partitioner and self.partitioner in table.column_names:
            column = table.column(self.partitioner)
            for value in pc.unique(column).to_pylist():
                mask = pc.is_null(column) if value is None else pc.equal(column, value)
                part = table.filter(mask)
                sub = folder / f"{self.partitioner}={_partition_value(value)}"
                sub.mkdir(parents=True, exist_ok=True)
                self._write_file(part, sub / name)
        else:
            self._write_file(table, folder / name)
        self.rows_written += table.num_rows

    def _write_file(self, table: pa.Table, path: Path) -> None:
        temp = path.with_name(path.name + ".tmp")
        if self.format == "PARQUET":
            pq.write_table(table, temp, compression="zstd")
        elif self.format == "CSV":
            options = pa_csv.WriteOptions(delimiter=self.separator)
            pa_csv.write_csv(table, temp, write_options=options)
        else:
            with temp.open("w", encoding="utf-8") as handle:
                for row in table.to_pylist():
                    handle.write(json.dumps(json_value(row), ensure_ascii=False) + "\n")
        with temp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)

    def _publish_epoch(self, epoch: int) -> None:
        folder = self.staging / str(epoch)
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.endswith(".tmp"):
                _publish(path, self.target / path.relative_to(folder))
        shutil.rmtree(folder, ignore_errors=True)

    def commit(self, epoch: int) -> None:
        for staged in self._staged_epochs():
            if staged <= epoch:
                self._publish_epoch(staged)
                self._seq.pop(staged, None)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.staging.is_dir() and not any(self.staging.iterdir()):
                self.staging.rmdir()


class SinkTargetError(ValueError):
    """A built-in sink's target cannot be used (the job fails with this reason)."""


@register_sink(FOLDER_SINK)
def folder_sink(spec: dict[str, Any], config: dict[str, Any], context: StreamContext) -> StreamSink:
    """DISSink ``target``: a folder of the project's data root."""
    job_dir: Path = context.extra["job_dir"]
    try:
        target = resolve_inside(context.extra["project_root"], str(config.get("target")), "target")
    except Exception as exc:
        raise SinkTargetError(str(exc)) from exc
    return FolderSink(
        target,
        job_dir / "staging" / context.operator_id,
        str(config.get("format") or "JSON"),
        config.get("csvSeparator"),
        config.get("partitioner"),
    )


@register_sink(JOB_SINK)
def job_sink(spec: dict[str, Any], config: dict[str, Any], context: StreamContext) -> StreamSink:
    """DISSink ``targetJobId``: another streaming job's ingest log."""
    job_dir: Path = context.extra["job_dir"]
    target_job = str(config.get("targetJobId") or "").strip()
    if target_job == context.job_id or not target_job.replace("-", "").isalnum():
        raise SinkTargetError(f"targetJobId '{target_job[:100]}' is invalid")
    # jobs of a project share a parent folder (see engine.job_dir)
    log = IngestLog(job_dir.parent / target_job / "ingest")
    return JobSink(log, job_dir / "staging" / context.operator_id)
