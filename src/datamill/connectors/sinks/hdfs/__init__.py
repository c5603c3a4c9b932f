"""The ``hdfs`` export: its spec and its sink."""

from datamill.connectors.sinks.hdfs.sink import HdfsSink
from datamill.connectors.sinks.hdfs.spec import HdfsExportSpec

__all__ = ["HdfsExportSpec", "HdfsSink"]
