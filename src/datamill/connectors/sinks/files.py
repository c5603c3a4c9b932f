"""File exports: a job's result written as files to a data root (``file``), an S3-compatible
object store (``s3``) or HDFS over WebHDFS (``hdfs``).

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
:data:`CAPABILITIES` is the table of what this server can write; the specification's
matrix (:data:`SPEC_COMPRESSIONS`) limits what may be asked. A combination outside the
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

parquet (``.parquet``, ``pyarrow.parquet`` or DuckDB, see below): ``none``, ``snappy``,
``gzip``; ``lzo`` is refused (neither Parquet writer implements LZO).

lz4 and snappy need pyarrow built with those codecs, which :data:`CAPABILITIES` checks
when the module is imported.

How the row formats are written: the rows are cut into pieces of :data:`ROWS_PER_CHUNK`;
each piece is rendered with Arrow compute kernels column by column (values that Arrow
renders differently from the rules above, such as floats outside [1e-4, 1e10), zoned
timestamps other than UTC and nested values, go through Python one by one) and, for
gzip and deflate, compressed on its own in a small thread pool, as ``pigz`` does: each
piece ends with a sync flush, so the pieces form one deflate stream, and the checksum
runs over them in order. The file is written piece by piece as the pieces are done.
The piece size is fixed, so the same result gives the same bytes.

A parquet output that is the whole result (``fileCount`` 1, no ``partitionBy``) is
copied from the job's result files by DuckDB (its writer works on all cores; the types
are the result's own, which DuckDB wrote); other parquet outputs are written by
``pyarrow.parquet``.

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
  or the whole new output, never part of it (overwrite moves the old folder aside, renames
  the new one in, then deletes the old one: for that instant the location is missing).
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

from __future__ import annotations

import bz2
import contextlib
import functools
import json
import math
import os
import re
import secrets
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar, Protocol
from urllib.parse import quote, urlsplit

import pyarrow as pa
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from datamill.connectors.s3 import s3_filesystem
from datamill.connectors.sinks.base import (
    ExportBatch,
    ExportContext,
    ExportOutcome,
    SinkError,
    TransientSinkError,
    register,
)
from datamill.domain.common import FieldName, Model
from datamill.domain.datasources import Bucket, SchemaField, SecretRef
from datamill.domain.variables import REFERENCE, java_format, referenced_names
from datamill.errors import DatamillError, E
from datamill.security.outbound import check_host
from datamill.security.paths import check_relative_path, resolve_inside

__all__ = [
    "CAPABILITIES",
    "FORMATS",
    "SAVE_MODES",
    "SPEC_COMPRESSIONS",
    "Capability",
    "FileExportSpec",
    "FileSink",
    "HdfsExportSpec",
    "HdfsSink",
    "S3ExportSpec",
    "S3Sink",
    "encode_file",
    "write_file",
]

# --------------------------------------------------------------------------- capabilities

FORMATS = ("json", "csv", "text", "orc", "parquet")
ROW_FORMATS = ("json", "csv", "text")
SAVE_MODES = ("overwrite", "append", "errorIfExists", "ignore")
_ROW_COMPRESSIONS = ("none", "bzip2", "gzip", "lz4", "snappy", "deflate")
SPEC_COMPRESSIONS: dict[str, tuple[str, ...]] = {
    "json": _ROW_COMPRESSIONS,
    "csv": _ROW_COMPRESSIONS,
    "text": _ROW_COMPRESSIONS,
    "orc": ("none", "snappy", "zlib", "lzo"),
    "parquet": ("none", "snappy", "gzip", "lzo"),
}
"""The specification's matrix: which compressions each format may ask for."""

_FORMAT_EXTENSIONS = {
    "json": ".json",
    "csv": ".csv",
    "text": ".txt",
    "orc": ".orc",
    "parquet": ".parquet",
}
_COMPRESSION_EXTENSIONS = {
    "none": "",
    "gzip": ".gz",
    "bzip2": ".bz2",
    "deflate": ".deflate",
    "lz4": ".lz4",
    "snappy": ".snappy",
}


@dataclass(frozen=True)
class Capability:
    """Whether this server can write ``format`` with ``compression``, and how."""

    format: str
    compression: str
    writable: bool
    writer: str
    extension: str
    reason: str = ""


def _arrow_codec(name: str) -> bool:
    try:
        return bool(pa.Codec.is_available(name))
    except (ValueError, pa.ArrowException):
        return False


def _capabilities() -> dict[tuple[str, str], Capability]:
    table: dict[tuple[str, str], Capability] = {}
    row_writers = {
        "none": ("Python", True, ""),
        "gzip": ("zlib level 6 in parallel pieces: one RFC 1952 member, mtime 0", True, ""),
        "bzip2": ("bz2 module", True, ""),
        "deflate": ("zlib level 6: zlib stream (RFC 1950), as Hadoop's DefaultCodec", True, ""),
        "lz4": (
            "pyarrow Codec('lz4'): LZ4 frame format",
            _arrow_codec("lz4"),
            "this pyarrow build has no lz4 codec",
        ),
        "snappy": (
            "pyarrow Codec('snappy'): one raw snappy block",
            _arrow_codec("snappy"),
            "this pyarrow build has no snappy codec",
        ),
    }
    for fmt in ROW_FORMATS:
        for compression, (writer, ok, why) in row_writers.items():
            ext = _FORMAT_EXTENSIONS[fmt] + _COMPRESSION_EXTENSIONS[compression]
            table[fmt, compression] = Capability(
                fmt, compression, ok, writer, ext, "" if ok else why
            )
    columnar = {
        ("orc", "none"): ("pyarrow.orc UNCOMPRESSED", True, ""),
        ("orc", "snappy"): ("pyarrow.orc SNAPPY", _arrow_codec("snappy"), "no snappy codec"),
        ("orc", "zlib"): ("pyarrow.orc ZLIB", True, ""),
        ("orc", "lzo"): ("", False, "pyarrow's ORC writer has no LZO codec"),
        ("parquet", "none"): ("DuckDB or pyarrow.parquet UNCOMPRESSED", True, ""),
        ("parquet", "snappy"): (
            "DuckDB or pyarrow.parquet SNAPPY",
            _arrow_codec("snappy"),
            "no snappy codec",
        ),
        ("parquet", "gzip"): (
            "DuckDB or pyarrow.parquet GZIP",
            _arrow_codec("gzip"),
            "no gzip codec",
        ),
        ("parquet", "lzo"): ("", False, "Arrow's Parquet writer does not implement LZO"),
    }
    for (fmt, compression), (writer, ok, why) in columnar.items():
        table[fmt, compression] = Capability(
            fmt, compression, ok, writer, _FORMAT_EXTENSIONS[fmt], "" if ok else why
        )
    return table


CAPABILITIES: dict[tuple[str, str], Capability] = _capabilities()
"""Every (format, compression) pair of the specification's matrix and whether it can be
written here; see the module docstring for the table."""

# --------------------------------------------------------------------------- spec models

_PATH_FORBIDDEN = set("\\<>\x00")


def _path_error(error: E, message: str) -> DatamillError:
    """A ``spec.path`` error raised as such, not through pydantic.

    ``validation_failure`` reads a location that starts with ``path`` as a URL path
    parameter ("spec (path parameter): ..."), so errors of the ``path`` field bypass it.
    """
    return DatamillError(error, f"spec.path: {message}", field="spec.path")


