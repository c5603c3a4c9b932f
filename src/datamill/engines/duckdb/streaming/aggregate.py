"""The Aggregate operator as set-based DuckDB SQL (see :mod:`.stateful`).

Aggregate semantics
-------------------
* Windows: tumbling (``size``, ``offset``), sliding (``size``, ``slide``, ``offset``) and
  session (``gap``) windows, in seconds, aligned on the Unix epoch plus ``offset`` (a
  window start ``s`` has ``s ≡ offset (mod size)``, or ``mod slide`` for sliding windows).
  A session window is ``[first event, last event + gap)``; sessions of a key that overlap
  or touch are merged.
* EventTime: time is ``windowAssigner.timeField`` or the input's event-time field. A window
  is emitted by the batch after which the watermark reaches its end (``end <= watermark``)
  and then evicted. A record is late when every window it belongs to has ended at or
  before the watermark of the previous batch: it is counted in ``late_records`` and
  dropped (for a sliding window, only the already closed windows of a record are skipped;
  for sessions, a record is late when ``time + gap <= watermark``, so a record on time may
  start a session overlapping one already emitted). Records without an event time are
  dropped and counted in ``null_time_records``.
* ProcessingTime: every record of a batch has the batch's ``processing_time``; a window is
  emitted once ``processing_time`` reaches its end (the engine calls ``process`` at least
  once a second, with an empty input when idle).
* ``final``: every window still open is emitted.
* Aggregates ignore NULL values, like SQL: SUM, AVG, MAX, MIN and COUNT(field) of only
  NULLs give NULL (COUNT: 0); COUNT without ``aggregateField`` counts records. AVG keeps a
  sum and a count, COUNT_DISTINCT the distinct values of each window (in a table of its
  own), so both are exact across batches. FIRST and LAST take the value of the non-NULL
  record with the lowest / highest time, ties broken by arrival order.
* eventConditions: per key, a gate opened by a record meeting ``eventOnCondition`` and
  closed by one meeting ``eventOffCondition`` (a record meeting both closes it), taken in
  arrival order. A record is aggregated when the gate is open after it: the opening record
  counts, the closing one does not, records while the gate is closed are ignored. The gate
  of each key is state (initially closed) and outlives windows.
* ttlTime: a window (or a gate) whose state has not changed for ``ttlTime`` seconds of
  processing time is dropped without being emitted, counted in ``expired_state_rows``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import duckdb
from sqlglot import exp

from datamill.domain.expressions import compile_predicate
from datamill.domain.streaming import (
    WINDOW_END,
    WINDOW_START,
    AggregateConfig,
    AggregateType,
    Schema,
    TimeType,
    WindowType,
)
from datamill.engines.duckdb.sql import render
from datamill.engines.duckdb.streaming.render import expression_sql
from datamill.engines.duckdb.streaming.sql import col, cols, fill, parse, same, subquery, table
from datamill.engines.duckdb.streaming.steps import (
    NO_CONTEXT,
    US,
    Meta,
    Prepared,
    alias,
    all_exist,
    batch_values,
    cast,
    count_of,
    create_like,
    duckdb_type,
    source_table,
    state_prefix,
    us_of,
    utc_naive,
)
from datamill.engines.streaming import BatchContext


@dataclass(frozen=True)
class Measure:
    """One aggregateFields entry: how it is accumulated, merged and finished.

    ``source`` is the aggregated input column in the record query (``x<i>``), or None for
    COUNT of records. Partial columns are named ``a<i>`` (``a<i>s``/``a<i>c`` for AVG,
    ``a<i>v``/``a<i>k`` for FIRST/LAST).
    """

    index: int
    kind: AggregateType
    name: str
    out_type: str | None
    source: str | None

    @property
    def a(self) -> str:
        return f"a{self.index}"

    def partial_columns(self) -> list[str]:
        a = self.a
        if self.kind == AggregateType.AVG:
            return [f"{a}s", f"{a}c"]
        if self.kind in (AggregateType.FIRST, AggregateType.LAST):
            return [f"{a}v", f"{a}k"]
        if self.kind == AggregateType.COUNT_DISTINCT:
            return []
        return [a]

    def raw(self) -> list[exp.Expr]:
        """Partial aggregates over record rows (``_o`` is the record's order struct)."""
        a, kind = self.a, self.kind
        x = col(self.source) if self.source else None
        if kind == AggregateType.COUNT:
            return [alias(fill("count($x)", x=x) if x else parse("count(*)"), a)]
        if kind == AggregateType.SUM:
            return [alias(fill("sum($x)", x=x), a)]
        if kind == AggregateType.AVG:
            return [alias(fill("sum($x)", x=x), f"{a}s"), alias(fill("count($x)", x=x), f"{a}c")]
        if kind == AggregateType.MAX:
            return [alias(fill("max($x)", x=x), a)]
        if kind == AggregateType.MIN:
            return [alias(fill("min($x)", x=x), a)]
        if kind == AggregateType.FIRST:
            return [
                alias(fill("arg_min($x, _o) FILTER (WHERE $x IS NOT NULL)", x=x), f"{a}v"),
                alias(fill("min(_o) FILTER (WHERE $x IS NOT NULL)", x=x), f"{a}k"),
            ]
        if kind == AggregateType.LAST:
            return [
                alias(fill("arg_max($x, _o) FILTER (WHERE $x IS NOT NULL)", x=x), f"{a}v"),
                alias(fill("max(_o) FILTER (WHERE $x IS NOT NULL)", x=x), f"{a}k"),
            ]
        return []

    def combine(self) -> list[exp.Expr]:
        """Aggregates over partial rows (merging sessions)."""
        a, kind = self.a, self.kind
        if kind == AggregateType.COUNT:
            return [alias(fill("CAST(sum($a) AS BIGINT)", a=col(a)), a)]
        if kind == AggregateType.SUM:
            return [alias(fill("sum($a)", a=col(a)), a)]
        if kind == AggregateType.AVG:
            return [
                alias(fill("sum($s)", s=col(f"{a}s")), f"{a}s"),
                alias(fill("CAST(sum($c) AS BIGINT)", c=col(f"{a}c")), f"{a}c"),
            ]
        if kind == AggregateType.MAX:
            return [alias(fill("max($a)", a=col(a)), a)]
        if kind == AggregateType.MIN:
            return [alias(fill("min($a)", a=col(a)), a)]
        if kind in (AggregateType.FIRST, AggregateType.LAST):
            arg, ext = ("arg_min", "min") if kind == AggregateType.FIRST else ("arg_max", "max")
            v, k = col(f"{a}v"), col(f"{a}k")
            return [
                alias(exp.func(arg, v, k), f"{a}v"),
                alias(exp.func(ext, k.copy()), f"{a}k"),
            ]
        return []

    def merge(self) -> list[exp.Expr]:
        """``SET`` items of the MERGE: state ``s`` updated with batch partials ``b``."""
        a, kind = self.a, self.kind

        def item(name: str, template: str) -> exp.Expr:
            value = fill(template, s=col(name, "s"), b=col(name, "b"))
            return exp.EQ(this=col(name), expression=value)

        if kind == AggregateType.COUNT:
            return [item(a, "$s + $b")]
        if kind == AggregateType.SUM:
            return [item(a, "coalesce($s + $b, $s, $b)")]
        if kind == AggregateType.AVG:
            return [item(f"{a}s", "coalesce($s + $b, $s, $b)"), item(f"{a}c", "$s + $b")]
        if kind == AggregateType.MAX:
            return [item(a, "greatest($s, $b)")]
        if kind == AggregateType.MIN:
            return [item(a, "least($s, $b)")]
        if kind in (AggregateType.FIRST, AggregateType.LAST):
            first = kind == AggregateType.FIRST
            value = fill(
                "CASE WHEN $sk IS NULL OR $bk < $sk THEN $bv ELSE $sv END"
                if first
                else "CASE WHEN $sk IS NULL OR $bk > $sk THEN $bv ELSE $sv END",
                sk=col(f"{a}k", "s"),
                bk=col(f"{a}k", "b"),
                bv=col(f"{a}v", "b"),
                sv=col(f"{a}v", "s"),
            )
            return [
                exp.EQ(this=col(f"{a}v"), expression=value),
                item(f"{a}k", "least($s, $b)" if first else "greatest($s, $b)"),
            ]
        return []

    def final(self) -> exp.Expr:
        """The output value from state row ``s`` (and ``d<i>`` for COUNT_DISTINCT)."""
        a, kind = self.a, self.kind
        value: exp.Expr
        if kind == AggregateType.AVG:
            value = fill(
                "CASE WHEN $c > 0 THEN CAST($s AS DOUBLE) / $c END",
                c=col(f"{a}c", "s"),
                s=col(f"{a}s", "s"),
            )
        elif kind in (AggregateType.FIRST, AggregateType.LAST):
            value = col(f"{a}v", "s")
        elif kind == AggregateType.COUNT_DISTINCT:
            value = fill("coalesce($n, 0)", n=col("n", f"d{self.index}"))
        else:
            value = col(a, "s")
        if self.out_type:
            value = cast(value, self.out_type)
        return alias(value, self.name, quoted=True)


class AggregateStep:
    """An Aggregate operator instance (see the module docstring for its semantics).

    Tables (``<p>`` = :func:`state_prefix`): ``<p>_meta`` (watermark, counters),
    ``<p>_win`` (one row per open window and key: keys ``k<i>``, ``_ws``, ``_we``, the
    partial aggregates, ``_touched``), ``<p>_d<i>`` (the distinct values of COUNT_DISTINCT
    ``i`` per window) and ``<p>_gate`` (the eventConditions gate of each key).

    A batch's statements depend on its shape (the input table, whether a previous
    watermark exists, how windows close); each shape is rendered once.
    """

    def __init__(
        self,
        operator_id: str,
        config: AggregateConfig,
        input_schema: Schema,
        output_schema: Schema,
    ) -> None:
        self.operator_id = operator_id
        basic = config.basicConfigs
        assigner = basic.windowAssigner
        if basic.windowsType is None or assigner is None or assigner.timeType is None:
            raise ValueError(f"Aggregate '{operator_id}': the window is not configured")
        self.window = basic.windowsType
        self.event_time = assigner.timeType == TimeType.EventTime
        self.size = (assigner.size or 0) * US
        self.slide = (assigner.slide or 0) * US
        self.offset = (assigner.offset or 0) * US
        self.gap = (assigner.gap or 0) * US
        self.ttl = (config.advanceConfigs.ttlTime or 0) * US
        time_field = assigner.timeField or input_schema.event_time
        if self.event_time and not time_field:
            raise ValueError(f"Aggregate '{operator_id}': event time needs a time field")
        self.time_col = col(time_field, quoted=True) if time_field else None
        self.prefix = state_prefix(operator_id)
        self.meta = Meta(self.prefix)
        self.win_name = f"{self.prefix}_win"
        self.gate_name = f"{self.prefix}_gate"
        self.win = table(self.win_name)
        self.gate = table(self.gate_name)
        self.keys = [f"k{i}" for i in range(len(basic.keyFields))]
        self.key_sources = [col(name, quoted=True) for name in basic.keyFields]
        out_types = {name: duckdb_type(kind) for name, kind in output_schema.fields.items()}
        self.key_out: list[exp.Expr] = []
        for k, name in zip(self.keys, basic.keyFields, strict=True):
            out_type = out_types.get(name)
            value = cast(col(k, "s"), out_type) if out_type else col(k, "s")
            self.key_out.append(alias(value, name, quoted=True))
        self.measures: list[Measure] = []
        self.sources: list[exp.Expr] = []
        for i, field in enumerate(basic.aggregateFields or []):
            if field.aggregateType is None or not field.field:
                raise ValueError(f"Aggregate '{operator_id}': aggregateFields[{i}] is incomplete")
            source = (field.aggregateField or "").strip()
            if source:
                self.sources.append(alias(col(source, quoted=True), f"x{i}"))
            self.measures.append(
                Measure(
                    i,
                    field.aggregateType,
                    field.field,
                    out_types.get(field.field),
                    f"x{i}" if source else None,
                )
            )
        self.distinct = [m for m in self.measures if m.kind == AggregateType.COUNT_DISTINCT]
        self.ordered = any(
            m.kind in (AggregateType.FIRST, AggregateType.LAST) for m in self.measures
        )
        conditions = basic.eventConditions
        on = (conditions.eventOnCondition or "").strip() if conditions else ""
        off = (conditions.eventOffCondition or "").strip() if conditions else ""
        self.gated = bool(on and off)
        self.flip: exp.Expr | None = None
        if self.gated:
            scope = input_schema.scope
            self.flip = fill(
                "CASE WHEN $off THEN FALSE WHEN $on THEN TRUE END",
                off=parse(expression_sql(compile_predicate(off, scope))),
                on=parse(expression_sql(compile_predicate(on, scope))),
            )
        self.partials = [c for m in self.measures for c in m.partial_columns()]
        if self.window == WindowType.SessionWindows and self.gap <= 0:
            raise ValueError(f"Aggregate '{operator_id}': a session window needs a gap")
        if self.window != WindowType.SessionWindows and self.size <= 0:
            raise ValueError(f"Aggregate '{operator_id}': the window needs a size")
        if self.window == WindowType.SlidingTimeWindows and self.slide <= 0:
            raise ValueError(f"Aggregate '{operator_id}': a sliding window needs a slide")
        self.fused = (
            self.event_time
            and self.window == WindowType.TumblingTimeWindows
            and not self.gated
            and not self.distinct
        )
        """Tumbling windows without gate or distinct values count late and time-less
        records from the batch's groups instead of in a scan of their own."""
        self.needs_rows = (
            self.gated or bool(self.distinct) or self.window == WindowType.SessionWindows
        )
        self.sql = Prepared()
        self.out = table(f"{self.prefix}_out")
        self.out_ref = render(self.out)

    # ------------------------------------------------------------------ SQL pieces

    def distinct_name(self, measure: Measure) -> str:
        return f"{self.prefix}_d{measure.index}"

    def distinct_table(self, measure: Measure) -> exp.Table:
        return table(self.distinct_name(measure))

    def records_sql(self, source: exp.Table) -> exp.Expr:
        """The batch's records as ``k<i>``, ``_us`` (time in µs), ``x<i>`` (aggregated
        values), ``_o`` (order: time, batch, rowid), ``_r`` (rowid) and ``_f`` (gate flip)."""
        time = (
            fill("epoch_us($t)", t=self.time_col)
            if self.event_time
            else parse("CAST($now_us AS BIGINT)")
        )
        items: list[exp.Expr] = [
            alias(src, k) for k, src in zip(self.keys, self.key_sources, strict=True)
        ]
        items.append(alias(time, "_us"))
        items += self.sources
        if self.ordered:
            order = fill("{'t': $time, 'b': CAST($batch AS INTEGER), 'r': rowid}", time=time)
            items.append(alias(order, "_o"))
        if self.gated:
            assert self.flip is not None
            items += [parse("rowid AS _r"), alias(self.flip, "_f")]
        return fill("SELECT $items FROM $t", items=items, t=source)

    def late_sql(self) -> exp.Expr:
        """A condition on ``_us``: every window of the record ended by ``$prev``."""
        if self.window == WindowType.SessionWindows:
            return fill("_us + $gap <= $prev", gap=self.gap)
        step = self.slide if self.window == WindowType.SlidingTimeWindows else self.size
        return fill(
            "_us - (((_us - $off) % $step + $step) % $step) + $size <= $prev",
            off=self.offset,
            step=step,
            size=self.size,
        )

    def ontime_sql(self, source: exp.Table, prev: bool) -> exp.Expr:
        """The records on time and with a time; with eventConditions, ``_open`` tells
        whether the key's gate is open after each (those are aggregated)."""
        where = (
            fill("_us IS NOT NULL AND NOT ($late)", late=self.late_sql())
            if prev
            else parse("_us IS NOT NULL")
        )
        rows = fill("SELECT * FROM $r WHERE $w", r=self.records_sql(source), w=where)
        if not self.gated:
            return rows
        keys = self.keys or ["_nokey"]
        if not self.keys:
            rows = fill("SELECT TRUE AS _nokey, * FROM $r", r=rows)
        return fill(
            """SELECT r.*, coalesce(
                last_value(r._f IGNORE NULLS) OVER (
                    PARTITION BY $keys ORDER BY r._r
                    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
                g._open, FALSE) AS _open
            FROM $rows r LEFT JOIN $gate g ON $same""",
            keys=cols(keys, "r"),
            rows=rows,
            gate=self.gate,
            same=same(keys, "r", "g"),
        )

    def windowed_sql(self, accepted: exp.Expr, prev: bool) -> exp.Expr:
        """Tumbling / sliding: the accepted records with ``_wsu``, the start (µs) of each of
        their windows (one row per record and window; closed windows of sliding ones
        left out)."""
        if self.window == WindowType.TumblingTimeWindows:
            return fill(
                "SELECT *, _us - (((_us - $off) % $size + $size) % $size) AS _wsu FROM $a",
                off=self.offset,
                size=self.size,
                a=accepted,
            )
        keep = (
            fill("_wsu + $size > _us AND _wsu + $size > $prev", size=self.size)
            if prev
            else fill("_wsu + $size > _us", size=self.size)
        )
        return fill(
            """SELECT * FROM (
                SELECT r.*, _us - (((_us - $off) % $slide + $slide) % $slide) - j.j * $slide
                    AS _wsu
                FROM $a r CROSS JOIN range($count) AS j(j)
            ) WHERE $keep""",
            off=self.offset,
            slide=self.slide,
            a=accepted,
            count=math.ceil(self.size / self.slide),
            keep=keep,
        )

    def partial_select(
        self, windowed: exp.Expr, touched: exp.Expr, counted: bool = False
    ) -> exp.Expr:
        """The partial aggregates of ``windowed`` per key and window: a state row (and,
        ``counted``, ``_n`` the records of the group)."""
        raw = [c for m in self.measures for c in m.raw()]
        if counted:
            raw.append(parse("count(*) AS _n"))
        return fill(
            """SELECT $keys, make_timestamp(_wsu) AS _ws,
                make_timestamp(_wsu + $size) AS _we, $raw, $touched AS _touched
            FROM $w GROUP BY $keys, _wsu""",
            keys=cols(self.keys),
            size=self.size,
            raw=raw,
            touched=touched,
            w=windowed,
        )

    def closing(self, kind: str) -> exp.Expr:
        """The condition (on alias ``s``) of the windows this batch closes: all of them
        (``all``), none, or those ending by ``$close_at``."""
        if kind == "all":
            return exp.true()
        if kind == "none":
            return exp.false()
        return parse("s._we <= $close_at")

    def _closing_kind(self, ctx: BatchContext) -> tuple[str, datetime | None]:
        if ctx.final:
            return "all", None
        if self.event_time:
            if ctx.watermark is None:
                return "none", None
            return "at", utc_naive(ctx.watermark)
        return "at", utc_naive(ctx.processing_time)

    # ------------------------------------------------------------------ state

    def create_state(self, con: duckdb.DuckDBPyConnection) -> None:
        """The meta table now; the window tables at the first batch, when the input's
        column types are known for sure (an open schema leaves them to the data)."""
        self.meta.create(con)

    def table_names(self) -> list[str]:
        """All of the step's state tables."""
        names = [self.meta.name, self.win_name, *(self.distinct_name(m) for m in self.distinct)]
        return [*names, self.gate_name] if self.gated else names

    def _create_tables(self, con: duckdb.DuckDBPyConnection, source: exp.Table) -> None:
        """Create the tables whose column types come from the data (``IF NOT EXISTS``:
        cheap once they exist). The gate first: the record query reads it."""
        values = batch_values(NO_CONTEXT, batch=0)
        if self.gated:
            records = self.records_sql(source)
            if not self.keys:
                records = fill("SELECT TRUE AS _nokey, * FROM $r", r=records)
            create_like(
                con,
                self.gate,
                fill(
                    "SELECT $keys, _f AS _open, CAST(NULL AS TIMESTAMP) AS _touched FROM $r",
                    keys=cols(self.keys or ["_nokey"]),
                    r=records,
                ),
                values,
            )
        accepted = self.ontime_sql(source, False)
        if self.window == WindowType.SessionWindows:
            windowed = fill("SELECT *, _us AS _wsu FROM $a", a=accepted)
        else:
            windowed = self.windowed_sql(accepted, False)
        query = self.partial_select(windowed, parse("CAST(NULL AS TIMESTAMP)"))
        create_like(con, self.win, query, values)
        for m in self.distinct:
            assert m.source is not None
            create_like(
                con,
                self.distinct_table(m),
                fill(
                    "SELECT $keys, make_timestamp(_wsu) AS _ws, $v AS v FROM $w",
                    keys=cols(self.keys),
                    v=col(m.source),
                    w=windowed,
                ),
                values,
            )

    def process(self, con: duckdb.DuckDBPyConnection, input_table: str, ctx: BatchContext) -> str:
        """Fold one batch into the windows, emit the closed ones (see the module doc)."""
        if not all_exist(con, self.table_names()):
            self.meta.create(con)
            self._create_tables(con, source_table(input_table))
        meta = self.meta.read(con)
        batch = int(meta["batches"] or 0) + 1
        prev_wm = meta["watermark"]
        prev = us_of(prev_wm) if (self.event_time and prev_wm is not None) else None
        kind, close_at = self._closing_kind(ctx)
        values = batch_values(ctx, batch=batch, prev=prev, close_at=close_at)
        shape = (input_table, prev is not None, kind)
        if self.ttl:
            self.sql.run(con, values, ("expire",), self._expire)
        (empty,) = self.sql(("empty", input_table), lambda: self._build("empty", shape))
        folded = bool(empty.rows(con, values)[0][0])
        if folded:
            for name in self._fold_names():
                self.sql.run(con, values, (name, *shape), partial(self._build, name, shape))
        fresh = folded and self.window != WindowType.SessionWindows
        self.sql.run(con, values, ("finish", fresh, kind), lambda: self._finish(fresh, kind))
        return self.out_ref

    def _finish(self, fresh: bool, kind: str) -> list[exp.Expr]:
        """Emit what the batch closes, and note the batch in the meta table."""
        statements = self._emit(self.closing(kind), fresh)
        if fresh:
            statements.append(fill("DROP TABLE $t", t=table(f"{self.prefix}_batch")))
        statements.append(self.meta.note_batch(parse("$batch"), self.out))
        return statements

    def _drop_windows(self, condition: exp.Expr) -> list[exp.Expr]:
        """Delete the windows meeting ``condition`` (on ``s``) and their distinct values."""
        statements = [
            fill(
                """DELETE FROM $d d USING (SELECT $keys, _ws FROM $win s WHERE $c) e
                WHERE $same AND d._ws = e._ws""",
                d=self.distinct_table(m),
                keys=cols(self.keys),
                win=self.win,
                c=condition,
                same=same(self.keys, "d", "e"),
            )
            for m in self.distinct
        ]
        statements.append(fill("DELETE FROM $win s WHERE $c", win=self.win, c=condition))
        return statements

    def _expire(self) -> list[exp.Expr]:
        condition = fill("s._touched <= $now - to_microseconds($ttl)", ttl=self.ttl)
        count = fill("SELECT count(*) FROM $win s WHERE $c", win=self.win, c=condition)
        statements = [self.meta.add("expired_state_rows", count), *self._drop_windows(condition)]
        if self.gated:
            count = fill("SELECT count(*) FROM $gate s WHERE $c", gate=self.gate, c=condition)
            statements.append(self.meta.add("expired_state_rows", count))
            statements.append(fill("DELETE FROM $gate s WHERE $c", gate=self.gate, c=condition))
        return statements

    def _emit(self, closing: exp.Expr, fresh: bool) -> list[exp.Expr]:
        """The closed windows into the output table (from state, and from the batch's
        partials those not merged into state), then out of state."""
        items = [
            *self.key_out,
            alias(col("_ws", "s"), WINDOW_START, quoted=True),
            alias(col("_we", "s"), WINDOW_END, quoted=True),
            *(m.final() for m in self.measures),
        ]

        def select(source: exp.Table, condition: exp.Expr) -> exp.Select:
            query = exp.select(*items).from_(source.as_("s"))
            for m in self.distinct:
                d = f"d{m.index}"
                counts = fill(
                    "SELECT $keys, _ws, count(*) AS n FROM $t GROUP BY ALL",
                    keys=cols(self.keys),
                    t=self.distinct_table(m),
                )
                on = fill("$same AND s._ws = $dws", same=same(self.keys, "s", d), dws=col("_ws", d))
                query = query.join(subquery(counts, d), on=on, join_type="LEFT")
            return query.where(condition)

        fresh_table = table(f"{self.prefix}_batch")
        query: exp.Expr = select(self.win, closing)
        if fresh:
            pending = fill("NOT s._old AND NOT s._drop AND $c", c=closing)
            query = exp.union(query, select(fresh_table, pending), distinct=False)
        statements = [fill("CREATE OR REPLACE TEMP TABLE $out AS $q", out=self.out, q=query)]
        statements += self._drop_windows(closing)
        if fresh:
            for m in self.distinct:
                statements.append(
                    fill(
                        """DELETE FROM $d d USING (
                            SELECT $keys, _ws FROM $fresh s WHERE NOT s._old AND $c) e
                        WHERE $same AND d._ws = e._ws""",
                        d=self.distinct_table(m),
                        keys=cols(self.keys),
                        fresh=fresh_table,
                        c=closing,
                        same=same(self.keys, "d", "e"),
                    )
                )
        return statements

    def metrics(self, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        """``state_rows`` counts the rows of every state table (windows, distinct values,
        gates); ``windows`` the open windows."""
        meta = self.meta.read(con) if count_of(con, self.meta.name) else {}
        windows = count_of(con, self.win_name)
        rows = windows + count_of(con, self.gate_name)
        rows += sum(count_of(con, self.distinct_name(m)) for m in self.distinct)
        return {
            "state_rows": rows,
            "windows": windows,
            "late_records": int(meta.get("late_records") or 0),
            "null_time_records": int(meta.get("null_time_records") or 0),
            "expired_state_rows": int(meta.get("expired_state_rows") or 0),
            "emitted_rows": int(meta.get("emitted_rows") or 0),
            "batches": int(meta.get("batches") or 0),
            "watermark": meta.get("watermark"),
        }

    def _fold_names(self) -> list[str]:
        names = ["late"] if self.event_time and not self.fused else []
        if self.needs_rows:
            names.append("scratch")
        if self.window == WindowType.SessionWindows:
            names += ["touched", "islands", "merged"]
            for m in self.distinct:
                names += [f"dn{m.index}", f"dn_del{m.index}", f"dn_ins{m.index}"]
                names.append(f"dn_drop{m.index}")
            names += ["sess_del", "sess_ins", "sess_drop"]
        else:
            names.append("fresh")
            if self.fused:
                names.append("fused_counts")
            names += ["merge", "insert"]
            names += [f"distinct{m.index}" for m in self.distinct]
        if self.gated:
            names += ["flips", "gate_del", "gate_ins", "flips_drop"]
        if self.needs_rows:
            names.append("scratch_drop")
        return names

    def _build(self, name: str, shape: tuple[Any, ...]) -> list[exp.Expr]:
        """The statement ``name`` of a batch of ``shape`` (see :meth:`process`)."""
        input_name, has_prev, kind = shape
        source = source_table(input_name)
        p = self.prefix
        keys = self.keys
        scratch = table(f"{p}_acc")
        fresh = table(f"{p}_batch")
        closing = self.closing(kind)
        ontime = self.records_sql(source) if self.fused else self.ontime_sql(source, has_prev)
        if self.needs_rows:
            ontime = fill("SELECT * FROM $t", t=scratch)
        accepted = fill("SELECT * FROM $o WHERE _open", o=ontime) if self.gated else ontime
        now = parse("$now")
        if name == "empty":
            return [fill("SELECT count(*) FROM (SELECT 1 FROM $t LIMIT 1)", t=source)]
        if name == "late":
            late = self.late_sql() if has_prev else exp.false()
            return [
                fill(
                    """UPDATE $meta SET
                        null_time_records = null_time_records + c.no_time,
                        late_records = late_records + c.late
                    FROM (SELECT count(*) FILTER (WHERE _us IS NULL) AS no_time,
                            count(*) FILTER (WHERE $late) AS late
                        FROM (SELECT epoch_us($time) AS _us FROM $t)) c""",
                    meta=self.meta.table,
                    late=late,
                    time=self.time_col,
                    t=source,
                )
            ]
        if name == "scratch":
            raw_ontime = self.ontime_sql(source, has_prev)
            return [fill("CREATE OR REPLACE TEMP TABLE $t AS $q", t=scratch, q=raw_ontime)]
        if name == "scratch_drop":
            return [fill("DROP TABLE IF EXISTS $t", t=scratch)]
        if name == "fresh":
            windowed = self.windowed_sql(accepted, has_prev and not self.fused)
            drop: exp.Expr = exp.false()
            if self.fused:
                drop = (
                    parse("b._ws IS NULL OR b._we <= make_timestamp($prev)")
                    if has_prev
                    else parse("b._ws IS NULL OR FALSE")
                )
            return [
                fill(
                    """CREATE OR REPLACE TEMP TABLE $fresh AS
                    SELECT b.*, w._ws IS NOT NULL AS _old, $drop AS _drop
                    FROM $partials b
                    LEFT JOIN (SELECT $keys, _ws FROM $win) w ON $same AND w._ws = b._ws""",
                    fresh=fresh,
                    drop=drop,
                    partials=self.partial_select(windowed, now, self.fused),
                    keys=cols(keys),
                    win=self.win,
                    same=same(keys, "w", "b"),
                )
            ]
        if name == "fused_counts":
            return [
                fill(
                    """UPDATE $meta SET
                        null_time_records = null_time_records + c.no_time,
                        late_records = late_records + c.late
                    FROM (SELECT coalesce(sum(_n) FILTER (WHERE _ws IS NULL), 0) AS no_time,
                            coalesce(sum(_n) FILTER (WHERE _ws IS NOT NULL AND _drop), 0)
                                AS late
                        FROM $fresh) c""",
                    meta=self.meta.table,
                    fresh=fresh,
                )
            ]
        if name == "merge":
            sets = [item for m in self.measures for item in m.merge()]
            sets.append(parse("_touched = b._touched"))
            return [
                fill(
                    """UPDATE $win AS s SET $sets FROM $fresh AS b
                    WHERE b._old AND NOT b._drop AND $same AND s._ws = b._ws""",
                    win=self.win,
                    sets=sets,
                    fresh=fresh,
                    same=same(keys, "s", "b"),
                )
            ]
        columns = cols([*keys, "_ws", "_we", *self.partials, "_touched"])
        if name == "insert":
            return [
                fill(
                    """INSERT INTO $win ($cols) SELECT $cols FROM $fresh AS s
                    WHERE NOT s._old AND NOT s._drop AND NOT ($closing)""",
                    win=self.win,
                    cols=columns,
                    fresh=fresh,
                    closing=closing,
                )
            ]
        for m in self.distinct:
            assert m.source is not None
            distinct = self.distinct_table(m)
            if name == f"distinct{m.index}":
                windowed = self.windowed_sql(accepted, has_prev and not self.fused)
                return [
                    fill(
                        """INSERT INTO $d
                        SELECT n.* FROM (
                            SELECT DISTINCT $keys, make_timestamp(_wsu) AS _ws, $v AS v
                            FROM $w WHERE $v IS NOT NULL
                        ) n WHERE NOT EXISTS (
                            SELECT 1 FROM $d d WHERE $same AND d._ws = n._ws AND d.v = n.v)""",
                        d=distinct,
                        keys=cols(keys),
                        v=col(m.source),
                        w=windowed,
                        same=same(keys, "d", "n"),
                    )
                ]
        return self._build_sessions(name, accepted) + self._build_gate(name, ontime)

    def _build_sessions(self, name: str, accepted: exp.Expr) -> list[exp.Expr]:
        """Session windows: each record is the interval ``[time, time + gap)``; with the
        sessions in state of the keys the batch touches, overlapping or touching intervals
        are merged (gaps and islands over the intervals sorted by start), their partials
        combined, and the sessions of those keys replaced by the merged ones."""
        keys, p = self.keys, self.prefix
        touched = table(f"{p}_keys")
        islands = table(f"{p}_iv")
        merged = table(f"{p}_new")
        if name == "touched":
            items = cols(keys) if keys else [parse("TRUE AS _all")]
            return [
                fill(
                    "CREATE OR REPLACE TEMP TABLE $t AS SELECT DISTINCT $items FROM $a",
                    t=touched,
                    items=items,
                    a=accepted,
                )
            ]
        if name == "islands":
            return [
                fill(
                    """CREATE OR REPLACE TEMP TABLE $islands AS
                    WITH iv AS (
                        SELECT DISTINCT $keys, _us AS _s, _us + $gap AS _e, FALSE AS _st
                        FROM $a
                        UNION ALL
                        SELECT $wkeys, epoch_us(w._ws), epoch_us(w._we), TRUE
                        FROM $win w SEMI JOIN $touched t ON $same
                    ), flagged AS (
                        SELECT *, CASE WHEN _s <= max(_e) OVER (
                            PARTITION BY $keys ORDER BY _s, _e
                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                            THEN 0 ELSE 1 END AS _first
                        FROM iv
                    ), grouped AS (
                        SELECT *, sum(_first) OVER (
                            PARTITION BY $keys ORDER BY _s, _e ROWS UNBOUNDED PRECEDING) AS _g
                        FROM flagged
                    )
                    SELECT $keys, _s, _st, min(_s) OVER (PARTITION BY $gkeys) AS _ns,
                        max(_e) OVER (PARTITION BY $gkeys) AS _ne
                    FROM grouped""",
                    islands=islands,
                    keys=cols(keys),
                    gap=self.gap,
                    a=accepted,
                    wkeys=cols(keys, "w"),
                    win=self.win,
                    touched=touched,
                    same=same(keys, "w", "t"),
                    gkeys=cols([*keys, "_g"]),
                )
            ]
        if name == "merged":
            raw = [c for m in self.measures for c in m.raw()]
            combine = [c for m in self.measures for c in m.combine()]
            return [
                fill(
                    """CREATE OR REPLACE TEMP TABLE $merged AS
                    SELECT $keys, make_timestamp(_ns) AS _ws, make_timestamp(_ne) AS _we,
                        $combine, max(_touched) AS _touched
                    FROM (
                        SELECT $rkeys, m._ns, m._ne, $raw, $now AS _touched
                        FROM $a r JOIN (SELECT * FROM $islands WHERE NOT _st) m
                            ON $rsame AND r._us = m._s
                        GROUP BY $rkeys, m._ns, m._ne
                        UNION ALL BY NAME
                        SELECT $wkeys, m._ns, m._ne, $partials, w._touched
                        FROM $win w JOIN (SELECT * FROM $islands WHERE _st) m
                            ON $wsame AND epoch_us(w._ws) = m._s
                    ) GROUP BY $keys, _ns, _ne""",
                    merged=merged,
                    keys=cols(keys),
                    combine=combine,
                    rkeys=cols(keys, "r"),
                    raw=raw,
                    a=accepted,
                    islands=islands,
                    rsame=same(keys, "r", "m"),
                    wkeys=cols(keys, "w"),
                    partials=cols(self.partials, "w"),
                    win=self.win,
                    wsame=same(keys, "w", "m"),
                )
            ]
        dn = table(f"{p}_dn")
        for m in self.distinct:
            assert m.source is not None
            distinct = self.distinct_table(m)
            if name == f"dn{m.index}":
                return [
                    fill(
                        """CREATE OR REPLACE TEMP TABLE $dn AS
                        SELECT DISTINCT $keys, make_timestamp(_ns) AS _ws, v FROM (
                            SELECT $rkeys, m._ns, $v AS v
                            FROM $a r JOIN (SELECT * FROM $islands WHERE NOT _st) m
                                ON $rsame AND r._us = m._s
                            WHERE $v IS NOT NULL
                            UNION ALL
                            SELECT $dkeys, m._ns, d.v
                            FROM $d d JOIN (SELECT * FROM $islands WHERE _st) m
                                ON $dsame AND epoch_us(d._ws) = m._s
                        )""",
                        dn=dn,
                        keys=cols(keys),
                        rkeys=cols(keys, "r"),
                        v=col(m.source, "r"),
                        a=accepted,
                        islands=islands,
                        rsame=same(keys, "r", "m"),
                        dkeys=cols(keys, "d"),
                        d=distinct,
                        dsame=same(keys, "d", "m"),
                    )
                ]
            if name == f"dn_del{m.index}":
                return [
                    fill(
                        "DELETE FROM $d d USING $t t WHERE $same",
                        d=distinct,
                        t=touched,
                        same=same(keys, "d", "t"),
                    )
                ]
            if name == f"dn_ins{m.index}":
                return [fill("INSERT INTO $d SELECT * FROM $dn", d=distinct, dn=dn)]
            if name == f"dn_drop{m.index}":
                return [fill("DROP TABLE $dn", dn=dn)]
        columns = cols([*keys, "_ws", "_we", *self.partials, "_touched"])
        if name == "sess_del":
            return [
                fill(
                    "DELETE FROM $win w USING $t t WHERE $same",
                    win=self.win,
                    t=touched,
                    same=same(keys, "w", "t"),
                )
            ]
        if name == "sess_ins":
            return [
                fill(
                    "INSERT INTO $win ($cols) SELECT $cols FROM $merged",
                    win=self.win,
                    cols=columns,
                    merged=merged,
                )
            ]
        if name == "sess_drop":
            return [fill("DROP TABLE $t", t=t) for t in (touched, islands, merged)]
        return []

    def _build_gate(self, name: str, ontime: exp.Expr) -> list[exp.Expr]:
        """Each key's gate after the batch: its last flip in arrival order. A closed gate
        is no row (closed is the initial state)."""
        keys = self.keys or ["_nokey"]
        flips = table(f"{self.prefix}_flips")
        if name == "flips":
            return [
                fill(
                    """CREATE OR REPLACE TEMP TABLE $flips AS
                    SELECT $keys, arg_max(_f, _r) FILTER (WHERE _f IS NOT NULL) AS _open,
                        $now AS _touched
                    FROM $o GROUP BY ALL HAVING count(_f) > 0""",
                    flips=flips,
                    keys=cols(keys),
                    o=ontime,
                )
            ]
        if name == "gate_del":
            return [
                fill(
                    "DELETE FROM $gate g USING $flips f WHERE $same",
                    gate=self.gate,
                    flips=flips,
                    same=same(keys, "g", "f"),
                )
            ]
        if name == "gate_ins":
            columns = cols([*keys, "_open", "_touched"])
            return [
                fill(
                    "INSERT INTO $gate ($cols) SELECT $cols FROM $flips WHERE _open",
                    gate=self.gate,
                    cols=columns,
                    flips=flips,
                )
            ]
        if name == "flips_drop":
            return [fill("DROP TABLE $flips", flips=flips)]
        return []
