"""The streaming state store and the SQL composition of the DuckDB engine: a checkpoint
commits the epoch's operator state with the positions, watermark and counters as one;
closing without a checkpoint drops the pending work; old checkpoints are pruned. And
:func:`fill` splices expressions, lists, tables and queries into a template, leaving the
batch's values as parameters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from datamill.engines.duckdb.sql import render
from datamill.engines.duckdb.streaming.sql import Statement, cols, fill, parse, same, table
from datamill.engines.duckdb.streaming.state import (
    CHECKPOINTS,
    KEEP_CHECKPOINTS,
    DuckDBStateStore,
)
from datamill.engines.streaming import Checkpoint, StateStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def open_store(path: Path) -> DuckDBStateStore:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE IF NOT EXISTS op_state (v INTEGER)")
    return DuckDBStateStore(con, path)


def test_a_checkpoint_commits_state_with_positions_and_pending_work_is_dropped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.duckdb"
    store: StateStore = open_store(path)
    assert store.recover() is None
    duck = store
    assert isinstance(duck, DuckDBStateStore)
    duck.con.execute("INSERT INTO op_state VALUES (1)")
    checkpoint = Checkpoint(
        epoch=1,
        positions={"src": {"segment": 1, "offset": 42}, "other": None},
        watermark=T0,
        max_event_time=T0 + timedelta(seconds=2),
        counters={"src": {"recordsIn": 0, "recordsOut": 3}},
        created_at=T0,
    )
    store.commit(checkpoint)
    duck.con.execute("INSERT INTO op_state VALUES (2)")  # epoch 2, never committed
    assert store.size_bytes() > 0
    store.close()

    again = open_store(path)
    assert again.recover() == checkpoint
    assert again.con.execute("SELECT v FROM op_state").fetchall() == [(1,)]
    again.close()


def test_old_checkpoints_are_pruned(tmp_path: Path) -> None:
    store = open_store(tmp_path / "state.duckdb")
    store.recover()
    for epoch in range(1, KEEP_CHECKPOINTS + 6):
        store.commit(Checkpoint(epoch=epoch, created_at=T0))
    epochs = [row[0] for row in store.con.execute(f"SELECT epoch FROM {CHECKPOINTS}").fetchall()]
    assert sorted(epochs) == list(range(6, KEEP_CHECKPOINTS + 6))
    store.close()


def test_fill_splices_lists_tables_and_queries_and_keeps_parameters() -> None:
    query = fill(
        "SELECT $keys, count(*) AS n FROM $rows r JOIN $state s ON $same "
        "WHERE r.t <= $now GROUP BY $keys",
        keys=cols(["k0", "k1"], "r"),
        rows=parse("SELECT 1 AS k0, 2 AS k1, TIMESTAMP '2026-01-01' AS t"),
        state=table('my "state"'),
        same=same(["k0", "k1"], "r", "s"),
    )
    sql = render(query)
    assert sql == (
        "SELECT r.k0, r.k1, COUNT(*) AS n FROM (SELECT 1 AS k0, 2 AS k1, "
        "CAST('2026-01-01' AS TIMESTAMP) AS t) AS r "
        'JOIN "my ""state""" AS s ON r.k0 IS NOT DISTINCT FROM s.k0 '
        "AND r.k1 IS NOT DISTINCT FROM s.k1 WHERE r.t <= $now GROUP BY r.k0, r.k1"
    )
    statement = Statement(
        fill("SELECT $items, $x AS x WHERE $now > TIMESTAMP '2000-01-01'", items=[], x=7)
    )
    assert statement.params == ("now",)
    con = duckdb.connect()
    assert statement.rows(con, {"now": datetime(2026, 1, 1), "unused": 1}) == [(7,)]
