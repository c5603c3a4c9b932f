"""Publishing a job's result for a batch: readers never find the batch folder missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from datamill.runtime.batch import publish


def test_a_rerun_result_replaces_the_batch_folder_without_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's result for a batch, published again by a rerun: after every rename the
    batch folder holds a whole result (the old one, then the new one)."""
    target = tmp_path / "warehouse" / "job" / "20900101T000000"
    first, second = tmp_path / "run1" / "out", tmp_path / "run2" / "out"
    for staging, text in ((first, "old"), (second, "new")):
        staging.mkdir(parents=True)
        (staging / "part-0.parquet").write_text(text)
    publish(first, target)
    seen: list[bool] = []
    replace = os.replace

    def watched(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        replace(src, dst)
        seen.append((target / "part-0.parquet").is_file())

    monkeypatch.setattr(os, "replace", watched)

    publish(second, target, retire_into=tmp_path / "run2" / "replaced")

    assert (target / "part-0.parquet").read_text() == "new"
    assert (tmp_path / "run2" / "replaced" / "part-0.parquet").read_text() == "old"
    assert all(seen), f"the batch folder was missing after a rename: {seen}"
