"""Reading and writing jobs' ingest logs (:mod:`datamill.connectors.streams.ingest_log`).

:class:`IngestSource` reads a job's own log. Its position is ``{"segment": n, "offset":
bytes}``: the byte just after the last line it returned. Only complete lines (ending in a
newline) are read, so a reader never sees half of an append in progress. Segments wholly
before a committed checkpoint's position are deleted (:meth:`IngestSource.committed`).
:class:`JobSink` appends a pipeline's output to another job's log.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from datamill.connectors.streams.base import Position
from datamill.connectors.streams.ingest_log import SUFFIX, IngestLog
from datamill.domain.values import json_value
from datamill.engines.streaming import JsonLines

READ_CHUNK = 8 * 1024 * 1024
"""The most bytes one read takes from a segment."""


def encode_records(records: list[dict[str, Any]]) -> bytes:
    """Records as JSON lines."""
    return "".join(json.dumps(record, separators=(",", ":")) + "\n" for record in records).encode()


def _cut(data: bytes, max_lines: int) -> tuple[bytes, int]:
    """The first ``max_lines`` complete lines of ``data`` and how many there are."""
    end = data.rfind(b"\n") + 1
    if end == 0:
        return b"", 0
    data = data[:end]
    count = data.count(b"\n")
    if count <= max_lines:
        return data, count
    index = -1
    for _ in range(max_lines):
        index = data.index(b"\n", index + 1)
    return data[: index + 1], max_lines


class IngestSource:
    """A :class:`~datamill.connectors.streams.base.StreamSource` over one job's ingest log.

    Besides ``read`` (records as dicts) it offers :meth:`read_lines`, which the engine
    prefers: the raw JSON lines, parsed by DuckDB instead of Python.
    """

    def __init__(self, log: IngestLog, poll_seconds: float = 0.02) -> None:
        self.log = log
        self.poll = poll_seconds
        self.segment = 0
        self.offset = 0
        self._avg_line = 100.0

    def seek(self, position: Position | None) -> None:
        if position is None:
            numbers = self.log.segments()
            self.segment, self.offset = (numbers[0] if numbers else 1), 0
        else:
            self.segment, self.offset = int(position["segment"]), int(position["offset"])

    def position(self) -> Position:
        return {"segment": self.segment, "offset": self.offset}

    def _read_once(self, max_records: int) -> JsonLines:
        while True:
            path = self.log.path(self.segment)
            data = b""
            try:
                with path.open("rb") as handle:
                    handle.seek(self.offset)
                    data = handle.read(READ_CHUNK)
            except FileNotFoundError:
                pass
            chunk, count = _cut(data, max_records)
            if count:
                self.offset += len(chunk)
                self._avg_line = 0.9 * self._avg_line + 0.1 * (len(chunk) / count)
                return JsonLines(chunk, count)
            later = [n for n in self.log.segments() if n > self.segment]
            if not later:
                return JsonLines(b"", 0)
            # a later segment exists: this one was complete before it was started
            self.segment, self.offset = later[0], 0

    def read_lines(self, max_records: int, timeout_seconds: float) -> JsonLines:
        """Up to ``max_records`` JSON lines, waiting at most ``timeout_seconds``."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            lines = self._read_once(max_records)
            if lines.count or time.monotonic() >= deadline:
                return lines
            time.sleep(min(self.poll, max(0.0, deadline - time.monotonic())))

    def read(self, max_records: int, timeout_seconds: float) -> list[dict[str, Any]]:
        lines = self.read_lines(max_records, timeout_seconds)
        return [json.loads(line) for line in lines.data.splitlines() if line]

    def committed(self, position: Position) -> None:
        self.log.drop_before(int(position["segment"]))

    def lag(self) -> int | None:
        remaining = self.log.size_after(self.segment, self.offset)
        return int(remaining / self._avg_line) if remaining else 0

    def close(self) -> None:
        return None


class JobSink:
    """A :class:`~datamill.connectors.streams.base.StreamSink` appending rows, as JSON
    records, to another job's ingest log (DISSink ``targetJobId``), exactly once.

    :meth:`write` stages an epoch's rows as JSON lines in ``staging/<epoch>.ndjson``
    (fsynced); :meth:`commit` appends every staged epoch up to the committed one with
    :meth:`IngestLog.append`, the same append the ingest endpoint makes. Before writing,
    under the log's lock, the sink records where the lines will go (``pending.json``:
    epoch, segment, offset); after the append it records the epoch as done
    (``done.json``). After a crash, :meth:`recover` finishes the committed epochs: an
    epoch whose pending mark shows its lines already in the log (the bytes at that
    place are the staged ones, or the segment was consumed and deleted since) is not
    appended again, so each record lands in the target log once.
    """

    def __init__(self, log: IngestLog, staging: Path) -> None:
        self.log = log
        self.staging = staging
        self.rows_written = 0

    def _staged(self) -> list[int]:
        if not self.staging.is_dir():
            return []
        return sorted(
            int(p.name[: -len(SUFFIX)])
            for p in self.staging.iterdir()
            if p.name.endswith(SUFFIX) and p.name[: -len(SUFFIX)].isdigit()
        )

    def _path(self, epoch: int) -> Path:
        return self.staging / f"{epoch}{SUFFIX}"

    def _read_mark(self, name: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.staging / name).read_text(encoding="utf-8"))
            return data
        except (OSError, ValueError):
            return {}

    def _write_mark(self, name: str, mark: dict[str, Any]) -> None:
        path = self.staging / name
        temp = path.with_name(name + ".tmp")
        with temp.open("w", encoding="utf-8") as handle:
            json.dump(mark, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)

    def write(self, table: pa.Table, epoch: int) -> None:
        if table.num_rows == 0:
            return
        self.staging.mkdir(parents=True, exist_ok=True)
        lines = encode_records([json_value(row) for row in table.to_pylist()])
        with self._path(epoch).open("ab") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
        self.rows_written += table.num_rows

    def _appended(self, epoch: int, data: bytes) -> bool:
        """Whether the lines of ``epoch`` are in the log already (see the class doc)."""
        done = self._read_mark("done.json")
        if int(done.get("epoch", 0)) >= epoch:
            return True
        pending = self._read_mark("pending.json")
        if int(pending.get("epoch", 0)) != epoch:
            return False
        segment, offset = int(pending["segment"]), int(pending["offset"])
        try:
            with self.log.path(segment).open("rb") as handle:
                handle.seek(offset)
                return handle.read(len(data)) == data
        except FileNotFoundError:
            # deleted after its records were consumed, when a later segment exists
            return any(number > segment for number in self.log.segments())

    def _append(self, epoch: int) -> None:
        path = self._path(epoch)
        data = path.read_bytes()
        if data and not self._appended(epoch, data):

            def mark(segment: int, offset: int) -> None:
                self._write_mark(
                    "pending.json", {"epoch": epoch, "segment": segment, "offset": offset}
                )

            self.log.append(data, before_write=mark)
        self._write_mark("done.json", {"epoch": epoch})
        path.unlink(missing_ok=True)

    def recover(self, committed_epoch: int) -> None:
        """Finish the staged epochs up to ``committed_epoch``; discard the later ones."""
        for epoch in self._staged():
            if epoch <= committed_epoch:
                self._append(epoch)
            else:
                self._path(epoch).unlink(missing_ok=True)

    def commit(self, epoch: int) -> None:
        for staged in self._staged():
            if staged <= epoch:
                self._append(staged)

    def close(self) -> None:
        return None
