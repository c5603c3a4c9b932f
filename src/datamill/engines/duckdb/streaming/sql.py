"""Composing DuckDB SQL with sqlglot: the one place expressions become text.

Rendering costs far more than running a small statement, so composed SQL is rendered
once, when a job starts, and the text is reused for every micro-batch; values that change
per batch are bound as parameters.
"""

from __future__ import annotations

from sqlglot import exp

DIALECT = "duckdb"


def render(expression: exp.Expression) -> str:
    """``expression`` as DuckDB SQL."""
    return expression.sql(dialect=DIALECT)


def table(name: str) -> exp.Table:
    """A table named ``name`` (a plain name, quoted)."""
    return exp.Table(this=exp.to_identifier(name, quoted=True))
