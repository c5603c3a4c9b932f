"""Crash tests of the scheduler: kill -9 real servers over and over; no fire time is lost.

Real ``datamill server`` subprocesses (each in its own process group, 2 workers, lease
3 s, runs lost after 2 s without heartbeat) run 4 every-second cron jobs (misfire ``all``,
overlap ``allow``: every fire time must become exactly one run) while the test kills a
server's whole process group with SIGKILL at random moments (see :func:`kill_loop`: half
of the kills hit a server that runs entirely, the others may land while its workers and
scheduler are still starting) and starts it again on the same data folder and metadata
store. Then the jobs are stopped, every run must end (runs orphaned by a kill end Failed
through the reaper), and per job the batch times read from the metadata store, and the
history API, must be the unbroken every-second sequence from the first fire time to the
stop: no fire time lost, none doubled, none left unfinished.

* SQLite: one server, killed and restarted at least 30 times.
* PostgreSQL: two servers on one database (one shared data folder), either one killed at
  random, at least 30 kills in all; then one dedicated round kills the scheduler lease
  holder, keeps it down for ~4 s and measures how long the other server takes to queue
  the next run (at most 10 s).

Server errors (HTTP 500, "unhandled error" in a server's log) and a stopped job that is
still scheduled fail the test too, but only after the fire-time checks have run.

Each kill round costs a full start of the server (~4 CPU seconds of imports in its four
processes), so both tests take ~2.5 minutes on 2 otherwise idle cores and longer on a
busy machine; every wait has a deadline. The random seed is printed and is part of every
assertion message; ``DATAMILL_CRASH_SEED`` replays the same random choices (the timing of
a shared machine does not replay).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from datamill.store.base import make_engine
from datamill.store.jobs import JobRow, LeaseRow
from datamill.store.projects import ProjectRow
from datamill.store.runs import RunRow
from tests.servers import RunningServer, create_database, free_port

pytestmark = pytest.mark.slow  # servers started and killed again and again

JOBS = ("tick_a", "tick_b", "tick_c", "tick_d")
MIN_KILLS = 30
MIN_SCHEDULED_RUNS = 100
TERMINAL = {"Successful", "Failed", "Canceled"}
SECOND = timedelta(seconds=1)

WORKERS = 2
PROCESSES = 2 + WORKERS
"""A server's processes: the API server, its workers and its scheduler."""
SERVER_ENV = {
    "DATAMILL_WORKERS": str(WORKERS),
    "DATAMILL_HEARTBEAT_SECONDS": "0.2",
    "DATAMILL_RUN_LOST_AFTER_SECONDS": "2",
    "DATAMILL_SCHEDULER_LEASE_SECONDS": "3",
    "DATAMILL_LOG_LEVEL": "warning",
    # Batch runs and their schedules are what is killed here; the streaming engine has its
    # own kill tests (tests/test_streaming_reliability.py), so it does not run in these servers.
    "DATAMILL_STREAMING_ENGINE": "false",
}
START_TIMEOUT = 60.0
"""Seconds a (re)started server gets to be up: generous, the machine is shared."""
CHAOS_BUDGET = 210.0
"""Seconds the kill loop of one test may take before it fails."""
RECOVERY_BUDGET = 40.0
"""Seconds after the stop within which every run must be terminal."""
FULL_START_SHARE = 0.5
"""The share of kill rounds that wait until all of the victim runs (see kill_loop)."""
LEADERLESS_LIMIT = 30.0
"""No scheduler leading this long forces a full start (catch-up is limited to 100)."""
TAKEOVER_LIMIT = 10.0
STOP_SLACK = timedelta(seconds=3)
"""How far the last fire time may lie before the stop (a tick due then may be late)."""


def seed_from_env() -> int:
    given = os.environ.get("DATAMILL_CRASH_SEED")
    seed = int(given) if given else random.SystemRandom().randrange(2**32)
    print(f"scheduler crash test seed: {seed} (replay with DATAMILL_CRASH_SEED={seed})")
    return seed


def utcnow() -> datetime:
    return datetime.now(UTC)


