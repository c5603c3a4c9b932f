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
Python between batches (only the compiled SQL).

The input table's ``rowid`` is its arrival order (the engine loads each batch into a
table, in the order the records arrived); together with a batch counter kept in the state
it orders records that share a time.

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

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from datamill.domain.expressions import (
    DUCKDB_TYPES,
    FieldType,
    ValueType,
    compile_predicate,
    quote_identifier,
)
from datamill.domain.streaming import (
    WINDOW_END,
    WINDOW_START,
    AggregateConfig,
    AggregateType,
    DeduplicateConfig,
    OperatorConfig,
    Relationship,
    Schema,
    StreamingRuntime,
    TimeType,
    WindowType,
)
from datamill.engines.duckdb.streaming.state import StatefulStep
from datamill.engines.streaming import BatchContext

US = 1_000_000
"""Microseconds per second: windows are computed on ``epoch_us`` integers."""


def duckdb_type(kind: ValueType) -> str | None:
    """The DuckDB type holding a field of ``kind``; None for an unknown type."""
    return DUCKDB_TYPES.get(kind) if isinstance(kind, FieldType) else None


def state_prefix(operator_id: str) -> str:
    """The prefix of a step's table names: the id made an identifier, plus a hash of it
    so that ``a.b`` and ``a_b`` never share tables."""
    digest = hashlib.sha256(operator_id.encode()).hexdigest()[:8]
    return f"dm_{re.sub(r'[^A-Za-z0-9_]', '_', operator_id)}_{digest}"


def table_ref(name: str) -> str:
    """``name`` as SQL: a plain or dotted identifier is quoted part by part; anything
    else is taken as already quoted."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)*", name):
        return ".".join(quote_identifier(part) for part in name.split("."))
    return name


def utc_naive(value: datetime) -> datetime:
    """An aware datetime as the naive UTC value DuckDB's TIMESTAMP holds (naive = UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def ts_literal(value: datetime) -> str:
    return f"TIMESTAMP '{utc_naive(value).isoformat(sep=' ')}'"


def us_of(value: datetime) -> int:
    """Microseconds since the epoch of a (naive = UTC) datetime."""
    delta = utc_naive(value) - datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


def same(columns: Sequence[str], left: str, right: str) -> str:
    """NULL-safe equality of ``columns`` between two aliases (TRUE when there are none)."""
    parts = [f"{left}.{c} IS NOT DISTINCT FROM {right}.{c}" for c in columns]
    return " AND ".join(parts) or "TRUE"


def prefixed(columns: Sequence[str], alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in columns)


def part_g(keys: Sequence[str]) -> str:
    """The window of one island: its key and island number."""
    return "PARTITION BY " + ", ".join([*keys, "_g"])


def aliased(columns: Sequence[str], alias: str) -> str:
    """``columns`` of ``alias`` as the leading items of a select list."""
    return "".join(f"{alias}.{c}, " for c in columns)


def lead(columns: Sequence[str]) -> str:
    """``columns`` as the leading items of a select list (empty string when none)."""
    return "".join(f"{c}, " for c in columns)


