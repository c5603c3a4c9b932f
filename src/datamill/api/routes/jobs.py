"""Batch jobs, their actions, history, logs and results."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from datamill.api.deps import (
    MAX_RUN_ID,
    PageDep,
    ProjectEditor,
    ProjectReader,
    ResourceName,
    RunIdPath,
    RuntimeDep,
    SessionDep,
)
from datamill.api.waits import WaitSeconds, read_released, wait_until
from datamill.domain.common import Model, Name
from datamill.domain.jobs import Job, JobBody, StartBody
from datamill.domain.runs import (
    TERMINAL,
    History,
    HistoryEntry,
    HistorySort,
    RunLog,
    RunResult,
    RunStatus,
)
from datamill.services import jobs as service
from datamill.services import runs

router = APIRouter(tags=["batch jobs"])
BASE = "/projects/{project}/jobs"


class JobList(Model):
    total: int
    page: int
    size: int
    jobs: list[Job]


class StopJobResult(Model):
    name: str
    scheduleState: str
    runsAffected: int


@router.post(
    BASE + "/{name}",
    status_code=status.HTTP_201_CREATED,
    summary="Create a batch SQL job (validated: sources, SQL, schema) ",
)
def create_job(
    name: ResourceName,
    body: JobBody,
    runtime: RuntimeDep,
    session: SessionDep,
    access: ProjectEditor,
) -> Job:
    return service.create_job(runtime, session, access, name, body)


@router.put(BASE + "/{name}", summary="Replace a batch job (validated as on create)")
def update_job(
    name: ResourceName,
    body: JobBody,
    runtime: RuntimeDep,
    session: SessionDep,
    access: ProjectEditor,
) -> Job:
    return service.update_job(runtime, session, access, name, body)


@router.get(BASE + "/{name}", summary="Get a job with its output schema")
def get_job(name: ResourceName, session: SessionDep, access: ProjectReader) -> Job:
    return service.get_job(session, access, name)


@router.get(BASE, summary="List jobs, optionally those reading a data source or a job")
def list_jobs(
    session: SessionDep,
    access: ProjectReader,
    page: PageDep,
    srcDatasource: Annotated[
        Name | None,
        Query(
            description="only the jobs reading this data source; giving srcJob too is "
            "refused (400 E18011)"
        ),
    ] = None,
    srcJob: Annotated[
        Name | None,
        Query(
            description="only the jobs reading this job's results; giving srcDatasource "
            "too is refused (400 E18011)"
        ),
    ] = None,
) -> JobList:
    result = service.list_jobs(session, access, page, srcDatasource, srcJob)
    return JobList(total=result.total, page=result.page, size=result.size, jobs=result.items)


@router.delete(
    BASE + "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a job no other job reads, with its history and results",
)
def delete_job(
    name: ResourceName, runtime: RuntimeDep, session: SessionDep, access: ProjectEditor
) -> None:
    service.delete_job(runtime, session, access, name)


@router.post(
    BASE + "/{name}/actions/start",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Queue a run now, with param values over the defaults",
)
def start_job(
    name: ResourceName, session: SessionDep, access: ProjectEditor, body: StartBody | None = None
) -> HistoryEntry:
    return runs.start_job(session, access, name, body or StartBody())


@router.post(
    BASE + "/{name}/actions/stop",
    summary="Stop the job's schedule and cancel its queued and running runs",
)
def stop_job(name: ResourceName, session: SessionDep, access: ProjectEditor) -> StopJobResult:
    affected = runs.stop_job(session, access, name)
    return StopJobResult(name=name, scheduleState="stopped", runsAffected=affected)


@router.get(BASE + "/{name}/history", summary="The job's runs, newest or oldest first")
def history(
    name: ResourceName,
    session: SessionDep,
    access: ProjectReader,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    size: Annotated[int, Query(ge=1, le=1000)] = 20,
    sortBy: Annotated[
        HistorySort,
        Query(description="endTime, startTime, batchTime or runId; prefix '-' for descending"),
    ] = "-endTime",
    status: Annotated[RunStatus | None, Query()] = None,
    runId: Annotated[
        int | None, Query(ge=-1, le=MAX_RUN_ID, description="one run; -1 = the latest")
    ] = None,
) -> History:
    return runs.history(session, access, name, page, size, sortBy, status, runId)


@router.get(
    BASE + "/{name}/runs/{runId}",
    summary="One run; with waitSeconds, answered once the run has ended (long poll)",
)
async def get_run(
    name: ResourceName,
    runId: RunIdPath,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    access: ProjectReader,
    waitSeconds: WaitSeconds = 0,
) -> HistoryEntry:
    run_pk, entry = await read_released(
        session, lambda: runs.run_entry(session, access, name, runId)
    )
    if waitSeconds <= 0 or entry.status in TERMINAL:
        return entry
    await wait_until(request, runtime, lambda: runs.has_ended(runtime, run_pk), waitSeconds)
    same_run = entry.runId  # -1 resolved: the answer is about the run waited for
    _, entry = await read_released(session, lambda: runs.run_entry(session, access, name, same_run))
    return entry


@router.get(BASE + "/{name}/runs/{runId}/logs", summary="A run's log")
def run_logs(
    name: ResourceName, runId: RunIdPath, session: SessionDep, access: ProjectReader
) -> RunLog:
    return runs.run_log(session, access, name, runId)


@router.get(BASE + "/{name}/runs/{runId}/result", summary="Rows of a successful run's result")
def run_result(
    name: ResourceName,
    runId: RunIdPath,
    runtime: RuntimeDep,
    session: SessionDep,
    access: ProjectReader,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> RunResult:
    return runs.run_result(runtime, session, access, name, runId, limit)


class SchedulePreview(Model):
    name: str
    scheduleState: str
    fireTimes: list[datetime]


@router.get(BASE + "/{name}/schedule/preview", summary="The next fire times of a job's schedule")
def schedule_preview(
    name: ResourceName,
    session: SessionDep,
    access: ProjectReader,
    count: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> SchedulePreview:
    job, times = service.schedule_preview(session, access, name, count)
    return SchedulePreview(name=name, scheduleState=job.scheduleState, fireTimes=times)
