"""Exports of a job's results, their history and the rerun of one batch."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from datamill.api.deps import (
    PageDep,
    ProjectEditor,
    ProjectReader,
    ResourceName,
    RunIdPath,
    RuntimeDep,
    SessionDep,
)
from datamill.api.waits import WaitSeconds, read_released, wait_until
from datamill.domain.common import Model
from datamill.domain.exports import Export, ExportCreate, ExportHistory, ExportRerun, ExportUpdate
from datamill.domain.runs import TERMINAL, ExportRunEntry, RerunResult, RunLog
from datamill.services import exports as service

router = APIRouter(tags=["exports"])
BASE = "/projects/{project}/jobs/{job}/exports"


class ExportList(Model):
    total: int
    page: int
    size: int
    exports: list[Export]


@router.post(
    BASE + "/{name}",
    status_code=status.HTTP_201_CREATED,
    summary="Create an export that runs after every successful run of the job",
)
def create_export(
    job: ResourceName,
    name: ResourceName,
    body: ExportCreate,
    runtime: RuntimeDep,
    session: SessionDep,
    access: ProjectEditor,
) -> Export:
    return service.create_export(runtime, session, access, job, name, body)


@router.put(BASE + "/{name}", summary="Replace an export's spec")
def update_export(
    job: ResourceName,
    name: ResourceName,
    body: ExportUpdate,
    runtime: RuntimeDep,
    session: SessionDep,
    access: ProjectEditor,
) -> Export:
    return service.update_export(runtime, session, access, job, name, body.spec)


@router.get(BASE + "/{name}", summary="Get an export")
def get_export(
    job: ResourceName, name: ResourceName, session: SessionDep, access: ProjectReader
) -> Export:
    return service.get_export(session, access, job, name)


@router.get(BASE, summary="List a job's exports")
def list_exports(
    job: ResourceName, session: SessionDep, access: ProjectReader, page: PageDep
) -> ExportList:
    total, items = service.list_exports(session, access, job, page)
    return ExportList(total=total, page=page.page, size=page.size, exports=items)


@router.delete(
    BASE + "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an export (its history goes with it)",
)
def delete_export(
    job: ResourceName, name: ResourceName, session: SessionDep, access: ProjectEditor
) -> None:
    service.delete_export(session, access, job, name)


@router.get(BASE + "/{name}/history", summary="The export's runs, newest first")
def export_history(
    job: ResourceName, name: ResourceName, session: SessionDep, access: ProjectReader, page: PageDep
) -> ExportHistory:
    return service.export_history(session, access, job, name, page)


@router.get(
    BASE + "/{name}/runs/{runId}",
    summary=(
        "The export run of one batch (runId is the job run's); with waitSeconds, answered "
        "once it has ended (long poll)"
    ),
)
async def get_export_run(
    job: ResourceName,
    name: ResourceName,
    runId: RunIdPath,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    access: ProjectReader,
    waitSeconds: WaitSeconds = 0,
) -> ExportRunEntry:
    """A wait also covers a batch whose job run has not ended yet: its export run is
    queued when the job run succeeds. Without an export run to show (the job run ended
    otherwise, or the export is newer than the batch) the answer is 404."""

    key, entry = await read_released(
        session, lambda: service.export_run(session, access, job, name, runId)
    )
    if waitSeconds > 0 and (entry is None or entry.status not in TERMINAL):
        await wait_until(
            request, runtime, lambda: service.export_run_settled(runtime, key), waitSeconds
        )
        same_batch = key.run_id  # -1 resolved: the answer is about the batch waited for
        key, entry = await read_released(
            session, lambda: service.export_run(session, access, job, name, same_batch)
        )
    if entry is None:
        raise service.no_export_run(key)
    return entry


@router.get(BASE + "/{name}/runs/{runId}/logs", summary="The log of the export run of one batch")
def export_run_logs(
    job: ResourceName,
    name: ResourceName,
    runId: RunIdPath,
    session: SessionDep,
    access: ProjectReader,
) -> RunLog:
    return service.export_run_log(session, access, job, name, runId)


@router.post(
    BASE + "/{name}/actions/rerun",
    summary="Export one batch again (the batch of the given job run)",
)
def rerun_export(
    job: ResourceName,
    name: ResourceName,
    body: ExportRerun,
    session: SessionDep,
    access: ProjectEditor,
) -> RerunResult:
    return service.rerun_export(session, access, job, name, body.runId)
