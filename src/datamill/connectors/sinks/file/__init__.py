"""The ``file`` export: its spec and its sink."""

from datamill.connectors.sinks.file.sink import FileSink
from datamill.connectors.sinks.file.spec import FileExportSpec

__all__ = ["FileExportSpec", "FileSink"]
