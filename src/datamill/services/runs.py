"""Runs: queueing, claiming, heartbeats, finishing, stop / rerun, history, logs, results.

Every change of a run's status goes through :func:`_transition`, a conditional UPDATE
(``WHERE status = <expected>``): two processes racing for the same run cannot both win,
on SQLite or PostgreSQL, and no transition outside the state machine in
:mod:`datamill.domain.runs` is ever written.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.elements import ClauseElement

from datamill.domain.jobs import StartBody
from datamill.domain.runs import (
    ACTIVE,
    CLAIMABLE,
    TERMINAL,
    ExportRunEntry,
    History,
    HistoryEntry,
    RerunResult,
    RunLog,
    RunResult,
    RunStatus,
    StopResult,
    allowed,
    check_rerun,
    check_stop,
)
from datamill.domain.values import json_value
from datamill.errors import DatamillError, E
from datamill.scheduler.triggers import reset_schedule
from datamill.services.access import ProjectAccess
from datamill.services.jobrefs import body_of, effective, get_job_row
from datamill.services.runtime import Runtime
from datamill.services.variables import user_definitions
from datamill.services.wakeups import mark_runs_changed
from datamill.store import runs as store
from datamill.store.base import utcnow
from datamill.store.exports import ExportRow
from datamill.store.jobs import JobRow
from datamill.store.runs import JOB_TARGET, RunRow

Run = RunRow
"""A run as the store holds it; the processes hand it back to this module's functions."""

DEFAULT_EXPORT_RETRIES = 3


def _transition(
    session: Session,
    run: RunRow,
    after: RunStatus,
    *,
    commit: bool = True,
    holder: str | None = None,
    **values: Any,
) -> bool:
    """Move ``run`` from its current status to ``after`` if nobody changed it meanwhile.

    False (and nothing written) when the run is no longer in a state that allows the move:
    another process may have moved it since the caller looked, which is a race, not a bug.
    With ``holder``, the run must also still be claimed by that worker. On success ``run``
    carries the values written (no second read of the row).
    """
    before = RunStatus(run.status)
    if not allowed(before, after):
        return False
    if not store.transition(session, run.id, before, after, holder, values):
        if commit:  # end the transaction (and its row locks); a caller's open one stays
            session.rollback()
        return False
    for key, value in {"status": after.value, **values}.items():
        if isinstance(value, ClauseElement):  # computed by the store: read it when used
            session.expire(run, [key])
        else:
            set_committed_value(run, key, value)
    if after in CLAIMABLE or after in TERMINAL:
        mark_runs_changed(session)  # idle workers claim it; waiting clients see the end
    if commit:
        session.commit()
    return True


def log_line(
    session: Session, run_pk: int, line: str, level: str = "info", *, commit: bool = True
) -> None:
    store.add_log_line(session, run_pk, line, level)
    if commit:
        session.commit()


# --- queueing ------------------------------------------------------------------------------


def run_variables(session: Session, project_id: int) -> dict[str, Any]:
    """The project's user variables as a run freezes them."""
    return {
        name: v.model_dump(mode="json") for name, v in user_definitions(session, project_id).items()
    }


def new_run(
    session: Session,
    job: JobRow,
    batch_time: datetime,
    params: dict[str, str],
    trigger: str,
    *,
    variables: dict[str, Any] | None = None,
    flush: bool = True,
) -> RunRow:
    """Add a Ready run of ``job`` for ``batch_time`` to the session (not committed).

    The params and the user variables (``variables``: already read for the project) are
    frozen into the run, so a rerun of the batch reads the same inputs with the same
    values. A second run for the same batch fails the flush with IntegrityError (the
    store's unique key on job and batch time). Without ``flush`` the caller flushes (many
    runs in one statement) before it needs the run's id.
    """
    run_id = job.next_run_id
    job.next_run_id = run_id + 1
    run = RunRow(
        project_id=job.project_id,
        job_id=job.id,
        run_id=run_id,
        batch_time=batch_time,
        status=RunStatus.Ready.value,
        params=params,
        trigger=trigger,
        variables=dict(
            variables if variables is not None else run_variables(session, job.project_id)
        ),
    )
    session.add(run)
    if flush:
        session.flush()
    mark_runs_changed(session)
    return run


