"""Streaming jobs: save (as a draft, or checked into READY), read, list, delete, and the
API side of the state machine (start, stop).

The engine is not part of the API process: ``start`` moves a job to STARTING and the
streaming engine picks STARTING jobs up (:func:`engine_transition` records its moves).
A stop of a job no engine has picked up yet ends in STOPPED at once.
"""

from __future__ import annotations

import json
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from datamill import engines
from datamill.config import Settings
from datamill.connectors.streams.ingest_log import ingest_log, job_dir
from datamill.domain.common import Page, PageOf
from datamill.domain.streaming import (
    ACTIVE,
    DEFINITION,
    ENGINE,
    GRAPH,
    ActionResult,
    IngestResult,
    JobSort,
    JobState,
    SaveResult,
    StreamingJob,
    StreamingJobBody,
    StreamingJobSummary,
    StreamingMetrics,
    StreamingRuntime,
    check_pipeline,
    check_transition,
    state_after_save,
    state_after_start,
    state_after_stop,
)
from datamill.domain.streaming import check_delete as check_deletable
from datamill.errors import DatamillError, E
from datamill.security.paths import project_folder
from datamill.services.access import ProjectAccess
from datamill.services.datasources import stream_connection_problems
from datamill.services.runtime import Runtime
from datamill.store.base import fetch_page, utcnow
from datamill.store.projects import ProjectRow
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
        "engine": body.engine,
    }


def target_job_problems(
    session: Session, project_id: int, job_id: str, operators: list[Any]
) -> dict[str, list[str]]:
    """Operator id → problems with the job a DISSink names in ``targetJobId``: it must be
    another streaming job of the same project. ``operators`` are ``operatorInstances`` as
    dicts."""
    problems: dict[str, list[str]] = {}
    path = "configs.basicConfigs.targetJobId"
    for op in operators:
        configs = op.get("configs") if isinstance(op, dict) else None
        basic = configs.get("basicConfigs") if isinstance(configs, dict) else None
        target = basic.get("targetJobId") if isinstance(basic, dict) else None
        if not isinstance(target, str) or not target.strip():
            continue
        target = target.strip()
        if target == job_id:
            problem = f"{path}: '{target[:100]}' is this job; name another streaming job"
        else:
            row = session.scalars(
                select(StreamingJobRow).where(
                    StreamingJobRow.project_id == project_id, StreamingJobRow.job_id == target
                )
            ).first()
            if row is None:
                problem = f"{path}: streaming job '{target[:100]}' does not exist in this project"
            elif not _has_ingest_source(row.body):
                problem = (
                    f"{path}: streaming job '{target}' has no PipelineSource without "
                    "dataSourceId to take records"
                )
            else:
                continue
        problems.setdefault(str(op.get("id")), []).append(problem)
    return problems


def _check(
    session: Session, project_id: int, body: StreamingJobBody, job_id: str
) -> dict[str, list[str]]:
    """The whole check: the pipeline itself, then the connections its operators name in
    ``dataSourceId`` (they must exist in the project and be of a type the operator uses)
    and the jobs they name in ``targetJobId``. Problems stay grouped per operator, in the
    pipeline's order."""
    info = {
        key: list(problems)
        for key, problems in check_pipeline(body, engines.streaming_types()).info.items()
    }
    operators = stored(body)["operatorInstances"]
    found = stream_connection_problems(session, project_id, operators)
    for op_id, problems in target_job_problems(session, project_id, job_id, operators).items():
        found.setdefault(op_id, []).extend(problems)
    for op_id, problems in found.items():
        known = info.setdefault(op_id, [])
        known.extend(p for p in problems if p not in known)
    order = [ENGINE, DEFINITION, GRAPH, *(op.id for op in body.operatorInstances)]
    rank = {key: i for i, key in enumerate(order)}
    return dict(sorted(info.items(), key=lambda item: rank.get(item[0], len(rank))))


def _save(
    session: Session, project_id: int, row: StreamingJobRow, body: StreamingJobBody, check: bool
) -> SaveResult:
    """Store ``body`` in ``row`` with the state and check_info the save leads to."""
    info = _check(session, project_id, body, row.job_id) if check else {}
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
    result = _save(session, access.project_id, row, body, check)
    session.add(row)
    session.commit()
    return result


def update_job(
    session: Session, access: ProjectAccess, job_id: str, body: StreamingJobBody, check: bool
) -> SaveResult:
    """Replace the whole job; refused (409) while an engine owns it."""
    row = get_row(session, access, job_id, lock=True)
    result = _save(session, access.project_id, row, body, check)
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
        engine=body.engine,
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


