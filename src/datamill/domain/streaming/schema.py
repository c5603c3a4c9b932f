"""The schema of the records an operator outputs, and the problems found computing it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field

from datamill.domain.expressions import FieldType, Loose, Scope, ValueType, unify


@dataclass
class Schema:
    """The fields of the records an operator outputs.

    ``open``: more fields may exist than those listed (their types are unknown);
    ``event_time``: the TIMESTAMP field carrying event time, if one is known.
    """

    fields: dict[str, ValueType] = dataclass_field(default_factory=dict)
    open: bool = False
    event_time: str | None = None

    @classmethod
    def unknown(cls) -> Schema:
        return cls({}, open=True)

    @property
    def scope(self) -> Scope:
        return Scope(self.fields, self.open)

    def type_of(self, name: str) -> ValueType | None:
        if name in self.fields:
            return self.fields[name]
        return Loose.ANY if self.open else None

    def with_fields(self, added: dict[str, ValueType]) -> Schema:
        """This schema with ``added`` fields (replacing those of the same name)."""
        fields = {**self.fields, **added}
        event_time = self.event_time
        if event_time in added and added[event_time] not in (FieldType.TIMESTAMP, Loose.ANY):
            event_time = None
        return Schema(fields, self.open, event_time)

    def listing(self) -> str:
        names = ", ".join(list(self.fields)[:20]) or "none"
        more = ", …" if len(self.fields) > 20 else ""
        return f"the input's fields are {names}{more}"


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class Problems(list[Problem]):
    """The problems of one operator, collected while its output schema is computed."""

    def add(self, path: str, message: str) -> None:
        self.append(Problem(path, message))

    def empty(self, path: str, hint: str = "") -> None:
        self.add(path, "empty" + (f" ({hint})" if hint else ""))


def merge(inputs: Sequence[tuple[str, Schema]]) -> tuple[Schema, Problems]:
    """The schema of an operator reading several inputs (their union, which must agree)."""
    problems = Problems()
    if not inputs:
        return Schema.unknown(), problems
    first_id, first = inputs[0]
    if len(inputs) == 1:
        return first, problems
    fields = dict(first.fields)
    open_ = any(s.open for _, s in inputs)
    times = {s.event_time for _, s in inputs}
    for other_id, other in inputs[1:]:
        for name, kind in other.fields.items():
            if name in fields:
                both = unify(fields[name], kind)
                if both is None:
                    problems.add(
                        "fromOperators",
                        f"field '{name}' is {fields[name]} in '{first_id}' but {kind} in "
                        f"'{other_id}'",
                    )
                    both = Loose.ANY
                fields[name] = both
            else:
                fields[name] = kind
        if not open_ and set(other.fields) != set(first.fields):
            problems.add(
                "fromOperators",
                f"the inputs '{first_id}' and '{other_id}' have different fields; an operator "
                "reading several inputs needs the same fields in each",
            )
    event_time = times.pop() if len(times) == 1 else None
    return Schema(fields, open_, event_time), problems
