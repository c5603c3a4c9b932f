"""Composing DuckDB SQL with sqlglot: the one place expressions become text.

Statements are written as constant SQL templates, parsed once by sqlglot, and composed as
trees: :func:`fill` puts expressions, identifiers, literals and lists of them in place of
the template's ``$name`` placeholders. Placeholders left unfilled stay parameters, bound
when the statement runs.

Rendering costs far more than running a small statement, so a :class:`Statement` is
rendered once (when a job starts, or the first time a shape of it is needed) and its text
reused for every micro-batch; the values that change per batch are bound as parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import duckdb
from sqlglot import exp, parse_one

from datamill.engines.duckdb.sql import DIALECT, render

Part = exp.Expr | Sequence[exp.Expr] | str | int | float | bool | None
"""What fills a placeholder: an expression, a list of them (spliced into the enclosing
list: a select list, GROUP BY, PARTITION BY, a column list), or a value (a literal)."""


@lru_cache(maxsize=512)
def _template(text: str) -> exp.Expr:
    return parse_one(text, read=DIALECT)


def parse(text: str) -> exp.Expr:
    """A constant SQL fragment (no values of ours are ever formatted into ``text``)."""
    return _template(text).copy()


def table(name: str) -> exp.Table:
    """A table named ``name`` (a plain name, quoted)."""
    return exp.Table(this=exp.to_identifier(name, quoted=True))


def col(name: str, alias: str | None = None, *, quoted: bool = False) -> exp.Column:
    """Column ``name`` (of ``alias``); ``quoted`` for a user's field name."""
    return exp.column(exp.to_identifier(name, quoted=quoted), table=alias)


def cols(names: Sequence[str], alias: str | None = None) -> list[exp.Expr]:
    return [col(name, alias) for name in names]


def subquery(query: exp.Expr, alias: str) -> exp.Subquery:
    """``query`` as a subquery named ``alias`` (for FROM or JOIN)."""
    assert isinstance(query, exp.Query)
    return query.subquery(alias)


def same(names: Sequence[str], left: str, right: str) -> exp.Expr:
    """NULL-safe equality of columns ``names`` between two aliases (TRUE when none)."""
    parts: list[exp.Expr] = [
        exp.NullSafeEQ(this=col(name, left), expression=col(name, right)) for name in names
    ]
    return exp.and_(*parts) if parts else exp.true()


def _value(part: Part) -> exp.Expr:
    if isinstance(part, exp.Expr):
        return part.copy()
    return exp.convert(part)


def fill(text: str, **parts: Part) -> exp.Expr:
    """The template ``text`` with its placeholders ``$name`` replaced by ``parts``.

    A table placeholder (``FROM $t``) takes a table or a query (as a subquery); a list
    replaces the placeholder by its items in the list that holds it."""
    tree = parse(text)
    for node in list(tree.find_all(exp.Placeholder)):
        name = node.name
        if name not in parts:
            continue
        part = parts[name]
        target: exp.Expr = node
        parent = node.parent
        if isinstance(parent, exp.Table) and parent.this is node:
            target = parent
            value = _value(part) if not isinstance(part, list | tuple) else exp.null()
            if isinstance(value, exp.Query):
                value = value.subquery()
            alias = parent.args.get("alias")
            if alias is not None:
                value.set("alias", alias.copy())
            target.replace(value)
            continue
        if isinstance(part, list | tuple):
            holder, key = node.parent, node.arg_key
            items = holder.args.get(key) if holder is not None and key else None
            if holder is None or key is None or not isinstance(items, list):
                raise ValueError(f"placeholder ${name} does not sit in a list")
            at = next(i for i, item in enumerate(items) if item is node)
            spliced = [*items[:at], *(_value(p) for p in part), *items[at + 1 :]]
            holder.set(key, spliced)
            continue
        value = _value(part)
        if isinstance(value, exp.Query) and not isinstance(parent, exp.Subquery | exp.Paren):
            value = value.subquery()
        node.replace(value)
    return tree


class Statement:
    """A statement rendered once; :meth:`run` binds the parameters it names."""

    def __init__(self, expression: exp.Expr) -> None:
        self.sql = render(expression)
        self.params = tuple(
            dict.fromkeys(node.name for node in expression.find_all(exp.Placeholder))
        )

    def run(
        self, con: duckdb.DuckDBPyConnection, values: Mapping[str, Any]
    ) -> duckdb.DuckDBPyConnection:
        if not self.params:
            return con.execute(self.sql)
        return con.execute(self.sql, {name: values[name] for name in self.params})

    def rows(self, con: duckdb.DuckDBPyConnection, values: Mapping[str, Any]) -> list[Any]:
        """All rows (read to the end: DuckDB refuses new work on a connection with a
        result left open)."""
        return self.run(con, values).fetchall()
