"""The micro-batch loop of one streaming job: a driver of the engine's executor.

The job's state lives in the engine's :class:`~datamill.engines.streaming.StateStore`
(for DuckDB, ``state.duckdb`` in the job's folder): the stateful steps' state and the
checkpoints (epoch, source positions, watermark, counters). Between checkpoints the work
of an epoch is pending. A checkpoint commits it with the positions, tells each sink the
epoch is durable and each source its position is, and begins the next epoch. After a
crash the uncommitted work is gone, sources seek back to the committed positions and
sinks discard what they staged after the committed epoch: operator state is exactly-once,
and so is a file sink's output.

Per batch: read up to ``batch_records`` records from every source, have the executor type
them, run the stateless chains, fold into stateful steps, hand each sink its rows. The
watermark is the largest event time seen minus ``runtime.outOfOrdernessSeconds``, never
decreasing; when the sources are idle the steps still get an empty batch every second so
processing-time windows close on the wall clock.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from datamill import engines
from datamill.connectors.streams.base import StreamConnection, StreamSource
from datamill.connectors.streams.ingest_log import IngestLog
from datamill.domain.streaming import (
    StreamingJobBody,
    StreamingRuntime,
    check_pipeline,
    merge,
)
from datamill.engines.streaming import (
    BatchContext,
    Checkpoint,
    JsonLines,
    MicroBatchExecutor,
    Relation,
    SourceBatch,
    StateStore,
)
from datamill.runtime.streaming.ingest import IngestSource, encode_records
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

IDLE_TICK_SECONDS = 1.0
METRICS_EVERY_SECONDS = 1.0


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


def _now() -> datetime:
    return datetime.now(UTC)


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
        self.check = check_pipeline(self.body, engines.streaming_types())
        self._given_sources = sources or {}
        self.plan: Plan | None = None
        self.executor: MicroBatchExecutor | None = None
        self.store: StateStore | None = None
        self.epoch = 1
        self.watermark: datetime | None = None
        self.max_event_time: datetime | None = None
        self.counters: dict[str, dict[str, int]] = {}
        self.last_checkpoint: dict[str, Any] | None = None
        self.batches = 0
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
        engine = engines.get(self.body.engine)
        self.executor, self.store = engine.open_stream(
            config.job_dir,
            memory_limit=config.memory_limit,
            threads=self.runtime.parallelism or config.threads,
            steps=[node.step for node in self.plan.stateful()],
        )
        last = self.store.recover()
        committed = 0
        positions: dict[str, Any] = {}
        if last is not None:
            committed = last.epoch
            positions = last.positions
            self.watermark, self.max_event_time = last.watermark, last.max_event_time
            self.counters = last.counters
            self.last_checkpoint = {"epoch": committed, "time": last.created_at}
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
        batches: dict[str, SourceBatch] = {}
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

    def _read(self, source: StreamSource, timeout: float) -> SourceBatch:
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

    def _advance_watermark(self, relations: dict[str, Relation | None]) -> None:
        assert self.plan is not None
        assert self.executor is not None
        for node in self.plan.sources():
            relation = relations.get(node.op_id)
            if relation is None or not node.event_time:
                continue
            latest = self.executor.max_time(relation, node.event_time)
            if latest is not None and (self.max_event_time is None or latest > self.max_event_time):
                self.max_event_time = latest
        if self.max_event_time is not None:
            candidate = self.max_event_time - timedelta(seconds=self.runtime.outOfOrdernessSeconds)
            if self.watermark is None or candidate > self.watermark:
                self.watermark = candidate

    def _add(self, op_id: str, key: str, count: int) -> None:
        entry = self.counters.setdefault(op_id, {"recordsIn": 0, "recordsOut": 0})
        entry[key] = entry.get(key, 0) + count

    def process(self, batches: dict[str, SourceBatch], *, final: bool = False) -> None:
        """Run one batch through the plan."""
        plan, executor = self.plan, self.executor
        assert plan is not None
        assert executor is not None
        started = _now()
        self._last_process = time.monotonic()
        relations: dict[str, Relation | None] = {}
        counts_out: dict[str, int | None] = {}
        counts_in: dict[str, int | None] = {}
        try:
            for source_node in plan.sources():
                data = batches[source_node.op_id]
                relations[source_node.op_id] = executor.load(
                    source_node.op_id, source_node.schema, data
                )
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
                relation = executor.union([r for r in ins if r is not None])
                if isinstance(node, StatefulNode):
                    if relation is None:
                        schema = merge([(i, self.check.schemas[i]) for i in plan.inputs[op_id]])[0]
                        relation = executor.empty(op_id, schema)
                    out, counts_in[op_id] = executor.stateful(op_id, node.step, relation, ctx)
                    relations[op_id], counts_out[op_id] = out, executor.count(out)
                    continue
                if relation is None:
                    relations[op_id], counts_out[op_id] = None, 0
                    continue
                if isinstance(node, SqlNode):
                    out = executor.sql(node.render, relation)
                    counts_out[op_id] = counts_in[op_id] if node.one_to_one else None
                else:
                    out = executor.transform(op_id, node.transform.apply, relation)
                    counts_out[op_id] = counts_in[op_id]
                if len(plan.consumers[op_id]) > 1:
                    out = executor.materialize(op_id, out)
                    counts_out[op_id] = executor.count(out)
                relations[op_id] = out
            self._settle_counts(counts_in, counts_out, relations)
            self.batches += 1
        finally:
            executor.end_batch()

    def _run_sink(self, node: SinkNode, inputs: list[Relation | None]) -> int:
        assert self.executor is not None
        written = 0
        for relation in inputs:
            if relation is not None:
                written += self.executor.write(node.sink, relation, self.epoch)
        self._add(node.op_id, "recordsIn", written)
        self._add(node.op_id, "recordsOut", written)
        return written

    def _settle_counts(
        self,
        counts_in: dict[str, int | None],
        counts_out: dict[str, int | None],
        relations: dict[str, Relation | None],
    ) -> None:
        """Add this batch's counts. An operator fused into a query has its output counted
        from its only reader when that reader is 1:1 or materializes its input; otherwise
        by a count query over its relation."""
        assert self.plan is not None
        assert self.executor is not None
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
            counts_out[op_id] = deduced if deduced is not None else self.executor.count(relation)
        for op_id in plan.order:
            node = plan.nodes[op_id]
            if isinstance(node, SinkNode):
                continue
            if not isinstance(node, SourceNode):
                self._add(
                    op_id, "recordsIn", sum(counts_out.get(i) or 0 for i in plan.inputs[op_id])
                )
            self._add(op_id, "recordsOut", counts_out.get(op_id) or 0)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self) -> None:
        """Commit state, positions and counters as one epoch; then let sinks and sources
        know (see the module docstring)."""
        plan, store = self.plan, self.store
        assert plan is not None
        assert store is not None
        positions = {node.op_id: node.source.position() for node in plan.sources()}
        now = _now()
        store.commit(
            Checkpoint(
                epoch=self.epoch,
                positions=positions,
                watermark=self.watermark,
                max_event_time=self.max_event_time,
                counters=self.counters,
                created_at=now,
            )
        )
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
        self.write_metrics(force=True)

    # ------------------------------------------------------------------ metrics

    def metrics(self) -> dict[str, Any]:
        plan, executor, store = self.plan, self.executor, self.store
        assert plan is not None
        assert executor is not None
        assert store is not None
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
                extra = executor.stateful_metrics(node.step)
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
        last = self.last_checkpoint
        return {
            "pid": os.getpid(),
            "epoch": self.epoch,
            "batches": self.batches,
            "watermark": self.watermark.isoformat() if self.watermark else None,
            "maxEventTime": self.max_event_time.isoformat() if self.max_event_time else None,
            "lateRecords": late,
            "stateRows": state_rows,
            "stateBytes": store.size_bytes(),
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
        if self.store is not None:
            self.store.close()
            self.store = None
        self.executor = None
