"""Streaming jobs (seed 000): pipelines of operators, their check, start and stop."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from starlette.concurrency import run_in_threadpool

from datamill.api.deps import PageDep, ProjectEditor, ProjectReader, RuntimeDep, SessionDep
from datamill.domain.common import Model
from datamill.domain.streaming import (
    ActionResult,
    IngestResult,
    JobSort,
    JobState,
    SaveResult,
    StreamingJob,
    StreamingJobBody,
    StreamingJobSummary,
    StreamingMetrics,
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
def delete_job(
    job_id: JobId, session: SessionDep, access: ProjectEditor, runtime: RuntimeDep
) -> None:
    service.delete_job(session, access, job_id, runtime.settings)


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


class StreamingLogs(Model):
    total: int
    page: int
    size: int
    lines: list[str]


RECORDS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": {"type": "object"}},
                "example": [{"device_id": "d1", "value": 21.5, "event_time": 1767225600000}],
            },
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}


@router.post(
    BASE + "/{job_id}/records",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Post records to a job's PipelineSource (a JSON array, or NDJSON by Content-Type)",
    description="Records are appended durably to the job's ingest log and processed by the "
    "engine. Accepted while the job is STARTING, RUNNING or RESTARTING (409 otherwise); the "
    "request body limit of the server applies.",
    openapi_extra=RECORDS_BODY,
)
async def post_records(
    job_id: JobId,
    request: Request,
    session: SessionDep,
    access: ProjectEditor,
    runtime: RuntimeDep,
) -> IngestResult:
    raw = await request.body()
    content_type = request.headers.get("content-type", "application/json")
    return await run_in_threadpool(
        service.ingest_records, runtime, session, access, job_id, raw, content_type
    )


@router.get(
    BASE + "/{job_id}/metrics",
    summary="A running job's figures: records per operator, watermark, state, checkpoints, lag",
)
def get_metrics(
    job_id: JobId, session: SessionDep, access: ProjectReader, runtime: RuntimeDep
) -> StreamingMetrics:
    return service.job_metrics(runtime, session, access, job_id)


@router.get(BASE + "/{job_id}/logs", summary="The engine's log lines for a job, oldest first")
def get_logs(
    job_id: JobId, session: SessionDep, access: ProjectReader, runtime: RuntimeDep, page: PageDep
) -> StreamingLogs:
    result = service.job_logs(runtime, session, access, job_id, page)
    return StreamingLogs(total=result.total, page=result.page, size=result.size, lines=result.items)
