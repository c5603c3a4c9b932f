"""The ``hdfs`` sink: outputs written to an HDFS folder over WebHDFS."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import BaseModel

from datamill.connectors.outbound.webhdfs import WebHdfs
from datamill.connectors.sinks.base import ExportBatch, ExportContext, ExportOutcome, register
from datamill.connectors.sinks.hdfs.spec import HdfsExportSpec
from datamill.connectors.sinks.outputs.folders import folder_export
from datamill.connectors.sinks.outputs.formats import check_partitions
from datamill.connectors.sinks.outputs.layout import TEMP_NAME, output_location
from datamill.connectors.sinks.outputs.plan import Writer, bytes_of
from datamill.domain.datasources import SchemaField
from datamill.domain.urls import url_target
from datamill.errors import DatamillError, E
from datamill.security.outbound import OutboundTarget


class HdfsFolders(WebHdfs):
    """An HDFS folder as the outputs' folder store: the toolkit's WebHDFS client that
    hides the temporary folders of writes in progress and writes output files."""

    def listdir(self, path: str, hidden: bool = False) -> list[tuple[str, bool, float]]:
        found = super().listdir(path)
        return found if hidden else [e for e in found if not TEMP_NAME.fullmatch(e[0])]

    def exchange(self, first: str, second: str) -> bool:
        """HDFS cannot swap two folders (its RENAME replaces only a file or an empty
        folder), so an overwrite is published with two renames."""
        return False

    def write(self, path: str, writer: Writer) -> int:
        data = bytes_of(writer)
        self.put(path, data)
        return len(data)


def namenode(spec: HdfsExportSpec) -> tuple[str, int]:
    """The NameNode's host and WebHDFS port in ``spec.path`` (default port 9870)."""
    host, port, _ = url_target(spec.path, "spec.path", 9870)
    return host, port


class HdfsSink:
    type_name: ClassVar[str] = "hdfs"
    spec_model: ClassVar[type[BaseModel]] = HdfsExportSpec

    def validate(self, spec: BaseModel, schema: list[SchemaField]) -> None:
        assert isinstance(spec, HdfsExportSpec)
        check_partitions(spec, schema)

    def secret_name(self, spec: BaseModel) -> str | None:
        return None

    def outbound_targets(
        self, spec: BaseModel, secret_values: Mapping[str, str]
    ) -> list[OutboundTarget]:
        assert isinstance(spec, HdfsExportSpec)
        return [(*namenode(spec), "spec.path")]

    def write(self, spec: BaseModel, batch: ExportBatch, ctx: ExportContext) -> ExportOutcome:
        assert isinstance(spec, HdfsExportSpec)
        host, port = namenode(spec)
        shown_host = f"[{host}]" if ":" in host else host
        template = urlsplit(spec.path).path or "/"
        location = output_location(template, batch, "spec.path")
        if not location.startswith("/") or ".." in location.split("/") or "\\" in location:
            raise DatamillError(
                E.PATH_REFUSED,
                f"spec.path: '{location[:200]}' is not a usable absolute HDFS path",
                field="spec.path",
            )
        store = HdfsFolders(shown_host, port, spec.useHttps, spec.user, ctx.outbound_allow)
        return folder_export(
            store, location, lambda literal: "/" + literal, template.lstrip("/"), spec, batch, ctx
        )


register(HdfsSink())
