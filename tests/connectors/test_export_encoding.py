"""The row formats of file exports (json, csv, text) as encoded by ``encode_file``: Arrow
kernels per column, pieces compressed in parallel threads. Checked against a row-by-row
definition of the same formats, on values where Arrow's and Python's texts differ."""

from __future__ import annotations

import bz2
import datetime as dt
import decimal
import gzip
import json
import zlib
from typing import Any

import pyarrow as pa
import pytest

from datamill.connectors.sinks.file import FileExportSpec
from datamill.connectors.sinks.outputs import encoding
from datamill.connectors.sinks.outputs.encoding import encode_file
from datamill.domain.values import json_value

FLOATS = [
    1.0, 0.1, 1e16, 1e15, 123456789012345.6, 1e-4, 1e-5, 1.5e-7, 1e20, 1e22, -0.0, 0.0,
    float("nan"), float("inf"), float("-inf"), 5e-324, 1.7976931348623157e308, 123.0,
    2.5e-5, 62.296682000000004, -3.25, 9999999999.5, 1e10, 2e10, -1e9, 123456789.0, 1e-4,
    9.9999e-5, None,
]  # fmt: skip
STRINGS = ["", None, "a,b", 'q"uote', "line\nbreak", "cr\rx", "tab\tx", "back\\slash", "x=y",
           "é中", "a||b", "1.5", "plain"]  # fmt: skip
UTC = dt.UTC


def _cycle(values: list[Any], count: int) -> list[Any]:
    return [values[i % len(values)] for i in range(count)]


def rich_table(count: int = len(FLOATS)) -> pa.Table:
    stamps = [
        dt.datetime(2026, 1, 1, 0, 0, 40),
        dt.datetime(2026, 1, 1, 0, 0, 40, 123),
        dt.datetime(1, 1, 1),
        None,
    ]
    return pa.table(
        {
            "f64": pa.array(_cycle(FLOATS, count), pa.float64()),
            "f32": pa.array(_cycle([0.1, 1.5, None, 1e-7], count), pa.float32()),
            "i64": pa.array(_cycle([0, -1, 2**62, None], count), pa.int64()),
            "u64": pa.array(_cycle([2**64 - 1, 3], count), pa.uint64()),
            "i8": pa.array(_cycle([-128, 7], count), pa.int8()),
            "flag": pa.array(_cycle([True, False, None], count), pa.bool_()),
            "text": pa.array(_cycle(STRINGS, count), pa.string()),
            "big": pa.array(_cycle(STRINGS, count), pa.large_string()),
            "dict": pa.array(_cycle(["a", "b,c", None], count)).dictionary_encode(),
            "ts_us": pa.array(_cycle(stamps, count), pa.timestamp("us")),
            "ts_ms": pa.array(_cycle(stamps[:1] + stamps[2:], count), pa.timestamp("ms")),
            "ts_s": pa.array(_cycle(stamps[:1] + stamps[2:], count), pa.timestamp("s")),
            "ts_utc": pa.array(
                _cycle([s.replace(tzinfo=UTC) if s else None for s in stamps], count),
                pa.timestamp("us", tz="UTC"),
            ),
            "ts_paris": pa.array(
                _cycle([dt.datetime(2026, 7, 1, 12, tzinfo=UTC), None], count),
                pa.timestamp("us", tz="Europe/Paris"),
            ),
            "ts_ns": pa.array(_cycle([stamps[1], None], count), pa.timestamp("ns")),
            "day": pa.array(_cycle([dt.date(2026, 1, 2), None], count), pa.date32()),
            "dec": pa.array(_cycle([decimal.Decimal("1.50"), None], count), pa.decimal128(10, 2)),
            "nested": pa.array(_cycle([[1, 2], None, []], count), pa.list_(pa.int64())),
            "record": pa.array(
                _cycle([{"k": "v", "n": 1}, None], count),
                pa.struct([("k", pa.string()), ("n", pa.int64())]),
            ),
            "nothing": pa.nulls(count),
        }
    )


