"""The interface of the stateful operators (Aggregate, Deduplicate) inside the engine.

A stateful step keeps its state in tables of the job's own DuckDB database, so the
engine's checkpoint (one transaction over state tables and source positions) captures it
exactly. Steps never begin or commit transactions themselves.

Per micro-batch the engine loads the step's input rows into a table, calls
:meth:`StatefulStep.process`, and reads (or fuses further SQL over) the table whose name
it returns. When a source is idle the engine still calls ``process`` with an empty input
at least once a second, so processing-time windows close on the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import duckdb


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


class StatefulStep(Protocol):
    """One Aggregate or Deduplicate operator instance of a running pipeline."""

    operator_id: str

    def create_state(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create this step's state tables if they do not exist yet (names derived from
        the operator id, safe as SQL identifiers)."""

    def process(self, con: duckdb.DuckDBPyConnection, input_table: str, ctx: BatchContext) -> str:
        """Fold the rows of ``input_table`` into the state, evict what the watermark (or
        the ttl) closed, and return the name of a TEMP table holding the rows this batch
        emits, with the operator's output fields in their declared order and types. The
        engine drops that table after the batch."""

    def metrics(self, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        """Counters for the metrics endpoint: at least ``state_rows`` and ``late_records``
        (records dropped because they arrived behind the watermark)."""
