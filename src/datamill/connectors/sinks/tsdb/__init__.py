"""The ``tsdb`` sink: write a batch's rows as points through the InfluxDB 1.x line protocol.

Each row becomes one point of measurement ``series`` in database ``destRepoName``, posted
to ``<endpoint>/write?db=…&precision=…`` (InfluxDB 1.x; VictoriaMetrics accepts the same
``/write``). ``tags`` and ``fields`` map tag / field keys to job fields; ``timestamp``
names the job field holding the point's time: a date field, an epoch in milliseconds
(long or float) or an ISO 8601 string. ``precision`` (ns, us, ms, s; default ms) is the
unit the timestamps are sent in.

Writing is idempotent on InfluxDB: a point is identified by measurement, tag set and
timestamp, so re-exporting a batch overwrites its points. VictoriaMetrics (numeric fields
become metrics ``<series>_<field>``, tags and ``db`` labels; string fields are dropped)
keeps a repeated sample once when started with ``-dedup.minScrapeInterval``.

Values: null tags and empty tag values are left out (InfluxDB has no empty tags); null
fields are left out. Booleans are written as booleans, integers with the ``i`` suffix,
floats as floats, dates as ISO 8601 strings, everything else as strings. Measurement, tag
keys, tag values and field keys are escaped (commas, spaces, equals signs, backslashes);
string field values escape double quotes and backslashes.

A row is *invalid* when its timestamp is null or unreadable, when it has no non-null
field, when a float is NaN or infinite or when a tag holds a line break; the server also
drops points it cannot store (a field whose type conflicts with earlier points). With
``omitInvalid`` such rows are skipped and counted; without it the export fails, before
anything is sent for rows checked locally.

Credentials come only from the secret (``username`` and ``password``, basic auth).
"""

from datamill.connectors.sinks.tsdb.sink import TsdbSink
from datamill.connectors.sinks.tsdb.spec import TsdbSpec

__all__ = ["TsdbSink", "TsdbSpec"]