def delete_job(
    session: Session, access: ProjectAccess, job_id: str, settings: Settings | None = None
) -> None:
    """Delete a job that is not running, and (given the settings) its engine folder:
    ingest log, state, logs and metrics. Sink output stays where it was written."""
    row = get_row(session, access, job_id, lock=True)
    check_deletable(job_id, JobState(row.state))
    session.delete(row)
    session.commit()
    if settings is not None:
        shutil.rmtree(job_dir(settings.projects_dir, access.project.name, job_id), True)


def start_job(session: Session, access: ProjectAccess, job_id: str) -> ActionResult:
    """READY or STOPPED -> STARTING; the streaming engine picks the job up from there."""
    row = get_row(session, access, job_id, lock=True)
    state = state_after_start(job_id, JobState(row.state))
    now = utcnow()
    row.started_at, row.stopped_at, row.runner, row.heartbeat_at = now, None, None, None
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


# =========================================================================== running jobs

ACCEPTING = frozenset({JobState.STARTING, JobState.RUNNING, JobState.RESTARTING})
"""States in which the ingest endpoint takes records (they wait in the log while the
engine starts or restarts)."""
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-lines"}
)


def project_root(settings: Settings, project: str) -> Path:
    """The project's folder in the default data root (DISSink targets live under it)."""
    roots = settings.resolved_data_roots
    root = roots.get("default") or next(iter(roots.values()))
    return project_folder(root, project)


def _has_ingest_source(body: dict[str, Any]) -> bool:
    for op in body.get("operatorInstances", []):
        basic = (op.get("configs") or {}).get("basicConfigs") or {}
        if (
            op.get("className") == "PipelineSource"
            and not str(basic.get("dataSourceId") or "").strip()
        ):
            return True
    return False


def _records_error(message: str) -> DatamillError:
    return DatamillError(E.INVALID_RECORDS, message)


