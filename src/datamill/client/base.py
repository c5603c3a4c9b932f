"""What every resource of the client shares: escaped paths, page walks, JSON bodies and the
long-poll wait for a run to end."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel

from datamill.client.errors import DatamillProtocolError, InvalidName, RunWaitTimeout
from datamill.client.models import TERMINAL, ExportRunEntry, HistoryEntry, Page

if TYPE_CHECKING:
    from datamill.client.client import DatamillClient

ITER_PAGE_SIZE = 500
"""Items per request when ``iter_all`` walks a list."""

DEFAULT_WAIT_SECONDS = 600.0
"""How long :meth:`JobsAPI.wait` waits for a run by default."""
LONG_POLL_SECONDS = 30.0
"""The longest one wait request asks the server to hold its answer (it allows 60)."""
LONG_POLL_MARGIN = 5.0
"""Seconds of the HTTP timeout left for the answer to arrive after the hold."""

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
RunEntry = TypeVar("RunEntry", HistoryEntry, ExportRunEntry)

Moment = datetime | str


def _segment(value: str | int) -> str:
    """One path segment, escaped so a name can never change the route it is sent to.

    A ``/`` is refused outright: servers decode ``%2F`` before routing, so escaping it
    would not keep ``x/preview`` from reaching another route.
    """
    if "/" in str(value):
        raise InvalidName(f"invalid name {str(value)[:140]!r}: names cannot contain '/'")
    text = quote(str(value), safe="")
    if text in {".", ".."}:
        text = text.replace(".", "%2E")
    return text


def api_path(*segments: str | int) -> str:
    """``/a/b/c`` from names and ids, each escaped as one path segment."""
    return "".join("/" + _segment(s) for s in segments)


def moment_text(value: Moment | None) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else value


def json_of(value: Any) -> Any:
    """A model as its JSON (by alias, without unset ``None`` fields), a mapping as a dict."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def read_page(data: Any, key: str, item: Callable[[Any], T]) -> Page[T]:
    """A list answer ``{"total", "page", "size", key: [...]}`` as a :class:`Page`, each
    element read by ``item``."""
    if not isinstance(data, Mapping) or not isinstance(data.get(key), list):
        raise DatamillProtocolError(f"expected a page of '{key}' from the server")
    try:
        return Page(
            total=int(data["total"]),
            page=int(data["page"]),
            size=int(data["size"]),
            items=[item(element) for element in data[key]],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DatamillProtocolError(f"malformed page of '{key}': {exc}") from None


def walk_pages(fetch: Callable[[int, int], Page[T]]) -> Iterator[T]:
    """Every item of a list, fetched ``ITER_PAGE_SIZE`` at a time by ``fetch(page, size)``."""
    size = ITER_PAGE_SIZE
    page = 1
    while True:
        result = fetch(page, size)
        yield from result.items
        if not result.items or not result.has_next:
            return
        page += 1


def pause_before_next_poll(poll: float, deadline: float | None, max_poll: float | None) -> float:
    """Sleep ``poll`` seconds (never past ``deadline``); return the next pause, grown by
    half up to ``max_poll``."""
    time.sleep(poll if deadline is None else min(poll, max(0.0, deadline - time.monotonic())))
    if max_poll is not None and poll < max_poll:
        return min(poll * 1.5, max_poll)
    return poll


class Resource:
    """One resource of the API, reached through the client's transport."""

    def __init__(self, client: DatamillClient) -> None:
        self._client = client

    def _get(self, model: type[M], path: str, params: Mapping[str, Any] | None = None) -> M:
        return self._client.parse(model, self._client.request("GET", path, params=params))

    def _send(self, method: str, model: type[M], path: str, body: Any) -> M:
        return self._client.parse(model, self._client.request(method, path, json=body))

    def _page(
        self,
        model: type[M],
        path: str,
        key: str,
        page: int,
        size: int,
        params: Mapping[str, Any] | None = None,
    ) -> Page[M]:
        query = {"page": page, "size": size, **(params or {})}
        return self._client.parse_page(model, self._client.request("GET", path, params=query), key)

    def _delete(self, path: str) -> None:
        self._client.request("DELETE", path)

    def _wait_for_end(
        self,
        model: type[RunEntry],
        path_of: Callable[[int], str],
        run_id: int,
        late: Callable[[RunEntry], RunWaitTimeout],
        deadline: float | None,
        poll: float,
        max_poll: float | None,
    ) -> RunEntry:
        """Long-poll ``path_of(run_id)`` (``?waitSeconds=N``) until the run it shows is
        Successful, Failed or Canceled; raise ``late(last entry)`` past ``deadline``.

        Should an answer come back early with the run unfinished, the next request follows
        after ``poll`` seconds, a pause that grows by half up to ``max_poll``.
        """
        while True:
            hold = self._long_poll_seconds(deadline)
            asked = time.monotonic()
            entry = self._get(model, path_of(run_id), {"waitSeconds": round(hold, 3)})
            if entry.status in TERMINAL:
                return entry
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise late(entry)
            run_id = entry.runId  # -1 resolved: keep waiting for the same run
            if now - asked < hold / 2:  # answered early: do not flood the server
                poll = pause_before_next_poll(poll, deadline, max_poll)

    def _long_poll_seconds(self, deadline: float | None) -> float:
        """How long one wait request may hold: what is left, within the HTTP timeout."""
        read = self._client.read_timeout
        hold = LONG_POLL_SECONDS
        if read is not None:  # the answer must come before the HTTP client gives up
            hold = min(hold, max(0.0, read - min(LONG_POLL_MARGIN, read / 2)))
        if deadline is not None:
            hold = min(hold, max(0.0, deadline - time.monotonic()))
        return hold
