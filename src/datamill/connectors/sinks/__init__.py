"""Export sinks, one module per destination kind; importing this package registers them."""

from datamill.connectors.sinks import files, http, logsearch, report, tsdb
from datamill.connectors.sinks.base import SINKS, Sink

__all__ = ["SINKS", "Sink", "files", "http", "logsearch", "report", "tsdb"]
