"""The micro-batch loop of one streaming job.

The job's state lives in one DuckDB database file (``state.duckdb`` in the job's folder):
the stateful steps' tables and the ``_dm_checkpoints`` table (epoch, source positions,
watermark, counters). Between checkpoints the engine works inside one open transaction.
A checkpoint writes the positions, COMMITs, tells each sink the epoch is durable and each
source its position is, and BEGINs the next epoch. After a crash the uncommitted work is
gone, sources seek back to the committed positions and sinks discard what they staged
after the committed epoch: operator state is exactly-once, and so is a file sink's output.

Per batch: read up to ``batch_records`` records from every source, type them, run the
fused SQL of stateless chains, fold into stateful steps, hand each sink its rows. The
watermark is the largest event time seen minus ``runtime.outOfOrdernessSeconds``, never
decreasing; when the sources are idle the steps still get an empty batch every second so
processing-time windows close on the wall clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from datamill.connectors.streams.base import StreamConnection, StreamSource
from datamill.domain.expressions import FieldType
from datamill.domain.streaming import (
    Schema,
    StreamingJobBody,
    StreamingRuntime,
    check_pipeline,
    merge,
)
from datamill.engines import duckdb as engine_db
from datamill.engines.duckdb.streaming.render import (
    DUCKDB_TYPES,
    arrow_sql,
    describe_structure,
    json_lines_sql,
    quote_identifier,
)
from datamill.runtime.streaming.ingest import IngestLog, IngestSource, JsonLines, encode_records
from datamill.runtime.streaming.plan import (
    Plan,
    PlanContext,
    SinkNode,
    SourceNode,
    SqlNode,
    StatefulNode,
    TransformNode,
    compile_plan,
)
from datamill.runtime.streaming.state import BatchContext

CHECKPOINTS = "_dm_checkpoints"
KEEP_CHECKPOINTS = 20
IDLE_TICK_SECONDS = 1.0
METRICS_EVERY_SECONDS = 1.0


def job_dir(projects_dir: Path, project: str, job_id: str) -> Path:
    """The folder of one streaming job: ingest log, state, staging, logs, metrics."""
    return projects_dir / project / "streaming" / job_id


def ingest_log(projects_dir: Path, project: str, job_id: str) -> IngestLog:
    return IngestLog(job_dir(projects_dir, project, job_id) / "ingest")


class JobLog:
    """The job's engine log: plain lines with a UTC time stamp, appended to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        text = f"{stamp} {line}".replace("\n", " ")[:4000] + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(text)


@dataclass
class EngineConfig:
    """Everything one engine process needs to run one job."""

    project: str
    job_id: str
    job_dir: Path
    project_root: Path
    body: dict[str, Any]
    connections: dict[str, StreamConnection] = field(default_factory=dict)
    outbound_allow: list[str] = field(default_factory=list)
    batch_records: int = 100_000
    memory_limit: str = "1GB"
    threads: int = 2
    epoch_records: int = 2_000_000
    """A checkpoint also comes after this many source records: the work of an epoch is held
    in one open transaction, so this bounds its memory however fast records arrive."""
    stop_when_exhausted: bool = False
    """Stop once every source reports :meth:`exhausted` (a bounded run): the last batch is
    processed with ``final=True`` and checkpointed."""


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def _table_ref(name: str) -> str:
    """A table name a step returned, as SQL (a plain name is quoted; others already are)."""
    return quote_identifier(name) if _PLAIN_NAME.fullmatch(name) else name


def _now() -> datetime:
    return datetime.now(UTC)


