"""DuckDB's state store, and the interface of its stateful operators (Aggregate, Deduplicate).

The job's state lives in one DuckDB database file (``state.duckdb`` in the job's folder):
the stateful steps' tables and the ``_dm_checkpoints`` table (epoch, source positions,
watermark, counters). Between checkpoints all work happens inside one open transaction;
:meth:`DuckDBStateStore.commit` writes the checkpoint row, COMMITs and BEGINs the next
epoch, so a crash loses exactly the uncommitted epoch.

A stateful step keeps its state in tables of that database, so the checkpoint captures it
exactly. Steps never begin or commit transactions themselves. Per micro-batch the
executor loads the step's input rows into a table, calls :meth:`StatefulStep.process`,
and reads (or fuses further SQL over) the table whose name it returns. When a source is
idle the loop still calls ``process`` with an empty input at least once a second, so
processing-time windows close on the wall clock.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import duckdb
from sqlglot import exp

from datamill.engines.duckdb.sql import render
from datamill.engines.duckdb.streaming.sql import table
from datamill.engines.streaming import BatchContext, Checkpoint

CHECKPOINTS = "_dm_checkpoints"
KEEP_CHECKPOINTS = 20
STATE_FILE = "state.duckdb"


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
        executor drops that table after the batch."""

    def metrics(self, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        """Counters for the metrics endpoint: at least ``state_rows`` and ``late_records``
        (records dropped because they arrived behind the watermark)."""


def _naive(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment else None


def _aware(moment: Any) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_COLUMNS = {
    "epoch": "BIGINT",
    "positions": "VARCHAR",
    "watermark": "TIMESTAMP",
    "max_event_time": "TIMESTAMP",
    "counters": "VARCHAR",
    "created_at": "TIMESTAMP",
}
_TABLE = table(CHECKPOINTS)
_CREATE = render(
    exp.Create(
        this=exp.Schema(
            this=_TABLE,
            expressions=[
                exp.ColumnDef(
                    this=exp.to_identifier(name),
                    kind=exp.DataType.build(kind),
                    constraints=(
                        [exp.ColumnConstraint(kind=exp.PrimaryKeyColumnConstraint())]
                        if name == "epoch"
                        else []
                    ),
                )
                for name, kind in _COLUMNS.items()
            ],
        ),
        kind="TABLE",
        exists=True,
    )
)
_LAST = render(exp.select(*_COLUMNS).from_(_TABLE).order_by("epoch DESC").limit(1))
_INSERT = render(exp.insert(exp.values([tuple(exp.Placeholder() for _ in _COLUMNS)]), _TABLE))
_PRUNE = render(exp.delete(_TABLE, where="epoch <= ?"))


class DuckDBStateStore:
    """A :class:`~datamill.engines.streaming.StateStore` in the job's DuckDB database.

    It shares the executor's connection: the operator state and the checkpoint row are
    committed by one transaction.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path) -> None:
        self.con = con
        self.path = path
        con.execute(_CREATE)

    def recover(self) -> Checkpoint | None:
        rows = self.con.execute(_LAST).fetchall()
        self.con.execute("BEGIN TRANSACTION")
        if not rows:
            return None
        epoch, positions, watermark, max_event_time, counters, created_at = rows[0]
        return Checkpoint(
            epoch=int(epoch),
            positions=json.loads(positions),
            watermark=_aware(watermark),
            max_event_time=_aware(max_event_time),
            counters=json.loads(counters),
            created_at=_aware(created_at),
        )

    def commit(self, checkpoint: Checkpoint) -> None:
        self.con.execute(
            _INSERT,
            [
                checkpoint.epoch,
                json.dumps(checkpoint.positions),
                _naive(checkpoint.watermark),
                _naive(checkpoint.max_event_time),
                json.dumps(checkpoint.counters),
                _naive(checkpoint.created_at),
            ],
        )
        self.con.execute(_PRUNE, [checkpoint.epoch - KEEP_CHECKPOINTS])
        self.con.execute("COMMIT")
        self.con.execute("BEGIN TRANSACTION")

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", ".wal"):
            with contextlib.suppress(OSError):
                total += self.path.with_name(self.path.name + suffix).stat().st_size
        return total

    def close(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self.con.execute("ROLLBACK")
        self.con.close()
