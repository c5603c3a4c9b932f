"""The run state machine under random sequences of start, claim, finish, stop, rerun, crash,
recover, job stop and release, straight against the service layer and the store.

A Hypothesis rule-based machine drives a few runs of one job the way the API and the
workers do (no worker processes: every "worker" is a name passed to the service calls).
Each rule checks its exact outcome; after every step the invariants are checked against
the store: every status change is one of :data:`datamill.domain.runs.TRANSITIONS`, active
runs have a worker and queued ones none, batch times never change, rerun counts never
decrease, run ids are unique and increasing, and refused actions change nothing.

The store is a private one of the session's backend (SQLite or PostgreSQL): the session's
own store is shared with the real worker processes other tests start, and those would
claim the runs this machine queues.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from datamill.config import Settings
from datamill.domain.jobs import JobBody, StartBody
from datamill.domain.projects import Role
from datamill.domain.runs import ACTIVE, CLAIMABLE, TERMINAL, TRANSITIONS, RunStatus
from datamill.domain.users import Principal
from datamill.errors import DatamillError
from datamill.services import runs
from datamill.services.access import ProjectAccess, open_project
from datamill.services.runtime import Runtime
from datamill.store.base import utcnow
from datamill.store.jobs import JobRow
from datamill.store.projects import ProjectRow
from datamill.store.runs import RunLogRow, RunRow
from tests.servers import RunningServer, create_database

JOB = "job"
T = TypeVar("T")
MAX_RUNS = 4
WORKERS = ("w1", "w2")
LOST_AFTER = timedelta(minutes=10)
CRASHED = timedelta(hours=1)
RUNNING = frozenset({RunStatus.Running})
NOT_RUNNING = frozenset(RunStatus) - RUNNING
NOT_TERMINAL = frozenset(RunStatus) - TERMINAL
STOPPABLE = CLAIMABLE | RUNNING
PRINCIPAL = Principal(id=0, name="machine", isAdmin=True)
MACHINE_SETTINGS = hypothesis_settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    database=None,  # nothing written into the source tree
    # no shrinking: every step queries the store, and shrinking a failure can take minutes;
    # a failing sequence is at most 25 steps and each assertion says what went wrong
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def store(
    settings: Settings, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    """A fresh store on the session's backend, which no worker process polls."""
    url = None
    if settings.database_url:
        server: RunningServer = request.getfixturevalue("postgres_server")
        url = create_database(server, f"datamill_sm_{uuid.uuid4().hex[:8]}")
    data_dir: Path = tmp_path_factory.mktemp("run-state-machine")
    private = Settings(
        **{**settings.model_dump(), "data_dir": data_dir, "database_url": url},
    )
    runtime = Runtime.open(private)
    yield runtime
    runtime.close()


# --- the store as the machine sees it ------------------------------------------------------


@dataclass(frozen=True)
class Snap:
    pk: int
    run_id: int
    status: RunStatus
    batch_time: datetime
    rerun_count: int
    attempt: int
    worker: str | None
    heartbeat_at: datetime | None
    queued_at: datetime
    start_time: datetime | None
    end_time: datetime | None
    message: str
    cancel_requested: bool


def snapshot(runtime: Runtime, job_id: int) -> dict[int, Snap]:
    with runtime.sessions() as session:
        rows = session.scalars(
            select(RunRow).where(RunRow.job_id == job_id).order_by(RunRow.id)
        ).all()
        return {
            r.id: Snap(
                pk=r.id,
                run_id=r.run_id,
                status=RunStatus(r.status),
                batch_time=r.batch_time,
                rerun_count=r.rerun_count,
                attempt=r.attempt,
                worker=r.worker,
                heartbeat_at=r.heartbeat_at,
                queued_at=r.queued_at,
                start_time=r.start_time,
                end_time=r.end_time,
                message=r.message,
                cancel_requested=r.cancel_requested,
            )
            for r in rows
        }


