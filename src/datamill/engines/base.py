"""The Engine interface: what datamill asks of a compute engine, and the registry of engines.

An engine is chosen by its ``type`` (a job's ``engine`` field). It declares what it can do
as data (:class:`Capabilities`), so a job naming an engine that cannot run it is refused
when it is saved. The batch side is a :class:`BatchSession`: one sandboxed session per run,
schema inference or preview; it turns the run's inputs into tables, describes a query's
output, and writes a query's result. The streaming side (micro-batch executor and state
store) is declared by engines with ``streaming=True``.

Engine errors are the engine's own exceptions translated into :class:`QueryFailed`
(with a message fit for the caller), :class:`OutOfMemory` and :class:`Interrupted`; services
turn them into catalog errors.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from datamill.domain.datasources import FormatSpec, SchemaField, ValType
from datamill.engines.streaming import MicroBatchExecutor, StateStore
from datamill.errors import DatamillError, E


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do.

    ``dialect`` is the sqlglot dialect its SQL is written in (jobs' SQL is DuckDB's; other
    engines transpile from it). ``sandboxed``: the engine confines user SQL to the run's
    files and limits (it may run on the server's own machine). ``reads`` and ``writes`` are
    the file formats it reads as sources and writes as results. ``remote``: the engine is a
    server elsewhere, reached through an :class:`Endpoint` (a project's engine connection).
    """

    dialect: str
    batch: bool
    streaming: bool
    sandboxed: bool
    reads: frozenset[str]
    writes: frozenset[str]
    remote: bool = False


@dataclass(frozen=True)
class Endpoint:
    """Where a remote engine's server answers: ``url`` (e.g. ``sc://host:port``), the
    ``address`` its host resolved to through the outbound guard (connect there, not to the
    name), and an optional ``token``. ``name`` is the engine connection's, for messages."""

    name: str
    url: str
    address: str
    token: str | None = None


@dataclass
class Limits:
    """Resources one session may use."""

    memory_limit: str = "1GB"
    threads: int = 2
    max_temp_size: str = "10GB"


@dataclass
class Sandbox:
    """What a session may see: exactly these files, these folders and filesystems.

    ``allowed_dirs`` may be written; ``filesystems`` (fsspec) reach object storage and
    WebHDFS for the exact ``allowed_paths``.
    """

    temp_dir: Path
    allowed_paths: list[str] = field(default_factory=list)
    allowed_dirs: list[Path] = field(default_factory=list)
    filesystems: list[Any] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)


FileStamp = tuple[tuple[str, int, int], ...]
"""Local files by path, modification time (ns) and size: the same stamp, the same files."""


@dataclass
class TableInput:
    """One source of a query, seen as the table ``table`` with the catalog's ``schema``.

    With ``fmt`` the ``files`` are a data source's, read in its format and cast to the
    schema; without, they are datamill results (Parquet) read as they are. No files: an
    empty table of the schema. ``stamp`` identifies unchanged local files (engines may
    remember what they learnt about them).
    """

    table: str
    schema: list[SchemaField]
    files: list[str] = field(default_factory=list)
    fmt: FormatSpec | None = None
    stamp: FileStamp | None = None


@dataclass(frozen=True)
class OutputColumn:
    name: str
    valtype: ValType


@dataclass(frozen=True)
class WriteResult:
    """What writing a result did; ``None`` where the engine could not tell."""

    rows_written: int
    rows_read: int | None
    bytes_read: int | None
    log: list[str] = field(default_factory=list)
    """Lines for the run's log (what the engine did, e.g. the SQL it ran)."""


class QueryFailed(Exception):
    """The engine refused or could not finish a statement; ``message`` is fit for the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OutOfMemory(QueryFailed):
    """The statement needed more memory than the session's limit."""


class Interrupted(Exception):
    """The statement was interrupted by :meth:`BatchSession.interrupt`."""


