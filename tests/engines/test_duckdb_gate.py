"""The DuckDB check of a job's SQL: its allow-list against DuckDB's own catalog of functions,
the text that runs, positions in errors, and one parser shared by threads."""

from __future__ import annotations

import re
import threading

import duckdb
import pytest

from datamill.engines.duckdb.functions import (
    ALLOWED_FUNCTIONS,
    ALLOWED_TABLE_FUNCTIONS,
    BARE_FUNCTIONS,
    FAMILIES,
)
from datamill.engines.duckdb.gate import check_query, query_text
from datamill.errors import DatamillError, E

NEVER_ALLOWED = re.compile(
    r"^(read_|.*_scan$|glob$|query|duckdb_|pragma_|json_execute|json_serialize|"
    r"json_deserialize|sql_auto_complete|test_|enable_|disable_|write_log$|version$|"
    r"current_(setting|user|role|schema|catalog|database|query|connection|transaction)|"
    r"getenv$|checkpoint$|force_checkpoint$|pg_|has_.*_privilege$|which_secret$|nextval$|"
    r"currval$|setval$|setseed$|__|user$|session_user$|txid_|get_block_size$|sleep_ms$|"
    r"to_aggregate_state$|finalize$|combine|stats$|parse_duckdb_log_message$|inet_)",
)
"""Names the allow-list must never hold: files, the catalog, running or planning SQL,
session and server details, side effects, internals."""


@pytest.fixture(scope="module")
def catalog() -> dict[str, set[str]]:
    """DuckDB's functions: name (lower case) → the kinds it exists as."""
    con = duckdb.connect()
    rows = con.sql("SELECT DISTINCT function_name, function_type FROM duckdb_functions()")
    found: dict[str, set[str]] = {}
    for name, kind in rows.fetchall():
        found.setdefault(str(name).lower(), set()).add(str(kind))
    return found


def test_every_allowed_function_exists_in_duckdb(catalog: dict[str, set[str]]) -> None:
    missing = sorted(name for name in ALLOWED_FUNCTIONS if name not in catalog)
    assert missing == []


def test_allowed_table_functions_are_duckdb_table_functions(
    catalog: dict[str, set[str]],
) -> None:
    assert all("table" in catalog.get(name, set()) for name in ALLOWED_TABLE_FUNCTIONS)


def test_the_allow_list_holds_nothing_that_reads_writes_runs_or_shows_the_server(
    catalog: dict[str, set[str]],
) -> None:
    assert sorted(n for n in ALLOWED_FUNCTIONS if NEVER_ALLOWED.match(n)) == []
    assert sorted(n for n in ALLOWED_TABLE_FUNCTIONS if NEVER_ALLOWED.match(n)) == []
    # the refused names are real: the pattern is not a list of nothing
    refused = {"write_log", "version", "json_execute_serialized_sql", "current_setting"}
    assert refused <= set(catalog)


def test_each_function_is_listed_in_one_family_only() -> None:
    names = [name for family in FAMILIES.values() for name in family]
    assert len(names) == len(set(names))


def test_bare_functions_are_the_names_duckdb_calls_without_parentheses(
    catalog: dict[str, set[str]],
) -> None:
    con = duckdb.connect()
    bare = set()
    for name, kinds in catalog.items():
        if kinds & {"scalar", "macro"} and re.fullmatch("[a-z_]+", name):
            try:
                con.sql(f"SELECT {name}").fetchall()
            except duckdb.Error:
                continue
            bare.add(name)
    assert bare == BARE_FUNCTIONS


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("SELECT a FROM ev", "SELECT a FROM ev"),
        ("SELECT a FROM ev;", "SELECT a FROM ev"),
        ("SELECT a FROM ev ; ;; -- done\n/* a /* nested */ comment */\n", "SELECT a FROM ev"),
        ("SELECT 'é;' AS x FROM ev; -- ;", "SELECT 'é;' AS x FROM ev"),
        ("SELECT $$ ; -- $$ AS x FROM ev", "SELECT $$ ; -- $$ AS x FROM ev"),
        ("  ", ""),
    ],
)
def test_query_text_drops_trailing_semicolons_and_comments_as_duckdb_reads_them(
    code: str, text: str
) -> None:
    assert query_text(code) == text


def test_a_refusal_names_the_line_and_column_counting_characters() -> None:
    with pytest.raises(DatamillError) as refused:
        check_query("SELECT 'é' AS e,\n  version() AS v FROM ev", ["ev"], "computation.code")
    assert refused.value.error == E.SQL_REFUSED
    assert refused.value.field == "computation.code"
    assert "version()" in refused.value.message
    assert "(line 2, column 3)" in refused.value.message


def test_sql_that_duckdb_cannot_parse_is_invalid_sql_with_its_position() -> None:
    with pytest.raises(DatamillError) as refused:
        check_query("SELECT a\nFROM ev WHERE WHERE", ["ev"], "computation.code")
    assert refused.value.error == E.INVALID_SQL
    assert "line 2" in refused.value.message


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        ("COPY ev TO 'x.csv'", "only a read-only query"),
        ("SELECT 1 AS a; SELECT 2 AS b", "exactly one SQL statement"),
        ("", "exactly one SQL statement"),
    ],
)
def test_statements_other_than_one_select_are_refused(code: str, needle: str) -> None:
    with pytest.raises(DatamillError) as refused:
        check_query(code, ["ev"], "computation.code")
    assert refused.value.error == E.SQL_REFUSED
    assert needle in refused.value.message


@pytest.mark.parametrize(
    "code",
    ["SELECT device FROM ev \x00; SELECT version()", "SELECT '\ud800' AS a FROM ev"],
    ids=["nul", "lone-surrogate"],
)
def test_text_a_c_parser_could_read_differently_is_invalid_sql(code: str) -> None:
    """The API refuses NUL before; a lone surrogate cannot be encoded for DuckDB at all."""
    with pytest.raises(DatamillError) as refused:
        check_query(code, ["ev"], "computation.code")
    assert refused.value.error == E.INVALID_SQL
    assert "Unicode text without NUL" in refused.value.message


def test_a_cte_is_in_scope_only_where_it_is_defined() -> None:
    assert check_query("WITH c AS (SELECT 1 AS x) SELECT x FROM c", ["ev"], "f")
    with pytest.raises(DatamillError) as refused:
        check_query(
            "SELECT * FROM (WITH c AS (SELECT 1 AS x) SELECT x FROM c) AS a, c", ["ev"], "f"
        )
    assert "table 'c' is not one of the job's sources (ev)" in refused.value.message


def test_threads_share_the_parser_and_each_gets_its_own_answer() -> None:
    errors: list[str] = []
    start = threading.Barrier(4)

    def check(i: int) -> None:
        start.wait()
        for _ in range(50):
            if check_query(f"SELECT {i} AS n FROM ev", ["ev"], "f") != f"SELECT {i} AS n FROM ev":
                errors.append(f"thread {i}: wrong text")
            try:
                check_query(f"SELECT version() AS v{i} FROM ev", ["ev"], "f")
                errors.append(f"thread {i}: version() passed")
            except DatamillError:
                pass

    threads = [threading.Thread(target=check, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
