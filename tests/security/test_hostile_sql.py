"""Hostile job SQL: refused with a clear error, and nothing outside the project is touched.

Three layers are exercised:

* the API at save time (``POST /projects/{p}/jobs/{name}``): the SQL gate and the DuckDB
  binding refuse every hostile input with 400, E18209 or E18233, and a message naming the
  problem; the job is not saved and no file appears where a write was attempted;
* the locked-down DuckDB connection itself (the gate bypassed): raw hostile statements are
  refused by DuckDB, and the configuration cannot be unlocked;
* a real run in a worker process: a query that needs far more memory than its container
  fails cleanly and leaves the workers able to run the next job.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from datamill.engines.duckdb import Limits, Sandbox, connect_locked
from datamill.errors import DatamillError
from datamill.runtime.worker import WorkerPool
from datamill.security.sql_gate import gate
from tests.builders import job_body, make_source, start, wait_for
from tests.conftest import Api, assert_error

REFUSED = {"E18209", "E18233"}
TERMINAL = {"Successful", "Failed", "Canceled"}


# --- helpers -------------------------------------------------------------------------------


def assert_refused(response: httpx.Response, *needles: str) -> None:
    """400 with E18209 or E18233 and a message mentioning every needle (any case)."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error_code", "error_msg", "request_id"}, body
    assert body["error_code"] in REFUSED, body
    for needle in needles:
        assert needle.lower() in body["error_msg"].lower(), (needle, body)


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# --- (a) at save time, through the API -----------------------------------------------------


@dataclass
class Case:
    """A hostile ``computation.code``: ``{tmp}`` is a scratch folder, ``{other}`` the
    absolute path of another project's data file. ``writes`` are the files (relative to
    ``{tmp}``) the SQL tries to create; none of them may appear."""

    code: str
    needles: tuple[str, ...]
    writes: tuple[str, ...] = ()


def case(code: str, *needles: str, writes: tuple[str, ...] = (), id: str) -> Any:
    return pytest.param(Case(code, needles, writes), id=id)


NOT_A_QUERY = "only a read-only query"
TABLE_FUNCTION = "table functions are not allowed"
NOT_A_SOURCE = "not one of the job's sources"

