"""The operator registry: one :class:`~.base.Operator` per ``className``."""

from __future__ import annotations

from typing import Any, TypeVar

from datamill.domain.streaming.operators.base import Operator

OPERATORS: dict[str, Operator[Any]] = {}
"""className -> operator."""

OperatorClass = TypeVar("OperatorClass", bound=type[Operator[Any]])


class UnknownOperator(KeyError):
    """No operator of that ``className`` is registered."""

    def __init__(self, class_name: str) -> None:
        super().__init__(class_name)
        self.class_name = class_name

    def __str__(self) -> str:
        return f"unknown operator '{self.class_name}'; the operators are " + ", ".join(
            sorted(OPERATORS)
        )


def register(cls: OperatorClass) -> OperatorClass:
    """Class decorator adding an operator to :data:`OPERATORS` (once per className)."""
    if cls.class_name in OPERATORS:
        raise ValueError(f"operator '{cls.class_name}' is registered twice")
    OPERATORS[cls.class_name] = cls()
    return cls


def operator(class_name: str) -> Operator[Any]:
    """The operator registered as ``class_name``; raises :class:`UnknownOperator`."""
    found = OPERATORS.get(class_name)
    if found is None:
        raise UnknownOperator(class_name)
    return found
