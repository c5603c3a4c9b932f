"""Actions on one run of a batch job (``/projects/{p}/batch/actions``)."""

from __future__ import annotations

from datamill.client.base import M, Resource, api_path
from datamill.client.models import RerunResult, StopResult

__all__ = ["BatchAPI"]


class BatchAPI(Resource):
    """Actions on one run of a batch job: stop a running run, rerun a finished one."""

    def _action(self, model: type[M], project: str, action: str, job: str, run_id: int) -> M:
        path = api_path("projects", project, "batch", "actions", action)
        return self._send("POST", model, path, {"jobName": job, "runId": run_id})

    def stop(self, project: str, job_name: str, run_id: int) -> StopResult:
        """Stop a Running run: it goes Cancelling, then Canceled (``run_id`` -1: the latest)."""
        return self._action(StopResult, project, "stop", job_name, run_id)

    def rerun(self, project: str, job_name: str, run_id: int) -> RerunResult:
        """Rerun a Successful, Failed or Canceled run for the same batch time: it goes
        Restarting, then runs again with the same params (``run_id`` -1: the latest)."""
        return self._action(RerunResult, project, "rerun", job_name, run_id)
