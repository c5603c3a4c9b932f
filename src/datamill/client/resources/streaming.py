"""Streaming pipelines (``/projects/{p}/streaming/jobs``)."""

from __future__ import annotations

import builtins
import json as jsonlib
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from datamill.client.base import (
    Resource,
    api_path,
    json_of,
    pause_before_next_poll,
    read_page,
    walk_pages,
)
from datamill.client.errors import StateWaitTimeout
from datamill.client.models import (
    Page,
    StreamingActionResult,
    StreamingIngestResult,
    StreamingJob,
    StreamingJobBody,
    StreamingJobState,
    StreamingJobSummary,
    StreamingMetrics,
    StreamingSaveResult,
)

__all__ = ["StreamingAPI"]


StreamingBodyInput = StreamingJobBody | Mapping[str, Any]
Record = Mapping[str, Any] | str | bytes
StateInput = StreamingJobState | str

INGEST_CHUNK_RECORDS = 1000
"""Records per request when :meth:`StreamingAPI.ingest` sends an iterable as NDJSON."""
INGEST_CHUNK_BYTES = 512 * 1024
"""Bytes per NDJSON request at most (the server's default body limit is 1 MiB); a single
larger record is still sent, alone, and the server judges it."""
NDJSON = "application/x-ndjson"


def _ndjson_line(record: Record) -> bytes:
    """One record as one NDJSON line: a mapping is encoded, a str or bytes is taken as an
    already encoded JSON object (its line breaks removed at the ends)."""
    if isinstance(record, bytes):
        line = record.strip(b"\r\n")
    elif isinstance(record, str):
        line = record.strip("\r\n").encode("utf-8")
    else:
        line = jsonlib.dumps(dict(record), ensure_ascii=False, default=str).encode("utf-8")
    return line + b"\n"


def _chunks(records: Iterable[Record], max_records: int, max_bytes: int) -> Iterator[bytes]:
    """NDJSON bodies of at most ``max_records`` records and (but for one huge record)
    ``max_bytes`` bytes; blank lines are skipped."""
    lines: list[bytes] = []
    size = 0
    for record in records:
        line = _ndjson_line(record)
        if not line.strip():
            continue
        if lines and (len(lines) >= max_records or size + len(line) > max_bytes):
            yield b"".join(lines)
            lines, size = [], 0
        lines.append(line)
        size += len(line)
    if lines:
        yield b"".join(lines)


