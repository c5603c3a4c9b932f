"""OptionGroup: options that several CLI commands share, declared once."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from datamill.cli.common import OptionGroup

ColourOpt = Annotated[str | None, typer.Option("--colour", help="a colour", show_default=False)]
SizesOpt = Annotated[list[int] | None, typer.Option("--size", help="sizes", show_default=False)]
GROUP = OptionGroup("picked", colour=ColourOpt, sizes=SizesOpt)


def _app(seen: list[tuple[str, dict[str, Any], bool]]) -> typer.Typer:
    app = typer.Typer()

    @app.command("first")
    @GROUP.add
    def first(name: str, *, picked: dict[str, Any], loud: bool = False) -> None:
        seen.append((name, picked, loud))

    @app.command("second")
    @GROUP.add
    def second(name: str, *, picked: dict[str, Any]) -> None:
        seen.append((name, picked, False))

    return app


def test_a_group_adds_its_options_and_hands_their_values_over_as_one_dict() -> None:
    seen: list[tuple[str, dict[str, Any], bool]] = []
    app = _app(seen)
    runner = CliRunner()
    result = runner.invoke(app, ["first", "x", "--colour", "red", "--size", "1", "--size", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["second", "y"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["first", "z", "--loud"])
    assert result.exit_code == 0, result.output
    assert seen == [
        ("x", {"colour": "red", "sizes": [1, 2]}, False),
        ("y", {"colour": None, "sizes": None}, False),
        ("z", {"colour": None, "sizes": None}, True),
    ]


def test_the_options_stand_where_the_parameter_stood() -> None:
    result = CliRunner().invoke(_app([]), ["first", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert result.output.index("--colour") < result.output.index("--size")
    assert result.output.index("--size") < result.output.index("--loud")


def test_a_command_without_the_parameter_is_refused() -> None:
    def lonely(name: str) -> None:
        pass

    with pytest.raises(TypeError, match="picked"):
        GROUP.add(lonely)
