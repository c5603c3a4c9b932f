"""Hostile job SQL: refused with a clear error, and nothing outside the project is touched.

Three layers are exercised:

* the API at save time (``POST /projects/{p}/jobs/{name}``): the SQL gate, the check of
  DuckDB's own parse tree (tables, statements, the allow-list of functions) and the DuckDB
  binding refuse every hostile input with 400, E18209 or E18233, and a message naming the
  problem; the job is not saved and no file appears where a write was attempted; benign
  SQL using the same constructs is saved;
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
from datamill.services.jobrefs import job_sql
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
    error: str | None = None


def case(
    code: str, *needles: str, writes: tuple[str, ...] = (), error: str | None = None, id: str
) -> Any:
    return pytest.param(Case(code, needles, writes, error), id=id)


def refused(code: str, *needles: str, writes: tuple[str, ...] = (), id: str) -> Any:
    """A case refused as SQL a job may not run (E18233), not merely as bad SQL."""
    return case(code, *needles, writes=writes, error="E18233", id=id)


NOT_A_QUERY = "only a read-only query"
TABLE_FUNCTION = "table functions are not allowed"
NOT_A_SOURCE = "not one of the job's sources"
NOT_ALLOWED = "is not allowed in jobs"
PASSWD_SQL = "SELECT * FROM read_text(''/etc/passwd'')"

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
    # functions and table functions outside the allow-list, wherever they stand
    refused(
        "SELECT * FROM ev, LATERAL json_execute_serialized_sql("
        f"json_serialize_sql('{PASSWD_SQL}'))",
        TABLE_FUNCTION,
        "json_execute_serialized_sql",
        id="lateral-json-execute-serialized-sql",
    ),
    refused(
        "SELECT * FROM ev, LATERAL json_execute_serialized_sql('x') AS j",
        "json_execute_serialized_sql",
        id="lateral-json-execute-serialized-sql-literal",
    ),
    refused("SELECT * FROM ev, LATERAL checkpoint()", "checkpoint", id="lateral-checkpoint"),
    refused("SELECT * FROM ev, LATERAL force_checkpoint()", "checkpoint", id="lateral-force-cp"),
    refused(
        "SELECT * FROM ev, LATERAL pg_timezone_names()", "pg_timezone_names", id="lateral-pg-tz"
    ),
    refused(
        "SELECT * FROM ev, LATERAL test_all_types()", "test_all_types", id="lateral-test-types"
    ),
    refused("SELECT * FROM ev, test_all_types()", "test_all_types", id="from-test-all-types"),
    refused(
        "SELECT * FROM ev JOIN pg_timezone_names() AS t ON true",
        "pg_timezone_names",
        id="join-pg-timezone-names",
    ),
    refused(
        "WITH t AS (SELECT * FROM pg_timezone_names()) SELECT * FROM t",
        "pg_timezone_names",
        id="table-function-in-cte",
    ),
    refused(
        "SELECT * FROM ev, LATERAL (SELECT * FROM duckdb_settings())",
        "duckdb_settings",
        id="lateral-subquery-duckdb-settings",
    ),
    refused(
        "SELECT * FROM ROWS FROM (json_execute_serialized_sql('x'))",
        "ROWS FROM",
        id="rows-from-json-execute",
    ),
    refused("SELECT write_log('pwned') AS w FROM ev", "write_log()", NOT_ALLOWED, id="write-log"),
    refused("SELECT version() AS v FROM ev", "version()", NOT_ALLOWED, id="version"),
    refused("SELECT Version() AS v FROM ev", "version()", id="version-mixed-case"),
    refused('SELECT "version"() AS v FROM ev', "version()", id="version-quoted"),
    refused("SELECT system.main.version() AS v FROM ev", "version()", id="qualified-version"),
    refused("SELECT device.version() AS v FROM ev", "version()", id="method-call-version"),
    refused("SELECT nextval('s') AS n FROM ev", "nextval()", id="nextval"),
    refused("SELECT setseed(0.5) AS s FROM ev", "setseed()", id="setseed"),
    refused("SELECT pg_sleep(1) AS s FROM ev", "pg_sleep()", id="pg-sleep"),
    refused("SELECT current_user AS u FROM ev", "current_user()", id="current-user"),
    refused("SELECT device FROM ev WHERE user <> ''", "user()", id="bare-user"),
    refused('SELECT "current_schema" AS s FROM ev', "current_schema()", id="quoted-schema"),
    refused(
        f"SELECT json_serialize_plan('{PASSWD_SQL}') AS p FROM ev",
        "json_serialize_plan()",
        id="json-serialize-plan",
    ),
    refused("WITH x AS (SELECT version() AS v) SELECT v FROM x", "version()", id="function-in-cte"),
    refused(
        "SELECT ev.device FROM ev JOIN ev AS e2 ON getenv('HOME') = e2.device",
        "getenv()",
        id="function-in-join-condition",
    ),
    refused(
        "SELECT device FROM ev WHERE device IN (SELECT version())",
        "version()",
        id="function-in-where-subquery",
    ),
    refused(
        "SELECT device FROM ev WHERE EXISTS (SELECT 1 WHERE write_log('x') IS NULL)",
        "write_log()",
        id="function-in-exists",
    ),
    refused(
        "SELECT device, row_number() OVER (ORDER BY current_setting('threads')) AS r FROM ev",
        "current_setting()",
        id="function-in-window",
    ),
    refused(
        "SELECT sum(value) OVER w AS s FROM ev WINDOW w AS (PARTITION BY version())",
        "version()",
        id="function-in-named-window",
    ),
    refused(
        "SELECT device FROM ev QUALIFY row_number() OVER (PARTITION BY write_log('x')) = 1",
        "write_log()",
        id="function-in-qualify",
    ),
    refused(
        "SELECT device, count(*) AS n FROM ev GROUP BY device HAVING max(version()) > ''",
        "version()",
        id="function-in-having",
    ),
    refused("SELECT device FROM ev ORDER BY version()", "version()", id="function-in-order-by"),
    refused(
        "SELECT count(*) FILTER (WHERE write_log('x') IS NULL) AS n FROM ev",
        "write_log()",
        id="function-in-filter",
    ),
    refused(
        "SELECT device FROM ev LIMIT (SELECT length(version()))",
        "version()",
        id="function-in-limit",
    ),
    # comments and quoting read as DuckDB reads them
    refused(
        "SELECT device /* a /* nested */ comment */, version() AS v FROM ev",
        "version()",
        id="after-nested-comment",
    ),
    refused(
        "SELECT device FROM ev /* /* */ */ WHERE getenv('HOME') IS NOT NULL",
        "getenv()",
        id="after-nested-comment-where",
    ),
    refused(
        "SELECT $$ /* $$ AS a, version() AS v, $$ */ $$ AS b FROM ev",
        "version()",
        id="between-dollar-quotes",
    ),
    refused(
        "SELECT $tag$ it's -- $tag$ AS a, write_log('x') AS w FROM ev",
        "write_log()",
        id="after-tagged-dollar-quote",
    ),
    refused(
        "SELECT $a$ $$ $a$ AS a, getenv('HOME') AS h, $$ x $$ AS b FROM ev",
        "getenv()",
        id="dollar-quotes-in-dollar-quotes",
    ),
    refused(
        "SELECT device FROM ev -- /*\n, version() AS v",
        "version()",
        id="after-line-comment-with-block-start",
    ),
    # a PIVOT without its values runs a query while it is planned
    refused("SELECT * FROM (PIVOT ev ON kind USING sum(value))", "IN (", id="dynamic-pivot"),
    refused("SELECT " + "1 + " * 300 + "1 AS n FROM ev", "nested too deeply", id="deep-expression"),
    # another project's files
    case("SELECT * FROM '{other}'", "secret.csv", id="other-project-file"),
    case("SELECT * FROM read_csv('{other}')", "read_csv", id="other-project-read-csv"),
    case("SELECT content FROM read_text('{other_dir}/*')", "read_text", id="other-project-glob"),
    # the sqlglot gate collects CTE names of every scope, so a CTE named like a file in one
    # scope lets the name through in another; the check of DuckDB's parse tree keeps scopes
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
    if hostile.error:
        assert response.json()["error_code"] == hostile.error, response.text
    assert "top-secret-value" not in response.text
    assert_error(api.get(f"/projects/{project}/jobs/bad"), 404, "E18202")
    for written in hostile.writes:
        assert not (scratch / written).exists(), written
    assert listing(scratch) == set()
    assert (listing(project_folder), listing(other_file.parent)) == before
    assert api.get(f"/projects/{project}/jobs").json()["total"] == 0


@pytest.mark.parametrize("hostile", HOSTILE)
def test_the_sql_checks_alone_refuse_hostile_sql(hostile: Case, tmp_path: Path) -> None:
    """The checks are the first layer: they alone must refuse each input, before DuckDB
    binds (the gate, then the engine's check of its own parse tree)."""
    other = tmp_path / "files" / "p_other" / "secret.csv"
    code = hostile.code.format(tmp=tmp_path, other=other, other_dir=other.parent)
    with pytest.raises(DatamillError) as refused:
        job_sql("duckdb", code, ["ev"])
    assert refused.value.code in REFUSED
    assert refused.value.status == 400
    if hostile.error:
        assert refused.value.code == hostile.error


BENIGN = [
    pytest.param(
        "SELECT device, count(*) AS n, sum(value) AS s FROM ev GROUP BY device", id="aggregate"
    ),
    pytest.param(
        "SELECT device /* a /* nested */ comment */ AS d FROM ev -- trailing comment",
        id="nested-comment",
    ),
    pytest.param("SELECT $$it's$$ AS a, $tag$x$tag$ AS b FROM ev;", id="dollar-quotes"),
    pytest.param("SELECT device FROM ev;\n-- done\n/* really */ ;", id="trailing-semicolons"),
    pytest.param(
        "WITH t AS (SELECT device, value FROM ev) "
        "SELECT device, avg(value) AS a FROM t GROUP BY ALL",
        id="cte",
    ),
    pytest.param(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
        "SELECT n FROM r",
        id="recursive-cte",
    ),
    pytest.param(
        "SELECT device, value, row_number() OVER w AS rn, lag(value) OVER w AS prev FROM ev "
        "WINDOW w AS (PARTITION BY device ORDER BY value) QUALIFY rn = 1",
        id="windows",
    ),
    pytest.param(
        "SELECT upper(device) AS u, regexp_replace(device, '[0-9]', '#') AS r, md5(device) AS h, "
        "device LIKE 'd%' AS l, device ILIKE 'D%' AS il, concat_ws('-', device, kind) AS c, "
        "split_part(device, 'd', 2) AS p, device || kind AS cat, sha256(device) AS s, "
        "length(trim(device)) AS n, regexp_matches(device, 'd[0-9]') AS m FROM ev",
        id="strings-regexp-hashing",
    ),
    pytest.param(
        "SELECT date_trunc('day', TIMESTAMP '2024-01-02 03:04:05') AS d, "
        "strftime(DATE '2024-01-02', '%Y') AS y, EXTRACT(year FROM DATE '2024-01-02') AS e, "
        "DATE '2024-01-02' + INTERVAL 1 DAY AS n, now() IS NOT NULL AS t, "
        "current_date IS NOT NULL AS cd, "
        "time_bucket(INTERVAL '10 seconds', TIMESTAMP '2024-01-01 00:00:07') AS b, "
        "epoch_ms(TIMESTAMP '2024-01-01') AS ms FROM ev",
        id="dates",
    ),
    pytest.param(
        "SELECT [value, value * 2] AS l, list_transform([1, 2], lambda x: x + 1) AS t, "
        "[x * 2 FOR x IN [1, 2]] AS c, {'d': device} AS s, unnest([1, 2]) AS u, "
        "json_extract_string('{\"a\": 1}', '$.a') AS j, '{\"a\": 2}'::JSON ->> '$.a' AS k, "
        "[1, 2, 3][2] AS e, list_sum([1, 2]) AS ls, {'d': device}.d AS sd FROM ev",
        id="lists-structs-json",
    ),
    pytest.param(
        "SELECT kind, quantile_cont(value, 0.5) AS m, arg_max(device, value) AS top, "
        "string_agg(device, ',' ORDER BY device) AS ds, count(*) FILTER (WHERE value > 1) AS big, "
        "list(value) AS vs, approx_count_distinct(device) AS ad, stddev(value) AS sd "
        "FROM ev GROUP BY kind",
        id="aggregates",
    ),
    pytest.param(
        "SELECT CASE WHEN value > 1 THEN 'hi' ELSE 'lo' END AS c, CAST(value AS INTEGER) AS i, "
        "TRY_CAST(device AS INTEGER) AS t, COALESCE(NULL, device) AS co, "
        "value BETWEEN 0 AND 2 AS b, value::VARCHAR AS v, NULLIF(device, 'd0') AS nd FROM ev "
        "WHERE device IN (SELECT device FROM ev WHERE kind = 'x') "
        "OR EXISTS (SELECT 1 FROM ev e2 WHERE e2.value > 100)",
        id="expressions-and-subqueries",
    ),
    pytest.param(
        "SELECT e.device, v.label FROM ev e JOIN (VALUES ('d0', 'zero')) AS v(device, label) "
        "USING (device) UNION ALL SELECT device, kind FROM ev",
        id="values-join-union",
    ),
    pytest.param(
        "SELECT round(value, 1) AS r, abs(-value) AS a, sqrt(value) AS s, value // 1 AS d, "
        "value % 2 AS m, greatest(value, 1) AS g, ln(value + 1) AS l, floor(value) AS f FROM ev",
        id="math",
    ),
    pytest.param("SELECT * FROM ev PIVOT (sum(value) FOR kind IN ('x', 'y'))", id="pivot-in"),
    pytest.param("FROM ev SELECT device", id="from-first"),
    pytest.param(
        "SELECT device.upper() AS u, main.lower(device) AS l FROM ev", id="method-and-schema"
    ),
    pytest.param(
        'WITH t AS (SELECT device AS "user" FROM ev) SELECT t.user FROM t',
        id="qualified-column-named-user",
    ),
    pytest.param("SELECT * EXCLUDE (kind) FROM ev ORDER BY ALL", id="star-exclude"),
    pytest.param("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM ev)", id="describe"),
    pytest.param(
        "SELECT device_id, avg(value) AS avg_value FROM "
        "(SELECT device AS device_id, value, kind AS status FROM ev) "
        "WHERE status <> 'x' GROUP BY device_id",
        id="docs-example",
    ),
]


@pytest.mark.parametrize("code", BENIGN)
def test_benign_sql_passes_the_checks_and_is_saved(
    api: Api, project: str, datasource: str, code: str
) -> None:
    """The allow-list is generous enough for analytics: these are saved (and bound)."""
    assert job_sql("duckdb", code, ["ev"])
    response = api.post(f"/projects/{project}/jobs/fine", json=job_body(code))
    assert response.status_code == 201, response.text


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
        ("ev, LATERAL json_execute_serialized_sql('x')", "json_execute_serialized_sql"),
        ("ev WHERE write_log('x') IS NULL", "write_log()"),
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