HOSTILE = [
    # reading files of the server
    case("SELECT * FROM '/etc/passwd'", "/etc/passwd", NOT_A_SOURCE, id="from-etc-passwd"),
    case("FROM '/etc/passwd'", "/etc/passwd", id="from-first-etc-passwd"),
    case('SELECT * FROM "/etc/passwd"', "/etc/passwd", id="from-quoted-identifier"),
    case(
        "SELECT device FROM ev UNION ALL SELECT * FROM '/etc/passwd'",
        "/etc/passwd",
        id="union-with-file",
    ),
    case(
        "SELECT * FROM ev JOIN '/proc/self/environ' AS e ON true",
        "/proc/self/environ",
        id="join-with-proc-environ",
    ),
    case("SELECT * FROM read_csv('/etc/passwd')", TABLE_FUNCTION, "read_csv", id="read-csv"),
    case(
        "SELECT * FROM read_csv_auto('/etc/passwd', delim=':')",
        "read_csv_auto",
        id="read-csv-auto",
    ),
    case(
        "SELECT content FROM read_text('/proc/self/environ')",
        TABLE_FUNCTION,
        "read_text",
        id="read-text-proc-environ",
    ),
    case("SELECT content FROM read_blob('/etc/passwd')", "read_blob", id="read-blob"),
    case("SELECT file FROM glob('/etc/*')", TABLE_FUNCTION, "glob", id="glob-etc"),
    case("SELECT * FROM ROWS FROM (range(3))", TABLE_FUNCTION, "ROWS FROM", id="rows-from"),
    case(
        "SELECT * FROM ROWS FROM (read_csv('/etc/passwd'), range(2))",
        TABLE_FUNCTION,
        id="rows-from-read-csv",
    ),
    case("SELECT " + "(" * 3000 + "1" + ")" * 3000 + " FROM ev", "nested", id="nested-3000"),
    case("SELECT " + "(" * 33 + "1" + ")" * 33 + " FROM ev", "at most 32", id="nested-33"),
    case(
        "SELECT device FROM ev WHERE device IN (SELECT content FROM read_text('/etc/passwd'))",
        "read_text",
        id="read-text-in-subquery",
    ),
    case(
        "WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x",
        "read_csv",
        id="read-csv-in-cte",
    ),
    case(
        "SELECT * FROM ev, LATERAL (SELECT * FROM read_text('/etc/passwd'))",
        "read_text",
        id="read-text-lateral",
    ),
    case(
        "SELECT * FROM (DESCRIBE SELECT * FROM read_csv('/etc/passwd'))",
        "read_csv",
        id="describe-read-csv",
    ),
    case("SELECT * FROM sniff_csv('/etc/passwd')", "sniff_csv", id="sniff-csv"),
    # another project's files
    case("SELECT * FROM '{other}'", "secret.csv", id="other-project-file"),
    case("SELECT * FROM read_csv('{other}')", "read_csv", id="other-project-read-csv"),
    case("SELECT content FROM read_text('{other_dir}/*')", "read_text", id="other-project-glob"),
    # the gate collects CTE names of every scope, so a CTE named like a file in one
    # scope lets the name through in another; DuckDB must still refuse the file
    case(
        'SELECT * FROM (WITH "{other}" AS (SELECT 1 AS x) SELECT x FROM "{other}") AS a, '
        '"{other}" AS b',
        "secret.csv",
        id="other-project-file-behind-cte-name",
    ),
    # SUMMARIZE takes a string literal the gate does not see as a table
    case("SELECT * FROM (SUMMARIZE '/etc/passwd')", "/etc/passwd", id="summarize-file-literal"),
    # remote URLs
    case("SELECT * FROM 'http://127.0.0.1:9/x.csv'", "http://127.0.0.1:9/x.csv", id="http-url"),
    case(
        "SELECT * FROM 'https://example.com/data.parquet'",
        "https://example.com/data.parquet",
        id="https-url",
    ),
    case(
        "SELECT * FROM read_parquet('https://example.com/data.parquet')",
        "read_parquet",
        id="read-parquet-https",
    ),
    # writing files
    case("COPY ev TO '{tmp}/x.csv'", NOT_A_QUERY, "COPY", writes=("x.csv",), id="copy-table-to"),
    case(
        "COPY (SELECT 1 AS a) TO '{tmp}/y.csv' (FORMAT csv)",
        "COPY",
        writes=("y.csv",),
        id="copy-query-to",
    ),
    case("COPY ev FROM '/etc/passwd'", "COPY", id="copy-from-file"),
    case(
        "SELECT device FROM ev; COPY ev TO '{tmp}/z.csv'",
        "exactly one SQL statement",
        writes=("z.csv",),
        id="query-then-copy",
    ),
    case(
        "EXPORT DATABASE '{tmp}/export'",
        "does not parse",
        writes=("export",),
        id="export-database",
    ),
    case("ATTACH '{tmp}/x.db'", NOT_A_QUERY, "ATTACH", writes=("x.db",), id="attach-file"),
    case(
        "ATTACH '{tmp}/y.db' AS y; SELECT * FROM y.t",
        "exactly one SQL statement",
        writes=("y.db",),
        id="attach-then-select",
    ),
    # extensions and configuration
    case("INSTALL httpfs", NOT_A_QUERY, "INSTALL", id="install-httpfs"),
    case("FORCE INSTALL httpfs", NOT_A_QUERY, id="force-install-httpfs"),
    case("LOAD httpfs", NOT_A_QUERY, id="load-httpfs"),
    case("SET enable_external_access=true", NOT_A_QUERY, "SET", id="set-external-access"),
    case("SET allowed_paths=['/etc/passwd']", "SET", id="set-allowed-paths"),
    case("RESET lock_configuration", NOT_A_QUERY, id="reset-lock-configuration"),
    case("PRAGMA database_list", NOT_A_QUERY, "PRAGMA", id="pragma-database-list"),
    case("PRAGMA enable_profiling", "PRAGMA", id="pragma-enable-profiling"),
    case("CALL pragma_version()", NOT_A_QUERY, id="call-pragma"),
    case("SELECT * FROM pragma_database_list()", "pragma_database_list", id="pragma-function"),
    case("SELECT getenv('HOME') AS h", "getenv", id="getenv"),
    case("SELECT list_transform(['HOME'], x -> getenv(x)) AS l", "getenv", id="getenv-in-lambda"),
    case("SELECT current_setting('allowed_paths') AS s", "current_setting", id="current-setting"),
    case("SELECT * FROM duckdb_settings()", "duckdb_settings", id="duckdb-settings"),
    case(
        "SELECT * FROM query('SELECT * FROM read_text(''/etc/passwd'')')",
        TABLE_FUNCTION,
        "query",
        id="query-function",
    ),
    case("SELECT * FROM query_table('ev')", "query_table", id="query-table-function"),
    # more than a query
    case("SELECT 1 AS a; DROP TABLE ev", "exactly one SQL statement", id="two-statements"),
    case("CREATE TABLE t AS SELECT * FROM ev", NOT_A_QUERY, "CREATE", id="create-table"),
    case("CREATE MACRO m() AS 1", NOT_A_QUERY, id="create-macro"),
    case("DELETE FROM ev", NOT_A_QUERY, "DELETE", id="delete"),
    case("INSERT INTO ev VALUES ('a', 1.0, 'b')", NOT_A_QUERY, "INSERT", id="insert"),
    case("DROP TABLE ev", NOT_A_QUERY, "DROP", id="drop-table"),
    case("USE system", NOT_A_QUERY, id="use-system"),
    # qualified names
    case("SELECT * FROM main.ev", "qualified", "main.ev", id="qualified-main"),
    case("SELECT * FROM system.x", "qualified", "system.x", id="qualified-system"),
    case("SELECT * FROM memory.main.ev", "qualified", id="qualified-catalog"),
    case("SELECT * FROM information_schema.tables", "qualified", id="information-schema"),
]