def live_group_members(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that are still alive (zombies do not count)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            state, pgrp = fields[0], int(fields[2])
            if pgrp == pgid and state not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def process_group_of(pid: int) -> int | None:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def is_resource_tracker(pid: int) -> bool:
    try:
        return b"resource_tracker" in (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False


@dataclass(frozen=True)
class Store:
    """The metadata store the servers share; tells which processes have it open."""

    url: str
    sqlite_file: Path | None = None
    pg_port: int | None = None

    def holders(self, pids: list[int]) -> set[int]:
        """Those of ``pids`` with the SQLite file open or a connection to PostgreSQL."""
        targets: set[str] = set()
        if self.sqlite_file is not None:
            targets.add(str(self.sqlite_file))
        if self.pg_port is not None:
            for table in ("/proc/net/tcp", "/proc/net/tcp6"):
                with contextlib.suppress(OSError):
                    for line in Path(table).read_text().splitlines()[1:]:
                        cells = line.split()
                        remote, state, inode = cells[2], cells[3], cells[9]
                        if state == "01" and int(remote.rsplit(":", 1)[1], 16) == self.pg_port:
                            targets.add(f"socket:[{inode}]")
        found = set()
        for pid in pids:
            with contextlib.suppress(OSError):
                for fd in (Path("/proc") / str(pid) / "fd").iterdir():
                    with contextlib.suppress(OSError):
                        if os.readlink(fd) in targets:
                            found.add(pid)
                            break
        return found


@dataclass
class Server:
    """One ``datamill server`` subprocess in its own process group, restartable."""

    name: str
    env: dict[str, str]
    log: Path
    store: Store
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    starts: int = 0
    started_at: float = 0.0
    healthy: bool = False
    ready: bool = False
    startup: float = 0.0
    """Seconds from the last start until all of the server was up."""

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start(self) -> None:
        assert self.process is None, f"{self.name} is already running"
        self.port = free_port()
        self.starts += 1
        self.healthy = self.ready = False
        with self.log.open("ab") as out:
            out.write(f"\n=== {self.name} start #{self.starts} on port {self.port}\n".encode())
            self.process = subprocess.Popen(
                [sys.executable, "-m", "datamill.cli.main", "server", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started_at = time.monotonic()

    def service_processes(self) -> list[int]:
        """The server, its workers and its scheduler (not multiprocessing's tracker)."""
        assert self.process is not None
        return [p for p in live_group_members(self.process.pid) if not is_resource_tracker(p)]

    def poll_ready(self, context: str) -> bool:
        """True once /health answers and the server, each worker and the scheduler have the
        metadata store open (all of it runs); fails when it exits or takes too long."""
        assert self.process is not None, f"{self.name} is not running"
        if self.ready:
            return True
        if self.process.poll() is not None:
            raise AssertionError(
                f"{context}: {self.name} exited with {self.process.returncode} while "
                f"starting; log:\n{tail(self.log)}"
            )
        if not self.healthy:
            with contextlib.suppress(httpx.TransportError):
                self.healthy = httpx.get(self.api + "/health", timeout=2).status_code == 200
        if self.healthy:
            processes = self.service_processes()
            if len(processes) == PROCESSES and self.store.holders(processes) == set(processes):
                self.ready = True
                self.startup = time.monotonic() - self.started_at
                return True
        if time.monotonic() - self.started_at > START_TIMEOUT:
            raise AssertionError(
                f"{context}: {self.name} was not up within {START_TIMEOUT:g} s (health "
                f"answered: {self.healthy}); log:\n{tail(self.log)}"
            )
        return False

    def wait_ready(self, context: str) -> None:
        while not self.poll_ready(context):
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the whole process group (server, workers, scheduler) and wait for it."""
        process, self.process = self.process, None
        self.healthy = self.ready = False
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while (members := live_group_members(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not members, f"{self.name}: processes {members} outlived SIGKILL of their group"

    def owns(self, pid: int) -> bool:
        return self.process is not None and process_group_of(pid) == self.process.pid


@dataclass
class Cluster:
    """The servers of one test, the admin token, and direct access to the metadata store."""

    servers: list[Server]
    engine: Engine
    seed: int
    project: str = field(default_factory=lambda: f"crash_{uuid.uuid4().hex[:8]}")
    kills: int = 0
    first_fire: dict[str, datetime] = field(default_factory=dict)
    failed_requests: int = 0
    defects: list[str] = field(default_factory=list)
    jobs: tuple[str, ...] = JOBS

    def token(self, data_dir: Path) -> dict[str, str]:
        return {"Authorization": f"Bearer {(data_dir / 'admin.token').read_text().strip()}"}

    def why(self, message: str) -> str:
        return f"[seed {self.seed}, {self.kills} kills] {message}"

    def any_ready(self) -> Server:
        """A server that is all up (waiting for the first one that gets there)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for server in self.servers:
                if server.process is not None and server.poll_ready(self.why("start")):
                    return server
            time.sleep(0.05)
        raise AssertionError(self.why(f"no server was up within {START_TIMEOUT:g} s"))

    def pick_healthy(self, rng: random.Random) -> Server:
        """One of the servers that answer /health, at random (waiting for one)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for server in self.servers:
                if server.process is not None:
                    server.poll_ready(self.why(f"start of {server.name}"))
            healthy = [server for server in self.servers if server.healthy]
            if healthy:
                return rng.choice(healthy)
            time.sleep(0.05)
        raise AssertionError(self.why(f"no server answered /health within {START_TIMEOUT:g} s"))

    def call(
        self, headers: dict[str, str], method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        server = self.any_ready()
        return httpx.request(method, server.api + path, headers=headers, timeout=30, **kwargs)

    def job(self, headers: dict[str, str], name: str) -> dict[str, Any]:
        response = self.call(headers, "GET", f"/projects/{self.project}/jobs/{name}")
        assert response.status_code == 200, self.why(f"GET job {name}: {response.text}")
        body: dict[str, Any] = response.json()
        return body

    # --- the metadata store -----------------------------------------------------------------

    def job_ids(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(JobRow.name, JobRow.id)
                .join(ProjectRow, ProjectRow.id == JobRow.project_id)
                .where(ProjectRow.name == self.project)
            ).all()
        return {name: job_id for name, job_id in rows}

    def runs(self) -> list[Any]:
        """(job_id, batch_time, status, trigger, queued_at, end_time) of every run of the
        project."""
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    select(
                        RunRow.job_id,
                        RunRow.batch_time,
                        RunRow.status,
                        RunRow.trigger,
                        RunRow.queued_at,
                        RunRow.end_time,
                    )
                    .join(ProjectRow, ProjectRow.id == RunRow.project_id)
                    .where(ProjectRow.name == self.project)
                ).all()
            )

    def scheduled_runs(self) -> int:
        return sum(1 for run in self.runs() if run.trigger == "schedule")

    def lease(self) -> tuple[str, datetime] | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(LeaseRow.holder, LeaseRow.expires_at).where(LeaseRow.name == "scheduler")
            ).first()
        return (row[0], row[1]) if row else None

    def leader(self) -> Server | None:
        """The server whose scheduler holds a lease that has not expired."""
        lease = self.lease()
        if lease is None or lease[1] <= utcnow():
            return None
        pid = int(lease[0].rsplit("/", 1)[0].rsplit(":", 1)[1])
        return next((s for s in self.servers if s.owns(pid)), None)

    def wait_leader(self, context: str, server: Server | None = None) -> Server:
        """Wait until ``server`` (or any server) holds the scheduler lease."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None and server in (None, leader):
                return leader
            time.sleep(0.05)
        raise AssertionError(
            self.why(f"{context}: no scheduler lease for {server or 'any server'}: {self.lease()}")
        )

    # --- the scenario -----------------------------------------------------------------------

    def create_jobs(
        self,
        headers: dict[str, str],
        files_root: Path,
        spec: dict[str, str] | None = None,
    ) -> None:
        """The cron jobs ``self.jobs`` over a small CSV file; ``spec``: their scheduler's
        spec (every second, misfire ``all`` and overlap ``allow`` by default)."""
        spec = spec or {"crontab": "* * * * * ?", "misfire": "all", "overlap": "allow"}
        created = self.call(headers, "POST", "/projects", json={"name": self.project})
        assert created.status_code == 201, created.text
        folder = files_root / self.project
        folder.mkdir(parents=True, exist_ok=True)
        rows = "\n".join(f"d{i % 3},{i}.5" for i in range(10))
        (folder / "events.csv").write_text(f"device,value\n{rows}\n")
        source = self.call(
            headers,
            "POST",
            f"/projects/{self.project}/datasources/events",
            json={
                "type": "file",
                "spec": {
                    "root": "default",
                    "paths": ["events.csv"],
                    "fileType": "csv",
                    "delimiter": ",",
                    "containsHeader": True,
                },
            },
        )
        assert source.status_code == 201, source.text
        for name in self.jobs:
            body = {
                "srcs": [{"name": "events", "type": "DataSource", "tableName": "ev"}],
                "computation": {"type": "SQL", "code": "SELECT device, value FROM ev"},
                "container": {"type": "1U2G", "count": 1},
                "scheduler": {"type": "crontab", "spec": spec},
            }
            response = self.call(
                headers, "POST", f"/projects/{self.project}/jobs/{name}", json=body
            )
            assert response.status_code == 201, response.text
            next_fire = response.json()["schedule"]["nextFireTime"]
            assert next_fire is not None, response.json()
            self.first_fire[name] = datetime.fromisoformat(next_fire)

    def wait_caught_up(self, headers: dict[str, str]) -> None:
        """Wait until a scheduler is ticking again: every job fired within the last 2 s."""
        deadline = time.monotonic() + 30
        stale: dict[str, str | None] = {}
        while time.monotonic() < deadline:
            stale = {}
            now = utcnow()
            for name in self.jobs:
                schedule = self.job(headers, name)["schedule"]
                last = schedule["lastFireTime"]
                if last is None or now - datetime.fromisoformat(last) > 2 * SECOND:
                    stale[name] = last
            if not stale:
                return
            time.sleep(0.2)
        raise AssertionError(self.why(f"no scheduler caught up within 30 s: {stale}"))

    def stop_all(self, headers: dict[str, str]) -> dict[str, tuple[datetime, datetime]]:
        """Stop every job; returns per job the wall-clock time before and after its stop.

        A stop that fails with a server error is tried again for up to a minute (the
        schedule is stopped in the action's first commit, each try cancels more runs) and
        the failure counted, so the checks still run; the test fails on such errors at its
        very end.
        """
        stopped = {}
        for name in self.jobs:
            before = utcnow()
            deadline = time.monotonic() + 60
            while True:
                response = self.call(
                    headers, "POST", f"/projects/{self.project}/jobs/{name}/actions/stop"
                )
                if response.status_code < 500 or time.monotonic() > deadline:
                    break
                self.failed_requests += 1
            assert response.status_code == 200, self.why(f"stop {name}: {response.text}")
            stopped[name] = (before, utcnow())
        return stopped

    def wait_all_terminal(self) -> float:
        """Wait until no run of the project is left unfinished; returns the seconds taken."""
        started = time.monotonic()
        deadline = started + RECOVERY_BUDGET
        pending: Counter[str] = Counter()
        while time.monotonic() < deadline:
            pending = Counter(run.status for run in self.runs() if run.status not in TERMINAL)
            if not pending:
                return time.monotonic() - started
            time.sleep(0.2)
        raise AssertionError(
            self.why(f"runs still unfinished {RECOVERY_BUDGET:g} s after the stop: {dict(pending)}")
        )

    def check(
        self, headers: dict[str, str], stopped: dict[str, tuple[datetime, datetime]]
    ) -> Counter[str]:
        """The three checks per job: no fire time lost, none doubled, none unfinished."""
        ids = self.job_ids()
        runs = self.runs()
        statuses: Counter[str] = Counter(run.status for run in runs)
        problems: list[str] = []
        for name in self.jobs:
            mine = [run for run in runs if run.job_id == ids[name]]
            times = sorted(run.batch_time for run in mine)
            before_stop, after_stop = stopped[name]
            doubled = sorted(t for t, n in Counter(times).items() if n > 1)
            if doubled:
                problems.append(f"{name}: batch times with several runs: {doubled[:10]}")
            not_scheduled = [run for run in mine if run.trigger != "schedule"]
            if not_scheduled:
                problems.append(f"{name}: runs not queued by the scheduler: {not_scheduled[:5]}")
            unfinished = [run for run in mine if run.status not in TERMINAL]
            if unfinished:
                problems.append(f"{name}: {len(unfinished)} runs not terminal: {unfinished[:5]}")
            if not times:
                problems.append(f"{name}: no runs at all")
                continue
            first, last = self.first_fire[name], times[-1]
            if times[0] != first:
                problems.append(f"{name}: first batch {times[0]}, expected the first fire {first}")
            expected = {first + k * SECOND for k in range(int((last - first) / SECOND) + 1)}
            lost = sorted(expected - set(times))
            if lost:
                problems.append(f"{name}: {len(lost)} fire times lost, e.g. {lost[:10]}")
            # the scheduler was current when the job stopped: the last fire is the stop's
            # (a fire time due a moment before the stop may be dropped by it, not older ones)
            if before_stop - last > STOP_SLACK:
                problems.append(f"{name}: last batch {last}, but the job stopped at {before_stop}")
            if last > after_stop:
                problems.append(f"{name}: a run for a fire time after the stop: {last}")
            # the same through the API: every run once, all terminal
            seen: list[dict[str, Any]] = []
            page = 1
            while True:
                response = self.call(
                    headers,
                    "GET",
                    f"/projects/{self.project}/jobs/{name}/history",
                    params={"size": 1000, "page": page, "sortBy": "batchTime"},
                )
                assert response.status_code == 200, self.why(f"history: {response.text}")
                body = response.json()
                seen += body["history"]
                if len(seen) >= body["total"] or not body["history"]:
                    break
                page += 1
            api_times = [h["batchTime"] for h in seen]
            if len(seen) != len(mine) or len(set(api_times)) != len(api_times):
                problems.append(
                    f"{name}: history API lists {len(seen)} runs ({len(set(api_times))} distinct "
                    f"batch times), the store has {len(mine)}"
                )
            if any(h["status"] not in TERMINAL for h in seen):
                problems.append(f"{name}: history API shows unfinished runs")
            job = self.job(headers, name)
            if job["scheduleState"] != "stopped" or job["schedule"]["nextFireTime"] is not None:
                self.defects.append(f"{name}: still scheduled after the stop: {job['schedule']}")
        assert not problems, self.why("\n".join(problems))
        return statuses

    def assert_no_defects(self) -> None:
        """No request failed with a server error (none is logged) and the stop held.

        Checked last, after the fire-time checks, so a defect of the stop action does not
        hide what the crash test is about.
        """
        for server in self.servers:
            for text in server.log.read_text(errors="replace").splitlines():
                if '"unhandled error"' in text:
                    with contextlib.suppress(ValueError, KeyError, IndexError):
                        entry = json.loads(text)
                        text = f"{entry['request_id']}: {entry['exception'].splitlines()[-1]}"
                    self.defects.append(f"{server.name} logged an unhandled error {text[:300]}")
        assert not self.defects, self.why(
            f"{self.failed_requests} requests failed with a server error;\n"
            + "\n".join(self.defects)
        )


def server_env(
    data_dir: Path, files_root: Path, pycache: Path, database_url: str | None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAMILL_")}
    env.update(SERVER_ENV)
    env["DATAMILL_DATA_DIR"] = str(data_dir)
    env["DATAMILL_DATA_ROOTS"] = json.dumps({"default": str(files_root)})
    if database_url:
        env["DATAMILL_DATABASE_URL"] = database_url
    # Every restart imports the whole service in 4 processes: keep their bytecode (outside
    # the source tree) instead of compiling it again each time.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


@pytest.fixture(scope="session")
def pycache(workdir: Path) -> Path:
    path = workdir / "pycache"
    path.mkdir(exist_ok=True)
    return path


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[None]:
    try:
        yield
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.kill()


def report(
    label: str, cluster: Cluster, started: float, statuses: Counter[str], **extra: Any
) -> None:
    figures = ", ".join(f"{k}={v}" for k, v in extra.items())
    print(
        f"{label}: seed {cluster.seed}, {cluster.kills} kills, {sum(statuses.values())} runs "
        f"{dict(statuses)}, {time.monotonic() - started:.1f} s; {figures}"
    )


def kill_loop(cluster: Cluster, rng: random.Random) -> dict[str, Any]:
    """Kill servers at random until MIN_KILLS kills and MIN_SCHEDULED_RUNS runs.

    Each round picks one of the servers that answer /health. In about half of the rounds
    (``FULL_START_SHARE``) it first waits until all of that server runs (workers and
    scheduler have the store open; on a single server its scheduler holds the lease), in
    the others the kill may land while the workers and the scheduler are still starting.
    No scheduler leading for ``LEADERLESS_LIMIT`` seconds forces a full start, so missed
    fire times stay far below the 100 the ``all`` misfire policy catches up. Then the
    round sleeps 0.2-1.5 s and kills the server's process group, which starts again.
    Returns figures for the report: where the kills landed, the median full start.
    """
    deadline = time.monotonic() + CHAOS_BUDGET
    last_led = time.monotonic()
    landed: Counter[str] = Counter()
    startups: list[float] = []
    holders: set[str] = set()
    single = len(cluster.servers) == 1
    while cluster.kills < MIN_KILLS or cluster.scheduled_runs() < MIN_SCHEDULED_RUNS:
        assert time.monotonic() < deadline, cluster.why(
            f"the kill loop did not reach {MIN_KILLS} kills and {MIN_SCHEDULED_RUNS} scheduled "
            f"runs within {CHAOS_BUDGET:g} s ({cluster.scheduled_runs()} runs, median full "
            f"start {statistics.median(startups or [0]):.1f} s, load {os.getloadavg()[0]:.1f})"
        )
        victim = cluster.pick_healthy(rng)
        starved = time.monotonic() - last_led > LEADERLESS_LIMIT
        if rng.random() < FULL_START_SHARE or starved:
            victim.wait_ready(cluster.why(f"start of {victim.name}"))
            startups.append(victim.startup)
            if single or starved:
                cluster.wait_leader("kill loop", victim if single else None)
        time.sleep(rng.uniform(0.2, 1.5))
        leader = cluster.leader()
        if leader is not None:
            last_led = time.monotonic()
            lease = cluster.lease()
            holders.add(lease[0] if lease else "")
        victim.poll_ready("kill loop")
        landed[
            "lease holder" if leader is victim else "all up" if victim.ready else "starting"
        ] += 1
        victim.kill()
        cluster.kills += 1
        victim.start()
    for server in cluster.servers:
        server.wait_ready(cluster.why("after the kill loop"))
    return {
        "kills_landed": dict(landed),
        "median_full_start_s": round(statistics.median(startups or [0]), 2),
        "lease_holders_seen": len(holders),
    }


def test_sqlite_server_killed_again_and_again(tmp_path: Path, pycache: Path) -> None:
    started = time.monotonic()
    seed = seed_from_env()
    rng = random.Random(seed)
    data_dir, files_root = tmp_path / "data", tmp_path / "files"
    files_root.mkdir()
    env = server_env(data_dir, files_root, pycache, None)
    database = (data_dir / "datamill.db").resolve()
    store = Store(f"sqlite:///{database}", sqlite_file=database)
    server = Server("sqlite-server", env, tmp_path / "server.log", store)
    engine = make_engine(store.url)
    cluster = Cluster([server], engine, seed)
    with running([server]):
        server.start()
        server.wait_ready("first start")
        headers = cluster.token(data_dir)
        cluster.create_jobs(headers, files_root)
        chaos = kill_loop(cluster, rng)
        chaos_done = time.monotonic()
        cluster.wait_caught_up(headers)
        stopped = cluster.stop_all(headers)
        recovery = cluster.wait_all_terminal()
        statuses = cluster.check(headers, stopped)
    engine.dispose()
    report(
        "sqlite",
        cluster,
        started,
        statuses,
        chaos_s=round(chaos_done - started, 1),
        recovery_s=round(recovery, 1),
        **chaos,
    )
    cluster.assert_no_defects()


def test_postgresql_two_servers_killed_at_random(
    tmp_path: Path, pycache: Path, postgres_server: RunningServer
) -> None:
    started = time.monotonic()
    seed = seed_from_env()
    rng = random.Random(seed)
    url = create_database(postgres_server, f"crash_{uuid.uuid4().hex[:8]}")
    # One shared data folder (results, keys, the admin token), as on a shared volume.
    data_dir, files_root = tmp_path / "data", tmp_path / "files"
    files_root.mkdir()
    env = server_env(data_dir, files_root, pycache, url)
    store = Store(url, pg_port=postgres_server.port)
    servers = [Server(f"pg-server-{i}", env, tmp_path / f"server-{i}.log", store) for i in (1, 2)]
    engine = make_engine(url)
    cluster = Cluster(servers, engine, seed)
    with running(servers):
        first, second = servers
        first.start()
        while not first.healthy:  # the first one has created the schema and the admin
            first.poll_ready("first start")
            time.sleep(0.05)
        second.start()
        for server in servers:
            server.wait_ready("first start")
        headers = cluster.token(data_dir)
        cluster.create_jobs(headers, files_root)
        chaos = kill_loop(cluster, rng)
        chaos_done = time.monotonic()

        takeover = measure_takeover(cluster, headers)

        cluster.wait_caught_up(headers)
        stopped = cluster.stop_all(headers)
        recovery = cluster.wait_all_terminal()
        statuses = cluster.check(headers, stopped)
    engine.dispose()
    report(
        "postgresql",
        cluster,
        started,
        statuses,
        chaos_s=round(chaos_done - started, 1),
        **chaos,
        takeover_s=round(takeover, 2),
        recovery_s=round(recovery, 1),
    )
    cluster.assert_no_defects()


def measure_takeover(cluster: Cluster, headers: dict[str, str]) -> float:
    """Kill the lease holder, keep it down ~4 s; seconds until the other one queues a run."""
    cluster.wait_caught_up(headers)
    holder = cluster.wait_leader("before the takeover round")
    lease = cluster.lease()
    assert lease is not None
    killed_at = utcnow()
    holder.kill()
    cluster.kills += 1
    down_since = time.monotonic()
    queued_after: datetime | None = None
    while queued_after is None and time.monotonic() - down_since < TAKEOVER_LIMIT + 5:
        fresh = [run.queued_at for run in cluster.runs() if run.queued_at > killed_at]
        queued_after = min(fresh) if fresh else None
        time.sleep(0.05)
    new_lease = cluster.lease()
    time.sleep(max(0.0, 4.0 - (time.monotonic() - down_since)))  # stays down for ~4 s
    holder.start()  # (it comes up while the test goes on with the other server)
    assert queued_after is not None, cluster.why(
        f"no run was queued within {TAKEOVER_LIMIT + 5:g} s of killing the lease holder "
        f"{lease[0]} (lease now {new_lease})"
    )
    took = (queued_after - killed_at).total_seconds()
    assert took <= TAKEOVER_LIMIT, cluster.why(
        f"the other server queued the next run only {took:.2f} s after the lease holder died"
    )
    assert new_lease is not None, cluster.why("the lease row vanished")
    assert new_lease[0] != lease[0], cluster.why(
        f"the dead holder {lease[0]} still holds the lease"
    )
    print(f"takeover: {took:.2f} s from kill -9 of {lease[0]} to the next queued run")
    return took
