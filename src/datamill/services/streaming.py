"""Streaming jobs: save (as a draft, or checked into READY), read, list, delete, and the
API side of the state machine (start, stop).

The engine is not part of the API process: ``start`` moves a job to STARTING and the
streaming engine picks STARTING jobs up (:func:`engine_transition` records its moves).
A stop of a job no engine has picked up yet ends in STOPPED at once.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from datamill.domain.common import Page, PageOf
from datamill.domain.streaming import (
    ActionResult,
    JobSort,
    JobState,
    SaveResult,
    StreamingJob,
    StreamingJobBody,
    StreamingJobSummary,
    StreamingRuntime,
    check_pipeline,
    check_transition,
    state_after_save,
    state_after_start,
    state_after_stop,
)
from datamill.domain.streaming import check_delete as check_deletable
from datamill.errors import DatamillError, E
from datamill.services.access import ProjectAccess
from datamill.store.base import fetch_page, utcnow
from datamill.store.streaming import StreamingJobRow

SUCCESS = "success"
FAILED = "failed"

_SORT_COLUMNS: dict[str, Any] = {
    "createdAt": StreamingJobRow.created_at,
    "updatedAt": StreamingJobRow.updated_at,
    "jobName": StreamingJobRow.name,
}


def new_job_id() -> str:
    """A random public id: 16 hex digits."""
    return secrets.token_hex(8)


def get_row(
    session: Session, access: ProjectAccess, job_id: str, *, lock: bool = False
) -> StreamingJobRow:
    stmt = select(StreamingJobRow).where(
        StreamingJobRow.project_id == access.project_id, StreamingJobRow.job_id == job_id
    )
    row = session.scalars(stmt.with_for_update() if lock else stmt).first()
    if row is None:
        raise DatamillError(
            E.STREAMING_JOB_NOT_FOUND, f"streaming job '{job_id[:100]}' does not exist"
        )
    return row


def _set_state(row: StreamingJobRow, state: JobState, message: str | None) -> None:
    if row.state != state.value:
        row.state = state.value
        row.state_changed_at = utcnow()
    row.state_message = message[:1024] if message else None


def stored(body: StreamingJobBody) -> dict[str, Any]:
    """The body as stored: operators exactly as given (fields they left out stay out, so
    the editor gets back what it saved), the definition and runtime with their defaults."""
    return {
        "definition": body.definition.model_dump(mode="json"),
        "operatorInstances": [
            op.model_dump(mode="json", exclude_unset=True) for op in body.operatorInstances
        ],
        "runtime": body.runtime.model_dump(mode="json") if body.runtime else None,
    }


def _save(row: StreamingJobRow, body: StreamingJobBody, check: bool) -> SaveResult:
    """Store ``body`` in ``row`` with the state and check_info the save leads to."""
    info = check_pipeline(body).info if check else {}
    state = state_after_save(row.job_id, JobState(row.state), check and not info)
    row.name = body.definition.jobName
    row.body = stored(body)
    row.check_info = info
    row.updated_at = utcnow()
    message = "saved as a draft" if not check else "checked" if not info else "check failed"
    _set_state(row, state, message)
    return SaveResult(
        job_id=row.job_id,
        job_state=state,
        status=FAILED if info else SUCCESS,
        check_info=info,
    )


def create_job(
    session: Session, access: ProjectAccess, body: StreamingJobBody, check: bool
) -> SaveResult:
    row = StreamingJobRow(
        job_id=new_job_id(),
        project_id=access.project_id,
        state=JobState.DRAFT.value,
        state_changed_at=utcnow(),
    )
    result = _save(row, body, check)
    session.add(row)
    session.commit()
    return result


def update_job(
    session: Session, access: ProjectAccess, job_id: str, body: StreamingJobBody, check: bool
) -> SaveResult:
    """Replace the whole job; refused (409) while an engine owns it."""
    row = get_row(session, access, job_id, lock=True)
    result = _save(row, body, check)
    session.commit()
    return result


def job_out(row: StreamingJobRow) -> StreamingJob:
    body = StreamingJobBody.model_validate(row.body)
    return StreamingJob(
        job_id=row.job_id,
        job_state=JobState(row.state),
        definition=body.definition,
        operatorInstances=body.operatorInstances,
        runtime=StreamingRuntime.model_validate((body.runtime or StreamingRuntime()).model_dump()),
        check_info=row.check_info,
        stateMessage=row.state_message,
        createdAt=row.created_at,
        updatedAt=row.updated_at,
        stateChangedAt=row.state_changed_at,
        startedAt=row.started_at,
        stoppedAt=row.stopped_at,
    )


def get_job(session: Session, access: ProjectAccess, job_id: str) -> StreamingJob:
    return job_out(get_row(session, access, job_id))


def _summary(row: StreamingJobRow) -> StreamingJobSummary:
    definition = row.body.get("definition", {})
    return StreamingJobSummary(
        job_id=row.job_id,
        jobName=row.name,
        jobType=definition.get("jobType", "API"),
        jobInputType=definition.get("jobInputType", "PIPELINE_DATA"),
        job_state=JobState(row.state),
        createdAt=row.created_at,
        updatedAt=row.updated_at,
    )


def list_jobs(
    session: Session,
    access: ProjectAccess,
    page: Page,
    state: JobState | None,
    sort: JobSort,
) -> PageOf[StreamingJobSummary]:
    stmt = select(StreamingJobRow).where(StreamingJobRow.project_id == access.project_id)
    if state is not None:
        stmt = stmt.where(StreamingJobRow.state == state.value)
    column = _SORT_COLUMNS[sort.value.lstrip("-")]
    order = column.desc() if sort.value.startswith("-") else column.asc()
    stmt = stmt.order_by(order, StreamingJobRow.id)
    total, rows = fetch_page(session, stmt, page.offset, page.size)
    return PageOf[StreamingJobSummary](
        total=total, page=page.page, size=page.size, items=[_summary(r) for r in rows]
    )


def delete_job(session: Session, access: ProjectAccess, job_id: str) -> None:
    row = get_row(session, access, job_id, lock=True)
    check_deletable(job_id, JobState(row.state))
    session.delete(row)
    session.commit()


def start_job(session: Session, access: ProjectAccess, job_id: str) -> ActionResult:
    """READY or STOPPED -> STARTING; the streaming engine picks the job up from there."""
    row = get_row(session, access, job_id, lock=True)
    state = state_after_start(job_id, JobState(row.state))
    now = utcnow()
    row.started_at, row.stopped_at, row.runner = now, None, None
    _set_state(row, state, f"start requested by {access.principal.name}; waiting for the engine")
    session.commit()
    return ActionResult(job_id=job_id, job_state=state, status=SUCCESS)


def stop_job(session: Session, access: ProjectAccess, job_id: str) -> ActionResult:
    """STARTING, RUNNING or RESTARTING -> STOPPING; the engine running the job completes
    the stop (STOPPED). A job no engine has picked up yet is STOPPED at once."""
    row = get_row(session, access, job_id, lock=True)
    state = state_after_stop(job_id, JobState(row.state))
    who = access.principal.name
    if row.runner is None:
        check_transition(job_id, state, JobState.STOPPED)
        state = JobState.STOPPED
        row.stopped_at = utcnow()
        _set_state(row, state, f"stopped by {who} before an engine picked it up")
    else:
        _set_state(row, state, f"stop requested by {who}")
    session.commit()
    return ActionResult(job_id=job_id, job_state=state, status=SUCCESS)


def engine_transition(
    session: Session,
    row_id: int,
    after: JobState,
    *,
    runner: str | None = None,
    message: str | None = None,
) -> StreamingJobRow:
    """Record a state change made by the streaming engine (``runner`` names the engine
    instance that owns the job from RUNNING on); refuses changes the state machine does
    not allow."""
    row = session.get(StreamingJobRow, row_id, with_for_update=True)
    if row is None:
        raise DatamillError(E.STREAMING_JOB_NOT_FOUND, f"streaming job #{row_id} does not exist")
    check_transition(row.job_id, JobState(row.state), after)
    if after in (JobState.RUNNING, JobState.RESTARTING) and runner is not None:
        row.runner = runner
    if after in (JobState.STOPPED, JobState.FAILED):
        row.runner = None
        row.stopped_at = utcnow()
    _set_state(row, after, message)
    session.commit()
    return row
