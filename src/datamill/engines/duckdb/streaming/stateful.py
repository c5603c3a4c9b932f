"""The stateful streaming operators, Aggregate and Deduplicate, as set-based DuckDB SQL.

Each step keeps all of its state, counters included, in tables of the job's DuckDB
database named after the operator id (``dm_<id>_<hash>_…``), so the engine's checkpoint
transaction captures it and a rollback undoes it exactly. A micro-batch costs a handful of
statements whatever its size. For tumbling and sliding windows: one GROUP BY of the batch
into partial aggregates per key and window (left-joined to the windows in state), one
``UPDATE`` merging them into the windows already in state, one ``INSERT`` of the new
windows that stay open, one ``CREATE TEMP TABLE … AS`` of the windows to emit (from state,
and straight from the batch for those that open and close within it) and one ``DELETE``.
Nothing is computed row by row in Python, and nothing about the stream is remembered in
Python between batches (only the rendered SQL, see :mod:`.sql`). The semantics are
documented with each step: :mod:`.aggregate` and :mod:`.deduplicate`.

The input table's ``rowid`` is its arrival order (the engine loads each batch into a
table, in the order the records arrived); together with a batch counter kept in the state
it orders records that share a time.
"""

from __future__ import annotations

from datamill.domain.streaming import (
    AggregateConfig,
    DeduplicateConfig,
    OperatorConfig,
    Schema,
    StreamingRuntime,
)
from datamill.engines.duckdb.streaming.aggregate import AggregateStep
from datamill.engines.duckdb.streaming.deduplicate import DeduplicateStep
from datamill.engines.duckdb.streaming.state import StatefulStep
from datamill.engines.duckdb.streaming.steps import duckdb_type, state_prefix

__all__ = [
    "AggregateStep",
    "DeduplicateStep",
    "build_stateful",
    "duckdb_type",
    "state_prefix",
]


def build_stateful(
    operator_id: str,
    class_name: str,
    config: OperatorConfig,
    input_schema: Schema,
    output_schema: Schema,
    runtime: StreamingRuntime,
) -> StatefulStep:
    """The step running one Aggregate or Deduplicate instance of a checked pipeline."""
    del runtime  # the engine computes the watermark; steps only read it
    if class_name == "Aggregate" and isinstance(config, AggregateConfig):
        return AggregateStep(operator_id, config, input_schema, output_schema)
    if class_name == "Deduplicate" and isinstance(config, DeduplicateConfig):
        return DeduplicateStep(operator_id, config, input_schema)
    raise ValueError(f"operator '{operator_id}': {class_name} is not a stateful operator")