def _check_file_path(value: Any) -> str:
    if not isinstance(value, str):
        raise _path_error(E.INVALID_PARAMETER, "must be a string")
    if len(value) > 128 or _PATH_FORBIDDEN & set(value):
        raise _path_error(
            E.INVALID_PARAMETER, f"invalid path '{value[:140]}': 0-128 characters without \\ < >"
        )
    if value.startswith(("/", "~")):
        raise _path_error(
            E.PATH_REFUSED,
            f"invalid path '{value}': must be relative to the data root (no absolute paths)",
        )
    if ".." in PurePosixPath(value).parts:
        raise _path_error(E.PATH_REFUSED, f"'..' is not allowed in paths ('{value}')")
    return value


def _check_key_prefix(value: str) -> str:
    if len(value) > 128 or (_PATH_FORBIDDEN | {":"}) & set(value):
        raise PydanticCustomError(
            "E18011",
            "invalid key prefix '{value}': 0-128 characters without : \\ < >",
            {"value": value[:140]},
        )
    if value.startswith("/") or ".." in value.split("/"):
        raise PydanticCustomError(
            "E18116", "invalid key prefix '{value}': no leading '/' and no '..'", {"value": value}
        )
    return value


_HDFS_PATH_RULE = re.compile(
    r"^(hdfs|webhdfs)://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?(/[^?#]*)?$"
)