class StreamingAPI(Resource):
    """Streaming pipelines of a project (``/projects/{p}/streaming/jobs/{job_id}``).

    A job is a graph of operators (seed 000): ``body`` is a :class:`StreamingJobBody` or its
    JSON (``definition``, ``operatorInstances``, ``runtime``). Jobs are addressed by the id
    the server gives them on :meth:`create`. Saving with ``check=True`` validates the job
    (graph, configurations, schemas and the connections named in ``dataSourceId``): it is
    READY when it passes, else it stays a DRAFT and ``check_info`` names each operator's
    problems. :meth:`start` hands a READY or STOPPED job to the streaming engine;
    :meth:`ingest` posts records to a running job's PipelineSource.
    """

    def _job(self, project: str, job_id: str, *rest: str) -> str:
        return api_path("projects", project, "streaming", "jobs", job_id, *rest)

    def create(
        self, project: str, body: StreamingBodyInput, *, check: bool = False
    ) -> StreamingSaveResult:
        """Create a job: a draft, or with ``check`` READY when the check finds nothing."""
        path = api_path("projects", project, "streaming", "jobs")
        data = self._client.request(
            "POST", path, params={"check": str(check).lower()}, json=json_of(body)
        )
        return self._client.parse(StreamingSaveResult, data)

    def update(
        self, project: str, job_id: str, body: StreamingBodyInput, *, check: bool = False
    ) -> StreamingSaveResult:
        """Replace the whole job (409 while it runs); saved as for :meth:`create`."""
        data = self._client.request(
            "PUT",
            self._job(project, job_id),
            params={"check": str(check).lower()},
            json=json_of(body),
        )
        return self._client.parse(StreamingSaveResult, data)

    def get(self, project: str, job_id: str) -> StreamingJob:
        """A job with its state, why it is in it, and the problems of its last check."""
        return self._get(StreamingJob, self._job(project, job_id))

    def list(
        self,
        project: str,
        *,
        state: StateInput | None = None,
        sort_by: str = "-createdAt",
        page: int = 1,
        size: int = 50,
    ) -> Page[StreamingJobSummary]:
        """One page of the project's jobs (only those in ``state`` if given); ``sort_by`` is
        ``createdAt``, ``updatedAt`` or ``jobName``, ``-`` first for descending."""
        path = api_path("projects", project, "streaming", "jobs")
        query = {"state": str(state) if state is not None else None, "sortBy": sort_by}
        return self._page(StreamingJobSummary, path, "jobs", page, size, query)

    def iter_all(
        self, project: str, *, state: StateInput | None = None, sort_by: str = "-createdAt"
    ) -> Iterator[StreamingJobSummary]:
        """Every job (in ``state``), walking the pages."""
        return walk_pages(
            lambda p, s: self.list(project, state=state, sort_by=sort_by, page=p, size=s),
        )

    def list_all(
        self, project: str, *, state: StateInput | None = None, sort_by: str = "-createdAt"
    ) -> builtins.list[StreamingJobSummary]:
        """Every job (in ``state``), as one list."""
        return list(self.iter_all(project, state=state, sort_by=sort_by))

    def delete(self, project: str, job_id: str) -> None:
        """Delete a job that is not running, with its state and ingest log."""
        self._delete(self._job(project, job_id))

    def start(self, project: str, job_id: str) -> StreamingActionResult:
        """Start a READY or STOPPED job: it is STARTING until the engine runs it
        (:meth:`wait` for RUNNING)."""
        return self._send(
            "POST", StreamingActionResult, self._job(project, job_id, "actions", "start"), None
        )

    def stop(self, project: str, job_id: str) -> StreamingActionResult:
        """Stop a STARTING, RUNNING or RESTARTING job: STOPPING, then STOPPED."""
        return self._send(
            "POST", StreamingActionResult, self._job(project, job_id, "actions", "stop"), None
        )

    def wait(
        self,
        project: str,
        job_id: str,
        state: StateInput | Iterable[StateInput],
        *,
        timeout: float | None = 60.0,
        poll: float = 0.2,
        max_poll: float | None = 2.0,
    ) -> StreamingJob:
        """Poll the job until it is in ``state`` (one state or several) and return it.

        A job that ends FAILED meanwhile is returned as well (when FAILED is not waited
        for): check ``job.job_state`` and ``job.stateMessage``. Raises
        :class:`StateWaitTimeout` (a :class:`TimeoutError`) when ``timeout`` seconds go by
        first (``None``: wait for ever). ``poll`` and ``max_poll`` work as in
        :meth:`JobsAPI.wait`.
        """
        wanted = (
            {StreamingJobState(state)}
            if isinstance(state, str)
            else {StreamingJobState(s) for s in state}
        )
        ends = wanted | {StreamingJobState.FAILED}
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(project, job_id)
            if job.job_state in ends:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                names = " or ".join(sorted(s.value for s in wanted))
                raise StateWaitTimeout(
                    f"streaming job '{job_id}' in project '{project}' is still "
                    f"{job.job_state.value}, not {names}, after {timeout:g} s",
                    job,
                )
            poll = pause_before_next_poll(poll, deadline, max_poll)

    def ingest(
        self,
        project: str,
        job_id: str,
        records: Iterable[Record],
        *,
        chunk_records: int = INGEST_CHUNK_RECORDS,
        chunk_bytes: int = INGEST_CHUNK_BYTES,
    ) -> StreamingIngestResult:
        """Post records to a running job's PipelineSource (the job must be STARTING,
        RUNNING or RESTARTING).

        A list or tuple of mappings goes in one request as a JSON array. Any other iterable
        (a generator, a file's lines) is sent as NDJSON in chunks of ``chunk_records``
        records and at most ``chunk_bytes`` bytes, read lazily; its items are mappings, or
        str / bytes lines that already hold one JSON object each. Returns the records
        accepted in all. When a chunk is refused its error is raised; the chunks sent
        before it stay accepted.
        """
        if isinstance(records, Mapping | str | bytes):
            raise TypeError("records must be an iterable of records, not a single record")
        path = self._job(project, job_id, "records")
        if isinstance(records, builtins.list | tuple) and all(
            isinstance(r, Mapping) for r in records
        ):
            data = self._client.request("POST", path, json=[dict(r) for r in records])
            return self._client.parse(StreamingIngestResult, data)
        if chunk_records < 1 or chunk_bytes < 1:
            raise ValueError("chunk_records and chunk_bytes must be at least 1")
        accepted = 0
        for body in _chunks(records, chunk_records, chunk_bytes):
            data = self._client.request("POST", path, content=body, content_type=NDJSON)
            accepted += self._client.parse(StreamingIngestResult, data).accepted
        return StreamingIngestResult(job_id=job_id, accepted=accepted)

    def metrics(self, project: str, job_id: str) -> StreamingMetrics:
        """What the engine last reported: records in and out per operator, watermark,
        state size, last checkpoint, source lag (empty figures before the first start)."""
        return self._get(StreamingMetrics, self._job(project, job_id, "metrics"))

    def logs(self, project: str, job_id: str, *, page: int = 1, size: int = 50) -> Page[str]:
        """One page of the engine's log lines for the job, oldest first."""
        data = self._client.request(
            "GET", self._job(project, job_id, "logs"), params={"page": page, "size": size}
        )
        return read_page(data, "lines", str)

    def iter_logs(self, project: str, job_id: str) -> Iterator[str]:
        """Every log line, walking the pages."""
        return walk_pages(lambda p, s: self.logs(project, job_id, page=p, size=s))
