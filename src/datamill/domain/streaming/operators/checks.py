"""Checks and value builders the operators share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlglot import exp

from datamill.domain.common import NAME_RULE, NAME_RULE_TEXT
from datamill.domain.expressions import (
    JSON_HOLDERS,
    Compiled,
    ExpressionError,
    FieldRef,
    FieldType,
    ValueType,
    cast,
    compile_expression,
    compile_predicate,
    is_loose,
    json_text,
    json_value,
    parse_path,
)
from datamill.domain.streaming.operators.base import ADVANCE, Advance, TypedField
from datamill.domain.streaming.schema import Problems, Schema


def check_new_name(problems: Problems, path: str, name: str | None) -> str | None:
    """A field name an operator creates: returns it when it is valid."""
    if name is None or not name.strip():
        problems.empty(path)
        return None
    if not NAME_RULE.fullmatch(name):
        problems.add(path, f"invalid field name '{name[:80]}': use {NAME_RULE_TEXT}")
        return None
    return name


def check_input_field(
    problems: Problems, path: str, schema: Schema, name: str | None
) -> ValueType | None:
    """The type of input field ``name``, or None (with a problem) when it does not exist."""
    if name is None or not name.strip():
        problems.empty(path)
        return None
    kind = schema.type_of(name)
    if kind is None:
        problems.add(path, f"field '{name[:80]}' does not exist upstream; {schema.listing()}")
    return kind


def check_field_list(
    problems: Problems, path: str, schema: Schema, names: Sequence[str], *, required: bool
) -> dict[str, ValueType]:
    found: dict[str, ValueType] = {}
    if not names and required:
        problems.empty(path, "name at least one field")
    for i, name in enumerate(names):
        if name in found:
            problems.add(f"{path}[{i}]", f"field '{name}' is listed twice")
            continue
        kind = check_input_field(problems, f"{path}[{i}]", schema, name)
        if kind is not None:
            found[name] = kind
    return found


Parsed = TypeVar("Parsed")


def parse_or_report(
    problems: Problems, path: str, text: str | None, parse: Callable[[str], Parsed]
) -> Parsed | None:
    """``parse(text)``; None, with a problem at ``path``, when ``text`` is empty or
    ``parse`` raises :class:`ExpressionError`."""
    if text is None or not text.strip():
        problems.empty(path)
        return None
    try:
        return parse(text)
    except ExpressionError as exc:
        problems.add(path, str(exc))
        return None


def check_path(problems: Problems, path: str, schema: Schema, text: str | None) -> FieldRef | None:
    """A path into an input field (``payload.items[0]``): the field must exist and hold
    JSON (MAP, ARRAY or STRING) when keys follow it."""
    ref = parse_or_report(problems, path, text, parse_path)
    if ref is None:
        return None
    kind = check_input_field(problems, path, schema, ref.name)
    if kind is not None and ref.keys and kind not in JSON_HOLDERS and not is_loose(kind):
        problems.add(path, f"field '{ref.name}' is {kind}; a path reads into MAP, ARRAY or STRING")
    return ref


def check_positive(problems: Problems, path: str, value: int | None, what: str) -> None:
    if value is not None and value <= 0:
        problems.add(path, f"{what} must be greater than 0")


def check_parallelism(problems: Problems, advance: Advance) -> None:
    if advance.parallelism is not None and not 1 <= advance.parallelism <= 1024:
        problems.add(f"{ADVANCE}.parallelism", "must be 1-1024")


def compile_or_report(
    problems: Problems, path: str, text: str | None, schema: Schema, *, predicate: bool = False
) -> Compiled | None:
    compile_text = compile_predicate if predicate else compile_expression
    return parse_or_report(problems, path, text, lambda text: compile_text(text, schema.scope))


def one_input(inputs: Sequence[Schema]) -> Schema:
    return inputs[0] if inputs else Schema.unknown()


def check_typed_field(problems: Problems, path: str, declared: TypedField) -> str | None:
    """Checks a field an operator adds (``path`` is the entry's): a valid new name and a
    type. Returns the name when it is valid."""
    name = check_new_name(problems, f"{path}.field", declared.field)
    if declared.type is None:
        problems.empty(f"{path}.type")
    return name


def add_field(
    problems: Problems,
    path: str,
    fields: dict[str, ValueType],
    name: str | None,
    kind: ValueType,
    twice: str,
) -> None:
    """Adds field ``name`` (unless None) to ``fields``; when it is there already, the
    entry at ``path`` gets the problem "field 'name' is <twice> twice" (and wins)."""
    if name is None:
        return
    if name in fields:
        problems.add(f"{path}.field", f"field '{name}' is {twice} twice")
    fields[name] = kind


def check_each_input(problems: Problems, path: str, inputs: Sequence[Schema], name: str) -> None:
    for schema in inputs:
        if schema.type_of(name) is None:
            problems.add(path, f"field '{name[:80]}' does not exist upstream; {schema.listing()}")
            return


def path_value(source: exp.Expr, keys: Sequence[str | int], kind: FieldType | None) -> exp.Expr:
    """The value at ``keys`` in the JSON ``source`` as a field of type ``kind`` (MAP and
    ARRAY stay JSON; without keys, ``source`` itself)."""
    if kind in (FieldType.MAP, FieldType.ARRAY):
        return json_value(source, keys) if keys else source
    value = json_text(source, keys) if keys else source
    if kind == FieldType.TIMESTAMP:
        zoned = exp.TryCast(this=value, to=exp.DataType.build("TIMESTAMPTZ"))
        return exp.Cast(this=zoned, to=exp.DataType.build("TIMESTAMP"))
    return cast(value, kind) if kind is not None else value
