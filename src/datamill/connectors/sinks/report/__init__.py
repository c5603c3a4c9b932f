"""The ``report`` sink: write a batch's rows into a table of a SQL database.

The database is named only by the secret: its value ``url`` is a SQLAlchemy URL, such as
``postgresql://user:password@host:5432/reports`` or ``sqlite:////srv/data/reports.db``;
the spec never carries a password. Supported: PostgreSQL (through psycopg 3) and SQLite
(a file inside one of the server's data roots). ``dbName`` is informational; it names the
database when the URL has none.

``columns`` maps table columns to job fields. A missing table is created with column types
from the job's schema (boolean, bigint, double, timestamp with time zone, text) plus a
``_datamill_batch`` column holding the batch time. A NaN float is written as NULL; nested
values as text. Save modes (seed 004, 导出数据至报表平台):

* ``overwrite`` (default): the table's whole content is replaced by the batch, in one
  transaction (DELETE then INSERT; readers see the old rows or the new ones).
* ``append``: the batch's rows are added; in the same transaction the rows of the same
  batch (``_datamill_batch``) are deleted first, so re-exporting a batch never duplicates.
  An existing table without ``_datamill_batch`` is refused in this mode.

Outbound safety: a network database's host is resolved once through
:func:`datamill.security.outbound.check_host` and libpq connects to that address
(``hostaddr``) while keeping the name for TLS. Only the URL query options ``sslmode``,
``connect_timeout`` and ``application_name`` are accepted (no ``host=``/``hostaddr=``
overrides, no Unix sockets). A SQLite path must resolve inside a data root.
"""

from datamill.connectors.sinks.report.sink import ReportSink
from datamill.connectors.sinks.report.spec import ReportSpec

__all__ = ["ReportSink", "ReportSpec"]
