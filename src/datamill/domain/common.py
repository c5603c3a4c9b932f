"""Rules shared by every resource: names, pagination and the model base class."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from datamill.errors import E_BY_CODE, DatamillError, E, field_error

NAME_RULE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,127}$")
NAME_RULE_TEXT = "1-128 letters, digits or underscores, starting with a letter or underscore"


@dataclass(frozen=True)
class Documented:
    """Annotation that states in the JSON schema (OpenAPI) a rule a validator enforces.

    A rule checked by an ``AfterValidator`` (to answer with the catalog's own error code)
    is invisible to the schema; this puts its ``pattern`` and real length limits there,
    replacing the generic ``maxLength`` every string gets from :class:`Model`'s config.
    """

    pattern: str
    max_length: int
    description: str = ""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.update(pattern=self.pattern, minLength=1, maxLength=self.max_length)
        if self.description and "description" not in schema:
            schema["description"] = self.description
        return schema


NAME_SCHEMA = Documented(NAME_RULE.pattern, 128, NAME_RULE_TEXT)


def number_bounds(minimum: float, maximum: float) -> Callable[[dict[str, Any]], None]:
    """``json_schema_extra`` for a number field typed ``int | float``: pydantic puts its
    ``ge``/``le`` beside the ``anyOf`` under their own names, which JSON Schema ignores."""

    def update(schema: dict[str, Any]) -> None:
        schema.pop("ge", None)
        schema.pop("le", None)
        schema.update(minimum=minimum, maximum=maximum)

    return update


DEFAULT_ENGINE = "duckdb"
"""The engine a job runs on when it names none."""


def check_name(value: str) -> str:
    """The specification's name rule for data sources, variables, fields and other resources."""
    if not NAME_RULE.fullmatch(value):
        raise field_error(
            E.INVALID_NAME, "invalid name '{value}': use " + NAME_RULE_TEXT, {"value": value[:140]}
        )
    return value


def check_field_name(value: str) -> str:
    if not NAME_RULE.fullmatch(value):
        raise field_error(
            E.INVALID_FIELD_NAME,
            "invalid field name '{value}': use " + NAME_RULE_TEXT,
            {"value": value[:140]},
        )
    return value


Name = Annotated[str, AfterValidator(check_name), NAME_SCHEMA]
FieldName = Annotated[str, AfterValidator(check_field_name), NAME_SCHEMA]
Description = Annotated[str, Field(max_length=1024)]


def _refuse_nul(value: Any, where: str = "") -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise field_error(
                E.INVALID_PARAMETER,
                "{where}NUL characters are not allowed in text",
                {"where": f"{where}: " if where else ""},
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_nul(key, where)
            _refuse_nul(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul(item, f"{where}[{index}]")


_STRICT_SCALARS = frozenset({"int", "float", "bool"})
_NOT_SCHEMAS = frozenset({"default", "expected", "metadata", "serialization"})
"""Keys of a core schema whose values are data (defaults, literal values), not schemas."""


def _integer_literal(value: Any) -> Any:
    if type(value) is not int:
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


def strict_scalars(schema: Any) -> Any:
    """A copy of a pydantic core schema in which integers, numbers and booleans are strict.

    A JSON body's types must match the field's: ``true`` is not an integer, ``"5"`` is not
    a number, ``1`` and ``"true"`` are not booleans (a number field still takes an integer,
    JSON having one number type). Everything else keeps pydantic's usual parsing, which
    pydantic's own strict mode would refuse for a parsed body: enums given as their
    string values, datetimes given as ISO text or epoch numbers, nested models as objects.
    A ``Literal`` of integers (``qos: 0 | 1 | 2``) takes integers only, not ``true``."""
    if isinstance(schema, list):
        return [strict_scalars(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    copy = {
        key: value if key in _NOT_SCHEMAS else strict_scalars(value)
        for key, value in schema.items()
    }
    kind = copy.get("type")
    if not isinstance(kind, str):  # a mapping of field names, one of them "type"
        return copy
    if kind in _STRICT_SCALARS:
        copy["strict"] = True
    elif kind == "literal" and all(type(v) is int for v in copy.get("expected", [None])):
        return {
            "type": "function-before",
            "function": {"type": "no-info", "function": _integer_literal},
            "schema": copy,
        }
    return copy


class Model(BaseModel):
    """Base of every request and response model: unknown fields are refused, not ignored,
    no text may contain a NUL character (PostgreSQL cannot store one), and integers,
    numbers and booleans must be given as such (:func:`strict_scalars`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_max_length=65536)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[BaseModel], handler: GetCoreSchemaHandler, /
    ) -> CoreSchema:
        schema: CoreSchema = strict_scalars(handler(source))
        return schema

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        _refuse_nul(data)
        return data


class Page(BaseModel):
    page: int = Field(1, ge=1, description="1-based page number")
    size: int = Field(50, ge=1, le=1000, description="items per page")

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


T = TypeVar("T")


class PageOf(BaseModel, Generic[T]):
    total: int
    page: int
    size: int
    items: list[T]


def drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "field required",
}
_SCALAR_TAGS = frozenset({"int", "float", "bool", "str", "constrained-str"})
"""How pydantic names the scalar members of a union in an error's location."""
_EXPECTED_TYPES = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean (true or false)",
    "string_type": "a string",
}


def json_type(value: Any) -> str:
    """The JSON type of a parsed JSON value, as a message names it."""
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "..."
        return f'a string ("{shown}")'
    if value is None:
        return "null"
    return "an array" if isinstance(value, list) else "an object"


_LOCATIONS = {"query": "query parameter", "path": "path parameter", "header": "header"}


def location_text(loc: tuple[int | str, ...] | list[int | str], prefix: str = "") -> str:
    """``("body", "schema", 0, "valtype")`` -> ``schema[0].valtype``."""
    parts = list(loc)
    where = ""
    if parts and parts[0] in _LOCATIONS and not prefix:
        where = f" ({_LOCATIONS[str(parts.pop(0))]})"
    elif parts and parts[0] == "body":
        parts.pop(0)
    text = prefix
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif str(part).startswith(("function-", "tagged-union[")):
            continue
        else:
            text += ("." if text else "") + str(part)
    return (text or "body") + where


def merge_union_members(errors: Sequence[Any]) -> list[Any]:
    """pydantic reports a value that fits no member of ``int | float`` once per member, at
    ``field.int`` and ``field.float``: one error at ``field`` listing the types instead."""
    merged: list[Any] = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        kind = error.get("type")
        if kind in _EXPECTED_TYPES and loc and loc[-1] in _SCALAR_TAGS:
            error = {**error, "loc": loc[:-1], "expected": [kind]}
            last = merged[-1] if merged else {}
            if "expected" in last and last["loc"] == error["loc"]:
                last["expected"].append(kind)
                continue
        merged.append(error)
    return merged


def error_text(error: Mapping[str, Any]) -> str:
    """The message of one pydantic error, without its location; a wrong JSON type names
    the type expected and the value given."""
    kind = str(error.get("type", ""))
    if kind in _EXPECTED_TYPES and "input" in error:
        kinds = list(error.get("expected", [kind]))
        if "float_type" in kinds and "int_type" in kinds:
            kinds.remove("int_type")  # a number may be an integer
        expected = " or ".join(_EXPECTED_TYPES[k] for k in kinds)
        return f"must be {expected}, not {json_type(error['input'])}"
    message = _MESSAGES.get(kind, str(error.get("msg", "invalid value")))
    return message.removeprefix("Value error, ")


def validation_failure(exc: ValidationError | Sequence[Any], prefix: str = "") -> DatamillError:
    """Turn pydantic's first validation error into a catalog error naming the field."""
    errors = merge_union_members(exc.errors() if isinstance(exc, ValidationError) else exc)
    first = errors[0] if errors else {"type": "value_error", "loc": (), "msg": "invalid"}
    kind = str(first.get("type", ""))
    loc = location_text(tuple(first.get("loc", ())), prefix)
    msg = error_text(first)
    error = E.INVALID_PARAMETER
    if kind in E_BY_CODE:
        error = E_BY_CODE[kind]
    elif kind == "json_invalid":
        return DatamillError(E.BODY_MALFORMED, f"request body is not valid JSON: {msg}")
    elif kind == "missing" and loc == "body":
        return DatamillError(E.BODY_EMPTY, "request body is empty; a JSON object is required")
    elif kind == "string_too_long":
        error = E.FIELD_TOO_LONG
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return DatamillError(error, f"{loc}: {msg}{more}", field=loc)


_EPOCH_RANGE = (-62135596800000, 253402300799999)  # 0001-01-01 .. 9999-12-31, in milliseconds


def _epoch_number(value: Any) -> Any:
    """A query value that is a number in any JSON notation (``1.7e9``) becomes that number.

    Pydantic reads a plain numeric string as epoch time but not one with an exponent, so a
    number the schema allows would be refused for its notation.
    """
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if number == number and abs(number) != float("inf") and "_" not in value:
            return number
    return value


BatchTime = Annotated[
    datetime,
    BeforeValidator(_epoch_number),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "format": "date"},
                {
                    "type": "number",
                    "minimum": _EPOCH_RANGE[0],
                    "maximum": _EPOCH_RANGE[1],
                    "description": "Unix time: seconds, or milliseconds when the absolute "
                    "value exceeds 2e10",
                },
            ]
        }
    ),
]
"""A batch time given by a caller: an RFC 3339 date-time (no offset = UTC), a date
(midnight UTC), or Unix time as a number (seconds; milliseconds above 2e10)."""


def aware(moment: datetime) -> datetime:
    """A datetime with a zone: a naive one given by a caller is read as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
