"""The state machine of a streaming job."""

from __future__ import annotations

from enum import StrEnum

from datamill.errors import DatamillError, E


class JobState(StrEnum):
    DRAFT = "DRAFT"
    READY = "READY"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"
    RESTARTING = "RESTARTING"


ACTIVE = frozenset({JobState.STARTING, JobState.RUNNING, JobState.STOPPING, JobState.RESTARTING})
"""States in which the engine owns the job: it cannot be edited or deleted."""
STARTABLE = frozenset({JobState.READY, JobState.STOPPED})
STOPPABLE = frozenset({JobState.STARTING, JobState.RUNNING, JobState.RESTARTING})
EDITABLE = frozenset(JobState) - ACTIVE

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.DRAFT: frozenset({JobState.DRAFT, JobState.READY}),
    JobState.READY: frozenset({JobState.DRAFT, JobState.READY, JobState.STARTING}),
    JobState.STARTING: frozenset({JobState.RUNNING, JobState.FAILED, JobState.STOPPING}),
    JobState.RUNNING: frozenset({JobState.STOPPING, JobState.FAILED, JobState.RESTARTING}),
    JobState.RESTARTING: frozenset({JobState.RUNNING, JobState.FAILED, JobState.STOPPING}),
    JobState.STOPPING: frozenset({JobState.STOPPED}),
    JobState.STOPPED: frozenset({JobState.DRAFT, JobState.READY, JobState.STARTING}),
    JobState.FAILED: frozenset({JobState.DRAFT, JobState.READY}),
}
"""Every allowed state change. Saving moves an editable job to DRAFT or READY; start and
stop are the API's actions; the engine moves STARTING/RESTARTING to RUNNING, a running job
to RESTARTING (``restartWhenException``) or FAILED, and STOPPING to STOPPED."""


def allowed(before: JobState, after: JobState) -> bool:
    return after in TRANSITIONS[before]


def _conflict(job_id: str, state: JobState, rule: str) -> DatamillError:
    return DatamillError(
        E.STREAMING_STATE_CONFLICT, f"streaming job '{job_id}' is {state.value}; {rule}"
    )


def state_after_save(job_id: str, state: JobState, passed: bool) -> JobState:
    """The state of a job saved (``passed``: checked without problems)."""
    if state in ACTIVE:
        raise _conflict(job_id, state, "stop it before editing it")
    return JobState.READY if passed else JobState.DRAFT


def state_after_start(job_id: str, state: JobState) -> JobState:
    if state not in STARTABLE:
        hint = (
            " (save it with check=true first)" if state in (JobState.DRAFT, JobState.FAILED) else ""
        )
        raise _conflict(job_id, state, f"only a READY or STOPPED job can be started{hint}")
    return JobState.STARTING


def state_after_stop(job_id: str, state: JobState) -> JobState:
    if state not in STOPPABLE:
        raise _conflict(job_id, state, "only a STARTING, RUNNING or RESTARTING job can be stopped")
    return JobState.STOPPING


def check_delete(job_id: str, state: JobState) -> None:
    if state in ACTIVE:
        raise _conflict(job_id, state, "stop it before deleting it")


def check_transition(job_id: str, before: JobState, after: JobState) -> None:
    """Refuse a state change :data:`TRANSITIONS` does not allow (for the engine's moves)."""
    if not allowed(before, after):
        raise _conflict(job_id, before, f"it cannot become {after.value}")
