"""Printing results: rich tables for people, the API's JSON for scripts (``--output json``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from datamill.cli.context import State
from datamill.client import (
    ExportHistory,
    History,
    Page,
    Preview,
    RunLog,
    RunResult,
    SchemaField,
)

M = TypeVar("M", bound=BaseModel)
Column = tuple[str, Callable[[Any], Any]]


def to_json(value: Any) -> Any:
    """The JSON the API sends for a result: models by their aliases (``schema``), lists."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def page_json(page: Page[Any], key: str) -> dict[str, Any]:
    """A page as the API sends it: ``{"total", "page", "size", key: [...]}``."""
    return {"total": page.total, "page": page.page, "size": page.size, key: to_json(page.items)}


def history_page(history: History | ExportHistory) -> Page[Any]:
    """A history answer (``{"total", "page", "size", "history"}``) as a :class:`Page`."""
    return Page(
        total=history.total, page=history.page, size=history.size, items=list(history.history)
    )


def print_json(data: Any) -> None:
    """Pretty JSON with sorted keys, so the output is stable for scripts and diffs."""
    typer.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))


def cell(value: Any) -> Text:
    """One table cell as plain text (never rich markup): ``-`` for none, ``yes``/``no``."""
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, datetime):
        text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value.tzinfo else str(value)
    elif isinstance(value, Enum):
        text = str(value.value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = ", ".join(value)
    elif isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    else:
        text = str(value)
    return Text(text)


def console() -> Console:
    return Console(highlight=False)


def _table(title: str | None = None, caption: str | None = None) -> Table:
    """A table at least as wide as its caption, so a narrow table does not wrap that line."""
    width = len(caption) + 2 if caption else None
    return Table(
        title=title, caption=caption, box=box.SIMPLE_HEAD, title_justify="left", min_width=width
    )


def items_table(items: Sequence[Any], columns: Sequence[Column], **kw: Any) -> Table:
    table = _table(**kw)
    for header, _ in columns:
        table.add_column(header, overflow="fold")
    for item in items:
        table.add_row(*(cell(get(item)) for _, get in columns))
    return table


def fields_table(rows: Sequence[tuple[str, Any]], title: str | None = None) -> Table:
    table = _table(title=title)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for label, value in rows:
        table.add_row(label, cell(value))
    return table


def schema_table(schema: Sequence[SchemaField], title: str | None = "schema") -> Table:
    columns: list[Column] = [
        ("key", lambda f: f.key),
        ("valtype", lambda f: f.valtype),
        ("required", lambda f: f.required),
    ]
    return items_table(schema, columns, title=title)


def show_object(
    state: State,
    result: BaseModel,
    rows: Sequence[tuple[str, Any]] | None = None,
    extra: Sequence[Table] = (),
) -> None:
    """One resource: its JSON, or a field/value table (``rows``; default all fields)."""
    if state.json:
        print_json(to_json(result))
        return
    if rows is None:
        rows = [(name, getattr(result, name)) for name in type(result).model_fields]
    out = console()
    out.print(fields_table(rows))
    for table in extra:
        out.print(table)


def show_page(
    state: State,
    page: Page[M],
    key: str,
    columns: Sequence[Column],
    noun: str | None = None,
) -> None:
    """One page of a list: the API's JSON (items under ``key``), or a table with a line
    saying where it is (counting ``noun``, default ``key``)."""
    if state.json:
        print_json(page_json(page, key))
        return
    noun = noun or key
    if page.total == 0:
        caption = f"no {noun}"
    elif not page.items:
        caption = f"page {page.page} is past the end ({page.total} {noun} in all)"
    else:
        first = (page.page - 1) * page.size + 1
        caption = f"{first}-{first + len(page.items) - 1} of {page.total} {noun}"
        if page.has_next:
            caption += f"; next: --page {page.page + 1}"
    console().print(items_table(page.items, columns, caption=caption))


def show_list(state: State, items: Sequence[Any], columns: Sequence[Column], what: str) -> None:
    """A plain list (not paged): its JSON array, or a table."""
    if state.json:
        print_json(to_json(list(items)))
        return
    console().print(items_table(items, columns, caption=f"{len(items)} {what}"))


def rows_table(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = (), caption: str | None = None
) -> Table:
    """Rows of data, one column per key: ``keys`` first, then any other key a row has."""
    columns = list(keys)
    for row in rows:
        columns += [k for k in row if k not in columns]
    table = _table(caption=caption)
    for key in columns:
        table.add_column(key, overflow="fold")
    for row in rows:
        table.add_row(*(cell(row.get(k)) for k in columns))
    return table


def plural(count: int, word: str) -> str:
    """``1 row``, ``2 rows``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def show_preview(state: State, preview: Preview) -> None:
    """Rows of a data source: the API's JSON, or a table with one column per schema field."""
    if state.json:
        print_json(to_json(preview))
        return
    caption = f"{plural(len(preview.rows), 'row')} from {plural(preview.files, 'file')}"
    console().print(rows_table(preview.rows, [f.key for f in preview.schema_], caption))


def show_result(state: State, result: RunResult) -> None:
    """Rows of a run's result: the API's JSON, or a table saying how many rows the run wrote."""
    if state.json:
        print_json(to_json(result))
        return
    caption = f"{plural(len(result.rows), 'row')} of run {result.runId}"
    if result.rowsWritten is not None:
        caption += f" ({result.rowsWritten} written)"
    console().print(rows_table(result.rows, caption=caption))


def show_log(state: State, log: RunLog) -> None:
    """A run's log: its lines as they are, or the whole object with ``--json``."""
    if state.json:
        print_json(to_json(log))
        return
    for line in log.lines:
        typer.echo(line)


def duration_text(seconds: float | None) -> str | None:
    """``0.42s``, ``12.3s``, ``4m05s``, ``2h03m``; ``None`` stays ``None``."""
    if seconds is None:
        return None
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def done(state: State, message: str) -> None:
    """A result without a body (a delete): a line for people, nothing for ``--output json``."""
    if not state.json:
        typer.echo(message)