def _check_hdfs_path(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _path_error(E.INVALID_PARAMETER, "required: hdfs://namenode:port/path")
    if len(value) > 128 or _PATH_FORBIDDEN & set(value) or not _HDFS_PATH_RULE.fullmatch(value):
        raise _path_error(
            E.INVALID_PARAMETER,
            f"invalid HDFS path '{value[:200]}': use hdfs://namenode:port/path (the WebHDFS "
            "HTTP port), at most 128 characters, without \\ < >",
        )
    if ".." in value.split("/"):
        raise _path_error(E.PATH_REFUSED, f"'..' is not allowed in HDFS paths ('{value}')")
    return value


ExportPath = Annotated[str, BeforeValidator(_check_file_path)]
ExportKeyPrefix = Annotated[str, AfterValidator(_check_key_prefix)]
ExportHdfsPath = Annotated[str, BeforeValidator(_check_hdfs_path)]


class FileExportOptions(Model):
    """The options every file export shares (the specification's export fields)."""

    format: str = Field(description="json, csv, text, orc or parquet")
    delimiter: str | None = Field(
        None, min_length=1, max_length=4, validate_default=True, description="csv only; required"
    )
    containsHeader: bool | None = Field(
        None, validate_default=True, description="csv only: write a header line (default true)"
    )
    compression: str = Field(
        "none",
        validate_default=True,
        description="json/csv/text: none, bzip2, gzip, lz4, snappy, deflate; "
        "orc: none, snappy, zlib; parquet: none, snappy, gzip (lzo cannot be written)",
    )
    retention: int | None = Field(
        None,
        ge=-(2**31),
        le=36500,
        description="days to keep outputs; none or <= 0 keeps them for ever",
    )
    partitionBy: list[FieldName] = Field(default_factory=list, max_length=32)
    fileCount: int = Field(1, ge=1, le=1000, description="files per output (or partition)")
    saveMode: str = Field(
        "overwrite", validate_default=True, description="overwrite, append, errorIfExists, ignore"
    )
    retries: int = Field(3, ge=0, le=10, description="automatic retries of transient failures")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMATS:
            raise PydanticCustomError(
                "E18011",
                "unknown format '{value}': use one of json, csv, text, orc, parquet",
                {"value": value[:32]},
            )
        return value

    @field_validator("delimiter")
    @classmethod
    def _delimiter_for_csv(cls, value: str | None, info: ValidationInfo) -> str | None:
        fmt = info.data.get("format")
        if fmt == "csv" and value is None:
            raise PydanticCustomError("E18011", "delimiter is required when format is csv")
        if fmt is not None and fmt != "csv" and value is not None:
            raise PydanticCustomError("E18011", "delimiter applies only when format is csv")
        if value is not None and set(value) & set('"\r\n'):
            raise PydanticCustomError(
                "E18011", "delimiter may not contain a double quote or a line break"
            )
        return value

    @field_validator("containsHeader")
    @classmethod
    def _header_for_csv(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        fmt = info.data.get("format")
        if fmt is not None and fmt != "csv" and value is not None:
            raise PydanticCustomError("E18011", "containsHeader applies only when format is csv")
        return value

    @field_validator("compression")
    @classmethod
    def _compression_for_format(cls, value: str, info: ValidationInfo) -> str:
        fmt = info.data.get("format")
        if fmt is None:
            return value
        allowed = SPEC_COMPRESSIONS[fmt]
        writable = [c for c in allowed if CAPABILITIES[fmt, c].writable]
        if value not in allowed:
            raise PydanticCustomError(
                "E18011",
                "compression '{value}' is not allowed for format {format}: use one of {allowed}",
                {"value": value[:32], "format": fmt, "allowed": ", ".join(writable)},
            )
        capability = CAPABILITIES[fmt, value]
        if not capability.writable:
            raise PydanticCustomError(
                "E18011",
                "{value} is in the specification but cannot be written by this server "
                "({reason}); for format {format} use one of {allowed}",
                {
                    "value": value,
                    "reason": capability.reason,
                    "format": fmt,
                    "allowed": ", ".join(writable),
                },
            )
        return value

    @field_validator("saveMode")
    @classmethod
    def _known_save_mode(cls, value: str) -> str:
        if value not in SAVE_MODES:
            raise PydanticCustomError(
                "E18011",
                "unknown saveMode '{value}': use one of overwrite, append, errorIfExists, ignore",
                {"value": value[:32]},
            )
        return value

    @property
    def capability(self) -> Capability:
        return CAPABILITIES[self.format, self.compression]

    @property
    def header(self) -> bool:
        return self.containsHeader is not False


class FileExportSpec(FileExportOptions):
    """``file``: a folder under a data root the administrator allows."""

    root: str = Field("default", pattern=r"^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$")
    path: ExportPath = Field(
        "", description="relative to the data root; magic variables allowed; '' = top level"
    )


class S3ExportSpec(FileExportOptions):
    """``s3``: objects in an S3-compatible store; credentials come from a stored secret."""

    bucket: Bucket
    keyPrefix: ExportKeyPrefix = Field("", description="magic variables allowed")
    endpoint: str | None = Field(
        None, max_length=512, description="endpoint URL, e.g. http://minio:9000; none = AWS"
    )
    secret: SecretRef | None = Field(
        None, description="secret with accessKeyId and secretAccessKey; none = anonymous"
    )
    regionName: str | None = Field(None, max_length=64)

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/?#@]+/?", value):
            raise PydanticCustomError(
                "E18011",
                "endpoint must look like http(s)://host[:port], got '{value}'",
                {"value": value[:200]},
            )
        return value


class HdfsExportSpec(FileExportOptions):
    """``hdfs``: a folder in HDFS written over WebHDFS (the port is the HTTP port)."""

    path: ExportHdfsPath = Field(
        "", validate_default=True, description="hdfs://namenode:port/folder; magic variables"
    )
    user: str | None = Field(None, pattern=r"^[a-zA-Z_][a-zA-Z0-9_.-]{0,63}$")
    useHttps: bool = False


def _check_schema(spec: FileExportOptions, schema: list[SchemaField]) -> None:
    keys = [f.key for f in schema]
    seen: set[str] = set()
    for i, name in enumerate(spec.partitionBy):
        where = f"spec.partitionBy[{i}]"
        if name not in keys:
            raise DatamillError(
                E.FIELD_NOT_FOUND,
                f"{where}: field '{name}' is not in the job's output "
                f"(fields: {', '.join(keys)[:300]})",
                field=where,
            )
        if name in seen:
            raise DatamillError(
                E.INVALID_PARAMETER, f"{where}: field '{name}' is listed twice", field=where
            )
        seen.add(name)
    if keys and seen >= set(keys):
        raise DatamillError(
            E.INVALID_PARAMETER,
            "spec.partitionBy: at least one field must stay in the files; "
            "do not partition by every field",
            field="spec.partitionBy",
        )


# --------------------------------------------------------------------------- encoding


def _scalar_text(value: Any) -> str | None:
    """A value as the row formats write it (None for null)."""
    from datamill.engines.duckdb import json_safe

    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    safe = json_safe(value)
    if isinstance(safe, dict | list):
        return json.dumps(safe, ensure_ascii=False, separators=(",", ":"))
    return str(safe)


def _csv_field(text: str | None, delimiter: str) -> str:
    if text is None:
        return ""
    if text == "" or delimiter in text or any(c in text for c in '"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


_TEXT_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


ROWS_PER_CHUNK = 65_536
"""Rows encoded (and compressed) as one piece of a row-format file. Pieces are encoded in
parallel threads; the piece size is fixed, so the same table always gives the same bytes."""
GZIP_LEVEL = 6
"""zlib's (and the ``gzip`` tool's) default: level 9 costs three times the CPU for 3 %."""
_FAST_TIMESTAMP_ZONES = {None, "UTC", "Etc/UTC", "+00:00", "Z"}


def _python_texts(column: pa.Array) -> pa.Array:
    return pa.array([_scalar_text(v) for v in column.to_pylist()], pa.string())


def _float_texts(column: pa.Array) -> pa.Array:
    """Floats as ``repr`` writes them.

    Arrow's shortest text is Python's for finite values in [1e-4, 1e10) and zero, except
    that whole numbers lack the ``.0`` (Arrow writes an exponent from 1e10 up, Python from
    1e16, and below 1e-4 both do, differently); other finite values get Python's text.
    """
    import pyarrow.compute as pc

    values = column.cast(pa.float64())
    text = pc.cast(values, pa.string())
    size = pc.abs(values)
    fast = pc.or_(pc.and_(pc.greater_equal(size, 1e-4), pc.less(size, 1e10)), pc.equal(size, 0.0))
    whole = pc.and_(fast, pc.equal(pc.floor(values), values))
    if pc.any(whole).as_py():
        text = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
    odd = pc.and_(pc.invert(fast), pc.is_finite(values))
    if pc.any(odd).as_py():
        picked = pc.filter(values, odd).to_pylist()
        text = pc.replace_with_mask(text, odd, pa.array([repr(v) for v in picked], pa.string()))
    return text


def _timestamp_texts(column: pa.Array) -> pa.Array:
    """ISO 8601 as ``datetime.isoformat``: fraction only when not zero, ``+00:00`` for UTC."""
    import pyarrow.compute as pc

    kind = column.type
    # Arrow's cast writes "2026-01-01 00:00:40.000000" (and "Z" with a zone): much faster
    # than strftime, and only these three details differ from isoformat
    text = pc.cast(column.cast(pa.timestamp("us")), pa.string())
    text = pc.replace_substring(text, " ", "T", max_replacements=1)
    zero = pc.ends_with(text, ".000000")
    if pc.any(zero).as_py():
        text = pc.if_else(zero, pc.utf8_slice_codeunits(text, 0, -7), text)
    if kind.tz is not None:
        text = pc.binary_join_element_wise(text, "+00:00", "")
    return text


def _plain_texts(kind: pa.DataType) -> bool:
    """Whether the texts of this type are never empty and hold no quote or line break."""
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_date32(kind)
        or pa.types.is_timestamp(kind)
    )


def _texts(column: pa.Array) -> pa.Array:
    """A column as the row formats write its values (null stays null)."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _texts(column.dictionary_decode())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column.cast(pa.string())
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_date32(kind):
        return column.cast(pa.string())
    if pa.types.is_float32(kind) or pa.types.is_float64(kind):
        return _float_texts(column)
    if pa.types.is_timestamp(kind) and kind.unit != "ns" and kind.tz in _FAST_TIMESTAMP_ZONES:
        return _timestamp_texts(column)
    return _python_texts(column)


def _csv_quoted(text: pa.Array, delimiter: str, plain: bool) -> pa.Array:
    """Fields holding the delimiter, a quote or a line break, and empty strings, quoted;
    null becomes an empty field. ``plain``: the texts can only hold the delimiter."""
    import pyarrow.compute as pc

    needs = pc.match_substring(text, delimiter)
    if not plain:
        needs = pc.or_(needs, pc.equal(text, ""))
        for needle in ('"', "\r", "\n"):
            needs = pc.or_(needs, pc.match_substring(text, needle))
    if pc.any(needs).as_py():
        quoted = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
        text = pc.if_else(needs, quoted, text)
    return pc.fill_null(text, "")


def _text_pairs(name: str, text: pa.Array) -> pa.Array:
    import pyarrow.compute as pc

    value = pc.fill_null(text, "")
    for char, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        value = pc.replace_substring(value, char, escaped)
    return pc.binary_join_element_wise(name.translate(_TEXT_ESCAPES) + "=", value, "")


def _row_lines(table: pa.Table, spec: FileExportOptions, first: bool) -> bytes:
    """The lines of ``table`` in a row format (with the csv header when ``first``)."""
    from datamill.engines.duckdb import json_safe

    names = table.column_names
    head = ""
    if spec.format == "json":
        lines = [
            json.dumps(
                {k: json_safe(v) for k, v in row.items()}, ensure_ascii=False, separators=(",", ":")
            )
            + "\n"
            for row in table.to_pylist()
        ]
        return "".join(lines).encode("utf-8")
    if table.num_rows == 0:
        columns: list[pa.Array] = []
    elif spec.format == "csv":
        delimiter = spec.delimiter or ","
        columns = [
            _csv_quoted(_texts(column), delimiter, _plain_texts(column.type))
            for column in (table.column(n).combine_chunks() for n in names)
        ]
    else:  # text
        columns = [_text_pairs(n, _texts(table.column(n).combine_chunks())) for n in names]
    if spec.format == "csv" and spec.header and first:
        delimiter = spec.delimiter or ","
        head = delimiter.join(_csv_field(n, delimiter) for n in names) + "\n"
    if not columns:
        return head.encode("utf-8")
    import pyarrow.compute as pc

    separator = (spec.delimiter or ",") if spec.format == "csv" else "\t"
    joined = columns[0]
    if len(columns) > 1:
        joined = pc.binary_join_element_wise(*columns, separator)
    lines = pc.binary_join_element_wise(joined, "\n", "")
    _, offsets, body = lines.buffers()
    positions = memoryview(offsets).cast("i")  # int32 offsets of a string array
    start, stop = positions[lines.offset], positions[lines.offset + len(lines)]
    data = memoryview(body)[start:stop] if body is not None else memoryview(b"")
    return b"".join([head.encode("utf-8"), data])


def _compress(data: bytes, compression: str) -> bytes:
    """Whole-file codecs (none, gzip and deflate are streamed by :func:`_write_rows`)."""
    if compression == "bzip2":
        return bz2.compress(data)
    if compression in ("lz4", "snappy"):
        return bytes(pa.Codec(compression).compress(data, asbytes=True))
    raise AssertionError(compression)  # pragma: no cover - refused by the spec model


class _Deflater:
    """gzip (RFC 1952) or a zlib stream (RFC 1950) built from pieces compressed apart.

    Each piece is raw deflate data ending in a sync flush (the last one in a final block),
    so the pieces concatenate into one valid deflate stream, and the checksum (CRC-32 or
    Adler-32) runs over the pieces in order. This is how ``pigz`` compresses in parallel;
    the result is one ordinary member that any reader takes.
    """

    def __init__(self, compression: str) -> None:
        self.gzip = compression == "gzip"
        self.check = zlib.crc32(b"") if self.gzip else zlib.adler32(b"")
        self.size = 0

    def header(self) -> bytes:
        # gzip: no name, mtime 0, OS unknown (as gzip.compress(mtime=0)); zlib: level 6
        return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" if self.gzip else b"\x78\x9c"

    @staticmethod
    def piece(data: bytes, last: bool) -> bytes:
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)
        out = compressor.compress(data)
        return out + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)

    def add(self, data: bytes) -> None:
        if self.gzip:
            self.check = zlib.crc32(data, self.check)
        else:
            self.check = zlib.adler32(data, self.check)
        self.size += len(data)

    def trailer(self) -> bytes:
        if self.gzip:
            return struct.pack("<II", self.check, self.size & 0xFFFFFFFF)
        return struct.pack(">I", self.check)


def _pieces(table: pa.Table) -> list[pa.Table]:
    total = table.num_rows
    if total == 0:
        return [table]
    return [table.slice(i, ROWS_PER_CHUNK) for i in range(0, total, ROWS_PER_CHUNK)]


def _write_rows(table: pa.Table, spec: FileExportOptions, write: Callable[[Any], None]) -> None:
    """Encode ``table`` piece by piece in a few threads (Arrow's kernels and zlib release
    the GIL), passing the file's bytes to ``write`` in order."""
    from concurrent.futures import Future, ThreadPoolExecutor

    pieces = _pieces(table)
    deflater = _Deflater(spec.compression) if spec.compression in ("gzip", "deflate") else None
    whole: list[bytes] = []

    def encode(index: int) -> tuple[bytes, bytes]:
        raw = _row_lines(pieces[index], spec, index == 0)
        if deflater is None:
            return raw, b""
        return raw, deflater.piece(raw, index == len(pieces) - 1)

    workers = max(1, min(4, os.cpu_count() or 1, len(pieces)))
    with ThreadPoolExecutor(workers, thread_name_prefix="export-encode") as pool:
        pending: list[Future[tuple[bytes, bytes]]] = []
        ahead = 2 * workers
        if deflater is not None:
            write(deflater.header())
        for index in range(len(pieces)):
            pending.append(pool.submit(encode, index))
            while pending and (len(pending) > ahead or index == len(pieces) - 1):
                raw, packed = pending.pop(0).result()
                if deflater is not None:
                    deflater.add(raw)
                    write(packed)
                elif spec.compression == "none":
                    write(raw)
                else:
                    whole.append(raw)
    if deflater is not None:
        write(deflater.trailer())
    elif spec.compression != "none":
        write(_compress(b"".join(whole), spec.compression))


def _columnar_table(table: pa.Table) -> pa.Table:
    """ORC cannot store Arrow's null type: such columns (all null) become strings."""
    for i, column in enumerate(table.columns):
        if pa.types.is_null(column.type):
            table = table.set_column(i, table.field(i).name, column.cast(pa.string()))
    return table


def write_file(table: pa.Table, spec: FileExportOptions, sink: Any) -> None:
    """Write ``table`` in the spec's format and compression to ``sink`` (a writable binary
    file: a Python file object or a ``pyarrow.NativeFile``)."""
    if spec.format in ROW_FORMATS:
        _write_rows(table, spec, sink.write)
        return
    try:
        if spec.format == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, sink, compression=spec.compression.upper())
        else:
            import pyarrow.orc as orc

            kind = "UNCOMPRESSED" if spec.compression == "none" else spec.compression.upper()
            orc.write_table(_columnar_table(table), sink, compression=kind)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise SinkError(f"cannot write the result as {spec.format}: {exc}") from exc


def encode_file(table: pa.Table, spec: FileExportOptions) -> bytes:
    """One output file's bytes: ``table`` in the spec's format and compression."""
    sink = pa.BufferOutputStream()
    write_file(table, spec, sink)
    return bytes(sink.getvalue())


def _partition_text(value: Any) -> str:
    text = _scalar_text(value)
    if text is None or text == "":
        return "__HIVE_DEFAULT_PARTITION__"
    return quote(text, safe="")


def _partitions(table: pa.Table, fields: list[str]) -> Iterator[tuple[str, pa.Table]]:
    """(folder prefix such as ``a=1/b=x/``, rows) for every partition, in sorted order."""
    if not fields:
        yield "", table
        return
    columns = [table.column(f).to_pylist() for f in fields]
    groups: dict[str, list[int]] = {}
    for i in range(table.num_rows):
        folder = "".join(
            f"{f}={_partition_text(col[i])}/" for f, col in zip(fields, columns, strict=True)
        )
        groups.setdefault(folder, []).append(i)
    rest = table.drop_columns(fields)
    for folder in sorted(groups):
        yield folder, rest.take(pa.array(groups[folder], pa.int64()))


_Writer = Callable[[Any], None]
"""Writes one output file to the binary stream it is given."""


def _bytes_of(writer: _Writer) -> bytes:
    if isinstance(writer, _ParquetCopy):
        return writer.to_bytes()
    sink = pa.BufferOutputStream()
    writer(sink)
    return bytes(sink.getvalue())


_TRANSIENT_TEXT = re.compile(
    r"connect|timed? ?out|temporar|unavailable|slow ?down|internal ?error|\b50[0-4]\b", re.I
)
"""What a store's error passed through DuckDB says when it is worth retrying."""


@dataclass
class _ParquetCopy:
    """A Parquet output that is the whole result: DuckDB copies the result files into it.

    The job's result is Parquet already, so with one output file and no partitions there
    is nothing for Arrow to do: DuckDB reads and writes the row groups in parallel, in
    their order, with the asked codec (twice as fast as pyarrow's single-threaded writer
    on two cores). Only datamill's own statement runs on this connection, over the run's
    result files and a path the sink chose. To S3 the copy goes through the sink's own
    ``s3fs`` file system registered with the connection, so the upload runs while DuckDB
    still writes (``s3fs`` sends parts as its buffer fills).
    """

    files: list[Path]
    compression: str
    temp_dir: Path

    def to_path(self, path: str, filesystem: Any = None) -> None:
        """Write to a local ``path``, or to ``s3://bucket/key`` through ``filesystem``."""
        import duckdb

        from datamill.engines.duckdb import sql_string

        sources = ", ".join(sql_string(str(f)) for f in self.files)
        codec = "uncompressed" if self.compression == "none" else self.compression
        con = duckdb.connect(":memory:")
        try:
            con.execute("SET enable_progress_bar=false")
            if filesystem is not None:
                con.register_filesystem(filesystem)
            con.execute(
                f"COPY (SELECT * FROM read_parquet([{sources}], hive_partitioning=false)) "
                f"TO {sql_string(path)} (FORMAT parquet, COMPRESSION {codec})"
            )
        except duckdb.Error as exc:
            text = _first_line(exc)
            if filesystem is not None and _TRANSIENT_TEXT.search(text):
                raise TransientSinkError(f"cannot write {path}: {text}") from exc
            raise SinkError(f"cannot write the result as parquet to {path}: {text}") from exc
        finally:
            con.close()

    def to_bytes(self) -> bytes:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        path = self.temp_dir / f"copy-{secrets.token_hex(6)}.parquet"
        try:
            self.to_path(str(path))
            return path.read_bytes()
        finally:
            path.unlink(missing_ok=True)

    def __call__(self, sink: Any) -> None:
        sink.write(self.to_bytes())


def _outputs(
    batch: ExportBatch, spec: FileExportOptions, prefix: str, temp_dir: Path
) -> tuple[int, Iterator[tuple[str, _Writer]]]:
    """(rows, the output files) of a batch: a :class:`_ParquetCopy` when the output is one
    Parquet file of the whole result, else :func:`_plan` over the result read by Arrow."""
    if (
        spec.format == "parquet"
        and spec.fileCount == 1
        and not spec.partitionBy
        and batch.parquet_files
    ):
        import pyarrow.parquet as pq

        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in batch.parquet_files)
        copy = _ParquetCopy(list(batch.parquet_files), spec.compression, temp_dir)
        return rows, iter([(f"{prefix}00000{spec.capability.extension}", copy)])
    table = batch.read()
    return table.num_rows, _plan(table, spec, prefix)