@pytest.fixture
def other_file(api: Api) -> Path:
    """A data file of a second project, in the same data root."""
    other = f"p_{uuid.uuid4().hex[:10]}"
    assert api.post("/projects", json={"name": other, "description": "other"}).status_code == 201
    folder = api.data_root / other
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "secret.csv"
    path.write_text("secret\ntop-secret-value\n")
    return path


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_sql_is_refused_at_save(
    api: Api, project: str, datasource: str, other_file: Path, tmp_path: Path, hostile: Case
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    code = hostile.code.format(tmp=scratch, other=other_file, other_dir=other_file.parent)
    project_folder = api.data_root / project
    before = listing(project_folder), listing(other_file.parent)

    response = api.post(f"/projects/{project}/jobs/bad", json=job_body(code))

    assert_refused(response, *hostile.needles)
    assert "top-secret-value" not in response.text
    assert_error(api.get(f"/projects/{project}/jobs/bad"), 404, "E18202")
    for written in hostile.writes:
        assert not (scratch / written).exists(), written
    assert listing(scratch) == set()
    assert (listing(project_folder), listing(other_file.parent)) == before
    assert api.get(f"/projects/{project}/jobs").json()["total"] == 0


@pytest.mark.parametrize("hostile", HOSTILE)
def test_the_gate_alone_refuses_hostile_sql(hostile: Case, tmp_path: Path) -> None:
    """The gate is the first layer: it alone must refuse each input, before DuckDB binds."""
    other = tmp_path / "files" / "p_other" / "secret.csv"
    code = hostile.code.format(tmp=tmp_path, other=other, other_dir=other.parent)
    with pytest.raises(DatamillError) as refused:
        gate(code, ["ev"])
    assert refused.value.code in REFUSED
    assert refused.value.status == 400


def test_symlink_to_etc_passwd_is_refused_as_a_data_source(api: Api, project: str) -> None:
    folder = api.data_root / project
    os.symlink("/etc/passwd", folder / "passwd.csv")
    (folder / "fine.csv").write_text("a\n1\n")
    for paths in (["passwd.csv"], ["*.csv"], ["."]):
        response = api.post(
            f"/projects/{project}/datasources/pw",
            json={
                "type": "file",
                "spec": {
                    "root": "default",
                    "paths": paths,
                    "fileType": "csv",
                    "delimiter": ":",
                    "containsHeader": False,
                },
            },
        )
        assert_error(response, 400, "E18116", "outside")
        assert "root:" not in response.text  # no line of /etc/passwd leaked
    assert_error(api.get(f"/projects/{project}/datasources/pw"), 404, "E18102")


@pytest.mark.slow
def test_symlink_added_after_the_source_was_saved_is_refused_at_run_time(
    api: Api, project: str, datasource: str, workers: WorkerPool
) -> None:
    """A link that appears later is caught when the run lists its files, not followed."""
    folder = api.data_root / project
    created = api.post(
        f"/projects/{project}/datasources/many",
        json={
            "type": "file",
            "spec": {
                "root": "default",
                "paths": ["events*.csv"],
                "fileType": "csv",
                "delimiter": ",",
                "containsHeader": True,
            },
        },
    )
    assert created.status_code == 201, created.text
    body = job_body("SELECT count(*) AS n FROM m", table="m", source="many")
    assert api.post(f"/projects/{project}/jobs/count", json=body).status_code == 201
    os.symlink("/etc/passwd", folder / "events-late.csv")
    run_id = start(api, project, "count")
    entry = wait_for(api, project, "count", run_id, TERMINAL)
    assert entry["status"] == "Failed", entry
    assert "outside" in entry["message"], entry
    assert "root:" not in entry["message"]


def test_hostile_param_is_refused_when_the_run_starts(
    api: Api, project: str, datasource: str, workers: WorkerPool
) -> None:
    """Params are expanded into the SQL at run time; the gate runs again on the result."""
    body = job_body(
        "SELECT device FROM $(tbl)", params=[{"name": "tbl", "default": "ev"}], maxRunSeconds=60
    )
    assert api.post(f"/projects/{project}/jobs/p", json=body).status_code == 201
    for value, needle in [
        ("read_text('/proc/self/environ')", "read_text"),
        ("ev; DROP TABLE ev", "exactly one SQL statement"),
        ("'/etc/passwd'", "/etc/passwd"),
    ]:
        run_id = start(api, project, "p", [{"name": "tbl", "value": value}])
        entry = wait_for(api, project, "p", run_id, TERMINAL)
        assert entry["status"] == "Failed", entry
        assert needle.lower() in entry["message"].lower(), entry
        assert "root:" not in entry["message"]
    fine = start(api, project, "p")
    assert wait_for(api, project, "p", fine, TERMINAL)["status"] == "Successful"


# --- (b) at the engine layer, the gate bypassed --------------------------------------------


@dataclass
class Box:
    """A locked-down connection that may read ``allowed`` and write into ``out``."""

    con: duckdb.DuckDBPyConnection
    root: Path
    allowed: Path
    out: Path
    outside: Path

    def sql(self, template: str) -> str:
        return template.format(
            allowed=self.allowed,
            folder=self.allowed.parent,
            out=self.out,
            outside=self.outside,
            root=self.root,
        )


@pytest.fixture
def box(tmp_path: Path) -> Any:
    root = tmp_path
    folder = root / "allowed"
    folder.mkdir()
    allowed = folder / "ok.csv"
    allowed.write_text("a,b\n1,2\n")
    (folder / "sibling.csv").write_text("secret\ntop-secret-value\n")
    os.symlink("/etc/passwd", folder / "link.csv")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("secret\ntop-secret-value\n")
    (outside / "victim.txt").write_text("untouched\n")
    out = root / "out"
    out.mkdir()
    os.symlink("/etc/passwd", out / "passwd-link")
    os.symlink(outside, out / "outside-dir")
    os.symlink(outside / "victim.txt", out / "victim-link")
    con = connect_locked(
        Sandbox(
            temp_dir=root / "tmp",
            allowed_paths=[str(allowed)],
            allowed_dirs=[out],
            limits=Limits(memory_limit="256MB", threads=1, max_temp_size="1GB"),
        )
    )
    try:
        yield Box(con, root, allowed, out, outside)
    finally:
        con.close()


def test_the_box_allows_what_it_should(box: Box) -> None:
    """The refusals below are meaningful: the allowed file reads and ``out`` is writable."""
    assert box.con.execute(box.sql("SELECT * FROM read_csv('{allowed}')")).fetchall() == [(1, 2)]
    box.con.execute(box.sql("COPY (SELECT 42 AS a) TO '{out}/fine.csv' (FORMAT csv)"))
    assert (box.out / "fine.csv").read_text().splitlines() == ["a", "42"]
    settings = box.con.execute(
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration')"
    ).fetchone()
    assert settings == (False, True)


ENGINE_READS = [
    pytest.param("SELECT * FROM read_csv('/etc/passwd')", id="read-csv-etc-passwd"),
    pytest.param("SELECT * FROM '/etc/passwd'", id="replacement-scan-etc-passwd"),
    pytest.param("SELECT * FROM read_text('/proc/self/environ')", id="read-text-proc-environ"),
    pytest.param("SELECT * FROM read_blob('/etc/passwd')", id="read-blob-etc-passwd"),
    pytest.param("SELECT * FROM glob('/etc/*')", id="glob-etc"),
    pytest.param("SELECT * FROM read_csv('{folder}/sibling.csv')", id="file-next-to-allowed"),
    pytest.param("SELECT * FROM read_csv('{folder}/*.csv')", id="glob-next-to-allowed"),
    pytest.param("SELECT * FROM glob('{folder}/*')", id="list-allowed-folder"),
    pytest.param("SELECT * FROM read_csv('{outside}/secret.csv')", id="file-outside"),
    pytest.param(
        "SELECT * FROM read_csv('{folder}/../outside/secret.csv')", id="dotdot-from-allowed"
    ),
    pytest.param("SELECT * FROM read_text('{folder}/link.csv')", id="symlink-next-to-allowed"),
    pytest.param("SELECT * FROM read_text('{out}/passwd-link')", id="symlink-in-allowed-dir"),
    pytest.param(
        "SELECT * FROM read_text('{out}/outside-dir/secret.csv')",
        id="symlinked-dir-in-allowed-dir",
    ),
    pytest.param(
        "SELECT * FROM read_text('{out}/../outside/secret.csv')", id="dotdot-from-allowed-dir"
    ),
    pytest.param("SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')", id="http-url"),
    pytest.param("SELECT * FROM read_parquet('https://example.com/x.parquet')", id="https-url"),
    pytest.param("SELECT getenv('HOME')", id="getenv"),
    pytest.param("SELECT * FROM query('SELECT * FROM read_text(''/etc/passwd'')')", id="query"),
    pytest.param("SELECT * FROM sniff_csv('/etc/passwd')", id="sniff-csv"),
]


@pytest.mark.parametrize("template", ENGINE_READS)
def test_engine_refuses_reads_outside_the_sandbox(box: Box, template: str) -> None:
    with pytest.raises(duckdb.Error) as refused:
        box.con.execute(box.sql(template)).fetchall()
    assert "top-secret-value" not in str(refused.value)
    assert "root:" not in str(refused.value)


ENGINE_WRITES = [
    pytest.param("COPY (SELECT 1 AS a) TO '{outside}/x.csv'", "x.csv", id="copy-outside"),
    pytest.param("COPY (SELECT 1 AS a) TO '{root}/x.csv'", "../x.csv", id="copy-next-to-out"),
    pytest.param(
        "COPY (SELECT 1 AS a) TO '{out}/../outside/x.csv'", "x.csv", id="copy-dotdot-from-out"
    ),
    pytest.param(
        "COPY (SELECT 1 AS a) TO '{out}/outside-dir/x.csv'",
        "x.csv",
        id="copy-through-symlinked-dir",
    ),
    pytest.param(
        "COPY (SELECT 'pwned' AS a) TO '{out}/victim-link' (FORMAT csv)",
        "victim.txt",
        id="copy-over-symlink",
    ),
    pytest.param("ATTACH '{outside}/x.db' AS x", "x.db", id="attach-file"),
    pytest.param("EXPORT DATABASE '{outside}/export'", "export", id="export-database"),
    pytest.param(
        "COPY (SELECT 1 AS a) TO '{outside}/part' (FORMAT parquet, PARTITION_BY (a))",
        "part",
        id="copy-partitioned-outside",
    ),
]


@pytest.mark.parametrize(("template", "target"), ENGINE_WRITES)
def test_engine_refuses_writes_outside_the_sandbox(box: Box, template: str, target: str) -> None:
    before = listing(box.outside), set(os.listdir(box.root))
    with pytest.raises(duckdb.Error):
        box.con.execute(box.sql(template)).fetchall()
    assert (box.outside / "victim.txt").read_text() == "untouched\n"
    if target != "victim.txt":
        assert not (box.outside / target).exists()
    assert (listing(box.outside), set(os.listdir(box.root))) == before


ENGINE_CONFIG = [
    pytest.param("SET enable_external_access=true", id="set-external-access"),
    pytest.param("SET allowed_paths=['/etc/passwd']", id="set-allowed-paths"),
    pytest.param("SET allowed_directories=['/']", id="set-allowed-directories"),
    pytest.param("RESET allowed_paths", id="reset-allowed-paths"),
    pytest.param("RESET allowed_directories", id="reset-allowed-directories"),
    pytest.param("RESET enable_external_access", id="reset-external-access"),
    pytest.param("SET lock_configuration=false", id="unlock"),
    pytest.param("RESET lock_configuration", id="reset-lock"),
    pytest.param("SET autoload_known_extensions=true", id="set-autoload"),
    pytest.param("SET allow_community_extensions=true", id="set-community-extensions"),
    pytest.param("SET memory_limit='64GB'", id="set-memory-limit"),
    pytest.param("SET threads=64", id="set-threads"),
    pytest.param("SET temp_directory='{outside}'", id="set-temp-directory"),
    pytest.param("PRAGMA enable_profiling", id="pragma-enable-profiling"),
    pytest.param("SET GLOBAL enable_external_access=true", id="set-global-external-access"),
    pytest.param("INSTALL httpfs", id="install-httpfs"),
    pytest.param("FORCE INSTALL httpfs", id="force-install-httpfs"),
    pytest.param("INSTALL httpfs FROM 'http://127.0.0.1:9'", id="install-from-url"),
    pytest.param("LOAD httpfs", id="load-httpfs"),
    pytest.param("LOAD '{outside}/evil.duckdb_extension'", id="load-extension-file"),
]


@pytest.mark.parametrize("template", ENGINE_CONFIG)
def test_engine_configuration_cannot_be_unlocked(box: Box, template: str) -> None:
    before = box.con.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
        "'allowed_paths', 'allowed_directories', 'lock_configuration', 'memory_limit', "
        "'threads', 'temp_directory', 'autoload_known_extensions', "
        "'allow_community_extensions') ORDER BY name"
    ).fetchall()
    with pytest.raises(duckdb.Error):
        box.con.execute(box.sql(template)).fetchall()
    after = box.con.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
        "'allowed_paths', 'allowed_directories', 'lock_configuration', 'memory_limit', "
        "'threads', 'temp_directory', 'autoload_known_extensions', "
        "'allow_community_extensions') ORDER BY name"
    ).fetchall()
    assert after == before
    with pytest.raises(duckdb.Error):
        box.con.execute("SELECT * FROM read_text('/etc/passwd')").fetchall()


