"""Quoting and rendering DuckDB SQL: the one place literals and identifiers are written.

Composed SQL is built as sqlglot expressions and rendered in :data:`DIALECT`. A user's
query is never re-generated (a round trip through sqlglot need not keep its meaning, nor
the line and column numbers of DuckDB's errors): :func:`around_query` puts its text, as
written, where a wrapper statement has its placeholder.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlglot import exp

from datamill.errors import DatamillError, E

DIALECT = "duckdb"
QUERY = exp.Placeholder(this="query")
"""Stands for a user's query in a wrapper statement (see :func:`around_query`)."""
_QUERY_MARK = QUERY.sql(dialect=DIALECT)


def literal(value: str) -> exp.Literal:
    """A string literal; refuses NUL bytes, which DuckDB would truncate at."""
    if "\x00" in value:
        raise DatamillError(E.PATH_REFUSED, "NUL byte in a path")
    return exp.Literal.string(value)


def literal_list(values: Iterable[str]) -> exp.Array:
    return exp.Array(expressions=[literal(v) for v in values])


def quoted(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def render(expression: exp.Expr) -> str:
    """``expression`` as DuckDB SQL: every statement datamill composes becomes text here."""
    return expression.sql(dialect=DIALECT)


class Template:
    """A statement rendered once; :meth:`fill` puts a text where it has its :data:`QUERY`.

    For statements that run on every run, so that their SQL is not generated each time.
    """

    def __init__(self, wrapper: exp.Expression) -> None:
        self._before, self._after = render(wrapper).split(_QUERY_MARK, 1)

    def fill(self, text: str) -> str:
        return self._before + text + self._after


def around_query(wrapper: exp.Expression, query: str) -> str:
    """``wrapper`` rendered with ``query``'s text in place of its :data:`QUERY`."""
    return Template(wrapper).fill(query)


def sql_string(value: str) -> str:
    """A SQL string literal; refuses NUL bytes, which DuckDB would truncate at."""
    return render(literal(value))


def sql_list(values: Iterable[str]) -> str:
    return render(literal_list(values))


def identifier(name: str) -> str:
    return render(quoted(name))
