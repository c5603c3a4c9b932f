"""File-like sources: local data roots, S3-compatible object storage and WebHDFS.

Each source type is a :class:`FileSource` in :data:`FILE_SOURCES`, chosen by the data
source's ``type``. A source lists the exact files a data source covers (paths or prefixes
with the ``fileFilter`` already expanded) and, for remote stores, supplies the fsspec
filesystem the engine registers to read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

from datamill.connectors.outbound.errors import first_line
from datamill.connectors.outbound.s3 import S3Guard, outbound_refusal, store_filesystem
from datamill.connectors.outbound.webhdfs import WebHdfs, WebHdfsFileSystem
from datamill.domain.datasources import FileSpec, FormatSpec, HdfsSpec, S3Spec
from datamill.errors import DatamillError, E
from datamill.security.outbound import check_host
from datamill.security.paths import RootView, data_root


@dataclass
class FileSet:
    """The files of one data source for one batch, and how to reach them."""

    urls: list[str]
    filesystems: list[Any] = field(default_factory=list)
    local_dirs: list[Path] = field(default_factory=list)

    def read_error(self) -> Exception | None:
        """Why reading these files through their filesystems failed, when one of them
        knows: the engine only reports that a read failed. An outbound refusal is a
        :class:`DatamillError` (E18118) to give the caller as it is."""
        for fs in self.filesystems:
            if isinstance(fs, WebHdfsFileSystem) and fs.read_error is not None:
                return fs.read_error
            refused = outbound_refusal(None, fs)
            if refused is not None:
                return refused
        return None


@dataclass
class SourceContext:
    """What a source may need beyond its spec: the administrator's settings and secrets;
    ``data_roots`` are what the data source's project sees of each data root."""

    data_roots: Mapping[str, RootView]
    outbound_allow: list[str]
    secret_values: Mapping[str, str] = field(default_factory=dict)
    file_filter: str = ""


class FileSource(Protocol):
    """Lists the files of a data source. Implementations are stateless."""

    type_name: ClassVar[str]

    def list_files(self, spec: FormatSpec, ctx: SourceContext) -> FileSet:
        """Every file the spec covers (``ctx.file_filter`` expanded), sorted, deduplicated."""
        ...


class LocalFiles:
    type_name: ClassVar[str] = "file"

    def list_files(self, spec: FormatSpec, ctx: SourceContext) -> FileSet:
        assert isinstance(spec, FileSpec)
        view = data_root(ctx.data_roots, spec.root)
        view.make_base()
        found: set[Path] = set()
        for i, path in enumerate(spec.paths):
            pattern = path + ctx.file_filter
            found.update(view.expand(pattern, f"spec.paths[{i}]"))
        return FileSet(urls=[str(p) for p in sorted(found)], local_dirs=[view.base])


class S3Files:
    type_name: ClassVar[str] = "s3"

    def filesystem(self, spec: S3Spec, ctx: SourceContext) -> Any:
        return store_filesystem(spec, ctx.secret_values, ctx.outbound_allow)

    def list_files(self, spec: FormatSpec, ctx: SourceContext) -> FileSet:
        assert isinstance(spec, S3Spec)
        fs = self.filesystem(spec, ctx)
        guard = getattr(fs, "outbound_guard", None)
        if isinstance(guard, S3Guard):
            guard.refused = None  # a refusal seen from now on is this batch's
        found: set[str] = set()
        for i, prefix in enumerate(spec.keyPrefixes):
            full = prefix + ctx.file_filter
            folder, _, rest = full.rpartition("/")
            base = f"{spec.bucket}/{folder}".rstrip("/")
            try:
                listed = fs.find(base, prefix=rest) if rest else fs.find(base)
            except FileNotFoundError:
                listed = []
            except Exception as exc:  # the store's own error, for the caller to read
                refused = outbound_refusal(exc)
                if refused is not None:
                    raise refused from None
                raise DatamillError(
                    E.DATA_UNREADABLE,
                    f"spec.keyPrefixes[{i}]: cannot list s3://{base}: {first_line(exc, 300)}",
                    field=f"spec.keyPrefixes[{i}]",
                ) from exc
            found.update(p for p in listed if p.startswith(f"{spec.bucket}/{full}"))
        return FileSet(urls=[f"s3://{p}" for p in sorted(found)], filesystems=[fs])


class HdfsFiles:
    type_name: ClassVar[str] = "hdfs"

    def list_files(self, spec: FormatSpec, ctx: SourceContext) -> FileSet:
        assert isinstance(spec, HdfsSpec)
        filesystems: dict[tuple[str, int], WebHdfsFileSystem] = {}
        found: set[str] = set()
        for i, raw in enumerate(spec.paths):
            field_name = f"spec.paths[{i}]"
            parts = urlsplit(raw + ctx.file_filter)
            host, port = parts.hostname or "", parts.port or 9870
            check_host(host, port, ctx.outbound_allow, field_name)
            fs = filesystems.get((host, port))
            if fs is None:
                client = WebHdfs(
                    f"[{host}]" if ":" in host else host,
                    port,
                    spec.useHttps,
                    spec.user or ctx.secret_values.get("user"),
                    ctx.outbound_allow,
                    field_name,
                )
                fs = filesystems[(host, port)] = WebHdfsFileSystem(client)
            fs.client.field = field_name
            path = parts.path or "/"
            try:
                listed = _hdfs_expand(fs, path)
            except DatamillError:
                raise
            except Exception as exc:
                raise DatamillError(
                    E.DATA_UNREADABLE,
                    f"{field_name}: cannot list {raw}: {first_line(exc, 300)}",
                    field=field_name,
                ) from exc
            found.update(f"webhdfs://{p if p.startswith('/') else '/' + p}" for p in listed)
        if len(filesystems) > 1:
            raise DatamillError(
                E.INVALID_SPEC,
                "spec.paths: all paths of one data source must be on the same namenode",
                field="spec.paths",
            )
        for fs in filesystems.values():  # reads may be of any path
            fs.client.field = "spec.paths" if len(spec.paths) > 1 else "spec.paths[0]"
        return FileSet(urls=sorted(found), filesystems=list(filesystems.values()))


def _hdfs_expand(fs: WebHdfsFileSystem, path: str) -> list[str]:
    if any(c in path for c in "*?["):
        return [p for p in fs.glob(path) if fs.isfile(p)]
    if not fs.exists(path):
        return []
    if fs.isdir(path):
        return list(fs.find(path))
    return [path]


FILE_SOURCES: dict[str, FileSource] = {
    source.type_name: source for source in (LocalFiles(), S3Files(), HdfsFiles())
}
