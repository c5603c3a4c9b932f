"""The CLI in tests: its environment, and the checks of the results of conftest's ``run``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from typer.testing import Result

Run = Callable[..., Result]


def cli_env(**overrides: str | None) -> dict[str, str | None]:
    """A clean environment: no DATAMILL_* settings leak in, tables are wide enough."""
    env: dict[str, str | None] = {
        "DATAMILL_URL": None,
        "DATAMILL_TOKEN": None,
        "DATAMILL_DATA_DIR": None,
        "COLUMNS": "200",
    }
    env.update(overrides)
    return env


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    return result


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def usage_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    for needle in needles:
        assert needle in result.output, (needle, result.output)
