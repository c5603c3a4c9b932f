"""Runs, their claims and heartbeats, and their log lines; the statements of a run's life.

The functions below write no commit: the services own the transaction
(:mod:`datamill.services.runs`, :mod:`datamill.scheduler.tick`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, aliased, mapped_column

from datamill.domain.runs import ACTIVE, CLAIMABLE, RunStatus, allowed
from datamill.store.base import Base, UTCDateTime, fetch_page, utcnow
from datamill.store.exports import ExportRow
from datamill.store.jobs import JobRow

JOB_TARGET = 0
"""``RunRow.target`` of a job's own SQL run; an export run's target is its export's id."""


class RunRow(Base):
    """One execution unit: a job's SQL for a batch, or one export of that batch.

    Both kinds share the state machine, claims, heartbeats, history and logs. ``target`` is
    0 for the job's SQL and the export's id for an export run, which carries the ``run_id``
    and ``batch_time`` of the job run whose result it exports.
    """

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("job_id", "target", "run_id"),
        UniqueConstraint("job_id", "target", "batch_time"),
        Index("ix_runs_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int] = mapped_column(Integer)
    target: Mapped[int] = mapped_column(Integer, default=JOB_TARGET)
    export_id: Mapped[int | None] = mapped_column(
        ForeignKey("exports.id", ondelete="CASCADE"), nullable=True, index=True
    )
    batch_time: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    trigger: Mapped[str] = mapped_column(String(16), default="manual")
    rerun_count: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(64), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    rows_read: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    rows_written: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    bytes_read: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    bytes_written: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    result_path: Mapped[str | None] = mapped_column(Text, nullable=True)


class RunLogRow(Base):
    __tablename__ = "run_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    level: Mapped[str] = mapped_column(String(8), default="info")
    line: Mapped[str] = mapped_column(Text)


# --- the life of a run ---------------------------------------------------------------------


def transition(
    session: Session,
    run_pk: int,
    before: RunStatus,
    after: RunStatus,
    holder: str | None,
    values: dict[str, Any],
) -> bool:
    """``UPDATE … WHERE status = <before>`` (and, with ``holder``, still claimed by it);
    True when the run was moved."""
    guard = [RunRow.id == run_pk, RunRow.status == before.value]
    if holder is not None:
        guard.append(RunRow.worker == holder)
    result = session.execute(
        update(RunRow)
        .where(*guard)
        .values(status=after.value, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _claim_statement(dialect: str) -> Any:
    """The claim as one UPDATE … RETURNING (built once per dialect: building is costly)."""
    pick, busy = aliased(RunRow), aliased(RunRow)
    serial_busy = (
        select(JobRow.id)
        .join(busy, busy.job_id == JobRow.id)
        .where(
            JobRow.serial.is_(True),
            busy.target == JOB_TARGET,
            busy.status.in_([s.value for s in ACTIVE]),
        )
    )
    now = bindparam("now", type_=UTCDateTime())
    oldest = (
        select(pick.id)
        .where(
            pick.status.in_([s.value for s in CLAIMABLE]),
            pick.queued_at <= now,
            or_(pick.target != JOB_TARGET, pick.job_id.not_in(serial_busy)),
        )
        .order_by(pick.queued_at, pick.id)
        .limit(1)
    )
    if dialect == "postgresql":
        oldest = oldest.with_for_update(skip_locked=True, of=pick)
    return (
        update(RunRow)
        .where(
            RunRow.id == oldest.scalar_subquery(),
            RunRow.status.in_([s.value for s in CLAIMABLE]),
        )
        .values(
            status=RunStatus.Running.value,
            worker=bindparam("worker", type_=String()),
            heartbeat_at=now,
            start_time=now,
            end_time=None,
            attempt=RunRow.attempt + 1,
        )
        .returning(RunRow)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


_CLAIMS: dict[str, Any] = {}
assert all(allowed(s, RunStatus.Running) for s in CLAIMABLE)  # what a claim writes


def claim(session: Session, worker: str, now: datetime) -> RunRow | None:
    """Claim the oldest claimable run for ``worker``: one ``UPDATE … WHERE id = (the oldest
    claimable run) AND status IN (claimable) RETURNING …``.

    On PostgreSQL the pick is ``FOR UPDATE SKIP LOCKED``, so concurrent workers take
    different runs; SQLite serializes writers.
    """
    dialect = session.get_bind().dialect.name
    statement = _CLAIMS.get(dialect)
    if statement is None:
        statement = _CLAIMS[dialect] = _claim_statement(dialect)
    run: RunRow | None = session.scalars(statement, {"now": now, "worker": worker}).first()
    return run


def heartbeat(session: Session, run_pk: int, worker: str) -> str | None:
    """Stamp the heartbeat of a run ``worker`` still holds (one ``UPDATE … RETURNING
    status``); its status, or None when the run is no longer this worker's."""
    status: str | None = session.scalar(
        update(RunRow)
        .where(
            RunRow.id == run_pk,
            RunRow.worker == worker,
            RunRow.status.in_([s.value for s in ACTIVE]),
        )
        .values(heartbeat_at=utcnow())
        .returning(RunRow.status)
        .execution_options(synchronize_session=False)
    )
    return status


def reread(session: Session, run_pk: int) -> RunRow | None:
    """The run as the store has it now (not as the session last saw it)."""
    return session.get(RunRow, run_pk, populate_existing=True)


def lost(session: Session, silent_since: datetime) -> Sequence[RunRow]:
    """Active runs whose last heartbeat is older than ``silent_since``."""
    return session.scalars(
        select(RunRow).where(
            RunRow.status.in_([s.value for s in ACTIVE]), RunRow.heartbeat_at < silent_since
        )
    ).all()


def stoppable(session: Session, job_id: int) -> Sequence[RunRow]:
    """A job's runs that a stop of the job ends: claimable and Running ones."""
    return session.scalars(
        select(RunRow).where(
            RunRow.job_id == job_id,
            RunRow.status.in_([s.value for s in (*CLAIMABLE, RunStatus.Running)]),
        )
    ).all()


def status_of(session: Session, run_pk: int) -> str | None:
    return session.scalar(select(RunRow.status).where(RunRow.id == run_pk))


def add_log_line(session: Session, run_pk: int, line: str, level: str) -> None:
    session.add(RunLogRow(run_pk=run_pk, line=line[:4000], level=level, at=utcnow()))


# --- what the scheduler asks of runs -------------------------------------------------------


def has_active_run(session: Session, job_id: int) -> bool:
    """Whether a run of the job is claimable or active."""
    states = [s.value for s in (*CLAIMABLE, *ACTIVE)]
    return (
        session.scalar(
            select(RunRow.id).where(RunRow.job_id == job_id, RunRow.status.in_(states)).limit(1)
        )
        is not None
    )


def batches_since(
    session: Session, job_ids: list[int], earliest: datetime
) -> set[tuple[int, datetime]]:
    """The (job, batch time) of the jobs' runs from ``earliest`` on."""
    return {
        (job_id, batch_time)
        for job_id, batch_time in session.execute(
            select(RunRow.job_id, RunRow.batch_time).where(
                RunRow.job_id.in_(job_ids), RunRow.batch_time >= earliest
            )
        )
    }


def batch_taken(session: Session, job_id: int, batch_time: datetime) -> bool:
    """Whether the job has a run (or an export run) for the batch."""
    return (
        session.scalar(
            select(RunRow.id).where(RunRow.job_id == job_id, RunRow.batch_time == batch_time)
        )
        is not None
    )


def run_of_batch(session: Session, job_id: int, batch_time: datetime) -> RunRow | None:
    return session.scalars(
        select(RunRow).where(RunRow.job_id == job_id, RunRow.batch_time == batch_time)
    ).first()


# --- reading -------------------------------------------------------------------------------


def find(session: Session, job_id: int, target: int, run_id: int) -> RunRow | None:
    """A job's run (``target`` 0) or export run (the export's id) by run id; -1 = latest."""
    if run_id == -1:
        return session.scalars(
            select(RunRow)
            .where(RunRow.job_id == job_id, RunRow.target == target)
            .order_by(RunRow.run_id.desc())
        ).first()
    return session.scalars(
        select(RunRow).where(
            RunRow.job_id == job_id, RunRow.target == target, RunRow.run_id == run_id
        )
    ).first()


HISTORY_ORDER = {
    "endTime": RunRow.end_time,
    "startTime": RunRow.start_time,
    "batchTime": RunRow.batch_time,
    "runId": RunRow.run_id,
}
"""What a job's history can be sorted by (the API's names)."""


def history_page(
    session: Session,
    job_id: int,
    status: str | None,
    order: str,
    descending: bool,
    offset: int,
    limit: int,
) -> tuple[int, list[RunRow]]:
    """How many runs of the job (with ``status``) there are, and one page of them in the
    ``order`` of :data:`HISTORY_ORDER` (the runs not yet started first when descending)."""
    column = HISTORY_ORDER[order]
    by = column.desc().nulls_first() if descending else column.asc().nulls_last()
    stmt = select(RunRow).where(RunRow.job_id == job_id, RunRow.target == JOB_TARGET)
    if status is not None:
        stmt = stmt.where(RunRow.status == status)
    return fetch_page(session, stmt.order_by(by, RunRow.run_id), offset, limit)


def export_runs(session: Session, job_id: int, run_ids: list[int]) -> Sequence[tuple[RunRow, str]]:
    """The export runs of the job's runs ``run_ids``, each with its export's name, by name."""
    pairs = session.execute(
        select(RunRow, ExportRow.name)
        .join(ExportRow, ExportRow.id == RunRow.export_id)
        .where(RunRow.job_id == job_id, RunRow.run_id.in_(run_ids))
        .order_by(ExportRow.name)
    ).all()
    return [(run, name) for run, name in pairs]


def log_lines(session: Session, run_pk: int) -> Sequence[RunLogRow]:
    """A run's log lines, oldest first."""
    return session.scalars(
        select(RunLogRow).where(RunLogRow.run_pk == run_pk).order_by(RunLogRow.id)
    ).all()