def _plan(table: pa.Table, spec: FileExportOptions, prefix: str) -> Iterator[tuple[str, _Writer]]:
    """(path relative to the location, its writer) of every output file, in a fixed order."""
    extension = spec.capability.extension
    for folder, rows in _partitions(table, spec.partitionBy):
        total = rows.num_rows
        count = max(1, min(spec.fileCount, total))
        for i in range(count):
            start, end = i * total // count, (i + 1) * total // count
            yield (
                f"{folder}{prefix}{i:05d}{extension}",
                functools.partial(write_file, rows.slice(start, end - start), spec),
            )


# --------------------------------------------------------------------------- locations

TIMESTAMP_FORMAT = "yyyy-MM-dd-HH-mm-ss"
SUCCESS = "_SUCCESS"
_TIMESTAMP_RE = r"\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}"
_SYSTEM_RES = {
    "year": r"\d{4}",
    "mon": r"\d{2}",
    "day": r"\d{2}",
    "hour": r"\d{2}",
    "min": r"\d{2}",
    "sec": r"\d{2}",
    "date": r"\d{4}-\d{2}-\d{2}",
    "now": r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}",
}
_TEMP_NAME = re.compile(r"\..*\.(tmp|old)-[0-9a-f]+")
_PARTITION_DIR = re.compile(r"[^/=]+=[^/]*")
_OUTPUT_FILE = re.compile(r"(part-[^/]*|_SUCCESS[^/]*)")


