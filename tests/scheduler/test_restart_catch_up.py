"""A server killed (SIGKILL) and started again at once runs every fire time it was away for.

One real ``datamill server`` subprocess (see test_scheduler_crash.py for the harness) runs
one every-second cron job with the default policies: misfire ``latest``, overlap ``skip``.
Each round kills the server's whole process group at a moment when no run of the job is
active, and starts it again at once on the same data folder and metadata store.

What must hold, per round and over the whole history:

* the restarted server takes the scheduler lease from its dead predecessor at once: its
  first run is queued before that lease would have expired (the lease is made 60 s long
  here, so this does not depend on how fast a busy machine starts a server);
* every fire time from the first to the stop has exactly one run, unless the documented
  policy drops it: misfire ``latest`` drops a fire time more than 5 s late when a later,
  also missed, fire time of the same tick runs instead (the tick's time is when it queued
  the next run that exists: a missed fire time follows, or the nearest run was queued more
  than 5 s after its batch time); overlap ``skip`` drops it while a run queued by an
  earlier tick was still active (queued before it came due, ended after it);
* no fire time has two runs.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from datamill.scheduler.tick import MISFIRE_THRESHOLD
from datamill.store.base import make_engine
from tests.scheduler.test_scheduler_crash import (
    SECOND,
    START_TIMEOUT,
    STOP_SLACK,
    TERMINAL,
    Cluster,
    Server,
    Store,
    pycache,
    running,
    server_env,
    utcnow,
)
from tests.servers import RunningServer, create_database

pytestmark = pytest.mark.slow  # a real server, killed and started again

__all__ = ["pycache"]  # the harness's fixture, used here

JOB = "every_second"
ROUNDS = 3
LEASE_SECONDS = 60
"""Far longer than the default (6 s): a lease waited out instead of taken over shows
clearly, however long a busy machine takes to start the server again."""
TICK_SLACK = timedelta(milliseconds=500)
"""How long after a fire time the tick that handles it may insert its runs."""


@dataclass
class Round:
    killed_at: datetime
    lease_expired_at: datetime
    first_queued_at: datetime
    caught_up: int
    """Runs of fire times between the kill and the restarted scheduler's first tick."""


def job_runs(cluster: Cluster) -> list[Any]:
    return [run for run in cluster.runs() if run.trigger == "schedule"]


def kill_and_restart(cluster: Cluster, server: Server) -> Round:
    """Kill the server between two fire times with no run active, restart it at once, and
    wait until its scheduler queues runs on time again."""
    cluster.wait_leader("before the kill", server)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        runs = job_runs(cluster)
        fraction = utcnow().microsecond / 1e6
        if runs and all(r.status in TERMINAL for r in runs) and 0.2 <= fraction <= 0.7:
            break
        time.sleep(0.01)
    lease = cluster.lease()
    assert lease is not None
    killed_at = utcnow()
    server.kill()
    cluster.kills += 1
    server.start()
    deadline = time.monotonic() + START_TIMEOUT + 30
    while True:
        after = [r for r in job_runs(cluster) if r.queued_at > killed_at]
        if any(r.batch_time > killed_at and r.queued_at - r.batch_time < SECOND for r in after):
            break
        assert time.monotonic() < deadline, cluster.why(
            f"the restarted server queued no run on time; runs since the kill: {after}"
        )
        time.sleep(0.05)
    first_tick = min(r.queued_at for r in after)
    caught_up = sum(1 for r in after if killed_at < r.batch_time < first_tick)
    return Round(killed_at, lease[1], first_tick, caught_up)