def make_job(runtime: Runtime, retries: int) -> tuple[str, int, int]:
    """A project with one manual job (no data needed: nothing executes); its name and ids."""
    definition = JobBody.model_validate(
        {
            "srcs": [{"name": "events", "type": "DataSource", "tableName": "ev"}],
            "computation": {"type": "SQL", "code": "SELECT 1 AS a"},
            "container": {"type": "1U2G", "count": 1},
            "scheduler": {"type": "manual"},
            "retries": retries,
        }
    ).model_dump(mode="json", exclude_none=True)
    name = f"sm_{uuid.uuid4().hex[:10]}"
    with runtime.sessions() as session:
        project = ProjectRow(name=name, description="state machine")
        session.add(project)
        session.flush()
        job = JobRow(
            project_id=project.id,
            name=JOB,
            definition=definition,
            schema=[{"key": "a", "valtype": "long", "required": False}],
        )
        session.add(job)
        session.commit()
        return name, project.id, job.id


def drop_project(runtime: Runtime, project_id: int) -> None:
    with runtime.sessions() as session:
        jobs = select(JobRow.id).where(JobRow.project_id == project_id)
        pks = select(RunRow.id).where(RunRow.job_id.in_(jobs))
        session.execute(delete(RunLogRow).where(RunLogRow.run_pk.in_(pks)))
        session.execute(delete(RunRow).where(RunRow.job_id.in_(jobs)))
        session.execute(delete(JobRow).where(JobRow.project_id == project_id))
        session.execute(delete(ProjectRow).where(ProjectRow.id == project_id))
        session.commit()


def unchanged_except(before: dict[int, Snap], after: dict[int, Snap], *pks: int) -> None:
    assert set(after) == set(before), (before, after)
    for pk, snap in before.items():
        if pk not in pks:
            assert after[pk] == snap, (pk, snap, after[pk])


def attempt(
    action: Callable[[Session, ProjectAccess, str, int], T],
    session: Session,
    access: ProjectAccess,
    run_id: int,
) -> tuple[T | None, DatamillError | None]:
    """Call a batch action on run ``run_id`` of the job; its result or its refusal."""
    try:
        return action(session, access, JOB, run_id), None
    except DatamillError as exc:
        return None, exc


def expect_conflict(exc: DatamillError, before: dict[int, Snap], after: dict[int, Snap]) -> None:
    assert exc.code == "E18231", exc.message
    assert exc.status == 409
    assert after == before, "a refused action changed the store"


# --- the machine ---------------------------------------------------------------------------