class Meta:
    """The step's one-row table of scalars (watermark, counters): state like the rest."""

    COLUMNS = {
        "watermark": "TIMESTAMP",
        "batches": "BIGINT",
        "late_records": "BIGINT",
        "null_time_records": "BIGINT",
        "expired_state_rows": "BIGINT",
        "emitted_rows": "BIGINT",
        "dropped_duplicates": "BIGINT",
    }

    def __init__(self, prefix: str) -> None:
        self.table = quote_identifier(f"{prefix}_meta")

    def create(self, con: duckdb.DuckDBPyConnection) -> None:
        columns = ", ".join(f"{name} {kind}" for name, kind in self.COLUMNS.items())
        con.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ({columns})")
        zeros = ", ".join("NULL" if k == "watermark" else "0" for k in self.COLUMNS)
        con.execute(
            f"INSERT INTO {self.table} SELECT {zeros} WHERE NOT EXISTS (SELECT 1 FROM {self.table})"
        )

    def read(self, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        rows = con.execute(f"SELECT * FROM {self.table}").fetchall()
        if not rows:
            return {name: None for name in self.COLUMNS}
        return dict(zip(self.COLUMNS, rows[0], strict=True))

    def add(self, con: duckdb.DuckDBPyConnection, counter: str, count_sql: str) -> None:
        """Add the value of a scalar query to a counter."""
        con.execute(f"UPDATE {self.table} SET {counter} = {counter} + coalesce(({count_sql}), 0)")

    def set(self, con: duckdb.DuckDBPyConnection, assignments: str) -> None:
        con.execute(f"UPDATE {self.table} SET {assignments}")


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> Any:
    """The one value of a query (results are always read to the end: DuckDB refuses new
    work on a connection with a result left open)."""
    rows = con.execute(sql, list(params)).fetchall()
    return rows[0][0] if rows else None


def create_like(con: duckdb.DuckDBPyConnection, table: str, query: str) -> None:
    """``CREATE TABLE IF NOT EXISTS table`` with the columns (names and types) of ``query``.

    Not ``CREATE TABLE … AS … LIMIT 0``: on DuckDB 2.0 a table created that way inside a
    transaction loses the rows later appended to it in the same transaction once they
    exceed a row group (aggregates over it see nothing), which would break the first
    checkpoint of a job.
    """
    columns = con.execute(f"DESCRIBE {query}").fetchall()
    items = ", ".join(f"{quote_identifier(name)} {kind}" for name, kind, *_ in columns)
    con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({items})")


def all_exist(con: duckdb.DuckDBPyConnection, tables: Sequence[str]) -> bool:
    """Whether every one of the (quoted) state tables exists: one catalog query, so a
    batch does not re-run the creation statements."""
    names = [t.strip('"').replace('""', '"') for t in tables]
    found = scalar(
        con,
        "SELECT count(*) FROM duckdb_tables() WHERE NOT temporary AND list_contains(?, table_name)",
        [names],
    )
    return int(found or 0) == len(set(names))


def count_of(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """Rows of a state table, 0 when it does not exist yet."""
    name = table.strip('"').replace('""', '"')
    exists = scalar(
        con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND NOT temporary", [name]
    )
    return int(scalar(con, f"SELECT count(*) FROM {table}")) if exists else 0


# =========================================================================== Aggregate


@dataclass(frozen=True)
class Measure:
    """One aggregateFields entry: how it is accumulated, merged and finished.

    ``source`` is the SQL of the aggregated input column in the record CTE (``x<i>``), or
    None for COUNT of records. Partial columns are named ``a<i>`` (``a<i>s``/``a<i>c`` for
    AVG, ``a<i>v``/``a<i>k`` for FIRST/LAST).
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

    def raw(self) -> list[str]:
        """Partial aggregates over record rows (``_o`` is the record's order struct)."""
        a, x, kind = self.a, self.source, self.kind
        if kind == AggregateType.COUNT:
            return [f"count({x or '*'}) AS {a}"]
        if kind == AggregateType.SUM:
            return [f"sum({x}) AS {a}"]
        if kind == AggregateType.AVG:
            return [f"sum({x}) AS {a}s", f"count({x}) AS {a}c"]
        if kind in (AggregateType.MAX, AggregateType.MIN):
            return [f"{kind.value.lower()}({x}) AS {a}"]
        if kind in (AggregateType.FIRST, AggregateType.LAST):
            arg, ext = ("arg_min", "min") if kind == AggregateType.FIRST else ("arg_max", "max")
            where = f"FILTER (WHERE {x} IS NOT NULL)"
            return [f"{arg}({x}, _o) {where} AS {a}v", f"{ext}(_o) {where} AS {a}k"]
        return []

    def combine(self) -> list[str]:
        """Aggregates over partial rows (merging sessions)."""
        a, kind = self.a, self.kind
        if kind == AggregateType.COUNT:
            return [f"CAST(sum({a}) AS BIGINT) AS {a}"]
        if kind == AggregateType.SUM:
            return [f"sum({a}) AS {a}"]
        if kind == AggregateType.AVG:
            return [f"sum({a}s) AS {a}s", f"CAST(sum({a}c) AS BIGINT) AS {a}c"]
        if kind in (AggregateType.MAX, AggregateType.MIN):
            return [f"{kind.value.lower()}({a}) AS {a}"]
        if kind in (AggregateType.FIRST, AggregateType.LAST):
            arg, ext = ("arg_min", "min") if kind == AggregateType.FIRST else ("arg_max", "max")
            return [f"{arg}({a}v, {a}k) AS {a}v", f"{ext}({a}k) AS {a}k"]
        return []

    def merge(self) -> list[str]:
        """``SET`` items of the MERGE: state ``s`` updated with batch partials ``b``."""
        a, kind = self.a, self.kind
        if kind == AggregateType.COUNT:
            return [f"{a} = s.{a} + b.{a}"]
        if kind == AggregateType.SUM:
            return [f"{a} = coalesce(s.{a} + b.{a}, s.{a}, b.{a})"]
        if kind == AggregateType.AVG:
            return [f"{a}s = coalesce(s.{a}s + b.{a}s, s.{a}s, b.{a}s)", f"{a}c = s.{a}c + b.{a}c"]
        if kind == AggregateType.MAX:
            return [f"{a} = greatest(s.{a}, b.{a})"]
        if kind == AggregateType.MIN:
            return [f"{a} = least(s.{a}, b.{a})"]
        if kind in (AggregateType.FIRST, AggregateType.LAST):
            better = "<" if kind == AggregateType.FIRST else ">"
            pick = "least" if kind == AggregateType.FIRST else "greatest"
            return [
                f"{a}v = CASE WHEN s.{a}k IS NULL OR b.{a}k {better} s.{a}k "
                f"THEN b.{a}v ELSE s.{a}v END",
                f"{a}k = {pick}(s.{a}k, b.{a}k)",
            ]
        return []

    def final(self) -> str:
        """The output value from state row ``s`` (and ``d<i>`` for COUNT_DISTINCT)."""
        a, kind = self.a, self.kind
        if kind == AggregateType.AVG:
            value = f"CASE WHEN s.{a}c > 0 THEN CAST(s.{a}s AS DOUBLE) / s.{a}c END"
        elif kind in (AggregateType.FIRST, AggregateType.LAST):
            value = f"s.{a}v"
        elif kind == AggregateType.COUNT_DISTINCT:
            value = f"coalesce(d{self.index}.n, 0)"
        else:
            value = f"s.{a}"
        if self.out_type:
            value = f"CAST({value} AS {self.out_type})"
        return f"{value} AS {quote_identifier(self.name)}"


class AggregateStep:
    """An Aggregate operator instance (see the module docstring for its semantics).

    Tables (``<p>`` = :func:`state_prefix`): ``<p>_meta`` (watermark, counters),
    ``<p>_win`` (one row per open window and key: keys ``k<i>``, ``_ws``, ``_we``, the
    partial aggregates, ``_touched``), ``<p>_d<i>`` (the distinct values of COUNT_DISTINCT
    ``i`` per window) and ``<p>_gate`` (the eventConditions gate of each key).
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
        self.time_sql = quote_identifier(time_field) if time_field else None
        self.prefix = state_prefix(operator_id)
        self.meta = Meta(self.prefix)
        self.win = quote_identifier(f"{self.prefix}_win")
        self.gate = quote_identifier(f"{self.prefix}_gate")
        self.keys = [f"k{i}" for i in range(len(basic.keyFields))]
        self.key_sources = [quote_identifier(name) for name in basic.keyFields]
        out_types = {name: duckdb_type(kind) for name, kind in output_schema.fields.items()}
        self.key_out = [
            f"CAST(s.{k} AS {out_types[name]}) AS {quote_identifier(name)}"
            if out_types.get(name)
            else f"s.{k} AS {quote_identifier(name)}"
            for k, name in zip(self.keys, basic.keyFields, strict=True)
        ]
        self.measures: list[Measure] = []
        self.sources: list[str] = []
        for i, field in enumerate(basic.aggregateFields or []):
            if field.aggregateType is None or not field.field:
                raise ValueError(f"Aggregate '{operator_id}': aggregateFields[{i}] is incomplete")
            source = (field.aggregateField or "").strip()
            if source:
                self.sources.append(f"{quote_identifier(source)} AS x{i}")
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
        self.flip_sql = ""
        if self.gated:
            scope = input_schema.scope
            on_sql = compile_predicate(on, scope).sql
            off_sql = compile_predicate(off, scope).sql
            self.flip_sql = f"CASE WHEN {off_sql} THEN FALSE WHEN {on_sql} THEN TRUE END"
        self.partials = [c for m in self.measures for c in m.partial_columns()]
        if self.window == WindowType.SessionWindows and self.gap <= 0:
            raise ValueError(f"Aggregate '{operator_id}': a session window needs a gap")
        if self.window != WindowType.SessionWindows and self.size <= 0:
            raise ValueError(f"Aggregate '{operator_id}': the window needs a size")
        if self.window == WindowType.SlidingTimeWindows and self.slide <= 0:
            raise ValueError(f"Aggregate '{operator_id}': a sliding window needs a slide")

    # ------------------------------------------------------------------ SQL pieces

    def distinct_table(self, measure: Measure) -> str:
        return quote_identifier(f"{self.prefix}_d{measure.index}")

    def records_sql(self, input_sql: str, ctx: BatchContext, batch: int) -> str:
        """The batch's records as ``k<i>``, ``_us`` (time in µs), ``x<i>`` (aggregated
        values), ``_o`` (order: time, batch, rowid), ``_r`` (rowid) and ``_f`` (gate flip)."""
        if self.event_time:
            time = f"epoch_us({self.time_sql})"
        else:
            time = f"CAST({us_of(ctx.processing_time)} AS BIGINT)"
        items = [f"{src} AS {k}" for k, src in zip(self.keys, self.key_sources, strict=True)]
        items.append(f"{time} AS _us")
        items += self.sources
        if self.ordered:
            items.append(f"{{'t': {time}, 'b': {batch}, 'r': rowid}} AS _o")
        if self.gated:
            items += ["rowid AS _r", f"{self.flip_sql} AS _f"]
        return f"SELECT {', '.join(items)} FROM {input_sql}"

    def late_sql(self, prev_us: int) -> str:
        """A condition on ``_us``: every window of the record ended by ``prev_us``."""
        if self.window == WindowType.SessionWindows:
            return f"_us + {self.gap} <= {prev_us}"
        step = self.slide if self.window == WindowType.SlidingTimeWindows else self.size
        return (
            f"_us - (((_us - {self.offset}) % {step} + {step}) % {step}) + {self.size} <= {prev_us}"
        )

    def ontime_sql(self, input_sql: str, ctx: BatchContext, batch: int, prev: int | None) -> str:
        """The records on time and with a time; with eventConditions, ``_open`` tells
        whether the key's gate is open after each (those are aggregated)."""
        where = "_us IS NOT NULL"
        if prev is not None:
            where += f" AND NOT ({self.late_sql(prev)})"
        rows = f"SELECT * FROM ({self.records_sql(input_sql, ctx, batch)}) WHERE {where}"
        if not self.gated:
            return rows
        keys = self.keys or ["_nokey"]
        nokey = "" if self.keys else "TRUE AS _nokey, "
        return f"""
            SELECT r.*, coalesce(
                last_value(r._f IGNORE NULLS) OVER (
                    PARTITION BY {prefixed(keys, "r")} ORDER BY r._r
                    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
                g._open, FALSE) AS _open
            FROM (SELECT {nokey}* FROM ({rows})) r
            LEFT JOIN {self.gate} g ON {same(keys, "r", "g")}"""

    def windowed_sql(self, accepted: str, prev: int | None) -> str:
        """Tumbling / sliding: the accepted records with ``_wsu``, the start (µs) of each of
        their windows (one row per record and window; closed windows of sliding ones
        left out)."""
        if self.window == WindowType.TumblingTimeWindows:
            size, off = self.size, self.offset
            start = f"_us - (((_us - {off}) % {size} + {size}) % {size})"
            return f"SELECT *, {start} AS _wsu FROM ({accepted})"
        slide, off, size = self.slide, self.offset, self.size
        count = -(-size // slide)
        last = f"_us - (((_us - {off}) % {slide} + {slide}) % {slide})"
        keep = f"_wsu + {size} > _us"
        if prev is not None:
            keep += f" AND _wsu + {size} > {prev}"
        return f"""
            SELECT * FROM (
                SELECT r.*, {last} - j.j * {slide} AS _wsu
                FROM ({accepted}) r CROSS JOIN range({count}) AS j(j)
            ) WHERE {keep}"""

    def partial_select(self, windowed: str, touched: str, counted: bool = False) -> str:
        """The partial aggregates of ``windowed`` per key and window: a state row (and,
        ``counted``, ``_n`` the records of the group)."""
        raw = [c for m in self.measures for c in m.raw()]
        if counted:
            raw.append("count(*) AS _n")
        return f"""
            SELECT {lead(self.keys)}make_timestamp(_wsu) AS _ws,
                make_timestamp(_wsu + {self.size}) AS _we,
                {lead(raw)}{touched} AS _touched
            FROM ({windowed})
            GROUP BY {lead(self.keys)}_wsu"""

    # ------------------------------------------------------------------ state

    def create_state(self, con: duckdb.DuckDBPyConnection) -> None:
        """The meta table now; the window tables at the first batch, when the input's
        column types are known for sure (an open schema leaves them to the data)."""
        self.meta.create(con)

    def tables(self) -> list[str]:
        """All of the step's state tables."""
        tables = [self.meta.table, self.win, *(self.distinct_table(m) for m in self.distinct)]
        return [*tables, self.gate] if self.gated else tables

    def _create_tables(self, con: duckdb.DuckDBPyConnection, input_sql: str) -> None:
        """Create the tables whose column types come from the data (``IF NOT EXISTS``:
        cheap once they exist). The gate first: the record query reads it."""
        if self.gated:
            records = self.records_sql(input_sql, _NO_CONTEXT, 0)
            nokey = "" if self.keys else "TRUE AS _nokey, "
            create_like(
                con,
                self.gate,
                f"SELECT {nokey}{lead(self.keys)}_f AS _open, "
                f"CAST(NULL AS TIMESTAMP) AS _touched FROM ({records})",
            )
        accepted = self.ontime_sql(input_sql, _NO_CONTEXT, 0, None)
        if self.window == WindowType.SessionWindows:
            windowed = f"SELECT *, _us AS _wsu FROM ({accepted})"
        else:
            windowed = self.windowed_sql(accepted, None)
        create_like(con, self.win, self.partial_select(windowed, "CAST(NULL AS TIMESTAMP)"))
        for m in self.distinct:
            create_like(
                con,
                self.distinct_table(m),
                f"SELECT {lead(self.keys)}make_timestamp(_wsu) AS _ws, {m.source} AS v "
                f"FROM ({windowed})",
            )

    def process(self, con: duckdb.DuckDBPyConnection, input_table: str, ctx: BatchContext) -> str:
        """Fold one batch into the windows, emit the closed ones (see the module doc)."""
        input_sql = table_ref(input_table)
        if not all_exist(con, self.tables()):
            self.meta.create(con)
            self._create_tables(con, input_sql)
        meta = self.meta.read(con)
        batch = int(meta["batches"] or 0) + 1
        prev_wm = meta["watermark"]
        prev = us_of(prev_wm) if (self.event_time and prev_wm is not None) else None
        now = ts_literal(ctx.processing_time)
        if self.ttl:
            self._expire(con, ctx)
        if not scalar(con, f"SELECT count(*) FROM (SELECT 1 FROM {input_sql} LIMIT 1)"):
            return self._finish(con, ctx, batch, None)
        # tumbling windows without gate or distinct values count late and time-less
        # records from the batch's groups instead of in a scan of their own
        fused = (
            self.event_time
            and self.window == WindowType.TumblingTimeWindows
            and not self.gated
            and not self.distinct
        )
        if self.event_time and not fused:
            late = self.late_sql(prev) if prev is not None else "FALSE"
            con.execute(
                f"""UPDATE {self.meta.table} SET
                    null_time_records = null_time_records + c.no_time,
                    late_records = late_records + c.late
                FROM (SELECT count(*) FILTER (WHERE _us IS NULL) AS no_time,
                        count(*) FILTER (WHERE {late}) AS late
                    FROM (SELECT epoch_us({self.time_sql}) AS _us FROM {input_sql})) c"""
            )
        if fused:
            ontime = self.records_sql(input_sql, ctx, batch)
        else:
            ontime = self.ontime_sql(input_sql, ctx, batch, prev)
        needs_rows = self.gated or bool(self.distinct) or self.window == WindowType.SessionWindows
        scratch = quote_identifier(f"{self.prefix}_acc")
        if needs_rows:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {scratch} AS {ontime}")
            ontime = f"SELECT * FROM {scratch}"
        accepted = f"SELECT * FROM ({ontime}) WHERE _open" if self.gated else ontime
        closing = self.closing(ctx)
        fresh = None
        if self.window == WindowType.SessionWindows:
            self._fold_sessions(con, accepted, now)
        else:
            fresh = self._fold_windows(con, accepted, prev, now, closing, fused)
        if self.gated:
            self._update_gate(con, ontime, now)
        if needs_rows:
            con.execute(f"DROP TABLE IF EXISTS {scratch}")
        return self._finish(con, ctx, batch, fresh)

    def _finish(
        self, con: duckdb.DuckDBPyConnection, ctx: BatchContext, batch: int, fresh: str | None
    ) -> str:
        """Emit what the batch closes, and note the batch in the meta table."""
        out = self._emit(con, self.closing(ctx), fresh)
        if fresh is not None:
            con.execute(f"DROP TABLE {fresh}")
        watermark = ts_literal(ctx.watermark) if ctx.watermark is not None else "NULL"
        self.meta.set(
            con,
            f"batches = {batch}, watermark = greatest(watermark, {watermark}), "
            f"emitted_rows = emitted_rows + (SELECT count(*) FROM {out})",
        )
        return out

    def closing(self, ctx: BatchContext) -> str:
        """The condition (on alias ``s``) of the windows this batch closes."""
        if ctx.final:
            return "TRUE"
        if self.event_time:
            return f"s._we <= {ts_literal(ctx.watermark)}" if ctx.watermark else "FALSE"
        return f"s._we <= {ts_literal(ctx.processing_time)}"

    def _fold_windows(
        self,
        con: duckdb.DuckDBPyConnection,
        accepted: str,
        prev: int | None,
        now: str,
        closing: str,
        fused: bool = False,
    ) -> str:
        """Tumbling / sliding: the batch's partial aggregates per key and window are
        merged into the windows already in state; the others are inserted when they stay
        open, and otherwise emitted straight from the batch (most windows of a large batch
        open and close within it: they never touch the state table). Returns the table of
        the batch's partials, ``_old`` telling those merged into state and ``_drop`` those
        to ignore. ``fused``: ``accepted`` holds every record, late and time-less ones
        included; their groups are counted into the meta table and dropped."""
        windowed = self.windowed_sql(accepted, None if fused else prev)
        fresh = quote_identifier(f"{self.prefix}_batch")
        drop = "FALSE"
        if fused:
            late = f"b._we <= make_timestamp({prev})" if prev is not None else "FALSE"
            drop = f"b._ws IS NULL OR {late}"
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {fresh} AS
            SELECT b.*, w._ws IS NOT NULL AS _old, {drop} AS _drop
            FROM ({self.partial_select(windowed, now, fused)}) b
            LEFT JOIN (SELECT {lead(self.keys)}_ws FROM {self.win}) w
                ON {same(self.keys, "w", "b")} AND w._ws = b._ws"""
        )
        if fused:
            con.execute(
                f"""UPDATE {self.meta.table} SET
                    null_time_records = null_time_records + c.no_time,
                    late_records = late_records + c.late
                FROM (SELECT coalesce(sum(_n) FILTER (WHERE _ws IS NULL), 0) AS no_time,
                        coalesce(sum(_n) FILTER (WHERE _ws IS NOT NULL AND _drop), 0) AS late
                    FROM {fresh}) c"""
            )
        sets = [item for m in self.measures for item in m.merge()]
        sets.append("_touched = b._touched")
        con.execute(
            f"""UPDATE {self.win} AS s SET {", ".join(sets)} FROM {fresh} AS b
            WHERE b._old AND NOT b._drop AND {same(self.keys, "s", "b")} AND s._ws = b._ws"""
        )
        columns = ", ".join([*self.keys, "_ws", "_we", *self.partials, "_touched"])
        con.execute(
            f"INSERT INTO {self.win} ({columns}) SELECT {columns} FROM {fresh} AS s "
            f"WHERE NOT s._old AND NOT s._drop AND NOT ({closing})"
        )
        for m in self.distinct:
            table = self.distinct_table(m)
            con.execute(
                f"""INSERT INTO {table}
                SELECT n.* FROM (
                    SELECT DISTINCT {lead(self.keys)}make_timestamp(_wsu) AS _ws, {m.source} AS v
                    FROM ({windowed}) WHERE {m.source} IS NOT NULL
                ) n WHERE NOT EXISTS (
                    SELECT 1 FROM {table} d
                    WHERE {same(self.keys, "d", "n")} AND d._ws = n._ws AND d.v = n.v)"""
            )
        return fresh

    def _fold_sessions(self, con: duckdb.DuckDBPyConnection, accepted: str, now: str) -> None:
        """Session windows: each record is the interval ``[time, time + gap)``; with the
        sessions in state of the keys the batch touches, overlapping or touching intervals
        are merged (gaps and islands over the intervals sorted by start), their partials
        combined, and the sessions of those keys replaced by the merged ones."""
        keys, p = self.keys, self.prefix
        part = f"PARTITION BY {', '.join(keys)} " if keys else ""
        touched = quote_identifier(f"{p}_keys")
        islands = quote_identifier(f"{p}_iv")
        merged = quote_identifier(f"{p}_new")
        key_items = ", ".join(keys) if keys else "TRUE AS _all"
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {touched} AS "
            f"SELECT DISTINCT {key_items} FROM ({accepted})"
        )
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {islands} AS
            WITH iv AS (
                SELECT DISTINCT {lead(keys)}_us AS _s, _us + {self.gap} AS _e, FALSE AS _st
                FROM ({accepted})
                UNION ALL
                SELECT {aliased(keys, "w")}epoch_us(w._ws),
                    epoch_us(w._we), TRUE
                FROM {self.win} w SEMI JOIN {touched} t ON {same(keys, "w", "t")}
            ), flagged AS (
                SELECT *, CASE WHEN _s <= max(_e) OVER (
                    {part}ORDER BY _s, _e ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                    THEN 0 ELSE 1 END AS _first
                FROM iv
            ), grouped AS (
                SELECT *, sum(_first) OVER ({part}ORDER BY _s, _e ROWS UNBOUNDED PRECEDING) AS _g
                FROM flagged
            )
            SELECT {lead(keys)}_s, _st, min(_s) OVER ({part_g(keys)}) AS _ns,
                max(_e) OVER ({part_g(keys)}) AS _ne
            FROM grouped"""
        )
        raw = [c for m in self.measures for c in m.raw()]
        combine = [c for m in self.measures for c in m.combine()]
        partials = ", ".join(f"w.{c}" for c in self.partials)
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {merged} AS
            SELECT {lead(keys)}make_timestamp(_ns) AS _ws, make_timestamp(_ne) AS _we,
                {lead(combine)}max(_touched) AS _touched
            FROM (
                SELECT {aliased(keys, "r")}m._ns, m._ne,
                    {lead(raw)}{now} AS _touched
                FROM ({accepted}) r JOIN (SELECT * FROM {islands} WHERE NOT _st) m
                    ON {same(keys, "r", "m")} AND r._us = m._s
                GROUP BY {aliased(keys, "r")}m._ns, m._ne
                UNION ALL BY NAME
                SELECT {aliased(keys, "w")}m._ns, m._ne,
                    {lead([partials] if partials else [])}w._touched
                FROM {self.win} w JOIN (SELECT * FROM {islands} WHERE _st) m
                    ON {same(keys, "w", "m")} AND epoch_us(w._ws) = m._s
            ) GROUP BY {lead(keys)}_ns, _ne"""
        )
        for m in self.distinct:
            table = self.distinct_table(m)
            fresh = quote_identifier(f"{p}_dn")
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE {fresh} AS
                SELECT DISTINCT {lead(keys)}make_timestamp(_ns) AS _ws, v FROM (
                    SELECT {aliased(keys, "r")}m._ns,
                        r.{m.source} AS v
                    FROM ({accepted}) r JOIN (SELECT * FROM {islands} WHERE NOT _st) m
                        ON {same(keys, "r", "m")} AND r._us = m._s
                    WHERE r.{m.source} IS NOT NULL
                    UNION ALL
                    SELECT {aliased(keys, "d")}m._ns, d.v
                    FROM {table} d JOIN (SELECT * FROM {islands} WHERE _st) m
                        ON {same(keys, "d", "m")} AND epoch_us(d._ws) = m._s
                )"""
            )
            con.execute(f"DELETE FROM {table} d USING {touched} t WHERE {same(keys, 'd', 't')}")
            con.execute(f"INSERT INTO {table} SELECT * FROM {fresh}")
            con.execute(f"DROP TABLE {fresh}")
        columns = ", ".join([*keys, "_ws", "_we", *self.partials, "_touched"])
        con.execute(f"DELETE FROM {self.win} w USING {touched} t WHERE {same(keys, 'w', 't')}")
        con.execute(f"INSERT INTO {self.win} ({columns}) SELECT {columns} FROM {merged}")
        for table in (touched, islands, merged):
            con.execute(f"DROP TABLE {table}")

    def _update_gate(self, con: duckdb.DuckDBPyConnection, ontime: str, now: str) -> None:
        """Each key's gate after the batch: its last flip in arrival order. A closed gate
        is no row (closed is the initial state)."""
        keys = self.keys or ["_nokey"]
        flips = quote_identifier(f"{self.prefix}_flips")
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {flips} AS
            SELECT {lead(keys)}arg_max(_f, _r) FILTER (WHERE _f IS NOT NULL) AS _open,
                {now} AS _touched
            FROM ({ontime}) GROUP BY ALL HAVING count(_f) > 0"""
        )
        con.execute(f"DELETE FROM {self.gate} g USING {flips} f WHERE {same(keys, 'g', 'f')}")
        con.execute(
            f"INSERT INTO {self.gate} ({', '.join([*keys, '_open', '_touched'])}) "
            f"SELECT {', '.join([*keys, '_open', '_touched'])} FROM {flips} WHERE _open"
        )
        con.execute(f"DROP TABLE {flips}")

    def _drop_windows(self, con: duckdb.DuckDBPyConnection, condition: str) -> None:
        """Delete the windows meeting ``condition`` (on ``s``) and their distinct values."""
        for m in self.distinct:
            table = self.distinct_table(m)
            con.execute(
                f"""DELETE FROM {table} d USING (
                    SELECT {lead(self.keys)}_ws FROM {self.win} s WHERE {condition}) e
                WHERE {same(self.keys, "d", "e")} AND d._ws = e._ws"""
            )
        con.execute(f"DELETE FROM {self.win} s WHERE {condition}")

    def _expire(self, con: duckdb.DuckDBPyConnection, ctx: BatchContext) -> None:
        limit = f"{ts_literal(ctx.processing_time)} - to_microseconds({self.ttl})"
        condition = f"s._touched <= {limit}"
        self.meta.add(
            con, "expired_state_rows", f"SELECT count(*) FROM {self.win} s WHERE {condition}"
        )
        self._drop_windows(con, condition)
        if self.gated:
            self.meta.add(
                con, "expired_state_rows", f"SELECT count(*) FROM {self.gate} s WHERE {condition}"
            )
            con.execute(f"DELETE FROM {self.gate} s WHERE {condition}")

    def _emit(self, con: duckdb.DuckDBPyConnection, closing: str, fresh: str | None) -> str:
        """The closed windows into the output table (from state, and from ``fresh`` those
        not merged into state), then out of state."""
        out = quote_identifier(f"{self.prefix}_out")
        joins = ""
        for m in self.distinct:
            d = f"d{m.index}"
            joins += (
                f" LEFT JOIN (SELECT {lead(self.keys)}_ws, count(*) AS n "
                f"FROM {self.distinct_table(m)} GROUP BY ALL) {d} "
                f"ON {same(self.keys, 's', d)} AND s._ws = {d}._ws"
            )
        items = ", ".join(
            [
                *self.key_out,
                f"s._ws AS {quote_identifier(WINDOW_START)}",
                f"s._we AS {quote_identifier(WINDOW_END)}",
                *(m.final() for m in self.measures),
            ]
        )
        query = f"SELECT {items} FROM {self.win} s{joins} WHERE {closing}"
        if fresh is not None:
            query += (
                f" UNION ALL SELECT {items} FROM {fresh} s{joins} "
                f"WHERE NOT s._old AND NOT s._drop AND {closing}"
            )
        con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS {query}")
        self._drop_windows(con, closing)
        if fresh is not None:
            for m in self.distinct:
                table = self.distinct_table(m)
                con.execute(
                    f"""DELETE FROM {table} d USING (
                        SELECT {lead(self.keys)}_ws FROM {fresh} s
                        WHERE NOT s._old AND {closing}) e
                    WHERE {same(self.keys, "d", "e")} AND d._ws = e._ws"""
                )
        return out

    def metrics(self, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        """``state_rows`` counts the rows of every state table (windows, distinct values,
        gates); ``windows`` the open windows."""
        meta = self.meta.read(con) if count_of(con, self.meta.table) else {}
        windows = count_of(con, self.win)
        rows = windows + count_of(con, self.gate)
        rows += sum(count_of(con, self.distinct_table(m)) for m in self.distinct)
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


_NO_CONTEXT = BatchContext(
    epoch=0, processing_time=datetime(1970, 1, 1, tzinfo=UTC), watermark=None
)


# =========================================================================== Deduplicate


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
        self.time_sql = quote_identifier(input_schema.event_time or "")
        self.ttl = (advance.ttlTime or 0) * US
        self.prefix = state_prefix(operator_id)
        self.meta = Meta(self.prefix)
        keys = list(dict.fromkeys(basic.keyFields))
        self.any_of = basic.relationship == Relationship.OR
        if self.any_of:
            groups = [[*keys, name] for name in dict.fromkeys(basic.deduplicateFields)]
        else:
            groups = [list(dict.fromkeys([*keys, *basic.deduplicateFields]))]
        self.groups = [[quote_identifier(name) for name in group] for group in groups]
        self.tables = [quote_identifier(f"{self.prefix}_seen{j}") for j in range(len(groups))]

    @staticmethod
    def columns(group: Sequence[str]) -> list[str]:
        return [f"g{i}" for i in range(len(group))]

    def create_state(self, con: duckdb.DuckDBPyConnection) -> None:
        """The meta table now; the seen tables at the first batch (their column types are
        the input's)."""
        self.meta.create(con)

    def _records_sql(self, input_sql: str, ctx: BatchContext) -> str:
        time = self.time_sql if self.event_time else ts_literal(ctx.processing_time)
        return f"SELECT *, CAST({time} AS TIMESTAMP) AS __dm_t, rowid AS __dm_r FROM {input_sql}"

    def _key_sql(self, j: int, table: str) -> str:
        """The dedup key ``j`` of the records of ``table`` as ``g<i>`` with ``__dm_t``
        (under OR, only records whose value is not NULL)."""
        group = self.groups[j]
        items = [f"r.{src} AS g{i}" for i, src in enumerate(group)]
        where = f" WHERE r.{group[-1]} IS NOT NULL" if self.any_of else ""
        return f"SELECT {', '.join(items)}, r.__dm_t FROM {table} r{where}"

    def process(self, con: duckdb.DuckDBPyConnection, input_table: str, ctx: BatchContext) -> str:
        """Emit the batch's records that are not repeats, then remember their keys."""
        input_sql = table_ref(input_table)
        records = self._records_sql(input_sql, ctx)
        if not all_exist(con, [self.meta.table, *self.tables]):
            self.meta.create(con)
            for j, group in enumerate(self.groups):
                items = ", ".join(f"{src} AS g{i}" for i, src in enumerate(group))
                create_like(
                    con,
                    self.tables[j],
                    f"SELECT {items}, CAST(NULL AS TIMESTAMP) AS _last, "
                    f"CAST(NULL AS TIMESTAMP) AS _touched FROM {input_sql}",
                )
        self._evict(con, ctx)
        p, period = self.prefix, f"to_microseconds({self.period})"
        flagged = quote_identifier(f"{p}_flagged")
        prev_items, joins, dups = [], [], []
        for j, group in enumerate(self.groups):
            seen = f"s{j}"
            match = " AND ".join(
                f"r.{src} IS NOT DISTINCT FROM {seen}.g{i}" for i, src in enumerate(group)
            )
            # under OR a NULL value has no dedup key: no predecessor, nothing in state
            has_key = f"r.{group[-1]} IS NOT NULL" if self.any_of else "TRUE"
            prev_items.append(
                f"""CASE WHEN {has_key} THEN greatest(
                    max(r.__dm_t) OVER (PARTITION BY {", ".join(f"r.{c}" for c in group)}
                        ORDER BY r.__dm_r ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                    {seen}._last) END AS __dm_p{j}"""
            )
            joins.append(f"LEFT JOIN {self.tables[j]} {seen} ON {match}")
            dups.append(f"coalesce(__dm_t < __dm_p{j} + {period}, FALSE)")
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {flagged} AS
            SELECT * EXCLUDE ({", ".join(f"__dm_p{j}" for j in range(len(self.groups)))}),
                {" OR ".join(dups)} AS __dm_dup
            FROM (
                SELECT r.*, {", ".join(prev_items)}
                FROM ({records}) r {" ".join(joins)}
            )"""
        )
        out = quote_identifier(f"{p}_out")
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT * EXCLUDE (__dm_t, __dm_r, __dm_dup) "
            f"FROM {flagged} WHERE NOT __dm_dup ORDER BY __dm_r"
        )
        self.meta.add(con, "dropped_duplicates", f"SELECT count(*) FROM {flagged} WHERE __dm_dup")
        now = ts_literal(ctx.processing_time)
        for j, group in enumerate(self.groups):
            cols = self.columns(group)
            latest = (
                f"SELECT {lead(cols)}max(__dm_t) AS _last, {now} AS _touched "
                f"FROM ({self._key_sql(j, flagged)}) "
                f"WHERE __dm_t IS NOT NULL GROUP BY ALL"
            )
            columns = [*cols, "_last", "_touched"]
            con.execute(
                f"""MERGE INTO {self.tables[j]} s USING ({latest}) b ON {same(cols, "s", "b")}
                WHEN MATCHED THEN UPDATE SET _last = greatest(s._last, b._last),
                    _touched = b._touched
                WHEN NOT MATCHED THEN INSERT ({", ".join(columns)})
                    VALUES ({prefixed(columns, "b")})"""
            )
        con.execute(f"DROP TABLE {flagged}")
        watermark = ts_literal(ctx.watermark) if ctx.watermark is not None else "NULL"
        self.meta.set(
            con,
            "batches = batches + 1, "
            f"watermark = greatest(watermark, {watermark}), "
            f"emitted_rows = emitted_rows + (SELECT count(*) FROM {out})",
        )
        return out

    def _evict(self, con: duckdb.DuckDBPyConnection, ctx: BatchContext) -> None:
        """Before the batch: keys whose period is over behind the previous batch's
        watermark (records of this batch may be older than its own), or behind the
        clock; and idle ones (ttl)."""
        horizon = self.meta.read(con)["watermark"] if self.event_time else ctx.processing_time
        conditions = []
        if horizon is not None:
            conditions.append(f"_last + to_microseconds({self.period}) <= {ts_literal(horizon)}")
        if self.ttl:
            limit = f"{ts_literal(ctx.processing_time)} - to_microseconds({self.ttl})"
            conditions.append(f"_touched <= {limit}")
            for table in self.tables:
                self.meta.add(
                    con,
                    "expired_state_rows",
                    f"SELECT count(*) FROM {table} WHERE _touched <= {limit}",
                )
        if conditions:
            for table in self.tables:
                con.execute(f"DELETE FROM {table} WHERE {' OR '.join(conditions)}")

    def metrics(self, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        meta = self.meta.read(con) if count_of(con, self.meta.table) else {}
        return {
            "state_rows": sum(count_of(con, table) for table in self.tables),
            "late_records": 0,
            "dropped_duplicates": int(meta.get("dropped_duplicates") or 0),
            "expired_state_rows": int(meta.get("expired_state_rows") or 0),
            "emitted_rows": int(meta.get("emitted_rows") or 0),
            "batches": int(meta.get("batches") or 0),
            "watermark": meta.get("watermark"),
        }


# =========================================================================== the factory


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