def unexplained_gaps(runs: Sequence[Any], first: datetime, last: datetime) -> list[datetime]:
    """The fire times from ``first`` to ``last`` without a run that the policies (misfire
    ``latest``, overlap ``skip``) do not explain; see the module's docstring."""
    ordered = sorted(runs, key=lambda r: r.batch_time)
    have = {r.batch_time for r in ordered}
    lost = []
    moment = first
    while moment <= last:
        if moment not in have:
            # the tick that saw this fire time queued the next run that exists
            following = next((r for r in ordered if r.batch_time > moment), None)
            later = moment + SECOND
            missed = following is not None and (
                following.queued_at - following.batch_time > MISFIRE_THRESHOLD
                or (
                    later < following.batch_time
                    and later not in have
                    and following.queued_at - later > MISFIRE_THRESHOLD
                )
            )
            busy = any(
                r.batch_time < moment
                and r.queued_at < moment + TICK_SLACK
                and (r.end_time is None or r.end_time > moment)
                for r in ordered
            )
            if not (missed or busy):
                lost.append(moment)
        moment += SECOND
    return lost


@pytest.mark.parametrize("metadata", ["sqlite", "postgresql"])
def test_a_restarted_server_runs_every_fire_time(
    tmp_path: Path, pycache: Path, metadata: str, request: pytest.FixtureRequest
) -> None:
    data_dir, files_root = tmp_path / "data", tmp_path / "files"
    files_root.mkdir()
    if metadata == "postgresql":
        postgres: RunningServer = request.getfixturevalue("postgres_server")
        url = create_database(postgres, f"restart_{uuid.uuid4().hex[:8]}")
        store = Store(url, pg_port=postgres.port)
    else:
        database = (data_dir / "datamill.db").resolve()
        url = None
        store = Store(f"sqlite:///{database}", sqlite_file=database)
    env = server_env(data_dir, files_root, pycache, url)
    env["DATAMILL_SCHEDULER_LEASE_SECONDS"] = str(LEASE_SECONDS)
    env["DATAMILL_LOG_LEVEL"] = "info"  # the scheduler's lease changes, in the log
    server = Server(f"{metadata}-server", env, tmp_path / "server.log", store)
    engine = make_engine(store.url)
    cluster = Cluster([server], engine, seed=0, jobs=(JOB,))
    with running([server]):
        server.start()
        server.wait_ready("first start")
        headers = cluster.token(data_dir)
        cluster.create_jobs(headers, files_root, {"crontab": "* * * * * ? *"})
        rounds = [kill_and_restart(cluster, server) for _ in range(ROUNDS)]
        cluster.wait_caught_up(headers)
        before_stop, after_stop = cluster.stop_all(headers)[JOB]
        cluster.wait_all_terminal()
        runs = job_runs(cluster)
    engine.dispose()

    problems = []
    times = [r.batch_time for r in runs]
    doubled = sorted(t for t, n in Counter(times).items() if n > 1)
    if doubled:
        problems.append(f"fire times with several runs: {doubled}")
    first = cluster.first_fire[JOB]
    if min(times) != first or max(times) > after_stop:
        problems.append(f"runs from {min(times)} to {max(times)}: the job ran {first}-{after_stop}")
    # a fire time due a moment before the stop may be dropped by it, not older ones
    lost = unexplained_gaps(runs, first, before_stop - STOP_SLACK)
    if lost:
        problems.append(f"{len(lost)} fire times lost: {lost}")
    for number, done in enumerate(rounds, 1):
        if done.first_queued_at >= done.lease_expired_at:
            problems.append(
                f"round {number}: the restarted server queued its first run at "
                f"{done.first_queued_at}, after its dead predecessor's lease expired "
                f"({done.lease_expired_at}); killed at {done.killed_at}"
            )
    if sum(done.caught_up for done in rounds) < ROUNDS:
        problems.append("the restarted server caught up on fewer fire times than rounds")
    assert not problems, "\n".join(
        [
            *problems,
            f"rounds: {rounds}",
            f"runs: {sorted((r.batch_time, r.queued_at) for r in runs)}",
        ]
    )
    print(f"restart catch-up on {metadata}: {len(runs)} runs, rounds {rounds}")