# --- (c) a query that needs far more memory than its container -----------------------------


@pytest.mark.slow
def test_query_needing_more_memory_than_the_container_fails_cleanly(
    api: Api, project: str, workers: WorkerPool
) -> None:
    make_source(api, project, "big", rows=3000)
    # 9 million rows of ~1 kB aggregated into one string: ~9 GB of state in one group,
    # which DuckDB cannot spill, against the 2 GB of a 1U2G container
    hungry = job_body(
        "SELECT length(string_agg(a.device || repeat('x', 1000), ',')) AS n FROM t a, t b",
        table="t",
        source="big",
        maxRunSeconds=60,
    )
    assert api.post(f"/projects/{project}/jobs/hungry", json=hungry).status_code == 201
    run_id = start(api, project, "hungry")
    entry = wait_for(api, project, "hungry", run_id, TERMINAL, timeout=120)
    assert entry["status"] == "Failed", entry
    assert "memory" in entry["message"].lower(), entry
    assert "2GB" in entry["message"], entry
    assert "maximum run time" not in entry["message"], entry
    assert entry["duration"] < 60, entry
    logs = api.get(f"/projects/{project}/jobs/hungry/runs/{run_id}/logs").json()["lines"]
    assert any("Failed" in line and "memory" in line for line in logs), logs
    assert not (api.runtime.settings.projects_dir / project / "warehouse" / "hungry").exists()

    assert api.get("/health").status_code == 200
    trivial = job_body(
        "SELECT device, count(*) AS n FROM t GROUP BY device", table="t", source="big"
    )
    assert api.post(f"/projects/{project}/jobs/trivial", json=trivial).status_code == 201
    for _ in range(2):  # both workers, whichever ran the hungry query, still work
        after = start(api, project, "trivial")
        done = wait_for(api, project, "trivial", after, TERMINAL)
        assert done["status"] == "Successful", done
        assert done["rowsWritten"] == 3
    assert all(p.is_alive() for p in workers.processes)
