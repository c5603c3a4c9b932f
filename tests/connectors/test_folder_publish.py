"""Publishing an overwrite to a local folder: a reader never finds the location missing.

The store below is the real local store; it only records, after each step that changes
the file system, whether the published location still holds a whole output (its
``_SUCCESS``). That makes the instant between two renames observable without racing a
reader thread against the writer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from datamill.connectors.exchange import exchange_folders
from datamill.connectors.sinks.file.sink import LocalStore
from datamill.connectors.sinks.outputs.folders import write_folder
from datamill.connectors.sinks.outputs.layout import SUCCESS
from datamill.connectors.sinks.outputs.plan import Writer
from datamill.security.paths import RootView


class WatchedStore(LocalStore):
    """The local store, noting after every change whether ``location`` is whole."""

    def __init__(self, root: Path, location: Path) -> None:
        super().__init__(_view(root))
        self.location = location
        self.seen: list[tuple[str, bool]] = []

    def _note(self, step: str) -> None:
        self.seen.append((step, (self.location / SUCCESS).is_file()))

    def rename(self, src: str, dst: str) -> None:
        super().rename(src, dst)
        self._note(f"rename {Path(src).name} -> {Path(dst).name}")

    def exchange(self, first: str, second: str) -> bool:
        swapped = super().exchange(first, second)
        self._note("exchange")
        return swapped

    def delete(self, path: str, recursive: bool) -> None:
        super().delete(path, recursive)
        self._note(f"delete {Path(path).name}")


def _view(root: Path) -> RootView:
    return RootView.of("default", root, "p", shared=True)


def _text(content: str) -> Writer:
    def write(stream: object) -> None:
        stream.write(content.encode())  # type: ignore[attr-defined]

    return write


def _files(content: str) -> Iterator[tuple[str, Writer]]:
    yield "part-00000.csv", _text(content)


def _publish(store: LocalStore, location: Path, content: str) -> None:
    write_folder(store, str(location), _files(content), "overwrite", None)


def test_an_overwrite_never_leaves_the_location_missing(tmp_path: Path) -> None:
    location = tmp_path / "out" / "batch"
    _publish(LocalStore(_view(tmp_path)), location, "old\n")
    store = WatchedStore(tmp_path, location)

    _publish(store, location, "new\n")

    assert (location / "part-00000.csv").read_text() == "new\n"
    assert store.seen, "the overwrite changed nothing"
    missing = [step for step, whole in store.seen if not whole]
    assert missing == [], f"the location was not whole after: {missing}"
    assert sorted(os.listdir(location.parent)) == ["batch"], "the old output is left behind"


def test_exchange_swaps_two_folders(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "from-a").touch()
    (second / "from-b").touch()

    assert exchange_folders(str(first), str(second))

    assert os.listdir(first) == ["from-b"]
    assert os.listdir(second) == ["from-a"]


def test_exchange_with_a_missing_path_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(FileNotFoundError):
        exchange_folders(str(tmp_path / "a"), str(tmp_path / "absent"))