def _naive(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment else None


def _aware(moment: Any) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Engine:
    """Runs one job's pipeline in micro-batches (see the module docstring)."""

    def __init__(
        self,
        config: EngineConfig,
        log: Callable[[str], None] | None = None,
        sources: dict[str, StreamSource] | None = None,
    ) -> None:
        self.config = config
        self.log = log or JobLog(config.job_dir / "engine.log")
        self.body = StreamingJobBody.model_validate(config.body)
        self.runtime = self.body.runtime or StreamingRuntime()
        self.check = check_pipeline(self.body)
        self._given_sources = sources or {}
        self.plan: Plan | None = None
        self.con: duckdb.DuckDBPyConnection | None = None
        self.epoch = 1
        self.watermark: datetime | None = None
        self.max_event_time: datetime | None = None
        self.counters: dict[str, dict[str, int]] = {}
        self.last_checkpoint: dict[str, Any] | None = None
        self.batches = 0
        self._temp: list[str] = []
        self._registered: list[str] = []
        self._last_process = 0.0
        self._last_checkpoint_at = time.monotonic()
        self._last_metrics = 0.0
        self._positions: dict[str, Any] = {}
        self._epoch_records = 0
        self._dirty = False
        self.finished = False

    # ------------------------------------------------------------------ open / recover

    def _ingest_source(self) -> StreamSource:
        return IngestSource(IngestLog(self.config.job_dir / "ingest"))

    def open(self) -> None:
        config = self.config
        config.job_dir.mkdir(parents=True, exist_ok=True)
        given = dict(self._given_sources)

        def ingest() -> StreamSource:
            # tests and benchmarks may feed sources in process, in declaration order
            if given:
                return given.pop(next(iter(given)))
            return self._ingest_source()

        ctx = PlanContext(
            project=config.project,
            job_id=config.job_id,
            job_dir=config.job_dir,
            project_root=config.project_root,
            connections=config.connections,
            outbound_allow=config.outbound_allow,
            ingest_source=ingest,
            log=self.log,
        )
        self.plan = compile_plan(self.body, self.check, ctx, self.runtime)
        for op_id, count in self.plan.parallelism.items():
            self.log(f"operator '{op_id}': parallelism {count} recorded (runs as one task)")
        threads = max(1, min(config.threads, os.cpu_count() or 1))
        if self.runtime.parallelism:
            threads = max(1, min(self.runtime.parallelism, os.cpu_count() or 1))
        sandbox = engine_db.Sandbox(
            temp_dir=config.job_dir / "tmp",
            allowed_dirs=[config.job_dir / "tmp", config.job_dir / "staging"],
            limits=engine_db.Limits(memory_limit=config.memory_limit, threads=threads),
        )
        self.con = engine_db.connect_locked(sandbox, database=str(config.job_dir / "state.duckdb"))
        con = self.con
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS} (epoch BIGINT PRIMARY KEY, "
            "positions VARCHAR, watermark TIMESTAMP, max_event_time TIMESTAMP, "
            "counters VARCHAR, created_at TIMESTAMP)"
        )
        for node in self.plan.stateful():
            node.step.create_state(con)
        rows = con.execute(
            f"SELECT epoch, positions, watermark, max_event_time, counters, created_at "
            f"FROM {CHECKPOINTS} ORDER BY epoch DESC LIMIT 1"
        ).fetchall()
        committed = 0
        positions: dict[str, Any] = {}
        if rows:
            row = rows[0]
            committed = int(row[0])
            positions = json.loads(row[1])
            self.watermark, self.max_event_time = _aware(row[2]), _aware(row[3])
            self.counters = json.loads(row[4])
            self.last_checkpoint = {"epoch": committed, "time": _aware(row[5])}
            self.log(f"resuming from checkpoint {committed}")
        else:
            self.log("starting from the beginning (no checkpoint yet)")
        self.epoch = committed + 1
        for source_node in self.plan.sources():
            source_node.source.seek(positions.get(source_node.op_id))
            self._positions[source_node.op_id] = positions.get(source_node.op_id)
        for sink_node in self.plan.sinks():
            recover = getattr(sink_node.sink, "recover", None)
            if recover is not None:
                recover(committed)
        con.execute("BEGIN TRANSACTION")
        self._last_checkpoint_at = time.monotonic()
        self.write_metrics(force=True)

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Open, then process batches until ``stop`` is set (checkpointing on the way out)."""
        self.open()
        if on_ready is not None:
            on_ready()
        try:
            while not stop.is_set() and not self.finished:
                self.step()
            if not self.finished:
                self.checkpoint()
        finally:
            self.close()

    def step(self) -> bool:
        """Read and process one batch (and checkpoint when due); False when idle."""
        assert self.plan is not None
        batches: dict[str, pa.Table | JsonLines] = {}
        total = 0
        exhausted = True
        for index, node in enumerate(self.plan.sources()):
            data = self._read(node.source, 0.05 if index == 0 else 0.0)
            batches[node.op_id] = data
            total += data.num_rows if isinstance(data, pa.Table) else data.count
            done = getattr(node.source, "exhausted", None)
            exhausted = exhausted and done is not None and bool(done())
        final = self.config.stop_when_exhausted and exhausted and total == 0
        idle_due = time.monotonic() - self._last_process >= IDLE_TICK_SECONDS
        processed = False
        if total or final or (idle_due and self.plan.stateful()):
            self.process(batches, final=final)
            processed = True
        if final:
            self.checkpoint()
            self.finished = True
            return processed
        self._epoch_records += total
        self._dirty = self._dirty or processed
        due = time.monotonic() - self._last_checkpoint_at >= self.runtime.checkpointIntervalSeconds
        if due and not self._dirty:
            self._last_checkpoint_at = time.monotonic()  # nothing happened: nothing to commit
        elif due or self._epoch_records >= self.config.epoch_records:
            self.checkpoint()
        self.write_metrics()
        return bool(total)

    def _read(self, source: StreamSource, timeout: float) -> pa.Table | JsonLines:
        limit = self.config.batch_records
        read_arrow = getattr(source, "read_arrow", None)
        if read_arrow is not None:
            table = read_arrow(limit, timeout)
            return table if table is not None else JsonLines(b"", 0)
        read_lines = getattr(source, "read_lines", None)
        if read_lines is not None:
            lines: JsonLines = read_lines(limit, timeout)
            return lines
        records = source.read(limit, timeout)
        return JsonLines(encode_records(records), len(records))

    # ------------------------------------------------------------------ one batch

    def _temp_table(self, name: str, sql: str) -> str:
        assert self.con is not None
        ref = quote_identifier(name)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {ref} AS {sql}")
        self._temp.append(ref)
        return ref

    def _count(self, relation: str) -> int:
        assert self.con is not None
        rows = self.con.execute(f"SELECT count(*) FROM {relation}").fetchall()
        return int(rows[0][0]) if rows else 0

    def _source_relation(self, node: SourceNode, data: pa.Table | JsonLines) -> str | None:
        """The typed relation of a source's batch; None for an empty batch of records whose
        fields are not declared."""
        assert self.con is not None
        raw = f"__raw_{len(self._registered)}"
        if isinstance(data, pa.Table):
            if data.num_rows == 0 and node.schema.open and not node.schema.fields:
                return None
            self.con.register(raw, data)
            self._registered.append(raw)
            return "(" + arrow_sql(quote_identifier(raw), node.schema, data.schema) + ")"
        if data.count == 0 and node.schema.open and not node.schema.fields:
            return None
        lines = data.data.decode("utf-8", errors="replace").split("\n")[: data.count]
        table = pa.table({"line": pa.array(lines, pa.string())})
        self.con.register(raw, table)
        self._registered.append(raw)
        structure = None
        if node.schema.open and not node.schema.fields:
            found = self.con.execute(
                f"SELECT json_group_structure(TRY_CAST(line AS JSON)) FROM {raw}"
            ).fetchall()
            structure = describe_structure(found[0][0] if found else None)
        # a line that is not JSON (a connector's odd message) gives a record of NULLs
        parsed = f"(SELECT TRY_CAST(line AS JSON) AS line FROM {quote_identifier(raw)})"
        sql = json_lines_sql(parsed, node.schema, structure)
        return self._temp_table(f"__src_{node.op_id}", sql)

    def _empty_table(self, op_id: str, schema: Schema) -> str:
        columns = []
        for name, kind in schema.fields.items():
            sql_type = DUCKDB_TYPES[kind] if isinstance(kind, FieldType) else "VARCHAR"
            columns.append(f"NULL::{sql_type} AS {quote_identifier(name)}")
        sql = f"SELECT {', '.join(columns) or 'NULL AS _empty'} WHERE FALSE"
        return self._temp_table(f"__empty_{op_id}", sql)

    def _advance_watermark(self, relations: dict[str, str | None]) -> None:
        assert self.plan is not None
        assert self.con is not None
        for node in self.plan.sources():
            relation = relations.get(node.op_id)
            if relation is None or not node.event_time:
                continue
            found = self.con.execute(
                f"SELECT max({quote_identifier(node.event_time)}) FROM {relation}"
            ).fetchall()
            latest = _aware(found[0][0]) if found else None
            if latest is not None and (self.max_event_time is None or latest > self.max_event_time):
                self.max_event_time = latest
        if self.max_event_time is not None:
            candidate = self.max_event_time - timedelta(seconds=self.runtime.outOfOrdernessSeconds)
            if self.watermark is None or candidate > self.watermark:
                self.watermark = candidate

    def _add(self, op_id: str, key: str, count: int) -> None:
        entry = self.counters.setdefault(op_id, {"recordsIn": 0, "recordsOut": 0})
        entry[key] = entry.get(key, 0) + count

    def process(self, batches: dict[str, pa.Table | JsonLines], *, final: bool = False) -> None:
        """Run one batch through the plan."""
        plan, con = self.plan, self.con
        assert plan is not None
        assert con is not None
        started = _now()
        self._last_process = time.monotonic()
        relations: dict[str, str | None] = {}
        counts_out: dict[str, int | None] = {}
        counts_in: dict[str, int | None] = {}
        try:
            for source_node in plan.sources():
                data = batches[source_node.op_id]
                relations[source_node.op_id] = self._source_relation(source_node, data)
                counts_out[source_node.op_id] = (
                    data.num_rows if isinstance(data, pa.Table) else data.count
                )
            self._advance_watermark(relations)
            ctx = BatchContext(self.epoch, started, self.watermark, final)
            for op_id in plan.order:
                node = plan.nodes[op_id]
                if isinstance(node, SourceNode):
                    continue
                ins = [relations[i] for i in plan.inputs[op_id] if relations.get(i) is not None]
                known = [counts_out.get(i) for i in plan.inputs[op_id]]
                counts_in[op_id] = (
                    sum(c for c in known if c is not None) if None not in known else None
                )
                if isinstance(node, SinkNode):
                    counts_in[op_id] = self._run_sink(node, ins)
                    continue
                relation = self._union([r for r in ins if r is not None])
                if isinstance(node, StatefulNode):
                    relations[op_id], counts_in[op_id], counts_out[op_id] = self._run_stateful(
                        node, relation, ctx
                    )
                    continue
                if relation is None:
                    relations[op_id], counts_out[op_id] = None, 0
                    continue
                if isinstance(node, SqlNode):
                    out = "(" + node.render(relation) + ")"
                    counts_out[op_id] = counts_in[op_id] if node.one_to_one else None
                else:
                    out = self._run_transform(node, relation)
                    counts_out[op_id] = counts_in[op_id]
                if len(plan.consumers[op_id]) > 1:
                    out = self._temp_table(f"__op_{op_id}", f"SELECT * FROM {out}")
                    counts_out[op_id] = self._count(out)
                relations[op_id] = out
            self._settle_counts(counts_in, counts_out, relations)
            self.batches += 1
        finally:
            self._drop_temp()

    def _union(self, relations: list[str]) -> str | None:
        if not relations:
            return None
        if len(relations) == 1:
            return relations[0]
        return "(" + " UNION ALL BY NAME ".join(f"SELECT * FROM {r}" for r in relations) + ")"

    def _run_sink(self, node: SinkNode, inputs: list[str | None]) -> int:
        assert self.con is not None
        written = 0
        copy_format = getattr(node.sink, "copy_format", None)
        for relation in inputs:
            if relation is None:
                continue
            if copy_format == "PARQUET":
                path = node.sink.stage_file(self.epoch)  # type: ignore[attr-defined]
                target = engine_db.sql_string(str(path))
                rows = self.con.execute(
                    f"COPY (SELECT * FROM {relation}) TO {target} "
                    "(FORMAT parquet, COMPRESSION zstd)"
                ).fetchall()
                count = int(rows[0][0]) if rows else 0
                node.sink.staged(path, count)  # type: ignore[attr-defined]
                written += count
                continue
            table = self.con.sql(f"SELECT * FROM {relation}").to_arrow_table()
            if table.num_rows:
                node.sink.write(table, self.epoch)
                written += table.num_rows
        self._add(node.op_id, "recordsIn", written)
        self._add(node.op_id, "recordsOut", written)
        return written

    def _run_stateful(
        self, node: StatefulNode, relation: str | None, ctx: BatchContext
    ) -> tuple[str | None, int, int]:
        assert self.con is not None
        assert self.plan is not None
        op_id = node.op_id
        if relation is None:
            schema = merge([(i, self.check.schemas[i]) for i in self.plan.inputs[op_id]])[0]
            table = self._empty_table(op_id, schema)
            count_in = 0
        else:
            table = self._temp_table(f"__in_{op_id}", f"SELECT * FROM {relation}")
            count_in = self._count(table)
        out = _table_ref(node.step.process(self.con, table, ctx))
        self._temp.append(out)
        return out, count_in, self._count(out)

    def _run_transform(self, node: TransformNode, relation: str) -> str:
        assert self.con is not None
        table = self.con.sql(f"SELECT * FROM {relation}").to_arrow_table()
        result = node.transform.apply(table) if table.num_rows else table
        name = f"__fn_{node.op_id}"
        self.con.register(name, result)
        self._registered.append(name)
        return quote_identifier(name)

    def _settle_counts(
        self,
        counts_in: dict[str, int | None],
        counts_out: dict[str, int | None],
        relations: dict[str, str | None],
    ) -> None:
        """Add this batch's counts. An operator fused into a query has its output counted
        from its only reader when that reader is 1:1 or materializes its input; otherwise
        by a count query over its relation."""
        assert self.plan is not None
        plan = self.plan
        for op_id in reversed(plan.order):
            node = plan.nodes[op_id]
            if isinstance(node, SinkNode) or counts_out.get(op_id) is not None:
                continue
            relation = relations.get(op_id)
            if relation is None:
                counts_out[op_id] = 0
                continue
            deduced: int | None = None
            readers = plan.consumers[op_id]
            if len(readers) == 1 and len(plan.inputs[readers[0]]) == 1:
                reader = plan.nodes[readers[0]]
                if isinstance(reader, StatefulNode | SinkNode):
                    deduced = counts_in.get(reader.op_id)
                elif isinstance(reader, TransformNode) or (
                    isinstance(reader, SqlNode) and reader.one_to_one
                ):
                    deduced = counts_out.get(reader.op_id)
            counts_out[op_id] = deduced if deduced is not None else self._count(relation)
        for op_id in plan.order:
            node = plan.nodes[op_id]
            if isinstance(node, SinkNode):
                continue
            if not isinstance(node, SourceNode):
                self._add(
                    op_id, "recordsIn", sum(counts_out.get(i) or 0 for i in plan.inputs[op_id])
                )
            self._add(op_id, "recordsOut", counts_out.get(op_id) or 0)

    def _drop_temp(self) -> None:
        assert self.con is not None
        for ref in reversed(self._temp):
            with contextlib.suppress(duckdb.Error):
                self.con.execute(f"DROP TABLE IF EXISTS {ref}")
        for name in self._registered:
            with contextlib.suppress(duckdb.Error):
                self.con.unregister(name)
        self._temp.clear()
        self._registered.clear()

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self) -> None:
        """Commit state, positions and counters as one epoch; then let sinks and sources
        know (see the module docstring)."""
        plan, con = self.plan, self.con
        assert plan is not None
        assert con is not None
        positions = {node.op_id: node.source.position() for node in plan.sources()}
        now = _now()
        con.execute(
            f"INSERT INTO {CHECKPOINTS} VALUES (?, ?, ?, ?, ?, ?)",
            [
                self.epoch,
                json.dumps(positions),
                _naive(self.watermark),
                _naive(self.max_event_time),
                json.dumps(self.counters),
                _naive(now),
            ],
        )
        con.execute(f"DELETE FROM {CHECKPOINTS} WHERE epoch <= ?", [self.epoch - KEEP_CHECKPOINTS])
        con.execute("COMMIT")
        committed = self.epoch
        self.last_checkpoint = {"epoch": committed, "time": now}
        self.epoch += 1
        self._last_checkpoint_at = time.monotonic()
        self._epoch_records = 0
        self._dirty = False
        for sink_node in plan.sinks():
            sink_node.sink.commit(committed)
        for node in plan.sources():
            node.source.committed(positions[node.op_id])
        self._positions = positions
        con.execute("BEGIN TRANSACTION")
        self.write_metrics(force=True)

    # ------------------------------------------------------------------ metrics

    def metrics(self) -> dict[str, Any]:
        plan, con = self.plan, self.con
        assert plan is not None
        assert con is not None
        operators: dict[str, Any] = {}
        late = 0
        state_rows = 0
        for op_id in plan.order:
            entry: dict[str, Any] = {
                "className": plan.class_names[op_id],
                "recordsIn": self.counters.get(op_id, {}).get("recordsIn", 0),
                "recordsOut": self.counters.get(op_id, {}).get("recordsOut", 0),
            }
            node = plan.nodes[op_id]
            if isinstance(node, StatefulNode):
                try:
                    extra = node.step.metrics(con)
                except duckdb.Error:
                    extra = {}
                entry["stateRows"] = int(extra.get("state_rows", 0))
                entry["lateRecords"] = int(extra.get("late_records", 0))
                late += entry["lateRecords"]
                state_rows += entry["stateRows"]
            operators[op_id] = entry
        sources = {}
        for node in plan.sources():
            try:
                lag = node.source.lag()
            except Exception:  # a source that cannot tell right now
                lag = None
            sources[node.op_id] = {"lag": lag, "position": node.source.position()}
        state_bytes = 0
        for suffix in ("", ".wal"):
            with contextlib.suppress(OSError):
                state_bytes += (self.config.job_dir / f"state.duckdb{suffix}").stat().st_size
        last = self.last_checkpoint
        return {
            "pid": os.getpid(),
            "epoch": self.epoch,
            "batches": self.batches,
            "watermark": self.watermark.isoformat() if self.watermark else None,
            "maxEventTime": self.max_event_time.isoformat() if self.max_event_time else None,
            "lateRecords": late,
            "stateRows": state_rows,
            "stateBytes": state_bytes,
            "lastCheckpoint": (
                {"epoch": last["epoch"], "time": last["time"].isoformat() if last["time"] else None}
                if last
                else None
            ),
            "operators": operators,
            "sources": sources,
            "updatedAt": _now().isoformat(),
        }

    def write_metrics(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_metrics < METRICS_EVERY_SECONDS:
            return
        self._last_metrics = now
        path = self.config.job_dir / "metrics.json"
        temp = path.with_name("metrics.json.tmp")
        temp.write_text(json.dumps(self.metrics()), encoding="utf-8")
        os.replace(temp, path)

    def close(self) -> None:
        if self.plan is not None:
            self.plan.close()
        if self.con is not None:
            with contextlib.suppress(duckdb.Error):
                self.con.execute("ROLLBACK")
            self.con.close()
            self.con = None
