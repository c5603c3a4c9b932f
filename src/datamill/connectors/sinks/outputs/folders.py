"""Writing an output to a folder store (a data root, HDFS) through a temporary sibling
folder and renames, and retention of old outputs there."""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Protocol

from datamill.connectors.sinks.base import ExportBatch, ExportContext, ExportOutcome, SinkError
from datamill.connectors.sinks.outputs.formats import FileExportOptions
from datamill.connectors.sinks.outputs.layout import (
    OUTPUT_FILE,
    PARTITION_DIR,
    SUCCESS,
    Written,
    append_marker,
    append_seq,
    location_pattern,
    outcome,
    part_prefix,
    retention_cutoff,
    retention_note,
)
from datamill.connectors.sinks.outputs.plan import Writer, output_files
from datamill.errors import DatamillError


class FolderStore(Protocol):
    """A hierarchical file system with an atomic rename (a data root, HDFS)."""

    def show(self, path: str) -> str: ...

    def kind(self, path: str) -> str | None: ...

    def listdir(self, path: str, hidden: bool = False) -> list[tuple[str, bool, float]]:
        """(name, is folder, modification time) of the children; ``hidden`` includes the
        temporary folders of writes in progress."""
        ...

    def mkdirs(self, path: str) -> None: ...

    def put(self, path: str, data: bytes) -> None: ...

    def write(self, path: str, writer: Writer) -> int:
        """Create the file ``path`` with what ``writer`` writes; returns its size."""
        ...

    def rename(self, src: str, dst: str) -> None: ...

    def exchange(self, first: str, second: str) -> bool:
        """Swap two existing folders in one atomic step; False (nothing done) when this
        store cannot, and the caller falls back to two renames."""
        ...

    def replace_file(self, src: str, dst: str) -> None: ...

    def delete(self, path: str, recursive: bool) -> None: ...


def join_path(folder: str, rel: str) -> str:
    return folder.rstrip("/") + "/" + rel if rel else folder


def split_path(path: str) -> tuple[str, str]:
    parent, _, leaf = path.rstrip("/").rpartition("/")
    return parent or "/", leaf


def files_under(store: FolderStore, folder: str, rel: str = "") -> Iterator[str]:
    """Paths relative to ``folder`` of every file below it (hidden temp folders skipped)."""
    for name, is_dir, _ in store.listdir(join_path(folder, rel)):
        child = f"{rel}/{name}" if rel else name
        if is_dir:
            yield from files_under(store, folder, child)
        else:
            yield child


def write_folder(
    store: FolderStore,
    location: str,
    files: Iterator[tuple[str, Writer]],
    mode: str,
    append: tuple[int, int] | None,
) -> Written:
    """Write ``files`` under ``location`` with a temporary sibling folder and renames."""
    kind = store.kind(location)
    if kind == "file":
        raise SinkError(f"{store.show(location)} is a file, not a folder")
    existing = list(files_under(store, location)) if kind == "dir" else []
    if existing and mode == "errorIfExists":
        raise SinkError(
            f"{store.show(location)} already exists ({len(existing)} files) "
            "and saveMode is errorIfExists"
        )
    written = Written()
    if existing and mode == "ignore":
        written.skipped = True
        return written
    parent, leaf = split_path(location)
    store.mkdirs(parent)
    token = secrets.token_hex(6)
    temp = join_path(parent, f".{leaf}.tmp-{token}")
    names: list[str] = []
    try:
        for rel, writer in files:
            size = store.write(join_path(temp, rel), writer)
            names.append(rel)
            written.files += 1
            written.bytes += size
        markers = [SUCCESS] + ([append_marker(*append)] if append else [])
        if append is not None and kind == "dir":
            own = f"part-r{append[0]}-a{append[1]}-"
            for rel in names:
                folder = split_path(join_path(location, rel))[0]
                store.mkdirs(folder)
                store.replace_file(join_path(temp, rel), join_path(location, rel))
            fresh = set(names)
            for rel in existing:
                if rel.rsplit("/", 1)[-1].startswith(own) and rel not in fresh:
                    store.delete(join_path(location, rel), recursive=False)
            for marker in markers:  # the append's own marker last: its commit point
                store.put(join_path(temp, marker), b"")
                store.replace_file(join_path(temp, marker), join_path(location, marker))
            with contextlib.suppress(SinkError):
                store.delete(temp, recursive=True)
            return written
        for marker in markers:
            store.put(join_path(temp, marker), b"")
        if kind == "dir" and store.exchange(temp, location):
            with contextlib.suppress(SinkError):  # ``temp`` now holds the old output
                store.delete(temp, recursive=True)
        elif kind == "dir":
            old = join_path(parent, f".{leaf}.old-{token}")
            store.rename(location, old)
            try:
                store.rename(temp, location)
            except BaseException:
                with contextlib.suppress(SinkError):
                    store.rename(old, location)
                raise
            with contextlib.suppress(SinkError):
                store.delete(old, recursive=True)
        else:
            store.rename(temp, location)
    except BaseException:
        with contextlib.suppress(SinkError, OSError):
            if store.kind(temp) is not None:
                store.delete(temp, recursive=True)
        raise
    return written


