"""The ``s3`` sink: outputs written as objects, ``_SUCCESS`` last."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel

from datamill.connectors.outbound.s3 import outbound_refusal, s3_error, store_filesystem
from datamill.connectors.sinks.base import (
    ExportBatch,
    ExportContext,
    ExportOutcome,
    SinkError,
    register,
)
from datamill.connectors.sinks.outputs.formats import check_partitions
from datamill.connectors.sinks.outputs.layout import (
    SUCCESS,
    Written,
    append_marker,
    append_seq,
    is_output_path,
    location_pattern,
    outcome,
    output_location,
    part_prefix,
    retention_cutoff,
    retention_note,
)
from datamill.connectors.sinks.outputs.plan import ParquetCopy, Writer, bytes_of, output_files
from datamill.connectors.sinks.s3.spec import S3ExportSpec
from datamill.domain.datasources import SchemaField
from datamill.errors import DatamillError, E
from datamill.security.outbound import OutboundTarget


class ObjectStore:
    """One bucket through the toolkit's S3 client; its errors become sink errors."""

    def __init__(self, spec: S3ExportSpec, ctx: ExportContext) -> None:
        self.bucket = spec.bucket
        self.fs = store_filesystem(spec, ctx.secret_values, ctx.outbound_allow)

    def show(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _do(self, what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except FileNotFoundError as exc:
            if "bucket" in str(exc).lower():
                raise SinkError(f"{what}: bucket '{self.bucket}' does not exist") from exc
            raise s3_error(exc, what) from exc
        except DatamillError:
            raise
        except Exception as exc:  # the store's or the transport's own error
            refused = outbound_refusal(exc)
            if refused is not None:
                raise refused from None
            raise s3_error(exc, what) from exc

    def listing(self, prefix: str) -> dict[str, float]:
        """key -> modification time (epoch seconds) of every object under ``prefix/``."""
        path = f"{self.bucket}/{prefix}".rstrip("/")

        def find() -> dict[str, Any]:
            try:
                found = self.fs.find(path, detail=True)
            except FileNotFoundError:
                if not self.fs.exists(self.bucket):
                    raise
                return {}
            return dict(found)

        found = self._do(f"cannot list {self.show(prefix)}", find)
        keys: dict[str, float] = {}
        start = f"{self.bucket}/{prefix.rstrip('/')}/" if prefix.strip("/") else f"{self.bucket}/"
        for name, info in found.items():
            if info.get("type") == "directory" or not str(name).startswith(start):
                continue
            modified = info.get("LastModified")
            mtime = modified.timestamp() if isinstance(modified, datetime) else 0.0
            keys[str(name)[len(self.bucket) + 1 :]] = mtime
        return keys

    def put(self, key: str, data: bytes) -> None:
        self._do(
            f"cannot write {self.show(key)}",
            lambda: self.fs.pipe_file(f"{self.bucket}/{key}", data),
        )

    def put_copy(self, key: str, copy: ParquetCopy) -> int:
        """Let DuckDB write ``key`` through this store's file system; returns its size."""
        path = f"{self.bucket}/{key}"
        copy.to_path(f"s3://{path}", self.fs)
        size = self._do(f"cannot read back {self.show(key)}", lambda: self.fs.size(path))
        return int(size)

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = [f"{self.bucket}/{k}" for k in keys[start : start + 1000]]
            self._do(
                f"cannot delete {self.show(keys[start])}", functools.partial(self.fs.rm, chunk)
            )


def write_objects(
    store: ObjectStore,
    location: str,
    files: Iterator[tuple[str, Writer]],
    mode: str,
    append: tuple[int, int] | None,
    existing: dict[str, float],
) -> Written:
    written = Written()
    prefix = location + "/"
    rels = {key[len(prefix) :] for key in existing}
    if rels and mode == "errorIfExists":
        raise SinkError(
            f"{store.show(prefix)} already exists ({len(rels)} objects) "
            "and saveMode is errorIfExists"
        )
    if rels and mode == "ignore":
        written.skipped = True
        return written
    if mode == "overwrite" and SUCCESS in rels:
        store.delete([prefix + SUCCESS])
    names: set[str] = set()
    for rel, writer in files:
        if isinstance(writer, ParquetCopy):
            written.files += 1
            written.bytes += store.put_copy(prefix + rel, writer)
            names.add(rel)
            continue
        data = bytes_of(writer)
        store.put(prefix + rel, data)
        names.add(rel)
        written.files += 1
        written.bytes += len(data)
    if append is not None:
        own = f"part-r{append[0]}-a{append[1]}-"
        stale = {r for r in rels if r.rsplit("/", 1)[-1].startswith(own)} - names
    else:
        stale = rels - names - {SUCCESS}
    if stale:
        store.delete([prefix + r for r in sorted(stale)])
    store.put(prefix + SUCCESS, b"")
    if append is not None:
        store.put(prefix + append_marker(*append), b"")
    return written


class S3Sink:
    type_name: ClassVar[str] = "s3"
    spec_model: ClassVar[type[BaseModel]] = S3ExportSpec

    def validate(self, spec: BaseModel, schema: list[SchemaField]) -> None:
        assert isinstance(spec, S3ExportSpec)
        check_partitions(spec, schema)

    def secret_name(self, spec: BaseModel) -> str | None:
        assert isinstance(spec, S3ExportSpec)
        return spec.secret

    def outbound_targets(
        self, spec: BaseModel, secret_values: Mapping[str, str]
    ) -> list[OutboundTarget]:
        assert isinstance(spec, S3ExportSpec)
        return spec.endpoint_targets()

    def write(self, spec: BaseModel, batch: ExportBatch, ctx: ExportContext) -> ExportOutcome:
        assert isinstance(spec, S3ExportSpec)
        location = output_location(spec.keyPrefix, batch, "spec.keyPrefix")
        if location.startswith("/") or ".." in location.split("/") or len(location) > 1000:
            raise DatamillError(
                E.PATH_REFUSED,
                f"spec.keyPrefix: '{location[:200]}' is not a usable key prefix",
                field="spec.keyPrefix",
            )
        store = ObjectStore(spec, ctx)
        existing = store.listing(location)
        append: tuple[int, int] | None = None
        if spec.saveMode == "append":
            top = [k[len(location) + 1 :] for k in existing]
            append = (
                batch.run_id,
                append_seq(ctx, [t for t in top if "/" not in t], batch.run_id),
            )
        rows, files = output_files(batch, spec, part_prefix(append), ctx)
        where = store.show(location + "/")
        ctx.log(f"writing {rows} rows to {where} (saveMode {spec.saveMode})")
        written = write_objects(store, location, files, spec.saveMode, append, existing)
        cutoff = retention_cutoff(spec)
        if cutoff is not None:
            try:
                deleted = self._expire(store, spec.keyPrefix, cutoff, location)
                retention_note(ctx, deleted, spec)
            except (SinkError, DatamillError) as exc:
                ctx.log(f"retention: could not delete old outputs: {exc}")
        return outcome(written, rows, where, spec)

    @staticmethod
    def _expire(store: ObjectStore, template: str, cutoff: float, current: str) -> int:
        base, patterns = location_pattern(template)
        old: list[str] = []
        for key, mtime in store.listing(base).items():
            rel = key[len(base) + 1 :] if base else key
            parts = rel.split("/")
            if mtime >= cutoff or not is_output_path(parts, patterns):
                continue
            location = "/".join(([base] if base else []) + parts[: len(patterns)])
            if location != current:
                old.append(key)
        if old:
            store.delete(sorted(old))
        return len(old)


register(S3Sink())