def queue_run(
    session: Session, job: JobRow, batch_time: datetime, params: dict[str, str], trigger: str
) -> RunRow | None:
    """Queue and commit a run; None when that batch already has one."""
    try:
        run = new_run(session, job, batch_time, params, trigger)
        log_line(
            session, run.id, f"queued by {trigger} for batch {batch_time.isoformat()}", commit=False
        )
        session.commit()
    except IntegrityError:
        session.rollback()
        return None
    return run


def start_job(session: Session, access: ProjectAccess, name: str, body: StartBody) -> HistoryEntry:
    """The start action: queue a run now, with the given params over the defaults."""
    job = get_job_row(session, access.project_id, name)
    declared = {p.name: p.default for p in effective(session, job).params}
    for i, given in enumerate(body.params):
        if given.name not in declared:
            raise DatamillError(
                E.INVALID_PARAMETER,
                f"params[{i}].name: job '{name}' has no param '{given.name}' "
                f"(declared: {', '.join(declared) or 'none'})",
                field=f"params[{i}].name",
            )
        declared[given.name] = given.value
    if job.schedule_state != "active":
        job.schedule_state = "active"
        reset_schedule(job, body_of(job), utcnow())
    for _ in range(3):
        run = queue_run(session, job, utcnow(), declared, "manual")
        if run is not None:
            return history_entry(run)
    raise DatamillError(E.RUN_STATE_CONFLICT, "could not queue the run; try again")


def stop_job(session: Session, access: ProjectAccess, name: str) -> int:
    """The stop action: stop the schedule, cancel queued runs, stop running ones."""
    job = get_job_row(session, access.project_id, name)
    job.schedule_state = "stopped"
    job.next_fire_at = None
    job.last_outcome = f"stopped by {access.principal.name}"
    session.commit()
    affected = 0
    for run in store.stoppable(session, job.id):
        if RunStatus(run.status) == RunStatus.Running:
            changed = _transition(session, run, RunStatus.Cancelling, cancel_requested=True)
        else:
            changed = _transition(
                session,
                run,
                RunStatus.Canceled,
                end_time=utcnow(),
                message="canceled before it started: the job was stopped",
            )
        affected += int(changed)
    return affected


# --- batch actions -------------------------------------------------------------------------


def get_run(
    session: Session, project_id: int, job_name: str, run_id: int, target: int = JOB_TARGET
) -> tuple[JobRow, RunRow]:
    """A job's run (``target`` 0) or one of its export runs (the export's id); -1 = latest."""
    job = get_job_row(session, project_id, job_name, "jobName")
    run = store.find(session, job.id, target, run_id)
    if run is None:
        raise DatamillError(E.RUN_NOT_FOUND, f"job '{job_name}' has no run {run_id}", field="runId")
    return job, run


def stop_run(session: Session, access: ProjectAccess, job_name: str, run_id: int) -> StopResult:
    _, run = get_run(session, access.project_id, job_name, run_id)
    before = RunStatus(run.status)
    after = check_stop(before, job_name, run.run_id)
    if not _transition(session, run, after, cancel_requested=True):
        raise DatamillError(
            E.RUN_STATE_CONFLICT, f"run {run.run_id} of job '{job_name}' changed state meanwhile"
        )
    log_line(session, run.id, f"stop requested by {access.principal.name}")
    return StopResult(preStatus=before, postStatus=after)


def restart(session: Session, run: RunRow, why: str, *, commit: bool = True) -> bool:
    """Move a finished run to Restarting (same batch, same params and variables)."""
    if not _transition(
        session,
        run,
        RunStatus.Restarting,
        commit=False,
        rerun_count=run.rerun_count + 1,
        attempt=0,
        cancel_requested=False,
        start_time=None,
        end_time=None,
        queued_at=utcnow(),
        message="",
        worker=None,
        heartbeat_at=None,
    ):
        return False
    log_line(session, run.id, f"rerun #{run.rerun_count}: {why}", commit=commit)
    return True


