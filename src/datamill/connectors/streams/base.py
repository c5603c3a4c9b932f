"""The interfaces between the streaming engine and the outside world, and their registries.

The engine runs a pipeline as a loop of micro-batches. Each batch it asks every
:class:`StreamSource` for up to ``max_records`` records, runs the operators over them in
DuckDB, hands each sink its output as an Arrow table and, every checkpoint interval,
commits operator state together with each source's :meth:`StreamSource.position` and each
sink's :meth:`StreamSink.commit`. After a crash the engine reopens every source at the
position stored in the last checkpoint (:meth:`StreamSource.seek`), so records are
processed into state exactly once; sinks are told which checkpoint epoch their output
belongs to so a keyed or transactional sink can make replays idempotent.

A CallFunctionGraph operator uses a :class:`StreamTransform` the same way.

Sources and sinks are chosen by the ``type`` of the catalog connection an operator names
in ``dataSourceId`` (``mqtt``, ``kafka``, …). Implementations register themselves with
:func:`register_source` / :func:`register_sink`; the engine looks them up by type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

Position = dict[str, Any]
"""A source's resume point: plain JSON (stored in checkpoints), meaningful to that source."""


class StreamError(Exception):
    """A connector failed in a way the engine reports as the job's failure reason."""


@dataclass
class StreamContext:
    """What a connector may use besides its connection spec."""

    project: str
    job_id: str
    operator_id: str
    state_dir: Path
    """A folder private to this operator of this job, kept across restarts."""
    outbound_allow: list[str]
    secret_values: Mapping[str, str]
    log: Callable[[str], None] = lambda _line: None
    extra: dict[str, Any] = field(default_factory=dict)


class StreamSource(Protocol):
    """Records flowing into a pipeline from one connection (a topic, the ingest log …)."""

    def seek(self, position: Position | None) -> None:
        """Resume after ``position`` (from the last checkpoint); ``None`` = from the start
        of what the source still holds (or from now, for sources that hold nothing)."""

    def read(self, max_records: int, timeout_seconds: float) -> list[dict[str, Any]]:
        """Up to ``max_records`` records (JSON objects), waiting at most
        ``timeout_seconds`` for the first one; ``[]`` when none arrived."""

    def position(self) -> Position:
        """The point just after the last record :meth:`read` returned."""

    def committed(self, position: Position) -> None:
        """A checkpoint holding ``position`` is durable: the source may acknowledge or
        discard everything up to it."""

    def lag(self) -> int | None:
        """Records available but not yet read, when the source can tell."""

    def close(self) -> None: ...


class StreamSink(Protocol):
    """Writes a pipeline's output records to one connection."""

    def write(self, table: pa.Table, epoch: int) -> None:
        """Send (or stage) ``table``; ``epoch`` is the checkpoint the rows belong to."""

    def commit(self, epoch: int) -> None:
        """The checkpoint ``epoch`` is durable: make its staged output visible."""

    def close(self) -> None: ...


class StreamTransform(Protocol):
    """A per-record call out of the pipeline (CallFunctionGraph): adds fields to records."""

    def apply(self, table: pa.Table) -> pa.Table:
        """``table`` with the added fields, one output row per input row, in order."""

    def close(self) -> None: ...


@dataclass
class StreamConnection:
    """A catalog connection an operator names in ``dataSourceId``, resolved for use."""

    name: str
    type: str
    spec: dict[str, Any]
    secret_values: Mapping[str, str]


SourceFactory = Callable[[dict[str, Any], dict[str, Any], StreamContext], StreamSource]
"""(connection spec, operator basicConfigs, context) → source."""

SinkFactory = Callable[[dict[str, Any], dict[str, Any], StreamContext], StreamSink]
"""(connection spec, operator configs {basicConfigs, advanceConfigs} merged, context) → sink."""

TransformFactory = Callable[[dict[str, Any], dict[str, Any], StreamContext], StreamTransform]
"""(connection spec, operator basicConfigs, context) → transform."""

SOURCES: dict[str, SourceFactory] = {}
SINKS: dict[str, SinkFactory] = {}
TRANSFORMS: dict[str, TransformFactory] = {}


def register_source(type_: str) -> Callable[[SourceFactory], SourceFactory]:
    def add(factory: SourceFactory) -> SourceFactory:
        SOURCES[type_] = factory
        return factory

    return add


def register_sink(type_: str) -> Callable[[SinkFactory], SinkFactory]:
    def add(factory: SinkFactory) -> SinkFactory:
        SINKS[type_] = factory
        return factory

    return add


def register_transform(type_: str) -> Callable[[TransformFactory], TransformFactory]:
    def add(factory: TransformFactory) -> TransformFactory:
        TRANSFORMS[type_] = factory
        return factory

    return add
