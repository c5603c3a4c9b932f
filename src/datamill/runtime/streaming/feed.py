"""Bounded in-process sources: Parquet files fed to a pipeline as Arrow batches.

Benchmarks and tests feed a job through the engine's source interface without HTTP: the
source hands out Arrow record batches (``read_arrow``), its position is the number of rows
handed out, and it reports when it is :meth:`exhausted` so a bounded run ends with a final
batch that closes every window.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datamill.connectors.streams.base import Position


class ParquetFeed:
    """Rows of Parquet files, in file order, ``repeat`` times over.

    Each repetition shifts ``time_field`` by ``shift`` times its index, so a repeated
    stream keeps moving forward in event time (a longer stream of the same shape).
    """

    def __init__(
        self,
        files: Sequence[Path],
        *,
        repeat: int = 1,
        time_field: str | None = None,
        shift: timedelta = timedelta(hours=1),
        read_rows: int = 65_536,
    ) -> None:
        self.files = list(files)
        self.repeat = repeat
        self.time_field = time_field
        self.shift = shift
        self.read_rows = read_rows
        self.rows = 0
        self.total: int = repeat * sum(int(pq.ParquetFile(f).metadata.num_rows) for f in self.files)
        self._batches: Iterator[pa.RecordBatch] = iter(())
        self._pending: pa.Table | None = None
        self.seek(None)

    def _iterate(self, skip: int) -> Iterator[pa.RecordBatch]:
        for round_ in range(self.repeat):
            for path in self.files:
                parquet = pq.ParquetFile(path)
                for group in range(parquet.metadata.num_row_groups):
                    rows = parquet.metadata.row_group(group).num_rows
                    if skip >= rows:  # seeking: whole row groups are skipped unread
                        skip -= rows
                        continue
                    yield from self._batches_of(parquet.read_row_group(group), skip, round_)
                    skip = 0

    def _batches_of(self, table: pa.Table, skip: int, round_: int) -> Iterator[pa.RecordBatch]:
        """A row group read whole (faster than a batch iterator), as record batches."""
        for batch in table.to_batches():
            if skip >= batch.num_rows:
                skip -= batch.num_rows
                continue
            if skip:
                batch = batch.slice(skip)
                skip = 0
            if round_ and self.time_field:
                index = batch.schema.get_field_index(self.time_field)
                column = batch.column(index)
                offset = pa.scalar(self.shift * round_, pa.duration("ms"))
                moved = pc.add(column, offset.cast(pa.duration(column.type.unit)))
                batch = batch.set_column(index, self.time_field, moved)
            yield batch

    def seek(self, position: Position | None) -> None:
        self.rows = int(position["rows"]) if position else 0
        self._batches = self._iterate(self.rows)
        self._pending = None

    def read_arrow(self, max_records: int, timeout_seconds: float) -> pa.Table | None:
        parts: list[pa.RecordBatch] = []
        wanted = max_records
        if self._pending is not None:
            take = self._pending.slice(0, wanted)
            parts += take.to_batches()
            wanted -= take.num_rows
            rest = self._pending.slice(take.num_rows)
            self._pending = rest if rest.num_rows else None
        while wanted > 0:
            batch = next(self._batches, None)
            if batch is None:
                break
            if batch.num_rows > wanted:
                parts.append(batch.slice(0, wanted))
                self._pending = pa.Table.from_batches([batch.slice(wanted)])
                wanted = 0
            else:
                parts.append(batch)
                wanted -= batch.num_rows
        if not parts:
            return None
        table = pa.Table.from_batches(parts)
        self.rows += table.num_rows
        return table

    def read(self, max_records: int, timeout_seconds: float) -> list[dict[str, object]]:
        table = self.read_arrow(max_records, timeout_seconds)
        return table.to_pylist() if table is not None else []

    def position(self) -> Position:
        return {"rows": self.rows}

    def committed(self, position: Position) -> None:
        return None

    def lag(self) -> int | None:
        return self.total - self.rows

    def exhausted(self) -> bool:
        return self.rows >= self.total

    def close(self) -> None:
        return None
