"""Stream connectors: the sources a streaming pipeline reads and the sinks it writes.

Importing this package registers every connector in the registries of
:mod:`datamill.connectors.streams.base`: sources ``mqtt`` and ``kafka``; sinks ``mqtt``,
``kafka`` and ``notification``; the transform ``function``.
"""

from datamill.connectors.streams import function, kafka, mqtt, notify
from datamill.connectors.streams.base import SINKS, SOURCES, TRANSFORMS

__all__ = ["SINKS", "SOURCES", "TRANSFORMS", "function", "kafka", "mqtt", "notify"]
