"""What the file exports can write: formats, compressions and the options they share."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from pydantic import Field, ValidationInfo, field_validator

from datamill.domain.common import FieldName, Model
from datamill.domain.datasources import SchemaField
from datamill.errors import DatamillError, E, field_error

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

PATH_FORBIDDEN = set("\\<>\x00")


def path_error(error: E, message: str) -> DatamillError:
    """A ``spec.path`` error raised as such, not through pydantic.

    ``validation_failure`` reads a location that starts with ``path`` as a URL path
    parameter ("spec (path parameter): ..."), so errors of the ``path`` field bypass it.
    """
    return DatamillError(error, f"spec.path: {message}", field="spec.path")


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
            raise field_error(
                E.INVALID_PARAMETER,
                "unknown format '{value}': use one of json, csv, text, orc, parquet",
                {"value": value[:32]},
            )
        return value

    @field_validator("delimiter")
    @classmethod
    def _delimiter_for_csv(cls, value: str | None, info: ValidationInfo) -> str | None:
        fmt = info.data.get("format")
        if fmt == "csv" and value is None:
            raise field_error(E.INVALID_PARAMETER, "delimiter is required when format is csv")
        if fmt is not None and fmt != "csv" and value is not None:
            raise field_error(E.INVALID_PARAMETER, "delimiter applies only when format is csv")
        if value is not None and set(value) & set('"\r\n'):
            raise field_error(
                E.INVALID_PARAMETER, "delimiter may not contain a double quote or a line break"
            )
        return value

    @field_validator("containsHeader")
    @classmethod
    def _header_for_csv(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        fmt = info.data.get("format")
        if fmt is not None and fmt != "csv" and value is not None:
            raise field_error(E.INVALID_PARAMETER, "containsHeader applies only when format is csv")
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
            raise field_error(
                E.INVALID_PARAMETER,
                "compression '{value}' is not allowed for format {format}: use one of {allowed}",
                {"value": value[:32], "format": fmt, "allowed": ", ".join(writable)},
            )
        capability = CAPABILITIES[fmt, value]
        if not capability.writable:
            raise field_error(
                E.INVALID_PARAMETER,
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
            raise field_error(
                E.INVALID_PARAMETER,
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


def check_partitions(spec: FileExportOptions, schema: list[SchemaField]) -> None:
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