def output_location(template: str, batch: ExportBatch, field: str) -> str:
    """The batch's location: variables expanded at the batch time, or the time appended."""
    if referenced_names(template):
        location = batch.resolver.expand(template, field)
    else:
        location = template + java_format(batch.batch_time, TIMESTAMP_FORMAT)
    location = location.rstrip("/")
    if not location:
        raise DatamillError(
            E.INVALID_PARAMETER, f"{field}: '{template}' expands to an empty location", field=field
        )
    return location


def location_pattern(template: str) -> tuple[str, list[re.Pattern[str]]]:
    """(the literal folder outputs live under, one regex per location segment below it).

    ``out/$(year)/$(mon)/sales`` -> (``out``, [``\\d{4}``, ``\\d{2}``, ``sales``]);
    ``exports/sales-`` (no variable) -> (``exports``, [``sales-<timestamp>``]).
    """
    tokens: list[tuple[bool, str]] = []  # (is_regex, text)
    if referenced_names(template):
        pos = 0
        for match in REFERENCE.finditer(template):
            tokens.append((False, template[pos : match.start()]))
            tokens.append((True, _SYSTEM_RES.get(match.group(1), r"[^/]*")))
            pos = match.end()
        tokens.append((False, template[pos:]))
    else:
        tokens = [(False, template), (True, _TIMESTAMP_RE)]
    # per segment: (has a variable, the literal text, the regex)
    segments: list[tuple[bool, str, str]] = [(False, "", "")]
    for is_regex, text in tokens:
        if is_regex:
            _, literal, regex = segments[-1]
            segments[-1] = (True, literal, regex + text)
            continue
        for j, piece in enumerate(text.split("/")):
            if j > 0:
                segments.append((False, "", ""))
            variable, literal, regex = segments[-1]
            segments[-1] = (variable, literal + piece, regex + re.escape(piece))
    while len(segments) > 1 and segments[-1] == (False, "", ""):
        segments.pop()
    base: list[str] = []
    while segments and not segments[0][0]:
        base.append(segments.pop(0)[1])
    return "/".join(b for b in base if b), [re.compile(regex) for _, _, regex in segments]


def _is_output_path(parts: list[str], patterns: list[re.Pattern[str]]) -> bool:
    """Whether ``parts`` (below the literal base) name a file this export's naming makes."""
    n = len(patterns)
    if len(parts) < n + 1:
        return False
    if not all(p.fullmatch(part) for p, part in zip(patterns, parts, strict=False)):
        return False
    if not all(_PARTITION_DIR.fullmatch(part) for part in parts[n:-1]):
        return False
    return _OUTPUT_FILE.fullmatch(parts[-1]) is not None


def _marker(run_id: int, seq: int) -> str:
    return f"{SUCCESS}-r{run_id}-a{seq}"


def _append_seq(ctx: ExportContext, names: list[str], run_id: int) -> int:
    given = ctx.extra.get("rerun_count")
    if isinstance(given, int) and not isinstance(given, bool):
        return given
    pattern = re.compile(rf"{SUCCESS}-r{run_id}-a(\d+)")
    found = [int(m.group(1)) for n in names if (m := pattern.fullmatch(n))]
    return max(found) + 1 if found else 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


@dataclass
class _Written:
    files: int = 0
    bytes: int = 0
    skipped: bool = False


# --------------------------------------------------------------------------- folder stores


class _FolderStore(Protocol):
    """A hierarchical file system with an atomic rename (a data root, HDFS)."""

    def show(self, path: str) -> str: ...

    def kind(self, path: str) -> str | None: ...

    def listdir(self, path: str, hidden: bool = False) -> list[tuple[str, bool, float]]:
        """(name, is folder, modification time) of the children; ``hidden`` includes the
        temporary folders of writes in progress."""
        ...

    def mkdirs(self, path: str) -> None: ...

    def put(self, path: str, data: bytes) -> None: ...

    def write(self, path: str, writer: _Writer) -> int:
        """Create the file ``path`` with what ``writer`` writes; returns its size."""
        ...

    def rename(self, src: str, dst: str) -> None: ...

    def replace_file(self, src: str, dst: str) -> None: ...

    def delete(self, path: str, recursive: bool) -> None: ...


def _join(folder: str, rel: str) -> str:
    return folder.rstrip("/") + "/" + rel if rel else folder


def _split(path: str) -> tuple[str, str]:
    parent, _, leaf = path.rstrip("/").rpartition("/")
    return parent or "/", leaf


def _files_under(store: _FolderStore, folder: str, rel: str = "") -> Iterator[str]:
    """Paths relative to ``folder`` of every file below it (hidden temp folders skipped)."""
    for name, is_dir, _ in store.listdir(_join(folder, rel)):
        child = f"{rel}/{name}" if rel else name
        if is_dir:
            yield from _files_under(store, folder, child)
        else:
            yield child


