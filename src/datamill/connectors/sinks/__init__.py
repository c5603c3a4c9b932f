"""Export sinks: one package per kind of destination, holding its spec (with what it can
write, declared as data) and its sink, registered once in :data:`SINKS` by importing it.

The file kinds (``file``, ``s3``, ``hdfs``) share :mod:`.outputs` (formats, encoding,
layout, retention); the network kinds (``http``, ``logdb``, ``tsdb``, ``report``) share
:mod:`.common`. Every connection goes through :mod:`datamill.connectors.outbound`.
"""

from datamill.connectors.sinks import file, hdfs, http, logdb, report, s3, tsdb
from datamill.connectors.sinks.base import SINKS, Sink

__all__ = ["SINKS", "Sink", "file", "hdfs", "http", "logdb", "report", "s3", "tsdb"]
