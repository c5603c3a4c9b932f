"""Tenant isolation of the data roots: a project sees only its own folder of a root
(``<root>/<project>/``) unless an administrator grants it the whole root, and it never sees
the folders of the other projects; the upgrade grants existing projects the roots their
sources and exports already use."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from datamill.config import Settings
from datamill.domain.datasources import FileSpec
from datamill.runtime.worker import WorkerPool
from datamill.services.datasources import SourceReader
from datamill.services.runtime import Runtime
from datamill.store.base import make_engine, utcnow
from datamill.store.data_roots import DataRootGrantRow
from datamill.store.datasources import DataSourceRow
from datamill.store.exports import ExportRow
from datamill.store.jobs import JobRow
from datamill.store.migrate import upgrade
from datamill.store.projects import ProjectRow
from tests.builders import TERMINAL, start, wait_for
from tests.conftest import Api, assert_error
from tests.connectors.test_export_files import wait_export
from tests.servers import RunningServer, create_database

SECRET = "top-secret-value"


def file_source(paths: list[str], *, root: str = "default", verify: bool = True) -> dict[str, Any]:
    """A CSV data source body; without ``verify`` it is saved without reading its files."""
    body: dict[str, Any] = {
        "type": "file",
        "spec": {
            "root": root,
            "paths": paths,
            "fileType": "csv",
            "delimiter": ",",
            "containsHeader": True,
        },
    }
    if not verify:
        body |= {"noVerifySchema": True, "schema": [{"key": "secret", "valtype": "string"}]}
    return body


@pytest.fixture
def other(api: Api) -> str:
    """A second project with a secret file in its folder of each data root."""
    name = f"p_{uuid.uuid4().hex[:10]}"
    assert api.post("/projects", json={"name": name, "description": "other"}).status_code == 201
    for root in ("default", "other"):
        (api.project_files(name, root) / "secret.csv").write_text(f"secret\n{SECRET}\n")
    return name


# --------------------------------------------------------------------------- probes


@dataclass(frozen=True)
class Probe:
    """A path by which a project might reach another project's files. ``path`` may name
    ``{other}`` (the other project) and ``{root}`` (the data root's folder); ``links`` are
    symbolic links made in the project's own folder first, to ``other-folder``,
    ``other-file`` or ``root``."""

    id: str
    path: str
    links: dict[str, str] = field(default_factory=dict)


PROBES = [
    Probe("dotdot", "../{other}/secret.csv"),
    Probe("dotdot-glob", "../{other}/*.csv"),
    Probe("dotdot-inside", "sub/../../{other}/secret.csv"),
    Probe("absolute", "{root}/{other}/secret.csv"),
    Probe("home", "~/secret.csv"),
    Probe("link-to-folder", "peek/secret.csv", {"peek": "other-folder"}),
    Probe("link-to-folder-glob", "peek/*.csv", {"peek": "other-folder"}),
    Probe("link-to-file", "peek.csv", {"peek.csv": "other-file"}),
    Probe("link-to-root", "up/{other}/secret.csv", {"up": "root"}),
    Probe("link-to-root-glob", "up/*/secret.csv", {"up": "root"}),
]


def _place(api: Api, project: str, other: str, probe: Probe) -> str:
    root = api.data_root
    targets = {
        "other-folder": root / other,
        "other-file": root / other / "secret.csv",
        "root": root,
    }
    for name, target in probe.links.items():
        os.symlink(targets[target], api.project_files(project) / name)
    return probe.path.format(other=other, root=root)


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "unverified"])
@pytest.mark.parametrize("probe", [pytest.param(p, id=p.id) for p in PROBES])
def test_a_data_source_cannot_reach_another_projects_files(
    api: Api, project: str, other: str, probe: Probe, verify: bool
) -> None:
    path = _place(api, project, other, probe)
    response = api.post(
        f"/projects/{project}/datasources/peek", json=file_source([path], verify=verify)
    )
    assert_error(response, 400, "E18116", "spec.paths[0]")
    assert SECRET not in response.text
    assert_error(api.get(f"/projects/{project}/datasources/peek"), 404, "E18102")


def test_a_path_naming_another_project_means_a_folder_of_ones_own(
    api: Api, project: str, other: str
) -> None:
    """``<other>/secret.csv`` is relative to the project's own folder: no such file there."""
    refused = api.post(
        f"/projects/{project}/datasources/peek", json=file_source([f"{other}/secret.csv"])
    )
    assert_error(refused, 400, "E18115", "no files match")
    assert SECRET not in refused.text
    mine = api.project_files(project) / other
    mine.mkdir()
    (mine / "secret.csv").write_text("secret\nmy-own-value\n")
    created = api.post(
        f"/projects/{project}/datasources/mine", json=file_source([f"{other}/secret.csv"])
    )
    assert created.status_code == 201, created.text
    rows = api.get(f"/projects/{project}/datasources/mine/preview").json()["rows"]
    assert rows == [{"secret": "my-own-value"}]


def test_a_glob_sees_only_the_projects_own_files(api: Api, project: str, other: str) -> None:
    (api.project_files(project) / "mine.csv").write_text("secret\nmine\n")
    for pattern in ("**/*.csv", "*.csv", "**"):
        name = f"g{abs(hash(pattern)) % 10_000}"
        created = api.post(f"/projects/{project}/datasources/{name}", json=file_source([pattern]))
        assert created.status_code == 201, created.text
        preview = api.get(f"/projects/{project}/datasources/{name}/preview")
        assert preview.json()["rows"] == [{"secret": "mine"}], pattern


def test_a_link_added_after_saving_is_refused_when_read(api: Api, project: str, other: str) -> None:
    (api.project_files(project) / "later").mkdir()
    created = api.post(
        f"/projects/{project}/datasources/late",
        json=file_source(["later/*.csv"], verify=False),
    )
    assert created.status_code == 201, created.text
    (api.project_files(project) / "later" / "x.csv").symlink_to(
        api.data_root / other / "secret.csv"
    )
    preview = api.get(f"/projects/{project}/datasources/late/preview")
    assert_error(preview, 400, "E18116", "spec.paths[0]", "outside its folder")
    assert SECRET not in preview.text


# --------------------------------------------------------------------------- exports

EXPORT_PROBES = [
    Probe("dotdot", "../{other}/out-"),
    Probe("absolute", "{root}/{other}/out-"),
    Probe("link-to-folder", "peek/out-", {"peek": "other-folder"}),
    Probe("link-to-root", "up/{other}/out-", {"up": "root"}),
]


@pytest.mark.parametrize("probe", [pytest.param(p, id=p.id) for p in EXPORT_PROBES])
def test_a_file_export_cannot_target_another_projects_folder(
    api: Api, project: str, job: str, other: str, probe: Probe
) -> None:
    path = _place(api, project, other, probe)
    url = f"/projects/{project}/jobs/{job}/exports/leak"
    response = api.post(url, json={"type": "file", "spec": {"path": path, "format": "json"}})
    assert_error(response, 400, "E18116", "spec.path")
    assert_error(api.get(url), 404, "E18302")


def test_a_file_export_writes_into_the_projects_own_folder(
    api: Api, project: str, job: str, other: str, workers: WorkerPool
) -> None:
    spec = {"path": f"{other}/out-", "format": "json"}
    created = api.post(
        f"/projects/{project}/jobs/{job}/exports/mine", json={"type": "file", "spec": spec}
    )
    assert created.status_code == 201, created.text
    run_id = start(api, project, job)
    assert wait_for(api, project, job, run_id, TERMINAL)["status"] == "Successful"
    entry = wait_export(api, project, job, "mine", run_id)
    assert entry["status"] == "Successful", entry
    assert sorted(p.name for p in (api.data_root / other).iterdir()) == ["secret.csv"]
    written = list((api.project_files(project) / other).iterdir())
    assert [p.name.startswith("out-") for p in written] == [True]


# --------------------------------------------------------------------------- grants


def _grant(api: Api, root: str, project: str, token: str | None = None) -> Any:
    return api.put(f"/data-roots/{root}/grants/{project}", token=token)


def test_a_granted_root_is_seen_whole_but_the_other_projects_folders(
    api: Api, project: str, other: str
) -> None:
    shared = api.runtime.settings.resolved_data_roots["other"] / f"shared_{project}"
    shared.mkdir()
    (shared / "a.csv").write_text("secret\nshared-value\n")
    ours = file_source([f"shared_{project}/a.csv"], root="other")
    url = f"/projects/{project}/datasources"
    assert_error(api.post(f"{url}/before", json=ours), 400, "E18115", "no files match")

    granted = _grant(api, "other", project)
    assert granted.status_code == 200, granted.text
    assert granted.json()["root"] == "other"
    assert granted.json()["project"] == project
    assert _grant(api, "other", project).status_code == 200  # granting again changes nothing

    created = api.post(f"{url}/shared", json=ours)
    assert created.status_code == 201, created.text
    assert api.get(f"{url}/shared/preview").json()["rows"] == [{"secret": "shared-value"}]
    for path in (f"{other}/secret.csv", f"{other}/*.csv", f"{other.upper()}/secret.csv"):
        refused = api.post(f"{url}/peek", json=file_source([path], root="other", verify=False))
        assert_error(refused, 400, "E18116", "spec.paths[0]", "another project's folder")
    # a glob over the whole root leaves the other projects' folders out
    everything = api.post(f"{url}/all", json=file_source(["*/*.csv"], root="other"))
    assert everything.status_code == 201, everything.text
    rows = api.get(f"{url}/all/preview", params={"limit": 1000}).json()["rows"]
    assert {"secret": "shared-value"} in rows
    assert {"secret": SECRET} not in rows
    # the default root, not granted, still shows only the project's own folder
    assert_error(
        api.post(f"{url}/def", json=file_source([f"../{other}/secret.csv"])), 400, "E18116"
    )

    listed = api.get("/data-roots", params={"size": 1000}).json()
    roots = {r["name"]: r for r in listed["dataRoots"]}
    assert set(roots) >= {"default", "other"}
    assert project in [g["project"] for g in roots["other"]["grants"]]
    assert project not in [g["project"] for g in roots["default"]["grants"]]

    assert api.delete(f"/data-roots/other/grants/{project}").status_code == 204
    assert_error(api.get(f"{url}/shared/preview"), 400, "E18115")
    assert_error(api.delete(f"/data-roots/other/grants/{project}"), 404, "E18441")


def test_granting_checks_the_root_the_project_and_the_caller(api: Api, project: str) -> None:
    assert_error(_grant(api, "nowhere", project), 400, "E18116", "root", "unknown data root")
    assert_error(_grant(api, "other", "p_no_such_project"), 404, "E18402")
    _, token = api.new_user()
    members = api.put(f"/projects/{project}/members/{_}", json={"role": "owner"})
    assert members.status_code == 200, members.text
    assert_error(_grant(api, "other", project, token), 403, "E18002")
    assert_error(api.get("/data-roots", token=token), 403, "E18002")
    assert_error(api.delete(f"/data-roots/other/grants/{project}", token=token), 403, "E18002")


# --------------------------------------------------------------------------- upgrade


def _database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "postgresql":
        server: RunningServer = request.getfixturevalue("postgres_server")
        return create_database(server, f"datamill_old_{uuid.uuid4().hex[:8]}")
    return f"sqlite:///{tmp_path / 'old.db'}"


def test_the_upgrade_keeps_existing_sources_reading_what_they_read(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A store of the release before grants, with a project reading ``shared/*.csv`` of the
    default root and one exporting to the root ``other``: after the upgrade both keep their
    roots whole; a project without files, and any made later, sees only its own folder."""
    url = _database_url(backend, request, tmp_path)
    engine = make_engine(url)
    upgrade(engine, "0004")
    spec = FileSpec.model_validate(file_source(["shared/*.csv"])["spec"])
    with Session(engine) as session:
        legacy, exporter, fresh = (ProjectRow(name=n) for n in ("legacy", "exporter", "fresh"))
        session.add_all([legacy, exporter, fresh])
        session.flush()
        session.add(
            DataSourceRow(
                project_id=legacy.id,
                name="events",
                type="file",
                spec=spec.model_dump(mode="json", exclude_none=True),
                schema=[{"key": "secret", "valtype": "string"}],
            )
        )
        job = JobRow(project_id=exporter.id, name="j", definition={}, schema=[])
        hook_job = JobRow(project_id=fresh.id, name="j", definition={}, schema=[])
        session.add_all([job, hook_job])
        session.flush()
        session.add(
            ExportRow(
                project_id=exporter.id,
                job_id=job.id,
                name="out",
                type="file",
                spec={"root": "other", "path": "reports/", "format": "json"},
            )
        )
        session.add(
            ExportRow(
                project_id=fresh.id,
                job_id=hook_job.id,
                name="hook",
                type="http",
                spec={"url": "http://example.com/"},
            )
        )
        session.commit()
    upgrade(engine)
    with Session(engine) as session:
        grants = {
            (row.root, session.get(ProjectRow, row.project_id).name)  # type: ignore[union-attr]
            for row in session.query(DataRootGrantRow)
        }
    engine.dispose()
    assert grants == {("default", "legacy"), ("other", "exporter")}

    files = tmp_path / "files"
    (files / "shared").mkdir(parents=True)
    (files / "shared" / "a.csv").write_text("secret\nshared-value\n")
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        data_roots={"default": files, "other": tmp_path / "other"},
    )
    runtime = Runtime.open(settings)
    try:
        with runtime.sessions() as session:
            ids = {p.name: p.id for p in session.query(ProjectRow)}
            for name, expected in (("legacy", [files / "shared" / "a.csv"]), ("fresh", [])):
                reader = SourceReader(runtime, session, ids[name], name)
                found = reader.files("file", spec, utcnow()).urls
                assert found == [str(p) for p in expected], name
    finally:
        runtime.close()
