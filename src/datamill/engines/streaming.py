"""The streaming side of an engine: the micro-batch executor and the state store.

The job loop (``runtime.streaming.engine``) is engine-neutral: it reads the sources, walks
the plan's operators in order, advances the watermark, checkpoints and reports metrics.
Whatever touches the rows goes through a :class:`MicroBatchExecutor`; whatever must
survive a crash goes through a :class:`StateStore`. Relations are the executor's own
handles for a batch's rows (for DuckDB, a SQL table expression), opaque to the loop.

A checkpoint is one atomic step: the store holds the work of the current epoch (operator
state included) uncommitted until :meth:`StateStore.commit` makes it durable together with
the source positions, watermark and counters of that epoch, and begins the next epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeAlias

import pyarrow as pa

from datamill.domain.streaming import Schema

Relation: TypeAlias = str
"""An executor's handle for a batch's rows; only the executor that made it reads it."""


@dataclass
class JsonLines:
    """Records as JSON lines: ``data`` ends with a newline and holds ``count`` lines."""

    data: bytes
    count: int


SourceBatch: TypeAlias = pa.Table | JsonLines
"""One source's records of a micro-batch: Arrow, or JSON lines the executor parses."""


@dataclass(frozen=True)
class BatchContext:
    """What a step knows about the batch it processes."""

    epoch: int
    """The checkpoint epoch this batch belongs to (increases by one per checkpoint)."""
    processing_time: datetime
    """Wall clock (aware, UTC) when the batch started."""
    watermark: datetime | None
    """Event-time watermark after this batch (max event time seen minus out-of-orderness,
    never decreasing); ``None`` until an event time has been seen."""
    final: bool = False
    """The input has ended (a bounded replay, a test): emit everything still open."""


@dataclass
class Checkpoint:
    """What one committed epoch records besides the operator state."""

    epoch: int
    positions: dict[str, Any] = field(default_factory=dict)
    """Each source operator's position after the epoch (``None``: from the start)."""
    watermark: datetime | None = None
    max_event_time: datetime | None = None
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    """recordsIn / recordsOut per operator id."""
    created_at: datetime | None = None


class StateStore(Protocol):
    """The durable state of one job: the operator state and its checkpoints.

    Work between two checkpoints is pending: after a crash it is gone, and the job resumes
    from the last committed :class:`Checkpoint`.
    """

    def recover(self) -> Checkpoint | None:
        """The last committed checkpoint (None for a new job); begins the next epoch."""
        ...

    def commit(self, checkpoint: Checkpoint) -> None:
        """Make the epoch's work and ``checkpoint`` durable as one; begin the next epoch."""
        ...

    def size_bytes(self) -> int:
        """What the state takes on disk (for the metrics)."""
        ...

    def close(self) -> None:
        """Drop the pending work and release the store."""
        ...


class MicroBatchExecutor(Protocol):
    """Runs the operators of one micro-batch over relations it owns.

    Per batch the loop calls :meth:`load` for every source, the operator methods in plan
    order, then :meth:`end_batch`, which releases every relation of the batch.
    """

    def load(self, op_id: str, schema: Schema, data: SourceBatch) -> Relation | None:
        """A source's batch typed to ``schema``; None for an empty batch of records whose
        fields are not declared."""
        ...

    def empty(self, op_id: str, schema: Schema) -> Relation:
        """A relation of no rows with ``schema``'s fields."""
        ...

    def max_time(self, relation: Relation, field_name: str) -> datetime | None:
        """The latest value of a TIMESTAMP field (aware, UTC); None when there is none."""
        ...

    def union(self, relations: list[Relation]) -> Relation | None:
        """The rows of all ``relations`` (matched by field name)."""
        ...

    def sql(self, render: Callable[[Relation], str], relation: Relation) -> Relation:
        """A stateless operator: the query ``render`` makes of its input."""
        ...

    def materialize(self, op_id: str, relation: Relation) -> Relation:
        """The relation computed once for this batch (an operator read several times)."""
        ...

    def count(self, relation: Relation) -> int: ...

    def stateful(
        self, op_id: str, step: Any, relation: Relation, ctx: BatchContext
    ) -> tuple[Relation, int]:
        """Fold ``relation`` into the state of the engine's stateful ``step`` (built for
        this engine by the plan); returns what the batch emits and how many rows went in."""
        ...

    def stateful_metrics(self, step: Any) -> dict[str, Any]:
        """The step's counters: at least ``state_rows`` and ``late_records``."""
        ...

    def transform(
        self, op_id: str, apply: Callable[[pa.Table], pa.Table], relation: Relation
    ) -> Relation:
        """Rows through a Python transform (CallFunctionGraph)."""
        ...

    def write(self, sink: Any, relation: Relation, epoch: int) -> int:
        """Hand the rows to ``sink`` (``write(table, epoch)``, or a file the engine writes
        itself when the sink offers one); returns how many."""
        ...

    def end_batch(self) -> None:
        """Release the batch's relations."""
        ...
