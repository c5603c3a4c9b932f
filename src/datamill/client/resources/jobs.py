"""Batch SQL jobs and their runs (``/projects/{p}/jobs``)."""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypedDict, Unpack

from datamill.client.base import (
    DEFAULT_WAIT_SECONDS,
    Resource,
    api_path,
    json_of,
    walk_pages,
)
from datamill.client.errors import DatamillProtocolError, RunWaitTimeout
from datamill.client.models import (
    Computation,
    Container,
    History,
    HistoryEntry,
    Job,
    JobBody,
    JobStopResult,
    Page,
    Param,
    RunLog,
    RunResult,
    RunStatus,
    Scheduler,
    Src,
)

__all__ = ["JobsAPI"]

SrcInput = Src | Mapping[str, Any]
ComputationInput = Computation | Mapping[str, Any] | str
ContainerInput = Container | Mapping[str, Any] | str
SchedulerInput = Scheduler | Mapping[str, Any] | str
ParamsInput = Sequence[Param | Mapping[str, Any]] | Mapping[str, str]


class JobFields(TypedDict, total=False):
    """The fields of a job that :meth:`JobsAPI.create` and :meth:`JobsAPI.update` take as
    keywords (``None``: not given)."""

    srcs: Sequence[SrcInput] | None
    computation: ComputationInput | None
    container: ContainerInput | None
    scheduler: SchedulerInput | None
    params: ParamsInput | None
    retries: int | None
    max_run_seconds: int | None
    engine: str | None


def _job_body(
    body: JobBody | Mapping[str, Any] | None,
    *,
    srcs: Sequence[SrcInput] | None = None,
    computation: ComputationInput | None = None,
    container: ContainerInput | None = None,
    scheduler: SchedulerInput | None = None,
    params: ParamsInput | None = None,
    retries: int | None = None,
    max_run_seconds: int | None = None,
    engine: str | None = None,
) -> dict[str, Any]:
    """The JSON body of a job create or update: ``body`` with the keyword fields over it."""
    data: dict[str, Any] = dict(json_of(body)) if body is not None else {}
    if srcs is not None:
        data["srcs"] = [json_of(s) for s in srcs]
    if computation is not None:
        data["computation"] = (
            {"type": "SQL", "code": computation}
            if isinstance(computation, str)
            else json_of(computation)
        )
    if container is not None:
        data["container"] = (
            {"type": container, "count": 1} if isinstance(container, str) else json_of(container)
        )
    if scheduler is not None:
        data["scheduler"] = (
            {"type": scheduler} if isinstance(scheduler, str) else json_of(scheduler)
        )
    if params is not None:
        if isinstance(params, Mapping):
            data["params"] = [{"name": k, "default": v} for k, v in params.items()]
        else:
            data["params"] = [json_of(p) for p in params]
    if retries is not None:
        data["retries"] = retries
    if max_run_seconds is not None:
        data["maxRunSeconds"] = max_run_seconds
    if engine is not None:
        data["engine"] = engine
    return data


