"""Exports of a job's results and their runs (``/projects/{p}/jobs/{job}/exports``)."""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel

from datamill.client.base import (
    DEFAULT_WAIT_SECONDS,
    Resource,
    api_path,
    json_of,
    walk_pages,
)
from datamill.client.errors import NotFound, RunWaitTimeout
from datamill.client.models import (
    TERMINAL,
    Export,
    ExportHistory,
    ExportRunEntry,
    Page,
    RerunResult,
    RunLog,
)
from datamill.errors import E

__all__ = ["ExportsAPI"]

ExportType = Literal["file", "s3", "kodo", "hdfs", "http", "logdb", "tsdb", "report"]
SpecInput = Mapping[str, Any] | BaseModel


class ExportsAPI(Resource):
    """Exports of a job's results (``/projects/{p}/jobs/{job}/exports/{name}``).

    An export writes the result of every successful run of its job to a destination chosen
    by ``type`` (``file``, ``s3``, ``hdfs``, ``http``, ``logdb``, ``tsdb``, ``report``; the
    specification's ``kodo`` is accepted for ``s3`` and comes back as ``s3``). ``spec`` is
    the type's JSON object, or a pydantic model of it; the server validates it against the
    job's output schema on create and update. Each export of one batch is an *export run*,
    named by the id of the job run whose result it writes.
    """

    def create(
        self, project: str, job: str, name: str, *, type: ExportType | str, spec: SpecInput
    ) -> Export:
        """Create an export; it runs after every successful run of the job from now on."""
        body = {"type": str(type), "spec": json_of(spec)}
        return self._send(
            "POST", Export, api_path("projects", project, "jobs", job, "exports", name), body
        )

    def update(self, project: str, job: str, name: str, *, spec: SpecInput) -> Export:
        """Replace the export's whole spec (its type stays); fields left out take defaults."""
        path = api_path("projects", project, "jobs", job, "exports", name)
        return self._send("PUT", Export, path, {"spec": json_of(spec)})

    def get(self, project: str, job: str, name: str) -> Export:
        """An export, with its spec as stored (defaults filled in)."""
        return self._get(Export, api_path("projects", project, "jobs", job, "exports", name))

    def list(self, project: str, job: str, *, page: int = 1, size: int = 50) -> Page[Export]:
        """One page of the job's exports, by name."""
        path = api_path("projects", project, "jobs", job, "exports")
        return self._page(Export, path, "exports", page, size)

    def iter_all(self, project: str, job: str) -> Iterator[Export]:
        """Every export of the job, walking the pages."""
        return walk_pages(lambda p, s: self.list(project, job, page=p, size=s))

    def list_all(self, project: str, job: str) -> builtins.list[Export]:
        """Every export of the job, as one list."""
        return list(self.iter_all(project, job))

    def delete(self, project: str, job: str, name: str) -> None:
        """Delete an export and its history (not while one of its runs is running)."""
        self._delete(api_path("projects", project, "jobs", job, "exports", name))

    def history(
        self, project: str, job: str, name: str, *, page: int = 1, size: int = 20
    ) -> ExportHistory:
        """One page of the export's runs, newest batch (highest job run id) first."""
        path = api_path("projects", project, "jobs", job, "exports", name, "history")
        return self._get(ExportHistory, path, {"page": page, "size": size})

    def find(self, project: str, job: str, name: str, run_id: int) -> ExportRunEntry | None:
        """The export run of job run ``run_id`` (``-1``: the job's latest run), or ``None``
        while there is none (no such job run, it has not succeeded yet, or the export is
        newer); an unknown job or export still raises :class:`NotFound`."""
        try:
            return self.run(project, job, name, run_id)
        except NotFound as exc:
            if exc.error_code == E.RUN_NOT_FOUND.value.code:
                return None
            raise

    def rerun(self, project: str, job: str, name: str, run_id: int) -> RerunResult:
        """Export the batch of job run ``run_id`` again (``-1``: the job's latest run).

        The job run must be Successful. Its export run, if any, must be finished (it goes
        Restarting, then runs again); without one a new export run is queued.
        """
        path = api_path("projects", project, "jobs", job, "exports", name, "actions", "rerun")
        return self._send("POST", RerunResult, path, {"runId": run_id})

    def run(self, project: str, job: str, name: str, run_id: int) -> ExportRunEntry:
        """The export run of job run ``run_id`` (``-1``: the job's latest run).

        Raises :class:`NotFound` while there is none: the job run has not succeeded (yet),
        or the export was created after it (:meth:`rerun` exports that batch).
        """
        return self._get(ExportRunEntry, self._run_path(project, job, name, run_id))

    def logs(self, project: str, job: str, name: str, run_id: int) -> RunLog:
        """The log of the export run of job run ``run_id`` (``-1``: the job's latest run)."""
        return self._get(RunLog, self._run_path(project, job, name, run_id) + "/logs")

    @staticmethod
    def _run_path(project: str, job: str, name: str, run_id: int) -> str:
        return api_path("projects", project, "jobs", job, "exports", name, "runs", run_id)

    def wait(
        self,
        project: str,
        job: str,
        name: str,
        run_id: int,
        *,
        timeout: float | None = DEFAULT_WAIT_SECONDS,
        poll: float = 0.1,
        max_poll: float | None = None,
    ) -> ExportRunEntry:
        """Wait until the export run of job run ``run_id`` is Successful, Failed or
        Canceled; return it (a failed one is returned, not raised).

        A job run still going is waited for first (its export run is queued when it
        succeeds). Raises :class:`NotFound` when the batch gets no export run (the job run
        ended otherwise, or the export is newer than it) and :class:`RunWaitTimeout` when
        the export run has not ended within ``timeout`` seconds. Each request is a long
        poll (``GET .../exports/{name}/runs/{runId}?waitSeconds=N``), as in
        :meth:`JobsAPI.wait`; ``poll`` and ``max_poll`` work as there.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        job_run = self._client.jobs.run(project, job, run_id)
        run_id = job_run.runId  # -1 resolved: this batch, even if another run starts

        def late(entry: ExportRunEntry | None) -> RunWaitTimeout:
            state = entry.status.value if entry is not None else "not queued"
            return RunWaitTimeout(
                f"the export '{name}' of run {run_id} of job '{job}' in project "
                f"'{project}' is still {state} after {timeout:g} s",
                entry,
            )

        if job_run.status not in TERMINAL:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                self._client.jobs.wait(
                    project, job, run_id, timeout=left, poll=poll, max_poll=max_poll
                )
            except RunWaitTimeout:
                raise late(None) from None
        return self._wait_for_end(
            ExportRunEntry,
            lambda number: self._run_path(project, job, name, number),
            run_id,
            late,
            deadline,
            poll,
            max_poll,
        )
