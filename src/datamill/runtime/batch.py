"""Executing one batch run of a SQL job: the driver between the worker and the engine.

:func:`prepare` (the service) fixes the run's inputs from the store; :func:`execute` runs
the query on the job's engine, in a sandboxed session, into the run's staging folder, with a
watchdog that interrupts it on a stop request or at the deadline; :func:`publish` moves
the staged result into the warehouse once the run is finished as Successful.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from datamill import engines
from datamill.connectors.exchange import exchange_folders
from datamill.engines.base import (
    BatchSession,
    Interrupted,
    OutOfMemory,
    QueryFailed,
    Unavailable,
    Watchdog,
    WriteResult,
)
from datamill.errors import DatamillError, E
from datamill.services.batch_runs import PreparedRun, prepare

__all__ = [
    "PreparedRun",
    "RunCanceled",
    "RunStats",
    "RunTimedOut",
    "cleanup",
    "execute",
    "prepare",
    "publish",
]


class RunCanceled(Exception):
    """The run was interrupted because a stop was requested."""


class RunTimedOut(Exception):
    """The watchdog interrupted the run at its maximum run time."""


@dataclass
class RunStats:
    rows_read: int | None
    rows_written: int
    bytes_read: int
    bytes_written: int
    log: list[str] = field(default_factory=list)
    """Lines the engine had for the run's log."""

    def as_dict(self) -> dict[str, int | None]:
        return {
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
        }


def execute(prepared: PreparedRun, stop: threading.Event, deadline: float) -> RunStats:
    """Run the query into the staging folder (:func:`publish` makes it the batch's result)."""
    engine = engines.get(prepared.engine)
    try:
        with (
            engine.session(prepared.sandbox, profiling=True, endpoint=prepared.endpoint) as session,
            Watchdog(session.interrupt, stop, deadline) as watchdog,
        ):
            result = _run(prepared, session, watchdog)
    except Unavailable as exc:
        raise DatamillError(E.ENGINE_UNAVAILABLE, exc.message) from None
    except QueryFailed as exc:  # opening the session failed
        raise DatamillError(E.INVALID_SQL, exc.message) from None
    bytes_written = sum(p.stat().st_size for p in prepared.staging.glob("*.parquet"))
    return RunStats(
        rows_read=result.rows_read,
        rows_written=result.rows_written,
        bytes_read=result.bytes_read or prepared.bytes_in,
        bytes_written=bytes_written,
        log=result.log,
    )


def _run(prepared: PreparedRun, session: BatchSession, watchdog: Watchdog) -> WriteResult:
    """The run's tables and query on an open session, its errors as the run's."""
    try:
        for table in prepared.tables:
            session.add_table(table)
        return session.write(prepared.sql, prepared.staging)
    except Interrupted:
        if watchdog.reason == "timeout":
            raise RunTimedOut from None
        raise RunCanceled from None
    except OutOfMemory as exc:
        raise DatamillError(
            E.INVALID_SQL,
            f"the query needs more memory than the container gives "
            f"({prepared.sandbox.limits.memory_limit}): {exc.message}",
        ) from None
    except QueryFailed as exc:
        refused = prepared.read_refusal()  # a remote read the outbound guard stopped
        if refused is not None:
            raise refused from None
        raise DatamillError(E.INVALID_SQL, exc.message) from None


def publish(staging: Path, target: Path, retire_into: Path | None = None) -> None:
    """Replace ``target`` with ``staging`` so readers see the old or the new batch, whole,
    and never no batch: the two folders are swapped in one step where the file system can.

    The replaced result is removed, or with ``retire_into`` moved there (a folder on the
    same file system that does not exist yet) for the caller to remove later.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        retired = retire_into or target.with_name(target.name + f".old-{os.getpid()}")
        shutil.rmtree(retired, ignore_errors=True)
        if exchange_folders(str(staging), str(target)):  # ``staging`` now holds the old one
            os.replace(staging, retired)
        else:  # a file system that cannot swap: for an instant there is no ``target``
            os.replace(target, retired)
            os.replace(staging, target)
        if retire_into is None:
            shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)


def cleanup(prepared: PreparedRun) -> None:
    shutil.rmtree(prepared.staging.parent, ignore_errors=True)