def reference(table: pa.Table, spec: FileExportSpec) -> bytes:
    """The row formats, one Python value at a time (as the outputs package's docs define them)."""
    names = table.column_names
    rows = table.to_pylist()
    out: list[str] = []
    if spec.format == "json":
        for row in rows:
            safe = {k: json_value(v) for k, v in row.items()}
            out.append(json.dumps(safe, ensure_ascii=False, separators=(",", ":")))
    elif spec.format == "csv":
        delimiter = spec.delimiter or ","
        if spec.header:
            out.append(delimiter.join(encoding._csv_field(n, delimiter) for n in names))
        for row in rows:
            out.append(
                delimiter.join(
                    encoding._csv_field(encoding.scalar_text(row[n]), delimiter) for n in names
                )
            )
    else:
        for row in rows:
            pairs = (f"{n}={encoding.scalar_text(row[n]) or ''}" for n in names)
            out.append("\t".join(p.translate(encoding._TEXT_ESCAPES) for p in pairs))
    return "".join(line + "\n" for line in out).encode("utf-8")


def decompress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        assert data[:2] == b"\x1f\x8b"
        assert data[4:8] == b"\0\0\0\0"  # mtime 0
        member = zlib.decompressobj(wbits=31)
        plain = member.decompress(data)
        assert member.eof
        assert member.unused_data == b"", "exactly one gzip member"
        assert plain == gzip.decompress(data)
        return plain
    if compression == "deflate":
        assert data[:1] == b"\x78"
        stream = zlib.decompressobj()
        plain = stream.decompress(data)
        assert stream.eof
        assert stream.unused_data == b"", "exactly one zlib stream"
        return plain
    if compression == "bzip2":
        return bz2.decompress(data)
    if compression == "lz4":
        return bytes(pa.CompressedInputStream(pa.BufferReader(data), "lz4").read())
    if compression == "snappy":
        size = shift = pos = 0
        while True:
            byte = data[pos]
            size |= (byte & 0x7F) << shift
            pos += 1
            if byte < 0x80:
                break
            shift += 7
        return bytes(pa.Codec("snappy").decompress(data, decompressed_size=size))
    assert compression == "none"
    return data


def spec_of(fmt: str, compression: str = "none", **extra: Any) -> FileExportSpec:
    body: dict[str, Any] = {"format": fmt, "compression": compression, **extra}
    if fmt == "csv":
        body.setdefault("delimiter", ",")
    return FileExportSpec.model_validate(body)


@pytest.mark.parametrize("fmt", ["csv", "text", "json"])
def test_row_formats_equal_the_row_by_row_definition(fmt: str) -> None:
    table = rich_table(len(FLOATS) * 3)
    spec = spec_of(fmt)
    assert encode_file(table, spec) == reference(table, spec)


@pytest.mark.parametrize("delimiter", ["||", ".", "-", "e", ":", "T"])
def test_csv_quotes_numbers_and_times_holding_the_delimiter(delimiter: str) -> None:
    table = rich_table()
    spec = spec_of("csv", delimiter=delimiter, containsHeader=False)
    encoded = encode_file(table, spec)
    assert encoded == reference(table, spec)
    if delimiter in ".-T":
        assert b'"' + b"0.1" + b'"' in encoded or delimiter != "."


@pytest.mark.parametrize("compression", ["none", "gzip", "deflate", "bzip2", "lz4", "snappy"])
def test_pieces_join_into_one_file(compression: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many pieces (a tiny piece size): one header, every row once, in order, one stream."""
    monkeypatch.setattr(encoding, "ROWS_PER_CHUNK", 7)
    table = rich_table(100)
    for fmt in ("csv", "text"):
        spec = spec_of(fmt, compression)
        plain = decompress(encode_file(table, spec), compression)
        assert plain == reference(table, spec)
        assert plain.count(b"f64,f32,") == (1 if fmt == "csv" else 0)


def test_the_same_table_gives_the_same_bytes() -> None:
    table = rich_table(500)
    spec = spec_of("csv", "gzip")
    assert encode_file(table, spec) == encode_file(table, spec)


@pytest.mark.parametrize("fmt", ["csv", "text", "json"])
def test_an_empty_table(fmt: str) -> None:
    table = rich_table().slice(0, 0)
    spec = spec_of(fmt, "gzip")
    assert decompress(encode_file(table, spec), "gzip") == reference(table, spec)


def test_float_texts_equal_repr_over_many_magnitudes() -> None:
    import random

    rng = random.Random(7)
    values = []
    for _ in range(20_000):
        value = 10 ** rng.uniform(-7, 18) * rng.choice([1, -1])
        digits = rng.randint(1, 17)
        values.append(float(f"{value:.{digits}g}") if rng.random() < 0.7 else value)
    texts = encoding._texts(pa.array(values, pa.float64())).to_pylist()
    assert texts == [repr(v) for v in values]
