"""Catching up after downtime: which fire times one tick runs, and who takes the lease.

Tests of tick() use fire times in 2090 and pass ``now`` explicitly (see test_scheduler.py).
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import update

from datamill.runtime.process import host_process_name
from datamill.scheduler import tick as scheduling
from datamill.services.processes import Holder
from datamill.store.base import utcnow
from datamill.store.jobs import LeaseRow
from datamill.store.runs import RunRow
from tests.conftest import Api
from tests.scheduler.test_scheduler import T0, batch_times, job_row, scheduled, tick_at

EVERY_SECOND = "* * * * * ? 2090"
"""Every second of 2090 only: a scheduler ticking on the real clock (another test's) never
finds these jobs due, so only the ticks a test makes queue their runs."""
CATCH_UP_AT = T0 + timedelta(seconds=8)
"""A tick this late sees fire times T0..T0+8 s: T0+3 s and later are at most 5 s late
(on time), T0..T0+2 s were missed."""

MISFIRE_CASES = (  # (misfire policy, the seconds after T0 whose fire times get a run)
    ("latest", [2, 3, 4, 5, 6, 7, 8]),
    ("all", [0, 1, 2, 3, 4, 5, 6, 7, 8]),
    ("none", [3, 4, 5, 6, 7, 8]),
)


@pytest.mark.parametrize("overlap", ["skip", "queue", "allow"])
@pytest.mark.parametrize(("misfire", "seconds"), MISFIRE_CASES)
def test_one_tick_runs_every_on_time_fire_time(
    api: Api, project: str, datasource: str, misfire: str, seconds: list[int], overlap: str
) -> None:
    """All fire times at most 5 s late run, each as its own batch, whatever the overlap
    policy (they do not overlap each other); of the missed ones, the misfire policy keeps
    all, the latest or none."""
    job = scheduled(
        api,
        project,
        f"c_{misfire}_{overlap}",
        {"crontab": EVERY_SECOND, "misfire": misfire, "overlap": overlap},
    )
    tick_at(api, CATCH_UP_AT)  # it also queues other tests' jobs: count this one's runs
    expected = [T0 + timedelta(seconds=s) for s in seconds]
    assert batch_times(api, job.id) == expected
    row = job_row(api, job.id)
    assert row.next_fire_at == CATCH_UP_AT + timedelta(seconds=1)
    assert row.last_fire_at == CATCH_UP_AT


@pytest.mark.parametrize(("overlap", "runs_the_next"), [("skip", False), ("queue", True)])
def test_overlap_weighs_the_runs_of_earlier_ticks(
    api: Api, project: str, datasource: str, overlap: str, runs_the_next: bool
) -> None:
    """While a run queued by an earlier tick is active, ``skip`` skips the fire times due
    now; ``queue`` queues them."""
    job = scheduled(api, project, f"w_{overlap}", {"crontab": EVERY_SECOND, "overlap": overlap})
    tick_at(api, CATCH_UP_AT)
    first = batch_times(api, job.id)
    with api.runtime.sessions() as session:  # one of them runs (whatever the workers did)
        session.execute(
            update(RunRow)
            .where(RunRow.job_id == job.id, RunRow.batch_time == first[-1])
            .values(status="Running", worker="elsewhere")
        )
        session.commit()
    later = CATCH_UP_AT + timedelta(seconds=2, milliseconds=500)
    tick_at(api, later)
    following = [CATCH_UP_AT + timedelta(seconds=1), CATCH_UP_AT + timedelta(seconds=2)]
    assert batch_times(api, job.id) == first + (following if runs_the_next else [])
    outcome = job_row(api, job.id).last_outcome or ""
    assert outcome.startswith("queued" if runs_the_next else "skipped"), outcome


# --- the lease -----------------------------------------------------------------------------


def holder_of(process: subprocess.Popen[bytes]) -> Holder:
    return Holder.of_process(f"{socket.gethostname()}:{process.pid}/scheduler", process.pid)


@pytest.fixture(scope="module")
def running() -> Iterator[Holder]:
    """A holder that is a live process of this machine (not this test's own process)."""
    process = subprocess.Popen(["sleep", "600"])
    yield holder_of(process)
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def ended() -> Holder:
    """A holder that was a process of this machine and has ended."""
    process = subprocess.Popen(["sleep", "600"])
    holder = holder_of(process)
    process.kill()
    process.wait()
    return holder


ANOTHER_MACHINE = "0" * 12

HOLDER_CASES: tuple[tuple[str, Callable[[Holder, Holder], str], bool], ...] = (
    # (case, the holder in the lease row from (running, ended), taken over before expiry)
    ("ended, this machine", lambda running, ended: str(ended), True),
    ("running, this machine", lambda running, ended: str(running), False),
    (
        "its pid now another process's",
        lambda running, ended: str(replace(running, start=running.start + 1)),
        True,
    ),
    (
        "ended, another machine",
        lambda running, ended: str(replace(ended, machine=ANOTHER_MACHINE)),
        False,
    ),
    ("a name without process", lambda running, ended: "someone", False),
    ("a name without machine", lambda running, ended: ended.name, False),
)


@pytest.mark.parametrize(
    ("case", "row_holder", "at_once"), HOLDER_CASES, ids=[c[0] for c in HOLDER_CASES]
)
def test_a_lease_whose_holder_ended_on_this_machine_is_taken_at_once(
    api: Api,
    running: Holder,
    ended: Holder,
    case: str,
    row_holder: Callable[[Holder, Holder], str],
    at_once: bool,
) -> None:
    """A server started again after a crash takes the scheduler lease from its dead
    predecessor at once; a live holder, or one on another machine, keeps it until it
    expires."""
    name = f"lease-{case}"
    ttl = timedelta(seconds=60)
    me = str(Holder.of_process(f"{host_process_name()}/scheduler"))
    with api.runtime.sessions() as session:
        session.query(LeaseRow).filter(LeaseRow.name == name).delete()
        session.commit()
        assert scheduling.acquire_lease(session, row_holder(running, ended), ttl, name)
        assert scheduling.acquire_lease(session, me, ttl, name) is at_once
        if not at_once:
            session.execute(
                update(LeaseRow)
                .where(LeaseRow.name == name)
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
            session.commit()
            assert scheduling.acquire_lease(session, me, ttl, name)
        row = session.get(LeaseRow, name, populate_existing=True)
        assert row is not None
        assert row.holder == me
        second = str(Holder.of_process(f"{host_process_name()}/another"))
        assert not scheduling.acquire_lease(session, second, ttl, name)  # I am alive


def test_a_holder_names_its_process(running: Holder, ended: Holder) -> None:
    parsed = Holder.parse(str(running))
    assert parsed == running
    assert running.start > 0
    assert not running.is_gone()
    assert ended.is_gone()
    assert Holder.parse("host:12/scheduler") is None
    assert Holder.parse(f"{running.name}@{running.machine}.{running.start}") is None
