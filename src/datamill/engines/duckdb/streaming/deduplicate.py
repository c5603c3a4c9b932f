"""The Deduplicate operator as set-based DuckDB SQL (see :mod:`.stateful`).

Deduplicate semantics
---------------------
The dedup key of a record is its ``keyFields`` with, under AND, all ``deduplicateFields``
(NULL equal to NULL); under OR, each ``deduplicateFields`` field separately gives a dedup
key with the key fields (a NULL value matches nothing). The time of a record is its event
time (``isUseEventTime``) or the batch's processing time. A record is dropped when a
record with the same dedup key (for OR: any of them) arrived before it — in this batch or
an earlier one, whether that one was emitted or not — with a time later than its own
time minus ``period`` (a record without an event time is always emitted, and remembered
by nothing). Emitted records are unchanged, in arrival order. The state keeps
the latest time of each dedup key; it is evicted once ``latest + period`` is behind the
previous batch's watermark (or the processing time), and after ``ttlTime`` seconds
without a record. Deduplicate drops no late records: one behind the watermark whose dedup
key was already evicted is emitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
from sqlglot import exp

from datamill.domain.streaming import (
    DeduplicateConfig,
    Relationship,
    Schema,
)
from datamill.engines.duckdb.sql import render
from datamill.engines.duckdb.streaming.sql import col, cols, fill, parse, same, subquery, table
from datamill.engines.duckdb.streaming.steps import (
    US,
    Meta,
    Prepared,
    alias,
    all_exist,
    batch_values,
    count_of,
    create_like,
    source_table,
    state_prefix,
    utc_naive,
)
from datamill.engines.streaming import BatchContext


class DeduplicateStep:
    """A Deduplicate operator instance (see the module docstring for its semantics).

    Tables: ``<p>_meta`` and one ``<p>_seen<j>`` per dedup key kind (one under AND, one
    per deduplicateFields field under OR): the dedup key's columns ``g<i>``, ``_last``
    (the latest time seen) and ``_touched`` (processing time of the last record).
    """

    def __init__(self, operator_id: str, config: DeduplicateConfig, input_schema: Schema) -> None:
        self.operator_id = operator_id
        basic, advance = config.basicConfigs, config.advanceConfigs
        if not basic.deduplicateFields:
            raise ValueError(f"Deduplicate '{operator_id}': deduplicateFields is empty")
        period = advance.deduplicatePeriod
        if period is None or not period.period or period.period <= 0:
            raise ValueError(f"Deduplicate '{operator_id}': deduplicatePeriod.period is not set")
        self.period = period.period * US
        self.event_time = bool(period.isUseEventTime)
        if self.event_time and not input_schema.event_time:
            raise ValueError(f"Deduplicate '{operator_id}': the input has no event time")
        self.time_col = col(input_schema.event_time or "", quoted=True)
        self.ttl = (advance.ttlTime or 0) * US
        self.prefix = state_prefix(operator_id)
        self.meta = Meta(self.prefix)
        keys = list(dict.fromkeys(basic.keyFields))
        self.any_of = basic.relationship == Relationship.OR
        if self.any_of:
            groups = [[*keys, name] for name in dict.fromkeys(basic.deduplicateFields)]
        else:
            groups = [list(dict.fromkeys([*keys, *basic.deduplicateFields]))]
        self.groups = groups
        self.names = [f"{self.prefix}_seen{j}" for j in range(len(groups))]
        self.tables = [table(name) for name in self.names]
        self.out = table(f"{self.prefix}_out")
        self.out_ref = render(self.out)
        self.sql = Prepared()

    @staticmethod
    def columns(group: Sequence[str]) -> list[str]:
        return [f"g{i}" for i in range(len(group))]

    def create_state(self, con: duckdb.DuckDBPyConnection) -> None:
        """The meta table now; the seen tables at the first batch (their column types are
        the input's)."""
        self.meta.create(con)

    def _records_sql(self, source: exp.Table) -> exp.Expr:
        return fill(
            "SELECT *, CAST($time AS TIMESTAMP) AS __dm_t, rowid AS __dm_r FROM $t",
            time=self.time_col if self.event_time else parse("$now"),
            t=source,
        )

    def _key_sql(self, j: int, records: exp.Table) -> exp.Expr:
        """The dedup key ``j`` of ``records`` as ``g<i>`` with ``__dm_t`` (under OR, only
        records whose value is not NULL)."""
        group = self.groups[j]
        items = [alias(col(src, "r", quoted=True), f"g{i}") for i, src in enumerate(group)]
        where = fill("$v IS NOT NULL", v=col(group[-1], "r", quoted=True))
        return fill(
            "SELECT $items, r.__dm_t FROM $t r WHERE $w",
            items=items,
            t=records,
            w=where if self.any_of else exp.true(),
        )

    def process(self, con: duckdb.DuckDBPyConnection, input_table: str, ctx: BatchContext) -> str:
        """Emit the batch's records that are not repeats, then remember their keys."""
        source = source_table(input_table)
        if not all_exist(con, [self.meta.name, *self.names]):
            self.meta.create(con)
            for j, group in enumerate(self.groups):
                items = [alias(col(src, quoted=True), f"g{i}") for i, src in enumerate(group)]
                create_like(
                    con,
                    self.tables[j],
                    fill(
                        """SELECT $items, CAST(NULL AS TIMESTAMP) AS _last,
                            CAST(NULL AS TIMESTAMP) AS _touched FROM $t""",
                        items=items,
                        t=source,
                    ),
                    {},
                )
        horizon = self.meta.read(con)["watermark"] if self.event_time else ctx.processing_time
        values = batch_values(ctx, horizon=utc_naive(horizon) if horizon is not None else None)
        shape = (input_table, horizon is not None)
        self.sql.run(
            con, values, ("batch", *shape), lambda: self._batch(source, horizon is not None)
        )
        return self.out_ref

    def _batch(self, source: exp.Table, has_horizon: bool) -> list[exp.Expr]:
        statements = self._evict(has_horizon)
        flagged = table(f"{self.prefix}_flagged")
        period = fill("to_microseconds($p)", p=self.period)
        prev_items, dups = [], []
        inner = exp.select(parse("r.*")).from_(subquery(self._records_sql(source), "r"))
        for j, group in enumerate(self.groups):
            seen = f"s{j}"
            match = exp.and_(
                *(
                    exp.NullSafeEQ(this=col(src, "r", quoted=True), expression=col(f"g{i}", seen))
                    for i, src in enumerate(group)
                )
            )
            # under OR a NULL value has no dedup key: no predecessor, nothing in state
            has_key = (
                fill("$v IS NOT NULL", v=col(group[-1], "r", quoted=True))
                if self.any_of
                else exp.true()
            )
            prev = fill(
                """CASE WHEN $has_key THEN greatest(
                    max(r.__dm_t) OVER (PARTITION BY $group
                        ORDER BY r.__dm_r ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                    $last) END""",
                has_key=has_key,
                group=[col(src, "r", quoted=True) for src in group],
                last=col("_last", seen),
            )
            prev_items.append(alias(prev, f"__dm_p{j}"))
            inner = inner.join(self.tables[j].as_(seen), on=match, join_type="LEFT")
            dups.append(
                fill("coalesce(__dm_t < $p + $period, FALSE)", p=col(f"__dm_p{j}"), period=period)
            )
        inner = inner.select(*prev_items)
        statements.append(
            fill(
                """CREATE OR REPLACE TEMP TABLE $flagged AS
                SELECT * EXCLUDE ($prev), $dup AS __dm_dup FROM $inner""",
                flagged=flagged,
                prev=cols([f"__dm_p{j}" for j in range(len(self.groups))]),
                dup=exp.or_(*dups),
                inner=inner,
            )
        )
        statements.append(
            fill(
                """CREATE OR REPLACE TEMP TABLE $out AS
                SELECT * EXCLUDE (__dm_t, __dm_r, __dm_dup)
                FROM $flagged WHERE NOT __dm_dup ORDER BY __dm_r""",
                out=self.out,
                flagged=flagged,
            )
        )
        dropped = fill("SELECT count(*) FROM $f WHERE __dm_dup", f=flagged)
        statements.append(self.meta.add("dropped_duplicates", dropped))
        for j, group in enumerate(self.groups):
            names = self.columns(group)
            latest = fill(
                """SELECT $cols, max(__dm_t) AS _last, $now AS _touched
                FROM $keys WHERE __dm_t IS NOT NULL GROUP BY ALL""",
                cols=cols(names),
                keys=self._key_sql(j, flagged),
            )
            columns = [*names, "_last", "_touched"]
            statements.append(
                fill(
                    """MERGE INTO $seen s USING $latest b ON $same
                    WHEN MATCHED THEN UPDATE SET _last = greatest(s._last, b._last),
                        _touched = b._touched
                    WHEN NOT MATCHED THEN INSERT ($cols) VALUES ($bcols)""",
                    seen=self.tables[j],
                    latest=latest,
                    same=same(names, "s", "b"),
                    cols=cols(columns),
                    bcols=cols(columns, "b"),
                )
            )
        statements.append(fill("DROP TABLE $f", f=flagged))
        statements.append(self.meta.note_batch(parse("batches + 1"), self.out))
        return statements

    def _evict(self, has_horizon: bool) -> list[exp.Expr]:
        """Before the batch: keys whose period is over behind the previous batch's
        watermark (records of this batch may be older than its own), or behind the
        clock; and idle ones (ttl)."""
        statements: list[exp.Expr] = []
        conditions: list[exp.Expr] = []
        if has_horizon:
            conditions.append(fill("_last + to_microseconds($p) <= $horizon", p=self.period))
        if self.ttl:
            idle = fill("_touched <= $now - to_microseconds($ttl)", ttl=self.ttl)
            conditions.append(idle)
            for seen in self.tables:
                count = fill("SELECT count(*) FROM $t WHERE $c", t=seen, c=idle)
                statements.append(self.meta.add("expired_state_rows", count))
        if conditions:
            for seen in self.tables:
                statements.append(fill("DELETE FROM $t WHERE $c", t=seen, c=exp.or_(*conditions)))
        return statements

    def metrics(self, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        meta = self.meta.read(con) if count_of(con, self.meta.name) else {}
        return {
            "state_rows": sum(count_of(con, name) for name in self.names),
            "late_records": 0,
            "dropped_duplicates": int(meta.get("dropped_duplicates") or 0),
            "expired_state_rows": int(meta.get("expired_state_rows") or 0),
            "emitted_rows": int(meta.get("emitted_rows") or 0),
            "batches": int(meta.get("batches") or 0),
            "watermark": meta.get("watermark"),
        }