def rerun(session: Session, access: ProjectAccess, job_name: str, run_id: int) -> RerunResult:
    _, run = get_run(session, access.project_id, job_name, run_id)
    before = RunStatus(run.status)
    after = check_rerun(before, job_name, run.run_id)
    if not restart(session, run, f"requested by {access.principal.name}"):
        raise DatamillError(
            E.RUN_STATE_CONFLICT, f"run {run.run_id} of job '{job_name}' changed state meanwhile"
        )
    return RerunResult(preStatus=before, postStatus=after, rerunCount=run.rerun_count)


# --- workers -------------------------------------------------------------------------------


def claim_next(session: Session, worker: str) -> RunRow | None:
    """Claim the oldest claimable run for ``worker`` and commit; None when there is none.

    One statement (:func:`datamill.store.runs.claim`) and the attempt's log line in the
    same transaction.
    """
    run = store.claim(session, worker, utcnow())
    if run is not None:  # the attempt's first log line, with the claim
        log_line(session, run.id, f"attempt {run.attempt} started on {worker}", commit=False)
    session.commit()
    return run


def heartbeat(session: Session, run_pk: int, worker: str) -> bool:
    """Record that ``worker`` still runs ``run_pk``; True when it must stop executing.

    That is when a stop was requested, or when the run is no longer this worker's (it was
    declared lost and claimed again): a run never executes twice at the same time. One
    statement (``UPDATE … RETURNING status``) and its commit; no transaction stays open.
    """
    status = store.heartbeat(session, run_pk, worker)
    session.commit()
    return status != RunStatus.Running.value


def find(session: Session, run_pk: int) -> RunRow | None:
    return session.get(RunRow, run_pk)


def job_of(session: Session, run: RunRow) -> JobRow | None:
    """The run's job. While the caller holds it, the session reads it no more (its
    identity map keeps a row only as long as something refers to it)."""
    return session.get(JobRow, run.job_id)


def holding(session: Session, run_pk: int, worker: str) -> RunRow | None:
    """The run if ``worker`` still holds it (Running or Cancelling, claimed by it), else None.

    A worker whose run was declared lost and reaped (or claimed again) holds it no longer:
    whatever it does afterwards with that run is ignored. Reads the row afresh.
    """
    run = store.reread(session, run_pk)
    if run is None or run.worker != worker or RunStatus(run.status) not in ACTIVE:
        return None
    return run


def finish(
    session: Session,
    run_pk: int,
    worker: str,
    status: RunStatus,
    message: str,
    stats: dict[str, int | None] | None = None,
    result_path: str | None = None,
    on_success: Callable[[Session, RunRow], object] | None = None,
    retryable: bool = True,
) -> bool:
    """End a run this worker holds. A stop request wins over success or failure.

    A failure is retried while the job (or export) has retries left, unless it is not
    ``retryable`` (a retry would fail the same way). ``on_success`` runs in the same
    transaction as the Successful transition (depend jobs and exports are queued there),
    so neither happens without the other; it runs only once the guarded UPDATE succeeded
    (the run is still this worker's), and if it raises, the finish is rolled back.
    """
    run = holding(session, run_pk, worker)
    if run is None:
        return False
    stats = stats or {}
    values: dict[str, Any] = {"end_time": utcnow(), "message": message[:4000]}
    if status == RunStatus.Successful:
        values.update(
            rows_read=stats.get("rows_read"),
            rows_written=stats.get("rows_written"),
            bytes_read=stats.get("bytes_read"),
            bytes_written=stats.get("bytes_written"),
            result_path=result_path,
        )
    if RunStatus(run.status) == RunStatus.Cancelling:
        values["message"] = "canceled on request" + (f" ({message})" if message else "")
        status = RunStatus.Canceled
    elif status == RunStatus.Canceled:
        status = RunStatus.Failed
    if status == RunStatus.Failed and retryable and run.attempt <= _retries(session, run):
        values.pop("end_time")
        values["message"] = f"attempt {run.attempt} failed, retrying: {message}"[:4000]
        values["worker"] = None
        values["queued_at"] = utcnow() + _backoff(run)
        status = RunStatus.Ready
    if not _transition(session, run, status, commit=False, holder=worker, **values):
        return False
    level = "error" if status == RunStatus.Failed else "info"
    log_line(session, run_pk, f"{status.value}: {values['message']}", level, commit=False)
    if status == RunStatus.Successful and on_success is not None:
        try:
            on_success(session, run)
        except BaseException:
            session.rollback()  # nothing of the finish is written
            raise
    session.commit()
    return True


