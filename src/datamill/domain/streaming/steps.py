"""What an operator compiles to: the steps an engine runs, free of any engine's SQL.

Stateless operators compile to a relational step over their input whose values are
sqlglot expression trees (:class:`KeepRecords`, :class:`AddFields`, :class:`SelectColumns`,
:class:`ExplodeArray`); the engine renders them in its dialect and fuses chains of them
into one query. Aggregate and Deduplicate compile to a :class:`StatefulSpec` for the
engine's stateful executor. Sources, calls and sinks name the catalog connection they use
(or, without one, a built-in kind) and their settings; the engine looks the connector up
by the connection's type or that kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from sqlglot import exp

from datamill.domain.streaming.schema import Schema

Settings = dict[str, Any]


@dataclass(frozen=True)
class SourceStep:
    """Records from the connection ``dataSourceId`` names; ``None``: the job's ingest log."""

    connection: str | None
    settings: Settings = field(default_factory=dict)


@dataclass(frozen=True)
class KeepRecords:
    """The input's records for which ``predicate`` is true."""

    predicate: exp.Expr
    one_to_one: ClassVar[bool] = False


@dataclass(frozen=True)
class AddFields:
    """The input with ``fields`` (name -> value) added; a field the input is known to have
    is replaced in place, and when the input's schema is open a field it may have is
    replaced at the end."""

    input_schema: Schema
    fields: dict[str, exp.Expr]
    one_to_one: ClassVar[bool] = True


@dataclass(frozen=True)
class SelectColumns:
    """Only the fields ``names``, in that order."""

    names: list[str]
    one_to_one: ClassVar[bool] = True


@dataclass(frozen=True)
class ExplodeArray:
    """One record per element of the JSON array ``array``: the element is the column
    ``element`` while ``fields`` (name -> value) are added, then dropped."""

    input_schema: Schema
    array: exp.Expr
    element: str
    fields: dict[str, exp.Expr]
    one_to_one: ClassVar[bool] = False


QueryStep = KeepRecords | AddFields | SelectColumns | ExplodeArray


@dataclass(frozen=True)
class StatefulSpec:
    """A stateful operator (Aggregate, Deduplicate) for the engine's stateful executor."""

    class_name: str
    config: Any
    input_schema: Schema
    output_schema: Schema


@dataclass(frozen=True)
class TransformStep:
    """A call per record through the connection ``dataSourceId`` names."""

    connection: str
    settings: Settings = field(default_factory=dict)


@dataclass(frozen=True)
class SinkStep:
    """Records written through the connection ``dataSourceId`` names or, without one,
    through the built-in sink ``kind`` (``folder``, ``job``)."""

    connection: str | None
    kind: str | None
    settings: Settings = field(default_factory=dict)


Step = SourceStep | QueryStep | StatefulSpec | TransformStep | SinkStep