class Unavailable(Exception):
    """A remote engine's server could not be reached (or went away during a statement);
    ``message`` is fit for the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BatchSession(Protocol):
    """A sandboxed session: created by :meth:`Engine.session`, closed on leaving ``with``."""

    def __enter__(self) -> BatchSession: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    def infer(self, fmt: FormatSpec, files: Sequence[str]) -> list[SchemaField]:
        """The schema of files in a data source's format (no rows are materialised)."""
        ...

    def preview(self, source: TableInput, limit: int) -> list[dict[str, Any]]:
        """The first ``limit`` rows of ``source`` in its schema's types, as JSON values."""
        ...

    def add_table(self, source: TableInput) -> None:
        """Make ``source`` a table of the session, for :meth:`describe` and :meth:`write`."""
        ...

    def describe(self, sql: str) -> list[OutputColumn]:
        """The columns the query ``sql`` returns: bound, not executed."""
        ...

    def write(self, sql: str, folder: Path) -> WriteResult:
        """Run ``sql`` and write its result into ``folder`` (Parquet files ``part-*.parquet``).

        Raises :class:`Interrupted` after :meth:`interrupt`.
        """
        ...

    def interrupt(self) -> None:
        """Interrupt the running statement (from another thread)."""
        ...


class Engine(Protocol):
    """A compute engine, registered under its ``type``."""

    type: str
    capabilities: Capabilities

    def session(
        self, sandbox: Sandbox, *, profiling: bool = False, endpoint: Endpoint | None = None
    ) -> BatchSession:
        """A new session locked into ``sandbox``; ``profiling`` fills read statistics.

        A ``remote`` engine connects to ``endpoint`` (required for it, ignored by others);
        a server that cannot be reached raises :class:`Unavailable`.
        """
        ...

    def check_query(self, code: str, tables: Collection[str], field: str) -> str:
        """The query to run for a job's ``code``, once the engine's own parser shows it is
        one read-only query over ``tables`` calling only allowed functions.

        Raises :class:`~datamill.errors.DatamillError` naming ``field``: E18233 for SQL a
        job may not run, E18209 for SQL that does not parse. Nothing is bound or run.
        """
        ...

    def open_stream(
        self, job_dir: Path, *, memory_limit: str, threads: int, steps: Sequence[Any]
    ) -> tuple[MicroBatchExecutor, StateStore]:
        """The micro-batch executor and the state store of one streaming job, its state
        kept under ``job_dir``; the stateful ``steps`` (from the job's plan) get their
        state. Only engines whose capabilities say ``streaming``."""
        ...


class Watchdog:
    """Calls ``interrupt`` when ``stop`` is set or ``deadline`` (monotonic) passes.

    ``reason`` then says which: ``"stop"`` or ``"timeout"``.
    """

    def __init__(
        self, interrupt: Callable[[], None], stop: threading.Event, deadline: float
    ) -> None:
        self.interrupt = interrupt
        self.stop = stop
        self.deadline = deadline
        self.reason: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="watchdog")

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(0.05):
            if self.stop.is_set():
                self.reason = "stop"
            elif time.monotonic() > self.deadline:
                self.reason = "timeout"
            else:
                continue
            self.interrupt()
            return


_ENGINES: dict[str, Engine] = {}


def register(engine: Engine) -> Engine:
    """Make ``engine`` available under its ``type`` (replacing one of the same type)."""
    _ENGINES[engine.type] = engine
    return engine


def types() -> list[str]:
    return sorted(_ENGINES)


def safe_key(name: str) -> str:
    """Column names from files may not fit the field-name rule; make them fit."""
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name)[:128] or "_"
    return cleaned if not cleaned[0].isdigit() else "_" + cleaned[:127]


def get(type_: str, field: str = "engine") -> Engine:
    """The engine of ``type_``; an unknown type is refused naming ``field``."""
    found = _ENGINES.get(type_)
    if found is None:
        raise DatamillError(
            E.UNKNOWN_ENGINE,
            f"{field}: '{type_[:64]}' is not an engine of this server; "
            f"use one of {', '.join(types())}",
            field=field,
        )
    return found


def streaming_types() -> list[str]:
    """The engines that run streaming jobs."""
    return [t for t in types() if _ENGINES[t].capabilities.streaming]


def batch_engine(type_: str, field: str = "engine") -> Engine:
    """The engine of ``type_``, refused (naming ``field``) unless it runs batch jobs."""
    found = get(type_, field)
    if not found.capabilities.batch:
        raise DatamillError(
            E.UNKNOWN_ENGINE, f"{field}: engine '{type_}' does not run batch jobs", field=field
        )
    return found
