"""A batch session on a Spark Connect server: sources as temporary views, results as Parquet.

Spark reads the files itself (it must see the same paths: a shared file system for a
cluster on other machines, or object storage); the driver here only sends plans. Each
session is a Spark Connect session of its own (its views are its own) and is released when
the session closes.

Run control: every statement of :meth:`SparkSession.write` carries the session's tag, and
:meth:`interrupt` interrupts the operations holding it (``interruptTag``). Spark then
cancels the job's stages; with ``spark.sql.execution.interruptOnCancel`` (set here) the
running tasks' threads are interrupted too, so a file scan stops within moments and the
cluster is free for the next run. Connection attempts are retried a few times only, so
an unreachable server fails a run within seconds rather than after Spark's default of
ten minutes.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

with warnings.catch_warnings():  # pyspark warns about pandas versions on import
    warnings.simplefilter("ignore")
    import pyarrow.parquet as pq
    from pyspark.errors import PySparkException
    from pyspark.sql import types as T
    from pyspark.sql.connect.client.core import DefaultChannelBuilder
    from pyspark.sql.connect.client.retries import DefaultPolicy
    from pyspark.sql.connect.session import SparkSession
    from pyspark.sql.dataframe import DataFrame

from datamill.domain.datasources import FileType, FormatSpec, SchemaField, ValType
from datamill.domain.values import json_value
from datamill.engines.base import (
    Endpoint,
    Interrupted,
    OutputColumn,
    QueryFailed,
    Sandbox,
    TableInput,
    Unavailable,
    WriteResult,
    safe_key,
)
from datamill.engines.spark.sql import empty_select, locate, to_spark, typed_column

logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)  # errors are returned

SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",  # naive timestamps are UTC, as on DuckDB
    "spark.sql.execution.interruptOnCancel": "true",
    # With adaptive execution, a query interrupted while it plans its next stage was seen
    # to submit that stage after the cancellation and to run it to the end (minutes of a
    # cluster's cores): without it, a query is one job that the interruption cancels.
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.parquet.compression.codec": "zstd",
}
INTERRUPT_SECONDS = 10.0
"""How long :meth:`SparkBatchSession.interrupt` keeps interrupting until the statement ends,
before it releases the whole Spark session."""


def _retries() -> DefaultPolicy:
    """Connection retries: about 2.6 s in all before a server is called unreachable."""
    return DefaultPolicy(
        max_retries=3, initial_backoff=200, backoff_multiplier=3.0, max_backoff=3000
    )


_UNAVAILABLE = (
    "UNAVAILABLE",
    "failed to connect",
    "connection refused",
    "Socket closed",
    "Channel closed",
    "stopped SparkContext",  # the server is shutting down under a running statement
    "SparkContext was shut down",
)


def _to_valtype(kind: T.DataType) -> ValType:
    if isinstance(kind, T.BooleanType):
        return ValType.boolean
    if isinstance(kind, T.ByteType | T.ShortType | T.IntegerType | T.LongType):
        return ValType.long
    if isinstance(kind, T.FloatType | T.DoubleType | T.DecimalType):
        return ValType.float
    if isinstance(kind, T.DateType | T.TimestampType | T.TimestampNTZType):
        return ValType.date
    return ValType.string


def _is_unavailable(exc: BaseException) -> bool:
    text = str(exc)
    return any(marker in text for marker in _UNAVAILABLE)


class SparkBatchSession:
    """One Spark Connect session; see :class:`datamill.engines.base.BatchSession`."""

    def __init__(self, sandbox: Sandbox, endpoint: Endpoint) -> None:
        self.sandbox = sandbox
        self.endpoint = endpoint
        self.tag = f"datamill-{uuid.uuid4().hex}"
        self.interrupted = False
        self.idle = threading.Event()
        self.idle.set()
        self.user_sql = ""
        host_port = endpoint.url.removeprefix("sc://").split("/", 1)[0]
        host, _, port = host_port.rpartition(":")
        address = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
        pinned = f"sc://{address}:{port}/"  # the address the outbound guard checked
        options: list[tuple[str, Any]] = []
        if endpoint.token:
            pinned += f";token={endpoint.token}"  # Spark Connect then uses TLS
            options.append(("grpc.ssl_target_name_override", host.strip("[]")))
        with self._translated():
            self.spark = SparkSession(connection=DefaultChannelBuilder(pinned, options or None))
            self.spark._client.set_retry_policies([_retries()])
            partitions = str(max(4, 4 * sandbox.limits.threads))
            for key, value in {**SESSION_CONF, "spark.sql.shuffle.partitions": partitions}.items():
                self.spark.conf.set(key, value)

    def __enter__(self) -> SparkBatchSession:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        try:
            self.spark.stop()
        except Exception:  # the server may be gone; nothing to release then
            logging.getLogger(__name__).debug("releasing the Spark session failed")

    # ------------------------------------------------------------------ errors

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Spark's exceptions as the engine interface's (after :meth:`interrupt`, whatever
        ends the statement is the interruption: a released session fails its call too)."""
        try:
            yield
        except (PySparkException, OSError, ValueError) as exc:
            if self.interrupted:
                raise Interrupted from None
            if _is_unavailable(exc):
                raise self._unavailable(exc) from None
            if isinstance(exc, PySparkException):
                raise QueryFailed(self._message(exc)) from None
            raise

    def _unavailable(self, exc: BaseException) -> Unavailable:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return Unavailable(
            f"the Spark Connect server of engine '{self.endpoint.name}' "
            f"({self.endpoint.url}) could not be reached or stopped: {detail}"
        )

    def _message(self, exc: PySparkException) -> str:
        fragment = None
        try:
            contexts = exc.getQueryContext()
            fragment = contexts[0].fragment() if contexts else None
        except Exception:  # older servers send no query context
            fragment = None
        return locate(exc.getMessage() or str(exc), fragment, self.user_sql)

    # ------------------------------------------------------------------ reading

    def _reader_frame(self, fmt: FormatSpec, files: Sequence[str]) -> DataFrame:
        reader = self.spark.read
        match fmt.fileType:
            case FileType.parquet:
                return reader.parquet(*files)
            case FileType.json:
                return reader.json(list(files))
            case FileType.csv:
                frame = (
                    reader.option("header", bool(fmt.containsHeader))
                    .option("sep", fmt.delimiter or ",")
                    .csv(list(files))
                )
                if fmt.containsHeader:
                    return frame
                # DuckDB names header-less columns column0, column1, ...: so do the schemas
                return frame.toDF(*(f"column{i}" for i in range(len(frame.columns))))
        raise QueryFailed(f"the Spark engine does not read {fmt.fileType} files")

    def _typed(self, frame: DataFrame, schema: Sequence[SchemaField]) -> DataFrame:
        """The schema's fields in their types (absent ones NULL, values that do not
        convert NULL), from a frame with the files' columns."""
        available = {safe_key(name): name for name in frame.columns}
        columns = [
            typed_column(available.get(f.key), ValType(f.valtype), f.key, safe=True) for f in schema
        ]
        return frame.selectExpr(*columns) if columns else frame

    def _empty(self, schema: Sequence[SchemaField]) -> DataFrame:
        return self.spark.sql(empty_select(schema))

    def _frame(self, source: TableInput) -> DataFrame:
        if not source.files:
            return self._empty(source.schema)
        if source.fmt is None:  # datamill results: Parquet in the schema's types already
            return self._typed(self.spark.read.parquet(*source.files), source.schema)
        return self._typed(self._reader_frame(source.fmt, source.files), source.schema)

    def infer(self, fmt: FormatSpec, files: Sequence[str]) -> list[SchemaField]:
        with self._translated():
            schema = self._reader_frame(fmt, files).schema
        return [SchemaField(key=safe_key(f.name), valtype=_to_valtype(f.dataType)) for f in schema]

    def preview(self, source: TableInput, limit: int) -> list[dict[str, Any]]:
        with self._translated():
            table = self._frame(source).limit(int(limit)).toArrow()
        return [{k: json_value(v) for k, v in row.items()} for row in table.to_pylist()]

    def add_table(self, source: TableInput) -> None:
        with self._translated():
            self._frame(source).createOrReplaceTempView(source.table)

    # ------------------------------------------------------------------ queries

    def _query(self, sql: str) -> tuple[str, DataFrame]:
        self.user_sql = sql
        spark_sql = to_spark(sql)
        return spark_sql, self.spark.sql(spark_sql)

    def describe(self, sql: str) -> list[OutputColumn]:
        with self._translated():
            _, frame = self._query(sql)
            schema = frame.schema
        return [OutputColumn(f.name, _to_valtype(f.dataType)) for f in schema]

    def write(self, sql: str, folder: Path) -> WriteResult:
        self.idle.clear()
        self.spark.addTag(self.tag)
        try:
            with self._translated():
                if self.interrupted:
                    raise Interrupted
                spark_sql, frame = self._query(sql)
                typed = frame.selectExpr(
                    *(typed_column(f.name, _to_valtype(f.dataType), f.name) for f in frame.schema)
                )
                typed.write.mode("overwrite").parquet(str(folder))
        finally:
            self.spark.removeTag(self.tag)
            self.idle.set()
        rows = 0
        for path in folder.iterdir():
            if path.suffix == ".parquet":
                rows += pq.read_metadata(path).num_rows
            else:  # _SUCCESS and checksum files: the result is the Parquet files only
                path.unlink()
        return WriteResult(
            rows_written=rows,
            rows_read=None,
            bytes_read=None,
            log=[f"Spark SQL sent to {self.endpoint.url}: {spark_sql}"],
        )

    def interrupt(self) -> None:
        """Interrupt the running statement, again and again until :meth:`write` returns.

        An interruption reaches only the operations the server has registered: a statement
        sent just after one was sent would otherwise run on. Spark 4.3 may also lose an
        interruption that arrives while it plans the query (a helper swallows the thread's
        interrupt); after ``INTERRUPT_SECONDS`` the session is released so that the run at
        least ends here. Called from the run's watchdog thread: it may block that long.
        """
        self.interrupted = True
        deadline = time.monotonic() + INTERRUPT_SECONDS
        while True:
            try:
                self.spark.interruptTag(self.tag)
            except Exception:  # the server is gone: nothing runs there any more
                logging.getLogger(__name__).debug("interrupting the Spark operation failed")
                return
            if self.idle.wait(0.2):
                return
            if time.monotonic() > deadline:
                self._release()
                return
