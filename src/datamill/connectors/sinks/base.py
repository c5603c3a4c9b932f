"""The export sink interface and its registry.

A sink writes one batch of a job's result to a destination. Each sink declares its spec
model and validates a spec against the job's output schema when the export is created, so
an impossible export (an unknown field, a format and compression the libraries cannot
write) is refused before it ever runs. It also names every address a write connects to
(:meth:`Sink.outbound_targets`), so a save refuses what the outbound guard refuses.

Failures are either :class:`TransientSinkError` (the destination is down, timed out or
answered 5xx: the export run is retried with backoff) or :class:`SinkError` (anything a
retry will not fix). Sinks write idempotently per batch where the destination allows it:
deterministic object names, replace-the-batch transactions, deterministic document ids.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pyarrow as pa
from pydantic import BaseModel

from datamill.connectors.outbound.errors import OutboundError, TransientOutboundError
from datamill.domain.datasources import SchemaField
from datamill.domain.variables import Resolver
from datamill.security.outbound import OutboundTarget
from datamill.security.paths import RootView

SinkError = OutboundError
"""The export failed in a way a retry will not fix (bad data, refused request). A sink
fails the way the outbound toolkit it writes through does: one pair of exceptions."""
TransientSinkError = TransientOutboundError
"""The destination is down, timed out or answered 5xx: worth retrying."""


class ParquetCopier(Protocol):
    """An engine's writer that copies Parquet result files into one Parquet file.

    The service that runs an export hands one to the sink (``ExportContext.copy_parquet``),
    so sinks stay engine-neutral; without one, sinks write Parquet with Arrow.
    """

    def __call__(
        self, sources: Sequence[Path], target: str, compression: str, filesystem: Any = None
    ) -> None:
        """Write the rows of ``sources`` to ``target`` (a local path, or ``s3://bucket/key``
        through the fsspec ``filesystem``) with ``compression`` (none, snappy, gzip); raise
        an exception whose text says what went wrong."""
        ...


@dataclass
class ExportBatch:
    """One batch of a job's result, as the sink receives it."""

    project: str
    job: str
    export: str
    run_id: int
    batch_time: datetime
    schema: list[SchemaField]
    parquet_files: list[Path]
    resolver: Resolver

    def read(self) -> pa.Table:
        """The whole batch as an Arrow table (job results are bounded by the container)."""
        import pyarrow.parquet as pq

        if not self.parquet_files:
            return pa.table({f.key: pa.array([], pa.string()) for f in self.schema})
        return pq.ParquetDataset([str(p) for p in self.parquet_files], partitioning=None).read()


@dataclass
class ExportContext:
    """What a sink may use besides its spec; ``data_roots`` are what the export's project
    sees of each data root."""

    data_roots: Mapping[str, RootView]
    outbound_allow: list[str]
    secret_values: Mapping[str, str]
    temp_dir: Path
    log: Callable[[str], None] = lambda _line: None
    copy_parquet: ParquetCopier | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportOutcome:
    rows: int
    bytes: int
    detail: str


class Sink(Protocol):
    """Writes batches to one kind of destination."""

    type_name: ClassVar[str]
    spec_model: ClassVar[type[BaseModel]]

    def validate(self, spec: BaseModel, schema: list[SchemaField]) -> None:
        """Refuse (DatamillError naming ``spec.<field>``) what cannot work for this schema."""
        ...

    def secret_name(self, spec: BaseModel) -> str | None:
        """The stored secret this spec reads its credentials from, if any."""
        ...

    def outbound_targets(
        self, spec: BaseModel, secret_values: Mapping[str, str]
    ) -> list[OutboundTarget]:
        """``(host, port, field)`` of every remote address a write of ``spec`` connects to
        (none for local files). ``secret_values`` are those of :meth:`secret_name`'s secret,
        for a destination named there. The export is refused at save when the outbound
        guard refuses one; the write checks again when it connects."""
        ...

    def write(self, spec: BaseModel, batch: ExportBatch, ctx: ExportContext) -> ExportOutcome:
        """Write the batch; raise SinkError or TransientSinkError on failure."""
        ...


SINKS: dict[str, Sink] = {}


def register(sink: Sink) -> Sink:
    SINKS[sink.type_name] = sink
    return sink
