"""The ``http`` export: POST a batch's rows to an HTTP endpoint.

Formats (seed 004, 导出数据至 HTTP 地址):

* ``text`` (default, ``Content-Type: text/plain; charset=utf-8``): one line per row,
  ``Key1=Value1<TAB>Key2=Value2``. Null is the empty string, booleans are ``true`` /
  ``false``, dates are ISO 8601. A backslash, tab, newline or carriage return inside a
  value is written as ``\\\\``, ``\\t``, ``\\n``, ``\\r`` so a row always stays on one line.
* ``json`` (``Content-Type: application/json``): every request carries a JSON **array** of
  row objects (``[{"Key1": Value1, ...}, ...]``), at most ``batchSize`` rows each.

Every request of a batch carries ``X-Datamill-Batch`` (the batch time), ``X-Datamill-Part``
(``i/n``) and a deterministic ``Idempotency-Key`` (the same for the same part of the same
batch on every rerun). HTTP itself is not idempotent: rerunning an export sends the rows
again, and a receiver that wants exactly-once delivery must deduplicate on that key.

Requests go through the guarded outbound client
(:class:`datamill.connectors.outbound.http.OutboundHttp`).
"""

from datamill.connectors.sinks.http.sink import HttpSink
from datamill.connectors.sinks.http.spec import HttpSpec

__all__ = ["HttpSink", "HttpSpec"]