def _retries(session: Session, run: RunRow) -> int:
    """How many automatic retries the run's job (or export) asks for."""
    if run.export_id is not None:
        export = session.get(ExportRow, run.export_id)
        return int(export.spec.get("retries", DEFAULT_EXPORT_RETRIES)) if export else 0
    job = session.get(JobRow, run.job_id)
    return int(job.definition.get("retries", 0)) if job else 0


def _backoff(run: RunRow) -> timedelta:
    """Export retries wait 1, 2, 4 … seconds (at most a minute); job retries go at once."""
    if run.export_id is None:
        return timedelta(0)
    return timedelta(seconds=min(60, 2 ** max(0, run.attempt - 1)))


def reap_lost(session: Session, timeout: timedelta) -> int:
    """Runs whose worker stopped sending heartbeats: Failed (or retried), or Canceled."""
    limit = utcnow() - timeout
    count = 0
    for run in store.lost(session, limit):
        why = (
            f"worker {run.worker} lost: no heartbeat since "
            f"{run.heartbeat_at.isoformat() if run.heartbeat_at else 'start'}"
        )
        if RunStatus(run.status) == RunStatus.Cancelling:
            done = _transition(
                session, run, RunStatus.Canceled, end_time=utcnow(), message=f"canceled; {why}"
            )
        elif run.attempt <= _retries(session, run):
            done = _transition(
                session,
                run,
                RunStatus.Ready,
                worker=None,
                message=f"attempt {run.attempt} failed, retrying: {why}",
            )
        else:
            done = _transition(session, run, RunStatus.Failed, end_time=utcnow(), message=why)
        if done:
            log_line(session, run.id, why, "error")
            count += 1
    return count


# --- reading -------------------------------------------------------------------------------


def history_entry(run: RunRow) -> HistoryEntry:
    end = run.end_time
    if run.start_time and end is None and RunStatus(run.status) in ACTIVE:
        end = utcnow()
    duration = (end - run.start_time).total_seconds() if run.start_time and end else None
    return HistoryEntry(
        runId=run.run_id,
        batchTime=run.batch_time,
        startTime=run.start_time,
        endTime=end,
        duration=duration,
        status=RunStatus(run.status),
        message=run.message,
        rerunCount=run.rerun_count,
        attempt=run.attempt,
        rowsRead=run.rows_read,
        rowsWritten=run.rows_written,
        bytesRead=run.bytes_read,
        bytesWritten=run.bytes_written,
    )


def history(
    session: Session,
    access: ProjectAccess,
    job_name: str,
    page: int,
    size: int,
    sort_by: str,
    status: RunStatus | None,
    run_id: int | None,
) -> History:
    job = get_job_row(session, access.project_id, job_name)
    if run_id is not None:
        _, run = get_run(session, access.project_id, job_name, run_id)
        mine = exports_of_runs(session, job.id, [run.run_id]).get(run.run_id, [])
        entry = history_entry(run).model_copy(update={"exports": mine})
        return History(total=1, page=1, size=size, history=[entry])
    key = sort_by.removeprefix("-")
    if key not in store.HISTORY_ORDER:
        raise DatamillError(
            E.INVALID_PARAMETER,
            f"sortBy: '{sort_by}' is not one of {', '.join(store.HISTORY_ORDER)} "
            "(prefix '-' for descending)",
            field="sortBy",
        )
    total, window = store.history_page(
        session,
        job.id,
        status.value if status is not None else None,
        key,
        sort_by.startswith("-"),
        (page - 1) * size,
        size,
    )
    attached = exports_of_runs(session, job.id, [r.run_id for r in window])
    return History(
        total=total,
        page=page,
        size=size,
        history=[
            history_entry(r).model_copy(update={"exports": attached.get(r.run_id, [])})
            for r in window
        ],
    )


