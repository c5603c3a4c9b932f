"""A job's SQL checked as DuckDB itself parses it, so the check and the engine cannot disagree
about comments, quoting or syntax.

DuckDB's ``json_serialize_sql`` gives its parse tree of the query (it parses, it does not
bind or run anything). The tree must hold exactly one SELECT statement whose every table is
one of the job's sources (or a CTE in scope), whose every function is in the allow-list of
:mod:`.functions`, and no table function but the allowed ones (none). The text that passes
is the text that runs: the query up to its last token, as DuckDB's tokenizer sees it.

One parser connection serves the process (opening one costs ~10 ms; a check ~0.5 ms); it
is in memory, locked down like any other, and used under a lock.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Collection, Iterator
from typing import Any, NoReturn

import duckdb

from datamill.engines.duckdb.functions import (
    ALLOWED_FUNCTIONS,
    ALLOWED_TABLE_FUNCTIONS,
    BARE_FUNCTIONS,
)
from datamill.errors import DatamillError, E

MAX_EXPRESSION_DEPTH = 250
"""The deepest expression the parser accepts (DuckDB's own default is 1000); deeper trees
are refused before Python walks them."""
_NO_LOCATION = 2**64 - 1
_QUERY_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"}


class _Parser:
    """The process's parser connection; a forked child opens its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._pid = 0

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None or self._pid != os.getpid():
            con = duckdb.connect(":memory:")
            for statement in (
                f"SET max_expression_depth={MAX_EXPRESSION_DEPTH}",
                "SET autoinstall_known_extensions=false",
                "SET autoload_known_extensions=false",
                "SET enable_external_access=false",
                "SET lock_configuration=true",
            ):
                con.execute(statement)
            self._con, self._pid = con, os.getpid()
        return self._con

    def tree(self, sql: str) -> dict[str, Any]:
        """DuckDB's parse tree of ``sql`` (``{"error": true, …}`` when it does not parse)."""
        with self._lock:
            rows = self._connection().execute("SELECT json_serialize_sql(?)", [sql]).fetchall()
        found: dict[str, Any] = json.loads(rows[0][0])
        return found


_PARSER = _Parser()


def query_text(code: str) -> str:
    """``code`` without trailing semicolons and comments, as DuckDB tokenizes it: safe to
    wrap in ( ). Token positions are byte offsets."""
    data = code.encode()
    end = len(data)
    for start, kind in reversed(duckdb.tokenize(code)):
        if kind == duckdb.token_type.comment or data[start : start + 1] == b";":
            end = start
        else:
            break
    return data[:end].decode().rstrip()


def check_query(code: str, tables: Collection[str], field: str) -> str:
    """The query to run for ``code`` once DuckDB's parse tree shows one read-only query over
    ``tables`` calling only allowed functions; refused (E18233, E18209) otherwise."""
    if "\x00" in code or _not_utf8(code):
        raise DatamillError(
            E.INVALID_SQL,
            f"{field}: SQL must be Unicode text without NUL characters",
            field=field,
        )
    text = query_text(code)
    try:
        tree = _PARSER.tree(text)
    except RecursionError:
        raise DatamillError(
            E.SQL_REFUSED, f"{field}: SQL is nested too deeply to check", field=field
        ) from None
    if tree.get("error"):
        raise _parse_error(text, tree, field)
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise DatamillError(
            E.SQL_REFUSED,
            f"{field}: exactly one SQL statement is allowed, found {len(statements)}",
            field=field,
        )
    _Walk(text, tables, field).check(statements[0]["node"])
    return text


def _not_utf8(code: str) -> bool:
    try:
        code.encode()
    except UnicodeEncodeError:  # lone surrogates
        return True
    return False


def _parse_error(text: str, tree: dict[str, Any], field: str) -> DatamillError:
    message = str(tree.get("error_message") or "unknown error")[:300]
    kind = tree.get("error_type")
    if kind == "not implemented":  # SELECT statements only; PIVOT without IN runs a query
        return DatamillError(
            E.SQL_REFUSED,
            f"{field}: only a read-only query (SELECT, WITH, UNION …) is allowed; a PIVOT "
            "needs its values listed: … PIVOT (sum(v) FOR k IN ('a', 'b'))",
            field=field,
        )
    if "expression depth" in message:
        return DatamillError(
            E.SQL_REFUSED,
            f"{field}: SQL is nested too deeply (at most {MAX_EXPRESSION_DEPTH} levels of "
            "expressions)",
            field=field,
        )
    position = str(tree.get("position") or "")
    where = _at(text, int(position)) if position.isdigit() else ""
    return DatamillError(
        E.INVALID_SQL, f"{field}: SQL does not parse{where}: {message}", field=field
    )


def _at(text: str, offset: int) -> str:
    """`` (line L, column C)`` of a byte ``offset`` into ``text``."""
    before = text.encode()[:offset].decode(errors="replace")
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    return f" (line {line}, column {column})"


class _Walk:
    """Visits every node of a parse tree, with the CTE names in scope and the nearest known
    position in the text."""

    def __init__(self, text: str, tables: Collection[str], field: str) -> None:
        self.text = text
        self.tables = tables
        self.sources = {t.lower() for t in tables}
        self.field = field

    def check(self, root: dict[str, Any]) -> None:
        if root.get("type") not in _QUERY_NODES:
            self.refuse(f"only a read-only query is allowed, not {root.get('type')}", None)
        stack: list[tuple[Any, frozenset[str], int | None]] = [(root, frozenset(), None)]
        while stack:
            node, ctes, location = stack.pop()
            if isinstance(node, list):
                stack.extend((item, ctes, location) for item in node)
                continue
            if not isinstance(node, dict):
                continue
            found = node.get("query_location")
            if isinstance(found, int) and found != _NO_LOCATION:
                location = found
            stack.extend(self.visit(node, ctes, location))

    def visit(
        self, node: dict[str, Any], ctes: frozenset[str], at: int | None
    ) -> Iterator[tuple[Any, frozenset[str], int | None]]:
        """Check ``node`` itself; yield the children to visit."""
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            name = str(function.get("function_name", "")).lower()
            if name not in ALLOWED_TABLE_FUNCTIONS or function.get("schema"):
                self.refuse(
                    f"table functions are not allowed in FROM ({name[:60]}); read only the "
                    "job's sources",
                    at,
                )
            yield function.get("arguments"), ctes, at
            node = {k: v for k, v in node.items() if k != "function"}
        elif kind in ("BASE_TABLE", "SHOW_REF") and node.get("table_name"):
            self.table(node, ctes, at)
        elif "function_name" in node:
            # a schema is a column for a method call (device.upper()); only built-in
            # functions exist, so the name alone decides
            name = str(node["function_name"]).lower()
            if name not in ALLOWED_FUNCTIONS:
                self.refuse(
                    f"function {name[:80]}() is not allowed in jobs; see the allowed "
                    "functions in the API documentation",
                    at,
                )
        elif node.get("class") == "COLUMN_REF":
            self.column(node, at)
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            entries = cte_map.get("map") or []
            names = [str(e.get("key", "")).lower() for e in entries]
            for i, entry in enumerate(entries):  # a CTE sees the ones before it and itself
                yield entry.get("value"), ctes | set(names[: i + 1]), at
            ctes = ctes | set(names)
        for key, value in node.items():
            if key != "cte_map" and isinstance(value, dict | list):
                yield value, ctes, at

    def table(self, node: dict[str, Any], ctes: frozenset[str], at: int | None) -> None:
        name = str(node["table_name"])
        if node.get("schema_name") or node.get("catalog_name"):
            path = [node.get("catalog_name"), node.get("schema_name"), name]
            shown = ".".join(str(p) for p in path if p)
            self.refuse(f"qualified table '{shown[:80]}' is not allowed", at)
        if name.lower() not in self.sources and name.lower() not in ctes:
            known = ", ".join(sorted(self.tables)) or "none"
            self.refuse(f"table '{name[:80]}' is not one of the job's sources ({known})", at)

    def column(self, node: dict[str, Any], at: int | None) -> None:
        """A bare name that is no column binds to the function of that name."""
        names = node.get("column_names") or []
        if len(names) == 1 and str(names[0]).lower() in BARE_FUNCTIONS - ALLOWED_FUNCTIONS:
            name = str(names[0])
            self.refuse(
                f"'{name}' is the function {name.lower()}(), which is not allowed in jobs; "
                f"name a column '{name}' with its table (t.{name})",
                at,
            )

    def refuse(self, problem: str, at: int | None) -> NoReturn:
        where = _at(self.text, at) if at is not None else ""
        raise DatamillError(E.SQL_REFUSED, f"{self.field}: {problem}{where}", field=self.field)
