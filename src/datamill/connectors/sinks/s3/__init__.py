"""The ``s3`` export: its spec and its sink."""

from datamill.connectors.sinks.s3.sink import S3Sink
from datamill.connectors.sinks.s3.spec import S3ExportSpec

__all__ = ["S3ExportSpec", "S3Sink"]