def expire_folder(
    store: FolderStore,
    base: str,
    patterns: list[re.Pattern[str]],
    cutoff: float,
    current: str,
) -> int:
    """Delete this export's files older than ``cutoff`` (epoch seconds) below ``base``."""
    if store.kind(base) != "dir":
        return 0
    chains: list[list[str]] = [[base]]
    for pattern in patterns:
        chains = [
            [*chain, join_path(chain[-1], name)]
            for chain in chains
            for name, is_dir, _ in store.listdir(chain[-1])
            if is_dir and pattern.fullmatch(name)
        ]
    deleted = 0
    for chain in chains:
        location = chain[-1]
        if location.rstrip("/") == current.rstrip("/"):
            continue
        deleted += _expire_tree(store, location, cutoff)
        for folder in reversed(chain[1:]):  # folders left empty, up to (not incl.) base
            if store.listdir(folder, hidden=True):
                break
            store.delete(folder, recursive=False)
    return deleted


def _expire_tree(store: FolderStore, folder: str, cutoff: float) -> int:
    deleted = 0
    for name, is_dir, mtime in store.listdir(folder):
        path = join_path(folder, name)
        if is_dir:
            if PARTITION_DIR.fullmatch(name):
                deleted += _expire_tree(store, path, cutoff)
                if not store.listdir(path, hidden=True):
                    store.delete(path, recursive=False)
        elif OUTPUT_FILE.fullmatch(name) and mtime < cutoff:
            store.delete(path, recursive=False)
            deleted += 1
    return deleted


def folder_export(
    store: FolderStore,
    location: str,
    base_of: Callable[[str], str],
    template: str,
    spec: FileExportOptions,
    batch: ExportBatch,
    ctx: ExportContext,
) -> ExportOutcome:
    append: tuple[int, int] | None = None
    if spec.saveMode == "append":
        top = [name for name, is_dir, _ in store.listdir(location) if not is_dir]
        append = (batch.run_id, append_seq(ctx, top, batch.run_id))
    rows, files = output_files(batch, spec, part_prefix(append), ctx)
    ctx.log(f"writing {rows} rows to {store.show(location)} (saveMode {spec.saveMode})")
    written = write_folder(store, location, files, spec.saveMode, append)
    cutoff = retention_cutoff(spec)
    if cutoff is not None:
        try:
            literal_base, patterns = location_pattern(template)
            deleted = expire_folder(store, base_of(literal_base), patterns, cutoff, location)
            retention_note(ctx, deleted, spec)
        except (SinkError, DatamillError) as exc:
            ctx.log(f"retention: could not delete old outputs: {exc}")
    return outcome(written, rows, store.show(location), spec)