class JobsAPI(Resource):
    """Batch SQL jobs of a project, their runs (start, stop, history, logs, results).

    A job's body is given either whole, as ``body`` (a :class:`JobBody` or the API's JSON
    object), or as keyword arguments (:class:`JobFields`), which override the fields of
    ``body`` when both are given. The keywords take the domain models or their JSON, plus
    shorthands: ``computation`` as a SQL string, ``container`` as a type (``"1U2G"``, count
    1), ``scheduler`` as a type (``"manual"``) and ``params`` as a ``{name: default}``
    mapping.
    """

    def create(
        self,
        project: str,
        name: str,
        body: JobBody | Mapping[str, Any] | None = None,
        **fields: Unpack[JobFields],
    ) -> Job:
        """Create a job; the server validates its sources, SQL and output schema first."""
        data = _job_body(body, **fields)
        return self._send("POST", Job, api_path("projects", project, "jobs", name), data)

    def update(
        self,
        project: str,
        name: str,
        body: JobBody | Mapping[str, Any] | None = None,
        **fields: Unpack[JobFields],
    ) -> Job:
        """Replace the whole job (fields left out take their defaults), validated as on create."""
        data = _job_body(body, **fields)
        return self._send("PUT", Job, api_path("projects", project, "jobs", name), data)

    def get(self, project: str, name: str) -> Job:
        """A job, with its output schema and schedule state."""
        return self._get(Job, api_path("projects", project, "jobs", name))

    def list(
        self,
        project: str,
        *,
        src_datasource: str | None = None,
        src_job: str | None = None,
        page: int = 1,
        size: int = 50,
    ) -> Page[Job]:
        """One page of the project's jobs by name; optionally only those reading a data source
        (``src_datasource``) or a job (``src_job``), not both."""
        path = api_path("projects", project, "jobs")
        query = {"srcDatasource": src_datasource, "srcJob": src_job}
        return self._page(Job, path, "jobs", page, size, query)

    def iter_all(
        self, project: str, *, src_datasource: str | None = None, src_job: str | None = None
    ) -> Iterator[Job]:
        """Every job (reading ``src_datasource`` or ``src_job``), walking the pages."""
        return walk_pages(
            lambda p, s: self.list(
                project, src_datasource=src_datasource, src_job=src_job, page=p, size=s
            ),
        )

    def list_all(
        self, project: str, *, src_datasource: str | None = None, src_job: str | None = None
    ) -> builtins.list[Job]:
        """Every job (reading ``src_datasource`` or ``src_job``), as one list."""
        return list(self.iter_all(project, src_datasource=src_datasource, src_job=src_job))

    def delete(self, project: str, name: str) -> None:
        """Delete a job that no other job reads, with its history and results."""
        self._delete(api_path("projects", project, "jobs", name))

    def start(
        self, project: str, name: str, params: Mapping[str, str] | None = None
    ) -> HistoryEntry:
        """Queue a run now; ``params`` values override the job's defaults. Returns the run
        (``Ready``); :meth:`wait` waits for it to finish."""
        body = {"params": [{"name": k, "value": v} for k, v in (params or {}).items()]}
        path = api_path("projects", project, "jobs", name, "actions", "start")
        return self._send("POST", HistoryEntry, path, body)

    def stop(self, project: str, name: str) -> JobStopResult:
        """Stop the job's schedule, cancel its queued runs and stop its running ones."""
        path = api_path("projects", project, "jobs", name, "actions", "stop")
        return self._send("POST", JobStopResult, path, None)

    def history(
        self,
        project: str,
        name: str,
        *,
        page: int = 1,
        size: int = 20,
        sort_by: str = "-endTime",
        status: RunStatus | str | None = None,
        run_id: int | None = None,
    ) -> History:
        """One page of the job's runs.

        ``sort_by`` is ``endTime``, ``startTime``, ``batchTime`` or ``runId`` (prefix ``-``
        for descending; unfinished runs come first then); ``status`` keeps one status;
        ``run_id`` gives just that run (``-1``: the latest).
        """
        path = api_path("projects", project, "jobs", name, "history")
        query = {
            "page": page,
            "size": size,
            "sortBy": sort_by,
            "status": str(status) if status is not None else None,
            "runId": run_id,
        }
        return self._get(History, path, query)

    def run(self, project: str, name: str, run_id: int) -> HistoryEntry:
        """One run's history entry (``run_id`` ``-1``: the latest)."""
        history = self.history(project, name, run_id=run_id, size=1)
        if not history.history:
            raise DatamillProtocolError(f"the server sent no history entry for run {run_id}")
        return history.history[0]

    def logs(self, project: str, name: str, run_id: int) -> RunLog:
        """A run's log lines (``run_id`` ``-1``: the latest run)."""
        return self._get(
            RunLog, api_path("projects", project, "jobs", name, "runs", run_id, "logs")
        )

    def result(self, project: str, name: str, run_id: int, *, limit: int = 100) -> RunResult:
        """The first ``limit`` rows of a Successful run's result."""
        path = api_path("projects", project, "jobs", name, "runs", run_id, "result")
        return self._get(RunResult, path, {"limit": limit})

    def wait(
        self,
        project: str,
        name: str,
        run_id: int,
        *,
        timeout: float | None = DEFAULT_WAIT_SECONDS,
        poll: float = 0.1,
        max_poll: float | None = None,
    ) -> HistoryEntry:
        """Wait until the run is Successful, Failed or Canceled; return it.

        A failed or canceled run is returned, not raised: check ``entry.status``. Raises
        :class:`RunWaitTimeout` (a :class:`TimeoutError`) when the run is still unfinished
        after ``timeout`` seconds (``None``: wait for ever); the run itself goes on.

        Each request is a long poll (``GET .../runs/{runId}?waitSeconds=N``): the server
        answers as soon as the run ended, so waiting costs it almost nothing and the answer
        comes at once. Should an answer come back early with the run unfinished, the next
        request follows after ``poll`` seconds; with ``max_poll`` that pause grows by half
        after each such answer up to ``max_poll``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def late(entry: HistoryEntry) -> RunWaitTimeout:
            return RunWaitTimeout(
                f"run {entry.runId} of job '{name}' in project '{project}' is still "
                f"{entry.status.value} after {timeout:g} s",
                entry,
            )

        return self._wait_for_end(
            HistoryEntry,
            lambda number: api_path("projects", project, "jobs", name, "runs", number),
            run_id,
            late,
            deadline,
            poll,
            max_poll,
        )