def parse_records(raw: bytes, content_type: str) -> bytes:
    """The posted records as JSON lines: a JSON array of objects, or (by Content-Type)
    newline-delimited JSON objects. Refuses anything else, naming the record."""
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _records_error(f"the body is not UTF-8 (byte {exc.start})") from None
    records: list[Any]
    if media in NDJSON_TYPES:
        records = []
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except (ValueError, RecursionError) as exc:
                raise _records_error(f"line {number} is not valid JSON: {exc}") from None
        where = "line"
    elif media in ("application/json", ""):
        try:
            value = json.loads(text) if text.strip() else None
        except (ValueError, RecursionError) as exc:
            raise _records_error(f"the body is not valid JSON: {exc}") from None
        if not isinstance(value, list):
            raise _records_error(
                "the body must be a JSON array of records (objects), or send "
                "Content-Type: application/x-ndjson with one object per line"
            )
        records = value
        where = "record"
    else:
        raise DatamillError(
            E.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type '{media[:80]}' is not accepted; use application/json (an array "
            "of records) or application/x-ndjson (one record per line)",
        )
    lines = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            shown = index + 1 if where == "line" else index
            raise _records_error(
                f"{where} {shown} is a {type(record).__name__}, not an object (a record)"
            )
        try:
            lines.append(
                json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            )
        except ValueError:
            shown = index + 1 if where == "line" else index
            raise _records_error(
                f"{where} {shown} holds NaN or Infinity, which JSON does not allow"
            ) from None
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


def ingest_records(
    runtime: Runtime,
    session: Session,
    access: ProjectAccess,
    job_id: str,
    raw: bytes,
    content_type: str,
) -> IngestResult:
    """Append posted records durably to the job's ingest log (202: the engine reads them
    from there). Refused (409) unless the job is STARTING, RUNNING or RESTARTING."""
    row = get_row(session, access, job_id)
    state = JobState(row.state)
    if state not in ACCEPTING:
        raise DatamillError(
            E.STREAMING_NOT_ACCEPTING,
            f"streaming job '{job_id}' is {state.value}; records are accepted while it is "
            "STARTING, RUNNING or RESTARTING (start it first)",
        )
    if not _has_ingest_source(row.body):
        raise DatamillError(
            E.STREAMING_NO_INGEST,
            f"streaming job '{job_id}' reads its records from data sources; it has no "
            "PipelineSource without dataSourceId to post records to",
        )
    lines = parse_records(raw, content_type)
    count = lines.count(b"\n")
    session.rollback()  # no database work is held while the log is written
    ingest_log(runtime.settings.projects_dir, access.project.name, job_id).append(lines)
    return IngestResult(job_id=job_id, accepted=count)


def _read_metrics(settings: Settings, project: str, job_id: str) -> dict[str, Any]:
    path = job_dir(settings.projects_dir, project, job_id) / "metrics.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data
    except (OSError, ValueError):
        return {}


def job_metrics(
    runtime: Runtime, session: Session, access: ProjectAccess, job_id: str
) -> StreamingMetrics:
    row = get_row(session, access, job_id)
    data = _read_metrics(runtime.settings, access.project.name, job_id)
    data.pop("pid", None)
    data.pop("lag", None)
    return StreamingMetrics.model_validate({**data, "job_id": job_id, "job_state": row.state})


def job_logs(
    runtime: Runtime, session: Session, access: ProjectAccess, job_id: str, page: Page
) -> PageOf[str]:
    """The engine's log lines for the job, oldest first, one page of them."""
    get_row(session, access, job_id)
    path = job_dir(runtime.settings.projects_dir, access.project.name, job_id) / "engine.log"
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    return PageOf[str](
        total=len(lines),
        page=page.page,
        size=page.size,
        items=lines[page.offset : page.offset + page.size],
    )


# --------------------------------------------------------------------------- the supervisor's side


@dataclass
class Claimed:
    """A job a supervisor now owns, as it was when claimed."""

    row_id: int
    job_id: str
    project: str
    state: JobState
    body: dict[str, Any]


def claim_jobs(session: Session, runner: str, lease_seconds: float) -> list[Claimed]:
    """Take the jobs that need an engine: STARTING ones nobody holds, and active ones whose
    runner stopped renewing its lease. Compare-and-set per job, so of several supervisors
    on one database exactly one wins each job."""
    now = utcnow()
    stale = now - timedelta(seconds=lease_seconds)
    waiting = select(
        StreamingJobRow.id, StreamingJobRow.runner, StreamingJobRow.heartbeat_at
    ).where(StreamingJobRow.state.in_([s.value for s in ACTIVE]))
    claimed: list[Claimed] = []
    for row_id, holder, beat in session.execute(waiting).all():
        if holder == runner:
            continue
        if holder is not None and (beat is None or beat >= stale):
            continue  # held (a runner that never beat is not a supervisor: left alone)
        result = session.execute(
            update(StreamingJobRow)
            .where(
                StreamingJobRow.id == row_id,
                StreamingJobRow.state.in_([s.value for s in ACTIVE]),
                or_(
                    StreamingJobRow.runner.is_(None),
                    StreamingJobRow.heartbeat_at < stale,
                ),
            )
            .values(runner=runner, heartbeat_at=now)
        )
        session.commit()
        if getattr(result, "rowcount", 0) != 1:
            continue
        row = session.get(StreamingJobRow, row_id)
        if row is None:
            continue
        session.refresh(row)
        project = session.get(ProjectRow, row.project_id)
        claimed.append(
            Claimed(
                row.id, row.job_id, project.name if project else "", JobState(row.state), row.body
            )
        )
    return claimed


def renew_jobs(session: Session, runner: str, row_ids: list[int]) -> dict[int, JobState]:
    """Renew the lease on the jobs this runner holds; returns the states of those it still
    holds (a job taken over or deleted is missing)."""
    if not row_ids:
        return {}
    session.execute(
        update(StreamingJobRow)
        .where(StreamingJobRow.id.in_(row_ids), StreamingJobRow.runner == runner)
        .values(heartbeat_at=utcnow())
    )
    session.commit()
    rows = session.execute(
        select(StreamingJobRow.id, StreamingJobRow.state).where(
            StreamingJobRow.id.in_(row_ids), StreamingJobRow.runner == runner
        )
    ).all()
    return {row_id: JobState(state) for row_id, state in rows}


def allow_restart(session: Session, row_id: int, message: str) -> bool:
    """Whether the job may restart after a failure (``runtime.restartWhenException``, at
    most ``resumeMaxNum`` restarts in the last hour); records the restart when it may."""
    row = session.get(StreamingJobRow, row_id, with_for_update=True)
    if row is None:
        return False
    runtime = StreamingJobBody.model_validate(row.body).runtime or StreamingRuntime()
    if not runtime.restartWhenException:
        session.rollback()
        return False
    now = utcnow()
    hour_ago = now - timedelta(hours=1)
    recent = [t for t in row.restarts or [] if datetime.fromisoformat(t) > hour_ago]
    if runtime.resumeMaxNum != -1 and len(recent) >= runtime.resumeMaxNum:
        session.rollback()
        return False
    row.restarts = [*recent, now.isoformat()]
    row.state_message = message[:1024]
    session.commit()
    return True


def restarts_in_last_hour(row: StreamingJobRow) -> int:
    hour_ago = utcnow() - timedelta(hours=1)
    return len([t for t in row.restarts or [] if datetime.fromisoformat(t) > hour_ago])
