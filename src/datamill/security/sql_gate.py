"""The SQL gate: a job's code must be one read-only query over the job's own sources.

This is defence in depth; the boundary is the locked-down DuckDB connection, which can
open only the files of the run's sources. The gate gives users a clear error early
(with line and column) and refuses anything that is not a plain query. It reads the SQL
with sqlglot; the engine then checks its own parse tree of the same text, including the
allow-list of functions (``Engine.check_query``, called with the gate by
``services.jobrefs.job_sql``).
"""

from __future__ import annotations

from collections.abc import Collection

import sqlglot
from sqlglot import TokenType, exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import ParseError, SqlglotError

from datamill.errors import DatamillError, E

Tokenizer = DuckDB.Tokenizer
QUERY_TYPES = (exp.Select, exp.Union, exp.Except, exp.Intersect)
MAX_NESTING = 32
"""The deepest parentheses a job's SQL may nest."""


def _at(line: int | None, col: int | None) -> str:
    return f" (line {line}, column {col})" if line else ""


def query_text(code: str) -> str:
    """``code`` up to its last token: no trailing semicolon or comment, safe to wrap in ( )."""
    tokens = [t for t in Tokenizer().tokenize(code) if t.token_type != TokenType.SEMICOLON]
    return code[: tokens[-1].end + 1] if tokens else ""


def _check_nesting(code: str, field: str) -> None:
    """Refuse SQL nested deeper than :data:`MAX_NESTING` parentheses before parsing it:
    the parsers recurse once a level."""
    depth = deepest = 0
    for token in Tokenizer().tokenize(code):
        if token.token_type == TokenType.L_PAREN:
            depth += 1
            deepest = max(deepest, depth)
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
    if deepest > MAX_NESTING:
        raise DatamillError(
            E.SQL_REFUSED,
            f"{field}: SQL is nested {deepest} parentheses deep; at most {MAX_NESTING} are allowed",
            field=field,
        )


def gate(code: str, tables: Collection[str], field: str = "computation.code") -> str:
    """Refuse anything but one read-only query over ``tables``; return the query's text."""
    try:
        _check_nesting(code, field)
        return _gate(code, tables, field)
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        raise DatamillError(
            E.INVALID_SQL,
            f"{field}: SQL does not parse{_at(first.get('line'), first.get('col'))}: "
            f"{first.get('description') or exc}",
            field=field,
        ) from None
    except SqlglotError as exc:
        raise DatamillError(
            E.INVALID_SQL, f"{field}: SQL does not parse: {str(exc)[:300]}", field=field
        ) from None
    except RecursionError:
        raise DatamillError(
            E.SQL_REFUSED, f"{field}: SQL is nested too deeply to check", field=field
        ) from None


def _gate(code: str, tables: Collection[str], field: str) -> str:
    parsed = sqlglot.parse(code, read="duckdb")
    statements = [s for s in parsed if s is not None and not isinstance(s, exp.Semicolon)]
    if len(statements) != 1:
        raise DatamillError(
            E.SQL_REFUSED,
            f"{field}: exactly one SQL statement is allowed, found {len(statements)}",
            field=field,
        )
    query = statements[0]
    if not isinstance(query, QUERY_TYPES):
        kind = query.key.upper() if isinstance(query, exp.Expression) else "statement"
        raise DatamillError(
            E.SQL_REFUSED,
            f"{field}: only a read-only query (SELECT, WITH, UNION …) is allowed, not {kind}",
            field=field,
        )
    for node in query.find_all(exp.Summarize):
        if not isinstance(node.this, exp.Table):
            raise DatamillError(
                E.SQL_REFUSED,
                f"{field}: SUMMARIZE {node.this.sql()[:80]} is not allowed; SUMMARIZE may only "
                "name one of the job's sources",
                field=field,
            )
    allowed = {t.lower() for t in tables}
    for table in query.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            shown = (table.this if table.this is not None else table).sql(dialect="duckdb")
            raise DatamillError(
                E.SQL_REFUSED,
                f"{field}: table functions are not allowed in FROM ({shown[:60]}); "
                "read only the job's sources",
                field=field,
            )
        if table.args.get("db") or table.args.get("catalog"):
            raise DatamillError(
                E.SQL_REFUSED,
                f"{field}: qualified table '{table.sql(dialect='duckdb')}' is not allowed",
                field=field,
            )
        name = table.name.lower()
        if name not in allowed and name not in _ctes_in_scope(table):
            known = ", ".join(sorted(tables)) or "none"
            raise DatamillError(
                E.SQL_REFUSED,
                f"{field}: table '{table.name[:80]}' is not one of the job's sources ({known})",
                field=field,
            )
    return query_text(code)


def _ctes_in_scope(table: exp.Table) -> set[str]:
    """Names of the CTEs visible where ``table`` stands (its enclosing WITH clauses)."""
    names: set[str] = set()
    node = table.parent
    while node is not None:
        with_clause = node.args.get("with_") or node.args.get("with")
        if isinstance(with_clause, exp.With):
            names.update(cte.alias_or_name.lower() for cte in with_clause.expressions)
        node = node.parent
    return names