def run_entry(
    session: Session, access: ProjectAccess, job_name: str, run_id: int
) -> tuple[int, HistoryEntry]:
    """One run's history entry (with its exports) and its key in the store; -1 = latest."""
    job, run = get_run(session, access.project_id, job_name, run_id)
    mine = exports_of_runs(session, job.id, [run.run_id]).get(run.run_id, [])
    return run.id, history_entry(run).model_copy(update={"exports": mine})


def has_ended(runtime: Runtime, run_pk: int) -> bool:
    """Whether the run is Successful, Failed or Canceled (or gone): one cheap read."""
    with runtime.sessions() as session:
        status = store.status_of(session, run_pk)
    return status is None or RunStatus(status) in TERMINAL


def export_entry(run: RunRow, name: str) -> ExportRunEntry:
    return ExportRunEntry(
        export=name,
        runId=run.run_id,
        batchTime=run.batch_time,
        status=RunStatus(run.status),
        message=run.message,
        attempt=run.attempt,
        rerunCount=run.rerun_count,
        rowsWritten=run.rows_written,
        bytesWritten=run.bytes_written,
        startTime=run.start_time,
        endTime=run.end_time,
    )


def exports_of_runs(
    session: Session, job_id: int, run_ids: list[int]
) -> dict[int, list[ExportRunEntry]]:
    """Export runs by job run id, for the job's history."""
    if not run_ids:
        return {}
    found: dict[int, list[ExportRunEntry]] = {}
    for run, name in store.export_runs(session, job_id, run_ids):
        found.setdefault(run.run_id, []).append(export_entry(run, name))
    return found


def run_log(session: Session, access: ProjectAccess, job_name: str, run_id: int) -> RunLog:
    _, run = get_run(session, access.project_id, job_name, run_id)
    return log_of(session, run)


def log_of(session: Session, run: RunRow) -> RunLog:
    """A run's log lines (a job run's or an export run's), oldest first."""
    lines = store.log_lines(session, run.id)
    return RunLog(
        runId=run.run_id,
        lines=[f"{line.at.isoformat()} {line.level.upper():5} {line.line}" for line in lines],
    )


def run_result(
    runtime: Runtime,
    session: Session,
    access: ProjectAccess,
    job_name: str,
    run_id: int,
    limit: int,
) -> RunResult:
    _, run = get_run(session, access.project_id, job_name, run_id)
    if RunStatus(run.status) != RunStatus.Successful or not run.result_path:
        raise DatamillError(
            E.RESULT_NOT_AVAILABLE,
            f"run {run.run_id} of job '{job_name}' is {run.status}; only a "
            "Successful run has a result",
        )
    folder = Path(run.result_path)
    if not folder.is_dir():
        raise DatamillError(
            E.RESULT_NOT_AVAILABLE,
            f"the result of run {run.run_id} was replaced by a later run of "
            "the same batch or removed",
        )
    files = [str(p) for p in sorted(folder.glob("*.parquet"))]
    table = pq.ParquetDataset(files, partitioning=None).read().slice(0, limit)
    rows = [{k: json_value(v) for k, v in row.items()} for row in table.to_pylist()]
    return RunResult(runId=run.run_id, rows=rows, rowsWritten=run.rows_written)


def release(session: Session, run_pk: int, worker: str, why: str) -> bool:
    """Give a claimed run back (its worker is shutting down): Ready again, or Canceled."""
    run = holding(session, run_pk, worker)
    if run is None:
        return False
    if RunStatus(run.status) == RunStatus.Cancelling:
        done = _transition(
            session,
            run,
            RunStatus.Canceled,
            holder=worker,
            end_time=utcnow(),
            message="canceled on request",
        )
    else:
        done = _transition(
            session,
            run,
            RunStatus.Ready,
            holder=worker,
            worker=None,
            message=why,
            attempt=max(0, run.attempt - 1),
            queued_at=utcnow(),
        )
    if done:
        log_line(session, run_pk, why)
    return done