class RunMachine(RuleBasedStateMachine):
    """Up to ``MAX_RUNS`` runs of one job, driven through the service layer."""

    runtime: Runtime

    def __init__(self) -> None:
        super().__init__()
        self.project_name = ""
        self.project_id = 0
        self.job_id = 0
        self.retries = 0
        self.last: dict[int, Snap] = {}
        # runs reaped while a worker held them: that worker may still finish or hand back
        self.zombies: dict[int, str] = {}

    # -- plumbing

    @property
    def ready(self) -> bool:
        return self.job_id != 0

    def snap(self) -> dict[int, Snap]:
        return snapshot(self.runtime, self.job_id)

    def session(self) -> Session:
        return self.runtime.sessions()

    def access(self, session: Session) -> ProjectAccess:
        return open_project(session, PRINCIPAL, self.project_name, Role.editor)

    def pick(self, index: int, statuses: frozenset[RunStatus] | None = None) -> Snap:
        candidates = [s for s in self.last.values() if statuses is None or s.status in statuses]
        return candidates[index % len(candidates)]

    def has(self, statuses: frozenset[RunStatus]) -> bool:
        return any(s.status in statuses for s in self.last.values())

    # -- setup and teardown

    @initialize(retries=st.integers(min_value=0, max_value=1))
    def setup(self, retries: int) -> None:
        self.retries = retries
        self.project_name, self.project_id, self.job_id = make_job(self.runtime, retries)

    def teardown(self) -> None:
        if self.project_id:
            drop_project(self.runtime, self.project_id)

    # -- the API's actions

    @precondition(lambda self: self.ready and len(self.last) < MAX_RUNS)
    @rule()
    def start(self) -> None:
        before = self.snap()
        with self.session() as session:
            entry = runs.start_job(session, self.access(session), JOB, StartBody())
        after = self.snap()
        (new,) = set(after) - set(before)
        unchanged_except(before, {k: v for k, v in after.items() if k != new})
        run = after[new]
        assert entry.runId == run.run_id
        assert run.status == RunStatus.Ready
        assert (run.rerun_count, run.attempt, run.worker) == (0, 0, None)
        assert all(run.run_id > r.run_id for r in before.values())

    @precondition(lambda self: self.ready and self.last)
    @rule(index=st.integers(min_value=0, max_value=MAX_RUNS - 1))
    def queue_same_batch_again(self, index: int) -> None:
        target = self.pick(index)
        before = self.snap()
        with self.session() as session:
            job = session.get(JobRow, self.job_id)
            assert job is not None
            queued = runs.queue_run(session, job, target.batch_time, {}, "manual")
        assert queued is None, "a second run was queued for the same batch"
        assert self.snap() == before

    @precondition(lambda self: self.ready and self.has(RUNNING))
    @rule(index=st.integers(min_value=0, max_value=MAX_RUNS - 1))
    def stop(self, index: int) -> None:
        target = self.pick(index, RUNNING)
        before = self.snap()
        with self.session() as session:
            result, refused = attempt(runs.stop_run, session, self.access(session), target.run_id)
        assert refused is None, refused.message
        assert result is not None
        assert (result.preStatus, result.postStatus) == (RunStatus.Running, RunStatus.Cancelling)
        after = self.snap()
        unchanged_except(before, after, target.pk)
        assert after[target.pk] == replace(
            before[target.pk], status=RunStatus.Cancelling, cancel_requested=True
        )

    @precondition(lambda self: self.ready and self.has(NOT_RUNNING))
    @rule(index=st.integers(min_value=0, max_value=MAX_RUNS - 1))
    def stop_refused(self, index: int) -> None:
        """Only a Running run can be stopped: 409, and nothing changes."""
        target = self.pick(index, NOT_RUNNING)
        before = self.snap()
        with self.session() as session:
            _, refused = attempt(runs.stop_run, session, self.access(session), target.run_id)
        assert refused is not None, f"a {target.status.value} run was stopped"
        expect_conflict(refused, before, self.snap())

    @precondition(lambda self: self.ready and self.has(TERMINAL))
    @rule(index=st.integers(min_value=0, max_value=MAX_RUNS - 1))
    def rerun(self, index: int) -> None:
        target = self.pick(index, TERMINAL)
        before = self.snap()
        with self.session() as session:
            result, refused = attempt(runs.rerun, session, self.access(session), target.run_id)
        assert refused is None, refused.message
        assert result is not None
        old = before[target.pk]
        assert (result.preStatus, result.postStatus) == (old.status, RunStatus.Restarting)
        assert result.rerunCount == old.rerun_count + 1
        after = self.snap()
        unchanged_except(before, after, target.pk)
        new = after[target.pk]
        assert new.status == RunStatus.Restarting
        assert new.rerun_count == old.rerun_count + 1
        assert (new.attempt, new.worker, new.heartbeat_at) == (0, None, None)
        assert (new.start_time, new.end_time, new.cancel_requested) == (None, None, False)
        self.zombies.pop(target.pk, None)

    @precondition(lambda self: self.ready and self.has(NOT_TERMINAL))
    @rule(index=st.integers(min_value=0, max_value=MAX_RUNS - 1))
    def rerun_refused(self, index: int) -> None:
        """Only a finished run can be rerun: 409, and nothing changes."""
        target = self.pick(index, NOT_TERMINAL)
        before = self.snap()
        with self.session() as session:
            _, refused = attempt(runs.rerun, session, self.access(session), target.run_id)
        assert refused is not None, f"a {target.status.value} run was rerun"
        expect_conflict(refused, before, self.snap())

    @precondition(lambda self: self.ready)
    @rule(action=st.sampled_from(["stop", "rerun"]))
    def act_on_a_run_that_does_not_exist(self, action: str) -> None:
        before = self.snap()
        call = runs.stop_run if action == "stop" else runs.rerun
        with self.session() as session:
            _, refused = attempt(call, session, self.access(session), 999)
        assert refused is not None
        assert (refused.code, refused.status) == ("E18230", 404)
        assert self.snap() == before

    @precondition(lambda self: self.ready and self.has(STOPPABLE))
    @rule()
    def stop_job(self) -> None:
        before = self.snap()
        with self.session() as session:
            affected = runs.stop_job(session, self.access(session), JOB)
        after = self.snap()
        changed = [pk for pk, s in before.items() if s.status in STOPPABLE]
        assert affected == len(changed)
        unchanged_except(before, after, *changed)
        for pk in changed:
            old, new = before[pk], after[pk]
            if old.status == RunStatus.Running:
                assert new == replace(old, status=RunStatus.Cancelling, cancel_requested=True)
            else:
                assert new.status == RunStatus.Canceled
                assert new.end_time is not None
                assert (new.worker, new.attempt) == (old.worker, old.attempt)

    # -- the workers' side

    def _expect_claimed(
        self, before: dict[int, Snap], after: dict[int, Snap], claimed: dict[str, int]
    ) -> None:
        queue = sorted(
            (s for s in before.values() if s.status in CLAIMABLE),
            key=lambda s: (s.queued_at, s.pk),
        )
        assert len(set(claimed.values())) == len(claimed), f"one run claimed twice: {claimed}"
        assert set(claimed.values()) == {s.pk for s in queue[: len(claimed)]}, (claimed, queue)
        unchanged_except(before, after, *claimed.values())
        for worker, pk in claimed.items():
            old, new = before[pk], after[pk]
            assert new.status == RunStatus.Running
            assert new.worker == worker
            assert new.attempt == old.attempt + 1
            assert new.heartbeat_at is not None
            assert new.end_time is None
            self.zombies.pop(pk, None)  # held again: its old worker cannot be told apart

    @precondition(lambda self: self.ready and not self.has(CLAIMABLE))
    @rule(worker=st.sampled_from(WORKERS))
    def claim_with_nothing_queued(self, worker: str) -> None:
        before = self.snap()
        with self.session() as session:
            run = runs.claim_next(session, worker)
        assert run is None, "claimed a run that was not queued"
        assert self.snap() == before

    @precondition(lambda self: self.ready and self.has(CLAIMABLE))
    @rule(worker=st.sampled_from(WORKERS))
    def claim(self, worker: str) -> None:
        before = self.snap()
        with self.session() as session:
            run = runs.claim_next(session, worker)
            pk = run.id if run is not None else None
        after = self.snap()
        queued = [s for s in before.values() if s.status in CLAIMABLE]
        if pk is None:
            assert not queued, f"nothing claimed although {len(queued)} runs wait"
            assert after == before
            return
        assert pk in before, "claimed a run of another job"
        self._expect_claimed(before, after, {worker: pk})

    @precondition(lambda self: self.ready and self.has(CLAIMABLE))
    @rule()
    def claim_concurrently(self) -> None:
        """Two workers, each with its own session, claim at the same moment."""
        before = self.snap()
        barrier = threading.Barrier(len(WORKERS))
        claimed: dict[str, int | None] = {}
        errors: list[BaseException] = []

        def claimer(worker: str) -> None:
            try:
                with self.session() as session:
                    barrier.wait(timeout=30)
                    run = runs.claim_next(session, worker)
                    claimed[worker] = run.id if run is not None else None
            except BaseException as exc:  # re-raised below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=claimer, args=(w,)) for w in WORKERS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        if errors:
            raise errors[0]
        after = self.snap()
        got = {w: pk for w, pk in claimed.items() if pk is not None}
        assert len(set(got.values())) == len(got), f"two workers claimed the same run: {got}"
        queued = [s for s in before.values() if s.status in CLAIMABLE]
        assert len(got) == min(len(queued), len(WORKERS)), (got, queued)
        assert all(pk in before for pk in got.values()), "claimed a run of another job"
        self._expect_claimed(before, after, got)

    @precondition(lambda self: self.ready and self.has(ACTIVE))
    @rule(
        index=st.integers(min_value=0, max_value=MAX_RUNS - 1),
        status=st.sampled_from([RunStatus.Successful, RunStatus.Failed]),
        by_holder=st.booleans(),
    )
    def finish(self, index: int, status: RunStatus, by_holder: bool) -> None:
        target = self.pick(index, ACTIVE)
        before = self.snap()
        old = before[target.pk]
        assert old.worker is not None
        if not by_holder:  # a worker that does not hold the run cannot end it
            other = next(w for w in WORKERS if w != old.worker)
            with self.session() as session:
                done = runs.finish(session, old.pk, other, status, "not mine")
            assert not done, f"{other} finished a run held by {old.worker}"
            assert self.snap() == before
            return
        with self.session() as session:
            done = runs.finish(session, old.pk, old.worker, status, f"{status.value} by test")
        assert done, "the holder could not finish its run"
        after = self.snap()
        unchanged_except(before, after, old.pk)
        new = after[old.pk]
        if old.status == RunStatus.Cancelling:
            assert new.status == RunStatus.Canceled
            assert new.message.startswith("canceled on request")
        elif status == RunStatus.Successful:
            assert new.status == RunStatus.Successful
        elif old.attempt <= self.retries:
            assert new.status == RunStatus.Ready
            assert new.worker is None
            assert "retrying" in new.message
        else:
            assert new.status == RunStatus.Failed
        assert (new.batch_time, new.rerun_count, new.attempt) == (
            old.batch_time,
            old.rerun_count,
            old.attempt,
        )

    @precondition(lambda self: self.ready and self.has(ACTIVE))
    @rule(index=st.integers(min_value=0, max_value=MAX_RUNS - 1))
    def heartbeat(self, index: int) -> None:
        target = self.pick(index, ACTIVE)
        assert target.worker is not None
        before = self.snap()
        with self.session() as session:
            stop_requested = runs.heartbeat(session, target.pk, target.worker)
        assert stop_requested == (before[target.pk].status == RunStatus.Cancelling)
        after = self.snap()
        unchanged_except(before, after, target.pk)
        assert after[target.pk].heartbeat_at is not None
        assert after[target.pk] == replace(
            before[target.pk], heartbeat_at=after[target.pk].heartbeat_at
        )

    @precondition(lambda self: self.ready and self.has(ACTIVE))
    @rule(index=st.integers(min_value=0, max_value=MAX_RUNS - 1))
    def release(self, index: int) -> None:
        """The holder shuts down and hands its run back."""
        target = self.pick(index, ACTIVE)
        assert target.worker is not None
        before = self.snap()
        with self.session() as session:
            done = runs.release(session, target.pk, target.worker, "worker shut down")
        assert done
        after = self.snap()
        unchanged_except(before, after, target.pk)
        old, new = before[target.pk], after[target.pk]
        if old.status == RunStatus.Cancelling:
            assert new.status == RunStatus.Canceled
        else:
            assert new.status == RunStatus.Ready
            assert new.worker is None
            assert new.attempt == max(0, old.attempt - 1)

    @precondition(lambda self: self.ready and self.has(ACTIVE))
    @rule(index=st.integers(min_value=0, max_value=MAX_RUNS - 1))
    def crash(self, index: int) -> None:
        """The holder dies (or stalls): its heartbeat stops, long ago."""
        target = self.pick(index, ACTIVE)
        with self.session() as session:
            session.execute(
                update(RunRow).where(RunRow.id == target.pk).values(heartbeat_at=utcnow() - CRASHED)
            )
            session.commit()

    @precondition(lambda self: self.ready and self.has(ACTIVE))
    @rule()
    def recover(self) -> None:
        before = self.snap()
        limit = utcnow() - LOST_AFTER
        with self.session() as session:
            reaped = runs.reap_lost(session, LOST_AFTER)
        after = self.snap()
        lost = [
            s.pk
            for s in before.values()
            if s.status in ACTIVE and s.heartbeat_at is not None and s.heartbeat_at < limit
        ]
        assert reaped == len(lost)
        unchanged_except(before, after, *lost)
        for pk in lost:
            old, new = before[pk], after[pk]
            if old.status == RunStatus.Cancelling:
                assert new.status == RunStatus.Canceled
            elif old.attempt <= self.retries:
                assert new.status == RunStatus.Ready
                assert new.worker is None
            else:
                assert new.status == RunStatus.Failed
            assert "no heartbeat" in new.message
            if old.worker is not None:
                self.zombies[pk] = old.worker

    # -- a worker whose run was reaped wakes up

    @precondition(lambda self: self.ready and self.zombies)
    @rule(
        index=st.integers(min_value=0, max_value=MAX_RUNS - 1),
        action=st.sampled_from(["Successful", "Failed", "Canceled", "release"]),
    )
    def zombie_wakes_up(self, index: int, action: str) -> None:
        """The worker of a reaped run was only stalled: it finishes the run, or shuts down
        and hands it back. It no longer holds the run: refused (False), nothing changes."""
        pk, worker = sorted(self.zombies.items())[index % len(self.zombies)]
        before = self.snap()
        call = "release" if action == "release" else f"finish(status={action})"
        with self.session() as session:
            try:
                if action == "release":
                    done = runs.release(session, pk, worker, "worker shut down")
                else:
                    done = runs.finish(session, pk, worker, RunStatus(action), "finished late")
            except Exception as exc:
                raise AssertionError(
                    f"{call} by worker {worker!r}, whose run {before[pk].run_id} was declared "
                    f"lost and is now {before[pk].status.value}, raised {exc!r} instead of "
                    "returning False"
                ) from exc
        assert not done, f"{call} by the worker of a lost run succeeded"
        assert self.snap() == before

    # -- invariants, against the store, after every step

    @precondition(lambda self: self.ready)
    @invariant()
    def store_follows_the_state_machine(self) -> None:
        now = self.snap()
        for pk, old in self.last.items():
            assert pk in now, f"run {old.run_id} disappeared"
            new = now[pk]
            assert new.status == old.status or new.status in TRANSITIONS[old.status], (
                f"run {old.run_id}: forbidden transition {old.status.value} -> {new.status.value}"
            )
            assert new.batch_time == old.batch_time, f"run {old.run_id}: batchTime changed"
            assert new.run_id == old.run_id
            assert new.rerun_count >= old.rerun_count, f"run {old.run_id}: rerunCount fell"
        run_ids = [s.run_id for s in sorted(now.values(), key=lambda s: s.pk)]
        assert run_ids == sorted(set(run_ids)), f"run ids not unique and increasing: {run_ids}"
        for s in now.values():
            if s.status in ACTIVE:
                assert s.worker, f"run {s.run_id} is {s.status.value} without a worker"
            if s.status in CLAIMABLE:
                assert s.worker is None, f"run {s.run_id} is {s.status.value} held by {s.worker}"
            assert (s.end_time is not None) == (s.status in TERMINAL), (
                f"run {s.run_id} is {s.status.value} with end_time {s.end_time}"
            )
        self.last = now