def _write_folder(
    store: _FolderStore,
    location: str,
    files: Iterator[tuple[str, _Writer]],
    mode: str,
    append: tuple[int, int] | None,
) -> _Written:
    """Write ``files`` under ``location`` with a temporary sibling folder and renames."""
    kind = store.kind(location)
    if kind == "file":
        raise SinkError(f"{store.show(location)} is a file, not a folder")
    existing = list(_files_under(store, location)) if kind == "dir" else []
    if existing and mode == "errorIfExists":
        raise SinkError(
            f"{store.show(location)} already exists ({len(existing)} files) "
            "and saveMode is errorIfExists"
        )
    written = _Written()
    if existing and mode == "ignore":
        written.skipped = True
        return written
    parent, leaf = _split(location)
    store.mkdirs(parent)
    token = secrets.token_hex(6)
    temp = _join(parent, f".{leaf}.tmp-{token}")
    names: list[str] = []
    try:
        for rel, writer in files:
            size = store.write(_join(temp, rel), writer)
            names.append(rel)
            written.files += 1
            written.bytes += size
        markers = [SUCCESS] + ([_marker(*append)] if append else [])
        if append is not None and kind == "dir":
            own = f"part-r{append[0]}-a{append[1]}-"
            for rel in names:
                folder = _split(_join(location, rel))[0]
                store.mkdirs(folder)
                store.replace_file(_join(temp, rel), _join(location, rel))
            fresh = set(names)
            for rel in existing:
                if rel.rsplit("/", 1)[-1].startswith(own) and rel not in fresh:
                    store.delete(_join(location, rel), recursive=False)
            for marker in markers:  # the append's own marker last: its commit point
                store.put(_join(temp, marker), b"")
                store.replace_file(_join(temp, marker), _join(location, marker))
            with contextlib.suppress(SinkError):
                store.delete(temp, recursive=True)
            return written
        for marker in markers:
            store.put(_join(temp, marker), b"")
        if kind == "dir":
            old = _join(parent, f".{leaf}.old-{token}")
            store.rename(location, old)
            try:
                store.rename(temp, location)
            except BaseException:
                with contextlib.suppress(SinkError):
                    store.rename(old, location)
                raise
            with contextlib.suppress(SinkError):
                store.delete(old, recursive=True)
        else:
            store.rename(temp, location)
    except BaseException:
        with contextlib.suppress(SinkError, OSError):
            if store.kind(temp) is not None:
                store.delete(temp, recursive=True)
        raise
    return written


def _expire_folder(
    store: _FolderStore,
    base: str,
    patterns: list[re.Pattern[str]],
    cutoff: float,
    current: str,
) -> int:
    """Delete this export's files older than ``cutoff`` (epoch seconds) below ``base``."""
    if store.kind(base) != "dir":
        return 0
    chains: list[list[str]] = [[base]]
    for pattern in patterns:
        chains = [
            [*chain, _join(chain[-1], name)]
            for chain in chains
            for name, is_dir, _ in store.listdir(chain[-1])
            if is_dir and pattern.fullmatch(name)
        ]
    deleted = 0
    for chain in chains:
        location = chain[-1]
        if location.rstrip("/") == current.rstrip("/"):
            continue
        deleted += _expire_tree(store, location, cutoff)
        for folder in reversed(chain[1:]):  # folders left empty, up to (not incl.) base
            if store.listdir(folder, hidden=True):
                break
            store.delete(folder, recursive=False)
    return deleted


def _expire_tree(store: _FolderStore, folder: str, cutoff: float) -> int:
    deleted = 0
    for name, is_dir, mtime in store.listdir(folder):
        path = _join(folder, name)
        if is_dir:
            if _PARTITION_DIR.fullmatch(name):
                deleted += _expire_tree(store, path, cutoff)
                if not store.listdir(path, hidden=True):
                    store.delete(path, recursive=False)
        elif _OUTPUT_FILE.fullmatch(name) and mtime < cutoff:
            store.delete(path, recursive=False)
            deleted += 1
    return deleted


