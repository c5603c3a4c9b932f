"""The ``file`` sink: outputs written to a folder under a data root."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
from pydantic import BaseModel

from datamill.connectors.exchange import exchange_folders
from datamill.connectors.outbound.errors import first_line
from datamill.connectors.sinks.base import (
    ExportBatch,
    ExportContext,
    ExportOutcome,
    SinkError,
    register,
)
from datamill.connectors.sinks.file.spec import FileExportSpec
from datamill.connectors.sinks.outputs.folders import folder_export
from datamill.connectors.sinks.outputs.formats import check_partitions
from datamill.connectors.sinks.outputs.layout import TEMP_NAME, output_location
from datamill.connectors.sinks.outputs.plan import ParquetCopy, Writer
from datamill.domain.datasources import SchemaField
from datamill.security.outbound import OutboundTarget
from datamill.security.paths import RootView, check_relative_path, data_root


class LocalStore:
    """What a project sees of a data root; paths are absolute, already checked to stay in."""

    def __init__(self, view: RootView) -> None:
        self.view = view
        self.root = view.base.resolve()

    def show(self, path: str) -> str:
        try:
            rel = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            rel = path
        return f"{self.view.name}:{rel}"

    def _fail(self, action: str, path: str, exc: OSError) -> SinkError:
        return SinkError(f"{action} {self.show(path)}: {exc.strerror or first_line(exc)}")

    def _inside(self, path: str) -> None:
        self.view.ensure(Path(path), self.show(path), "spec.path")

    def kind(self, path: str) -> str | None:
        if os.path.islink(path):
            self._inside(path)
        if os.path.isdir(path):
            return "dir"
        return "file" if os.path.lexists(path) else None

    def listdir(self, path: str, hidden: bool = False) -> list[tuple[str, bool, float]]:
        found: list[tuple[str, bool, float]] = []
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    if not hidden and TEMP_NAME.fullmatch(entry.name):
                        continue
                    st = entry.stat(follow_symlinks=False)
                    found.append((entry.name, entry.is_dir(follow_symlinks=False), st.st_mtime))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._fail("cannot list", path, exc) from exc
        return sorted(found)

    def mkdirs(self, path: str) -> None:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise self._fail("cannot create folder", path, exc) from exc
        self._inside(path)

    def put(self, path: str, data: bytes) -> None:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as stream:
                stream.write(data)
        except OSError as exc:
            raise self._fail("cannot write", path, exc) from exc

    def write(self, path: str, writer: Writer) -> int:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if isinstance(writer, ParquetCopy):
                writer.to_path(path)
                return os.path.getsize(path)
            with pa.OSFile(path, "wb") as stream:
                writer(stream)
                return int(stream.tell())
        except OSError as exc:
            raise self._fail("cannot write", path, exc) from exc

    def rename(self, src: str, dst: str) -> None:
        try:
            os.rename(src, dst)
        except OSError as exc:
            if os.path.isdir(dst) and os.listdir(dst):
                raise SinkError(f"{self.show(dst)} appeared meanwhile; not replaced") from exc
            raise self._fail(f"cannot rename {self.show(src)} to", dst, exc) from exc

    def exchange(self, first: str, second: str) -> bool:
        try:
            return exchange_folders(first, second)
        except OSError as exc:
            raise self._fail(f"cannot swap {self.show(first)} with", second, exc) from exc

    def replace_file(self, src: str, dst: str) -> None:
        try:
            os.replace(src, dst)
        except OSError as exc:
            raise self._fail("cannot write", dst, exc) from exc

    def delete(self, path: str, recursive: bool) -> None:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                if recursive:
                    shutil.rmtree(path)
                else:
                    os.rmdir(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._fail("cannot delete", path, exc) from exc


# --------------------------------------------------------------------------- WebHDFS


class FileSink:
    type_name: ClassVar[str] = "file"
    spec_model: ClassVar[type[BaseModel]] = FileExportSpec

    def validate(self, spec: BaseModel, schema: list[SchemaField]) -> None:
        assert isinstance(spec, FileExportSpec)
        check_partitions(spec, schema)

    def secret_name(self, spec: BaseModel) -> str | None:
        return None

    def outbound_targets(
        self, spec: BaseModel, secret_values: Mapping[str, str]
    ) -> list[OutboundTarget]:
        return []

    def write(self, spec: BaseModel, batch: ExportBatch, ctx: ExportContext) -> ExportOutcome:
        assert isinstance(spec, FileExportSpec)
        view = data_root(ctx.data_roots, spec.root)
        view.make_base()
        relative = output_location(spec.path, batch, "spec.path")
        check_relative_path(relative, "spec.path")
        location = view.resolve(relative, "spec.path")
        store = LocalStore(view)

        def base_of(literal: str) -> str:
            return str(view.resolve(literal, "spec.path") if literal else store.root)

        return folder_export(store, str(location), base_of, spec.path, spec, batch, ctx)


register(FileSink())