@pytest.mark.slow
def test_runs_follow_the_state_machine(store: Runtime) -> None:
    machine = type("RunMachineOnStore", (RunMachine,), {"runtime": store})
    run_state_machine_as_test(machine, settings=MACHINE_SETTINGS)


# --- many claimers at once -----------------------------------------------------------------


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_claims_take_each_run_exactly_once(store: Runtime, round_: int) -> None:
    _, project_id, job_id = make_job(store, retries=0)
    try:
        base = utcnow()
        with store.sessions() as session:
            job = session.get(JobRow, job_id)
            assert job is not None
            for i in range(20):
                assert runs.queue_run(session, job, base + timedelta(seconds=i), {}, "t")
        queued = set(snapshot(store, job_id))
        assert len(queued) == 20
        claimers = [f"claimer-{i}" for i in range(4)]
        claims: dict[str, list[int]] = {name: [] for name in claimers}
        errors: list[BaseException] = []
        barrier = threading.Barrier(len(claimers))

        def waiting(session: Session) -> int:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(RunRow)
                    .where(
                        RunRow.job_id == job_id,
                        RunRow.status.in_([s.value for s in CLAIMABLE]),
                    )
                )
                or 0
            )

        def claimer(name: str) -> None:
            try:
                with store.sessions() as session:
                    barrier.wait(timeout=30)
                    for _ in range(200):
                        run = runs.claim_next(session, name)
                        if run is not None:
                            assert run.job_id == job_id
                            claims[name].append(run.id)
                        elif waiting(session) == 0:
                            session.rollback()
                            return
            except BaseException as exc:  # re-raised below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=claimer, args=(name,)) for name in claimers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a claimer hung"
        if errors:
            raise errors[0]
        taken = [pk for got in claims.values() for pk in got]
        duplicates = sorted({pk for pk in taken if taken.count(pk) > 1})
        assert not duplicates, f"runs claimed more than once: {duplicates} ({claims})"
        assert sorted(taken) == sorted(queued)
        final = snapshot(store, job_id)
        holder = {pk: name for name, got in claims.items() for pk in got}
        for pk, s in final.items():
            assert s.status == RunStatus.Running, s
            assert s.worker == holder[pk], (s, holder[pk])
            assert s.attempt == 1, s
    finally:
        drop_project(store, project_id)


