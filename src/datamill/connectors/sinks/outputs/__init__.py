"""What the file exports share: a job's result written as files to a data root (``file``),
an S3-compatible object store (``s3``) or HDFS over WebHDFS (``hdfs``).

Modules: :mod:`.formats` (what can be written, the options), :mod:`.encoding` (one output
file's bytes), :mod:`.plan` (the output files of a batch), :mod:`.layout` (locations,
names, markers, retention) and :mod:`.folders` (writing to a folder store). Each kind's
spec and sink are in its own package (:mod:`~datamill.connectors.sinks.file`,
:mod:`~datamill.connectors.sinks.s3`, :mod:`~datamill.connectors.sinks.hdfs`).

The three sinks share the options of the specification's "export to cloud storage" and
"export to HDFS" sections: ``format`` (json, csv, text, orc, parquet), ``delimiter`` and
``containsHeader`` (csv), ``compression`` (per format, see below), ``retention`` (days),
``partitionBy``, ``fileCount`` (1-1000), ``saveMode`` (overwrite, append, errorIfExists,
ignore) and ``retries`` (automatic retries of a transient failure, 0-10, default 3).

Layout
------
The *output location* of a batch is the export's ``path`` (file, hdfs) or ``keyPrefix``
(s3) with its magic variables (``$(year)`` ``$(mon)`` ``$(day)`` ``$(hour)`` ``$(min)``
``$(sec)``, any system or user variable) expanded at the **batch time**; a text without any
variable gets the batch time appended as ``yyyy-MM-dd-HH-mm-ss`` (``exports/sales-`` ->
``exports/sales-2026-11-02-08-00-00``). The location is a folder (a key prefix on S3)::

    <location>/_SUCCESS                            written last: the output is complete
    <location>/part-00000.csv.gz ... part-0000N     fileCount files, rows split evenly
    <location>/device=d0/part-00000.csv.gz         with partitionBy: hive-style folders

With ``partitionBy`` every partition folder gets up to ``fileCount`` files (never more
files than rows, at least one); the partition columns are left out of the files, as
Hive and Spark do. Values are percent-encoded in folder names; null and the empty string
are ``__HIVE_DEFAULT_PARTITION__``. A result without rows is one file with the header or
schema only (without partitionBy) or just ``_SUCCESS`` (with it).

Row formats: ``json`` is one JSON object per line (newline-delimited JSON), ``csv`` uses
``delimiter`` (1-4 characters; fields holding it, a quote or a line break are quoted with
``"``, quotes doubled; null is an empty field, the empty string ``""``) and a header line
unless ``containsHeader`` is false, ``text`` is the specification's
``Key1=Value1<TAB>Key2=Value2`` (backslash, tab, CR and LF in values escaped as ``\\\\``,
``\\t``, ``\\r``, ``\\n``; null is an empty value). Values are rendered as the result API
shows them: timestamps ISO 8601, booleans ``true``/``false``, nested values as JSON.
``orc`` and ``parquet`` keep the Arrow types.

Compression
-----------
:data:`.formats.CAPABILITIES` is the table of what this server can write; the specification's
matrix (:data:`.formats.SPEC_COMPRESSIONS`) limits what may be asked. A combination outside the
matrix is refused when the export is created (E18011 naming ``spec.compression``), and so
is one inside it that the libraries cannot write (LZO): nothing is ever written with a
codec other than the one asked for.

json, csv and text (extension ``.json`` ``.csv`` ``.txt`` plus the compression's):

* ``none``: plain UTF-8 text.
* ``gzip`` (``.gz``): one RFC 1952 member with mtime 0, deflate level 6 (zlib's and
  the ``gzip`` tool's default).
* ``bzip2`` (``.bz2``): the ``bz2`` module.
* ``deflate`` (``.deflate``): a *zlib stream* (RFC 1950: 2-byte header, deflate data,
  Adler-32), which is what Hadoop's DefaultCodec writes; not raw deflate. Level 6.
* ``lz4`` (``.lz4``): pyarrow ``Codec('lz4')``, the LZ4 *frame* format (magic
  ``04 22 4D 18``, what the ``lz4`` command line tool reads); not Hadoop's Lz4Codec
  block framing.
* ``snappy`` (``.snappy``): pyarrow ``Codec('snappy')``, the whole file as *one raw
  snappy block* (it starts with the uncompressed length as a varint); neither the snappy
  framing format nor Hadoop's SnappyCodec block stream.

orc (``.orc``, ``pyarrow.orc``): ``none``, ``snappy``, ``zlib``; ``lzo`` is refused
(pyarrow's ORC writer has no LZO codec).

parquet (``.parquet``, ``pyarrow.parquet`` or the engine's writer, see below): ``none``, ``snappy``,
``gzip``; ``lzo`` is refused (neither Parquet writer implements LZO).

lz4 and snappy need pyarrow built with those codecs, which :data:`CAPABILITIES` checks
when the module is imported.

How the row formats are written: the rows are cut into pieces of :data:`.encoding.ROWS_PER_CHUNK`;
each piece is rendered with Arrow compute kernels column by column (values that Arrow
renders differently from the rules above, such as floats outside [1e-4, 1e10), zoned
timestamps other than UTC and nested values, go through Python one by one) and, for
gzip and deflate, compressed on its own in a small thread pool, as ``pigz`` does: each
piece ends with a sync flush, so the pieces form one deflate stream, and the checksum
runs over them in order. The file is written piece by piece as the pieces are done.
The piece size is fixed, so the same result gives the same bytes.

A parquet output that is the whole result (``fileCount`` 1, no ``partitionBy``) is
copied from the job's result files by the engine's writer, which the service running the
export hands over (``ExportContext.copy_parquet``; DuckDB's works on all cores; the types
are the result's own, which the engine wrote); other parquet outputs, and all of them
when no writer is given, are written by ``pyarrow.parquet``.

Save modes and exactly-once
---------------------------
* ``overwrite`` (default): the batch's location is replaced by the new output. Writing a
  batch again (a retry, a rerun) gives the same files, never duplicates.
* ``append``: the new files are added beside what the location holds, named
  ``part-r<runId>-a<n>-00000...`` where ``n`` is the number of the append of that batch:
  the framework's rerun count when it hands one over (``ExportContext.extra
  ["rerun_count"]``), else one more than the appends of this run already committed (their
  ``_SUCCESS-r<runId>-a<n>`` markers). A retry of a failed attempt reuses ``n`` and
  replaces that attempt's leftovers, so **rerunning an append export (or rerunning the
  job's batch, which exports it again) is the only thing that adds the data again**.
* ``errorIfExists``: fails, not retried, when the location already holds files.
* ``ignore``: succeeds without writing when the location already holds files.

What a reader sees while a batch is written:

* **file** and **hdfs**: the output is written to a hidden sibling folder
  ``.<leaf>.tmp-<random>`` and renamed into place, so the location shows either the old
  or the whole new output, never part of it. A **file** overwrite swaps the new folder
  with the old one in one atomic step (Linux ``renameat2`` exchange), then deletes the
  old one: the location is never missing. On HDFS (which cannot swap folders), and on a
  file system that cannot either, overwrite moves the old folder aside, renames the new
  one in, then deletes the old one: for that instant the location is missing.
  ``append`` renames each new file into the existing location one by one (each file
  appears whole), then writes ``_SUCCESS`` and the append's marker.
* **s3**: every object is written directly to its final key; a PUT is atomic, so no
  object is ever seen half written, but the set of objects changes one by one. Overwrite
  first deletes ``_SUCCESS``, writes the new objects (replacing those of the same name),
  deletes the objects of the location that are not in the new set and writes
  ``_SUCCESS`` last: a reader that waits for ``_SUCCESS`` sees a complete output.
  Meanwhile a reader that does not wait may see old and new objects side by side.

A write that fails is cleaned up (its temporary folder deleted); one killed outright can
leave a hidden ``.<leaf>.tmp-<random>`` folder behind, which no reader, listing or
retention of this module takes for output.

Retention
---------
With ``retention`` > 0, after a successful write the files this export's naming
produces (``part-*`` and ``_SUCCESS*`` under a location that matches the ``path`` or
``keyPrefix`` pattern, inside partition folders) whose modification time is older than
``retention`` days are deleted, then folders left empty; the current batch's location is
never touched. Deleting is best effort: a failure is logged in the run, not an error.
A variable whose value holds ``/`` cannot be matched and its outputs are kept.

Errors
------
The destination's own error text is kept in the message. Connection refused, timeouts,
HTTP 5xx (and HDFS StandbyException/RetriableException/SafeModeException, S3 SlowDown)
are :class:`TransientSinkError` (the run machinery retries with backoff); anything else
is :class:`SinkError` (not retried).
"""
