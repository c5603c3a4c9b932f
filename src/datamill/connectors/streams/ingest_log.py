"""The durable per-job ingest log: where a streaming job's posted records wait.

Records posted to a job's ingest endpoint are appended, as JSON lines, to numbered segment
files under the job's folder (``ingest/00000000000000000001.ndjson`` …). An append holds an
exclusive ``fcntl`` lock on the log's lock file, writes whole lines in one call and fsyncs
before the endpoint answers, so an accepted record survives a crash of either process. A
segment is closed once it passes :data:`SEGMENT_BYTES`; the next append opens a new one.
The job reads the log through ``runtime.streaming.ingest.IngestSource``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

SEGMENT_BYTES = 64 * 1024 * 1024
"""A segment is closed once it is this large."""
SUFFIX = ".ndjson"


def job_dir(projects_dir: Path, project: str, job_id: str) -> Path:
    """The folder of one streaming job: ingest log, state, staging, logs, metrics."""
    return projects_dir / project / "streaming" / job_id


def ingest_log(projects_dir: Path, project: str, job_id: str) -> IngestLog:
    return IngestLog(job_dir(projects_dir, project, job_id) / "ingest")


def segment_name(number: int) -> str:
    return f"{number:020d}{SUFFIX}"


class IngestLog:
    """The segment files of one job's ingest log (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def segments(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        numbers = []
        for path in self.folder.iterdir():
            if path.name.endswith(SUFFIX) and path.name[: -len(SUFFIX)].isdigit():
                numbers.append(int(path.name[: -len(SUFFIX)]))
        return sorted(numbers)

    def path(self, number: int) -> Path:
        return self.folder / segment_name(number)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, lines: bytes, before_write: Callable[[int, int], None] | None = None) -> None:
        """Append whole JSON lines (``lines`` ends with a newline) durably.

        ``before_write(segment, offset)``, when given, is called under the lock with the
        place the lines are about to be written to (an idempotent writer records it)."""
        if not lines:
            return
        with self._locked():
            numbers = self.segments()
            number = numbers[-1] if numbers else 1
            path = self.path(number)
            if path.exists() and path.stat().st_size >= SEGMENT_BYTES:
                number += 1
                path = self.path(number)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if before_write is not None:
                    before_write(number, os.fstat(fd).st_size)
                view = memoryview(lines)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)

    def size_after(self, segment: int, offset: int) -> int:
        """Bytes held after a position (for the lag estimate)."""
        total = 0
        for number in self.segments():
            if number < segment:
                continue
            try:
                size = self.path(number).stat().st_size
            except FileNotFoundError:
                continue
            total += size - offset if number == segment else size
        return max(0, total)

    def drop_before(self, segment: int) -> int:
        """Delete the segments before ``segment``; returns how many."""
        dropped = 0
        for number in self.segments():
            if number >= segment:
                break
            with contextlib.suppress(FileNotFoundError):
                self.path(number).unlink()
                dropped += 1
        return dropped