# --- the worker of a lost run ----------------------------------------------------------------


@pytest.mark.parametrize("stopped", [False, True], ids=["running", "cancelling"])
@pytest.mark.parametrize("action", ["Successful", "Failed", "release"])
def test_worker_of_a_lost_run_cannot_end_it(store: Runtime, stopped: bool, action: str) -> None:
    """A worker that only stalled (no heartbeat, declared lost) wakes up and ends its run:
    it no longer holds it, so ``finish`` / ``release`` return False and change nothing, as
    for any worker that does not hold the run. (The worker calls them outside its error
    handling: an exception there ends the worker process.)"""
    project_name, project_id, job_id = make_job(store, retries=0)
    try:
        with store.sessions() as session:
            job = session.get(JobRow, job_id)
            assert job is not None
            queued = runs.queue_run(session, job, utcnow(), {}, "test")
            assert queued is not None
            pk = queued.id
        with store.sessions() as session:
            claimed = runs.claim_next(session, "w1")
            assert claimed is not None
            assert claimed.id == pk
        if stopped:
            with store.sessions() as session:
                access = open_project(session, PRINCIPAL, project_name, Role.editor)
                runs.stop_run(session, access, JOB, claimed.run_id)
        with store.sessions() as session:
            session.execute(
                update(RunRow).where(RunRow.id == pk).values(heartbeat_at=utcnow() - CRASHED)
            )
            session.commit()
            assert runs.reap_lost(session, LOST_AFTER) == 1
        before = snapshot(store, job_id)
        lost = before[pk]
        assert lost.status == (RunStatus.Canceled if stopped else RunStatus.Failed)
        assert lost.worker == "w1"
        with store.sessions() as session:
            try:
                if action == "release":
                    done = runs.release(session, pk, "w1", "worker shut down")
                else:
                    done = runs.finish(session, pk, "w1", RunStatus(action), "finished late")
            except Exception as exc:
                raise AssertionError(
                    f"{action} by the worker of a run declared lost (now {lost.status.value}) "
                    f"raised {exc!r} instead of returning False"
                ) from exc
        assert not done
        assert snapshot(store, job_id) == before
    finally:
        drop_project(store, project_id)
