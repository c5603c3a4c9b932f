"""Batch actions on one run: stop and rerun (the specification's state machine)."""

from __future__ import annotations

from fastapi import APIRouter

from datamill.api.deps import ProjectEditor, SessionDep
from datamill.domain.runs import RerunResult, RunAction, StopResult
from datamill.services import runs

router = APIRouter(tags=["batch jobs"])


@router.post(
    "/projects/{project}/batch/actions/stop",
    summary="Stop a Running run (Running -> Cancelling -> Canceled)",
)
def stop_run(body: RunAction, session: SessionDep, access: ProjectEditor) -> StopResult:
    return runs.stop_run(session, access, body.jobName, body.runId)


@router.post(
    "/projects/{project}/batch/actions/rerun",
    summary="Rerun a finished run for the same batch (-> Restarting -> Running)",
)
def rerun(body: RunAction, session: SessionDep, access: ProjectEditor) -> RerunResult:
    return runs.rerun(session, access, body.jobName, body.runId)