class _LocalStore:
    """A folder under a data root; paths are absolute, already checked to stay inside."""

    def __init__(self, real_root: Path, root_name: str) -> None:
        self.root = real_root
        self.root_name = root_name

    def show(self, path: str) -> str:
        try:
            rel = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            rel = path
        return f"{self.root_name}:{rel}"

    def _fail(self, action: str, path: str, exc: OSError) -> SinkError:
        return SinkError(f"{action} {self.show(path)}: {exc.strerror or _first_line(exc)}")

    def _inside(self, path: str) -> None:
        resolved = Path(path).resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise DatamillError(
                E.PATH_REFUSED, f"spec.path: '{self.show(path)}' leads outside its data root"
            )

    def kind(self, path: str) -> str | None:
        if os.path.islink(path):
            self._inside(path)
        if os.path.isdir(path):
            return "dir"
        return "file" if os.path.lexists(path) else None

    def listdir(self, path: str, hidden: bool = False) -> list[tuple[str, bool, float]]:
        found: list[tuple[str, bool, float]] = []
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    if not hidden and _TEMP_NAME.fullmatch(entry.name):
                        continue
                    st = entry.stat(follow_symlinks=False)
                    found.append((entry.name, entry.is_dir(follow_symlinks=False), st.st_mtime))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._fail("cannot list", path, exc) from exc
        return sorted(found)

    def mkdirs(self, path: str) -> None:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise self._fail("cannot create folder", path, exc) from exc
        self._inside(path)

    def put(self, path: str, data: bytes) -> None:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as stream:
                stream.write(data)
        except OSError as exc:
            raise self._fail("cannot write", path, exc) from exc

    def write(self, path: str, writer: _Writer) -> int:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if isinstance(writer, _ParquetCopy):
                writer.to_path(path)
                return os.path.getsize(path)
            with pa.OSFile(path, "wb") as stream:
                writer(stream)
                return int(stream.tell())
        except OSError as exc:
            raise self._fail("cannot write", path, exc) from exc

    def rename(self, src: str, dst: str) -> None:
        try:
            os.rename(src, dst)
        except OSError as exc:
            if os.path.isdir(dst) and os.listdir(dst):
                raise SinkError(f"{self.show(dst)} appeared meanwhile; not replaced") from exc
            raise self._fail(f"cannot rename {self.show(src)} to", dst, exc) from exc

    def replace_file(self, src: str, dst: str) -> None:
        try:
            os.replace(src, dst)
        except OSError as exc:
            raise self._fail("cannot write", dst, exc) from exc

    def delete(self, path: str, recursive: bool) -> None:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                if recursive:
                    shutil.rmtree(path)
                else:
                    os.rmdir(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._fail("cannot delete", path, exc) from exc


# --------------------------------------------------------------------------- WebHDFS

_HDFS_TRANSIENT = {
    "StandbyException",
    "RetriableException",
    "SafeModeException",
    "ConnectTimeoutException",
}


class _WebHdfs:
    """The few WebHDFS operations a folder store needs, over ``requests``.

    Redirects (CREATE goes to a DataNode) are followed by hand so that the DataNode's
    address passes the outbound guard too.
    """

    def __init__(
        self, host: str, port: int, https: bool, user: str | None, allow: list[str]
    ) -> None:
        import requests

        check_host(host.strip("[]"), port, allow, "spec.path")
        self.allow = allow
        self.user = user
        self.base = f"{'https' if https else 'http'}://{host}:{port}/webhdfs/v1"
        self.shown = f"hdfs://{host}:{port}"
        self.session = requests.Session()

    def show(self, path: str) -> str:
        return self.shown + path

    def _send(
        self, method: str, url: str, what: str, missing_ok: bool = False, **kwargs: Any
    ) -> Any:
        """The response; None for a 404 when ``missing_ok``; errors as sink errors."""
        import requests

        try:
            response = self.session.request(
                method, url, allow_redirects=False, timeout=(5, 120), **kwargs
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientSinkError(f"{what}: {_first_line(exc)}") from exc
        except requests.RequestException as exc:
            raise SinkError(f"{what}: {_first_line(exc)}") from exc
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            raise self._error(response, what)
        return response

    @staticmethod
    def _error(response: Any, what: str) -> SinkError:
        exception, message = "", ""
        try:
            remote = response.json()["RemoteException"]
            exception = str(remote.get("exception", ""))
            message = str(remote.get("message", ""))
        except (ValueError, KeyError, TypeError, AttributeError):
            message = (response.text or "").strip()[:300]
        text = f"{what}: HTTP {response.status_code}"
        if exception:
            text += f" {exception}"
        if message:
            text += f": {message}"
        if response.status_code >= 500 or exception in _HDFS_TRANSIENT:
            return TransientSinkError(text)
        return SinkError(text)

    def call(
        self,
        method: str,
        op: str,
        path: str,
        data: bytes | None = None,
        missing_ok: bool = False,
        **params: str,
    ) -> Any:
        query = {"op": op, **params}
        if self.user:
            query["user.name"] = self.user
        url = self.base + quote(path, safe="/")
        what = f"{op} {self.show(path)}"
        return self._send(method, url, what, missing_ok, params=query, data=data)

    def kind(self, path: str) -> str | None:
        found = self.call("GET", "GETFILESTATUS", path, missing_ok=True)
        if found is None:
            return None
        return "dir" if found.json()["FileStatus"].get("type") == "DIRECTORY" else "file"

    def listdir(self, path: str, hidden: bool = False) -> list[tuple[str, bool, float]]:
        answer = self.call("GET", "LISTSTATUS", path, missing_ok=True)
        if answer is None:
            return []
        found = []
        for item in answer.json()["FileStatuses"]["FileStatus"]:
            name = str(item.get("pathSuffix", ""))
            if not name or (not hidden and _TEMP_NAME.fullmatch(name)):
                continue
            is_dir = item.get("type") == "DIRECTORY"
            found.append((name, is_dir, float(item.get("modificationTime", 0)) / 1000))
        return sorted(found)

    def _boolean(self, response: Any, what: str) -> bool:
        try:
            return bool(response.json()["boolean"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SinkError(f"{what}: unexpected answer {response.text[:200]!r}") from exc

    def mkdirs(self, path: str) -> None:
        if not self._boolean(self.call("PUT", "MKDIRS", path), f"MKDIRS {self.show(path)}"):
            raise SinkError(f"MKDIRS {self.show(path)}: the namenode refused to create it")

    def put(self, path: str, data: bytes) -> None:
        what = f"CREATE {self.show(path)}"
        first = self.call("PUT", "CREATE", path, overwrite="true")
        location = first.headers.get("Location")
        if location is None and first.status_code == 200:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                location = first.json()["Location"]
        if first.status_code == 201:  # a server that took the (empty) body directly
            if data:
                raise SinkError(f"{what}: the namenode did not redirect to a datanode")
            return
        if not location:
            raise SinkError(f"{what}: the namenode did not say where to write")
        target = urlsplit(location)
        if target.scheme not in ("http", "https") or not target.hostname:
            raise SinkError(f"{what}: unusable datanode address {location[:200]!r}")
        check_host(
            target.hostname,
            target.port or (443 if target.scheme == "https" else 80),
            self.allow,
            "spec.path",
        )
        self._send(
            "PUT",
            location,
            what,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )

    def write(self, path: str, writer: _Writer) -> int:
        data = _bytes_of(writer)
        self.put(path, data)
        return len(data)

    def rename(self, src: str, dst: str) -> None:
        what = f"RENAME {self.show(src)} to {dst}"
        if not self._boolean(self.call("PUT", "RENAME", src, destination=dst), what):
            raise SinkError(f"{what}: the namenode refused (does the target exist?)")

    def replace_file(self, src: str, dst: str) -> None:
        self.delete(dst, recursive=False)
        self.rename(src, dst)

    def delete(self, path: str, recursive: bool) -> None:
        self.call("DELETE", "DELETE", path, recursive="true" if recursive else "false")


# --------------------------------------------------------------------------- S3


_S3_TRANSIENT_NAMES = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ClientConnectorError",
    "ServerDisconnectedError",
    "ClientOSError",
    "FSTimeoutError",
    "IncompleteRead",
    "ResponseStreamingError",
}
_S3_TRANSIENT_CODES = {
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "RequestTimeTooSkewed",
}


def _s3_error(exc: BaseException, what: str) -> SinkError:
    """The store's own error text; connection problems, timeouts and 5xx are transient."""
    transient = False
    code = ""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | TimeoutError):
            transient = True
        if {c.__name__ for c in type(current).__mro__} & _S3_TRANSIENT_NAMES:
            transient = True
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            error = response.get("Error") or {}
            code = str(error.get("Code", "")) or code
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if isinstance(status, int) and status >= 500:
                transient = True
            if code in _S3_TRANSIENT_CODES:
                transient = True
        current = current.__cause__ or current.__context__
    text = f"{what}: {code + ': ' if code and code not in str(exc) else ''}{_first_line(exc)}"
    return TransientSinkError(text) if transient else SinkError(text)


class _S3:
    def __init__(self, spec: S3ExportSpec, ctx: ExportContext) -> None:
        self.bucket = spec.bucket
        self.fs = s3_filesystem(
            endpoint=spec.endpoint,
            region=spec.regionName,
            secret=spec.secret,
            secret_values=ctx.secret_values,
            outbound_allow=ctx.outbound_allow,
        )

    def show(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _do(self, what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except FileNotFoundError as exc:
            if "bucket" in str(exc).lower():
                raise SinkError(f"{what}: bucket '{self.bucket}' does not exist") from exc
            raise _s3_error(exc, what) from exc
        except DatamillError:
            raise
        except Exception as exc:  # the store's or the transport's own error
            raise _s3_error(exc, what) from exc

    def listing(self, prefix: str) -> dict[str, float]:
        """key -> modification time (epoch seconds) of every object under ``prefix/``."""
        path = f"{self.bucket}/{prefix}".rstrip("/")

        def find() -> dict[str, Any]:
            try:
                found = self.fs.find(path, detail=True)
            except FileNotFoundError:
                if not self.fs.exists(self.bucket):
                    raise
                return {}
            return dict(found)

        found = self._do(f"cannot list {self.show(prefix)}", find)
        keys: dict[str, float] = {}
        start = f"{self.bucket}/{prefix.rstrip('/')}/" if prefix.strip("/") else f"{self.bucket}/"
        for name, info in found.items():
            if info.get("type") == "directory" or not str(name).startswith(start):
                continue
            modified = info.get("LastModified")
            mtime = modified.timestamp() if isinstance(modified, datetime) else 0.0
            keys[str(name)[len(self.bucket) + 1 :]] = mtime
        return keys

    def put(self, key: str, data: bytes) -> None:
        self._do(
            f"cannot write {self.show(key)}",
            lambda: self.fs.pipe_file(f"{self.bucket}/{key}", data),
        )

    def put_copy(self, key: str, copy: _ParquetCopy) -> int:
        """Let DuckDB write ``key`` through this store's file system; returns its size."""
        path = f"{self.bucket}/{key}"
        copy.to_path(f"s3://{path}", self.fs)
        size = self._do(f"cannot read back {self.show(key)}", lambda: self.fs.size(path))
        return int(size)

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = [f"{self.bucket}/{k}" for k in keys[start : start + 1000]]
            self._do(
                f"cannot delete {self.show(keys[start])}", functools.partial(self.fs.rm, chunk)
            )


def _write_s3(
    store: _S3,
    location: str,
    files: Iterator[tuple[str, _Writer]],
    mode: str,
    append: tuple[int, int] | None,
    existing: dict[str, float],
) -> _Written:
    written = _Written()
    prefix = location + "/"
    rels = {key[len(prefix) :] for key in existing}
    if rels and mode == "errorIfExists":
        raise SinkError(
            f"{store.show(prefix)} already exists ({len(rels)} objects) "
            "and saveMode is errorIfExists"
        )
    if rels and mode == "ignore":
        written.skipped = True
        return written
    if mode == "overwrite" and SUCCESS in rels:
        store.delete([prefix + SUCCESS])
    names: set[str] = set()
    for rel, writer in files:
        if isinstance(writer, _ParquetCopy):
            written.files += 1
            written.bytes += store.put_copy(prefix + rel, writer)
            names.add(rel)
            continue
        data = _bytes_of(writer)
        store.put(prefix + rel, data)
        names.add(rel)
        written.files += 1
        written.bytes += len(data)
    if append is not None:
        own = f"part-r{append[0]}-a{append[1]}-"
        stale = {r for r in rels if r.rsplit("/", 1)[-1].startswith(own)} - names
    else:
        stale = rels - names - {SUCCESS}
    if stale:
        store.delete([prefix + r for r in sorted(stale)])
    store.put(prefix + SUCCESS, b"")
    if append is not None:
        store.put(prefix + _marker(*append), b"")
    return written


# --------------------------------------------------------------------------- the sinks


def _outcome(written: _Written, rows: int, where: str, spec: FileExportOptions) -> ExportOutcome:
    if written.skipped:
        return ExportOutcome(
            rows=0, bytes=0, detail=f"{where} already has files; nothing written (saveMode ignore)"
        )
    return ExportOutcome(
        rows=rows,
        bytes=written.bytes,
        detail=(
            f"wrote {rows} rows in {written.files} {spec.format} files "
            f"({written.bytes} bytes) to {where} (saveMode {spec.saveMode})"
        ),
    )


def _cutoff(spec: FileExportOptions) -> float | None:
    if spec.retention is None or spec.retention <= 0:
        return None
    return (datetime.now(UTC) - timedelta(days=spec.retention)).timestamp()


def _retention_note(ctx: ExportContext, deleted: int, spec: FileExportOptions) -> None:
    if deleted:
        ctx.log(f"retention: deleted {deleted} files older than {spec.retention} days")


def _part_prefix(append: tuple[int, int] | None) -> str:
    return f"part-r{append[0]}-a{append[1]}-" if append else "part-"


def _folder_export(
    store: _FolderStore,
    location: str,
    base_of: Callable[[str], str],
    template: str,
    spec: FileExportOptions,
    batch: ExportBatch,
    ctx: ExportContext,
) -> ExportOutcome:
    append: tuple[int, int] | None = None
    if spec.saveMode == "append":
        top = [name for name, is_dir, _ in store.listdir(location) if not is_dir]
        append = (batch.run_id, _append_seq(ctx, top, batch.run_id))
    rows, files = _outputs(batch, spec, _part_prefix(append), ctx.temp_dir)
    ctx.log(f"writing {rows} rows to {store.show(location)} (saveMode {spec.saveMode})")
    written = _write_folder(store, location, files, spec.saveMode, append)
    cutoff = _cutoff(spec)
    if cutoff is not None:
        try:
            literal_base, patterns = location_pattern(template)
            deleted = _expire_folder(store, base_of(literal_base), patterns, cutoff, location)
            _retention_note(ctx, deleted, spec)
        except (SinkError, DatamillError) as exc:
            ctx.log(f"retention: could not delete old outputs: {exc}")
    return _outcome(written, rows, store.show(location), spec)


class FileSink:
    type_name: ClassVar[str] = "file"
    spec_model: ClassVar[type[BaseModel]] = FileExportSpec

    def validate(self, spec: BaseModel, schema: list[SchemaField]) -> None:
        assert isinstance(spec, FileExportSpec)
        _check_schema(spec, schema)

    def secret_name(self, spec: BaseModel) -> str | None:
        return None

    def write(self, spec: BaseModel, batch: ExportBatch, ctx: ExportContext) -> ExportOutcome:
        assert isinstance(spec, FileExportSpec)
        root = ctx.data_roots.get(spec.root)
        if root is None:
            known = ", ".join(sorted(ctx.data_roots)) or "none"
            raise DatamillError(
                E.PATH_REFUSED,
                f"spec.root: unknown data root '{spec.root}' (configured: {known})",
                field="spec.root",
            )
        real_root = root.resolve()
        relative = output_location(spec.path, batch, "spec.path")
        check_relative_path(relative, "spec.path")
        location = resolve_inside(real_root, relative, "spec.path")
        store = _LocalStore(real_root, spec.root)

        def base_of(literal: str) -> str:
            return str(resolve_inside(real_root, literal, "spec.path") if literal else real_root)

        return _folder_export(store, str(location), base_of, spec.path, spec, batch, ctx)


class HdfsSink:
    type_name: ClassVar[str] = "hdfs"
    spec_model: ClassVar[type[BaseModel]] = HdfsExportSpec

    def validate(self, spec: BaseModel, schema: list[SchemaField]) -> None:
        assert isinstance(spec, HdfsExportSpec)
        _check_schema(spec, schema)

    def secret_name(self, spec: BaseModel) -> str | None:
        return None

    def write(self, spec: BaseModel, batch: ExportBatch, ctx: ExportContext) -> ExportOutcome:
        assert isinstance(spec, HdfsExportSpec)
        parts = urlsplit(spec.path)
        host, port = parts.hostname or "", parts.port or 9870
        shown_host = f"[{host}]" if ":" in host else host
        template = parts.path or "/"
        location = output_location(template, batch, "spec.path")
        if not location.startswith("/") or ".." in location.split("/") or "\\" in location:
            raise DatamillError(
                E.PATH_REFUSED,
                f"spec.path: '{location[:200]}' is not a usable absolute HDFS path",
                field="spec.path",
            )
        store = _WebHdfs(shown_host, port, spec.useHttps, spec.user, ctx.outbound_allow)
        return _folder_export(
            store, location, lambda literal: "/" + literal, template.lstrip("/"), spec, batch, ctx
        )


class S3Sink:
    type_name: ClassVar[str] = "s3"
    spec_model: ClassVar[type[BaseModel]] = S3ExportSpec

    def validate(self, spec: BaseModel, schema: list[SchemaField]) -> None:
        assert isinstance(spec, S3ExportSpec)
        _check_schema(spec, schema)

    def secret_name(self, spec: BaseModel) -> str | None:
        assert isinstance(spec, S3ExportSpec)
        return spec.secret

    def write(self, spec: BaseModel, batch: ExportBatch, ctx: ExportContext) -> ExportOutcome:
        assert isinstance(spec, S3ExportSpec)
        location = output_location(spec.keyPrefix, batch, "spec.keyPrefix")
        if location.startswith("/") or ".." in location.split("/") or len(location) > 1000:
            raise DatamillError(
                E.PATH_REFUSED,
                f"spec.keyPrefix: '{location[:200]}' is not a usable key prefix",
                field="spec.keyPrefix",
            )
        store = _S3(spec, ctx)
        existing = store.listing(location)
        append: tuple[int, int] | None = None
        if spec.saveMode == "append":
            top = [k[len(location) + 1 :] for k in existing]
            append = (
                batch.run_id,
                _append_seq(ctx, [t for t in top if "/" not in t], batch.run_id),
            )
        rows, files = _outputs(batch, spec, _part_prefix(append), ctx.temp_dir)
        where = store.show(location + "/")
        ctx.log(f"writing {rows} rows to {where} (saveMode {spec.saveMode})")
        written = _write_s3(store, location, files, spec.saveMode, append, existing)
        cutoff = _cutoff(spec)
        if cutoff is not None:
            try:
                deleted = self._expire(store, spec.keyPrefix, cutoff, location)
                _retention_note(ctx, deleted, spec)
            except (SinkError, DatamillError) as exc:
                ctx.log(f"retention: could not delete old outputs: {exc}")
        return _outcome(written, rows, where, spec)

    @staticmethod
    def _expire(store: _S3, template: str, cutoff: float, current: str) -> int:
        base, patterns = location_pattern(template)
        old: list[str] = []
        for key, mtime in store.listing(base).items():
            rel = key[len(base) + 1 :] if base else key
            parts = rel.split("/")
            if mtime >= cutoff or not _is_output_path(parts, patterns):
                continue
            location = "/".join(([base] if base else []) + parts[: len(patterns)])
            if location != current:
                old.append(key)
        if old:
            store.delete(sorted(old))
        return len(old)


register(FileSink())
register(S3Sink())
register(HdfsSink())
