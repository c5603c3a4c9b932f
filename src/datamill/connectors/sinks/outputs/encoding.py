"""A table encoded as one output file: the row formats (json, csv, text) with their
compressions, and orc and parquet."""

from __future__ import annotations

import bz2
import json
import math
import os
import struct
import zlib
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from datamill.connectors.sinks.base import SinkError
from datamill.connectors.sinks.outputs.formats import ROW_FORMATS, FileExportOptions
from datamill.domain.values import json_value


def scalar_text(value: Any) -> str | None:
    """A value as the row formats write it (None for null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    safe = json_value(value)
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
    return pa.array([scalar_text(v) for v in column.to_pylist()], pa.string())


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
    names = table.column_names
    head = ""
    if spec.format == "json":
        lines = [
            json.dumps(
                {k: json_value(v) for k, v in row.items()},
                ensure_ascii=False,
                separators=(",", ":"),
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
