"""Streaming jobs (seed 000): pipelines of operators, their check, start and stop."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from datamill.api.deps import PageDep, ProjectEditor, ProjectReader, SessionDep
from datamill.domain.common import Model
from datamill.domain.streaming import (
    ActionResult,
    JobSort,
    JobState,
    SaveResult,
    StreamingJob,
    StreamingJobBody,
    StreamingJobSummary,
)
from datamill.services import streaming as service

router = APIRouter(tags=["streaming jobs"])
BASE = "/projects/{project}/streaming/jobs"
JobId = Annotated[str, Path(min_length=1, max_length=100, description="the job's id")]
Check = Annotated[
    bool,
    Query(
        description="false: save as a draft, whatever the configuration; true: check the "
        "job too: READY when it passes, else DRAFT with the problems in check_info"
    ),
]


class StreamingJobList(Model):
    total: int
    page: int
    size: int
    jobs: list[StreamingJobSummary]


@router.post(
    BASE,
    status_code=status.HTTP_201_CREATED,
    summary="Create a streaming job (a draft; check=true checks it as well)",
)
def create_job(
    body: StreamingJobBody, session: SessionDep, access: ProjectEditor, check: Check = False
) -> SaveResult:
    return service.create_job(session, access, body, check)


@router.put(
    BASE + "/{job_id}",
    summary="Replace a streaming job; check=true checks it into READY (409 while it runs)",
)
def update_job(
    job_id: JobId,
    body: StreamingJobBody,
    session: SessionDep,
    access: ProjectEditor,
    check: Check = False,
) -> SaveResult:
    return service.update_job(session, access, job_id, body, check)


@router.get(
    BASE + "/{job_id}",
    summary="Get a streaming job with its state and last check",
    response_model_exclude_unset=True,
)
def get_job(job_id: JobId, session: SessionDep, access: ProjectReader) -> StreamingJob:
    return service.get_job(session, access, job_id)


@router.get(BASE, summary="List streaming jobs, optionally those in one state")
def list_jobs(
    session: SessionDep,
    access: ProjectReader,
    page: PageDep,
    state: Annotated[JobState | None, Query(description="only jobs in this state")] = None,
    sortBy: Annotated[JobSort, Query(description="order; '-' for descending")] = (
        JobSort.createdAtDesc
    ),
) -> StreamingJobList:
    result = service.list_jobs(session, access, page, state, sortBy)
    return StreamingJobList(
        total=result.total, page=result.page, size=result.size, jobs=result.items
    )


@router.delete(
    BASE + "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a streaming job that is not running (409 while it runs)",
)
def delete_job(job_id: JobId, session: SessionDep, access: ProjectEditor) -> None:
    service.delete_job(session, access, job_id)


@router.post(
    BASE + "/{job_id}/actions/start",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start a READY or STOPPED job: it becomes STARTING until the engine runs it",
)
def start_job(job_id: JobId, session: SessionDep, access: ProjectEditor) -> ActionResult:
    return service.start_job(session, access, job_id)


@router.post(
    BASE + "/{job_id}/actions/stop",
    summary="Stop a STARTING, RUNNING or RESTARTING job (STOPPING, then STOPPED)",
)
def stop_job(job_id: JobId, session: SessionDep, access: ProjectEditor) -> ActionResult:
    return service.stop_job(session, access, job_id)
