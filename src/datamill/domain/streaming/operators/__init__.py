"""The streaming operators: one module per ``className`` (config model, check, compile),
each registered once in :data:`~.registry.OPERATORS`.

Adding an operator is one module here (a subclass of :class:`~.base.Operator` decorated
with :func:`~.registry.register`), its import below, and its tests.
"""

from datamill.domain.streaming.operators import (
    aggregate,
    call_function_graph,
    deduplicate,
    dis_sink,
    filter,
    flat,
    map,
    nest,
    pipeline_source,
    select_fields,
    smn_sink,
)
from datamill.domain.streaming.operators.base import CompileError, Operator, Role
from datamill.domain.streaming.operators.registry import (
    OPERATORS,
    UnknownOperator,
    operator,
    register,
)

__all__ = [
    "OPERATORS",
    "CompileError",
    "Operator",
    "Role",
    "UnknownOperator",
    "aggregate",
    "call_function_graph",
    "deduplicate",
    "dis_sink",
    "filter",
    "flat",
    "map",
    "nest",
    "operator",
    "pipeline_source",
    "register",
    "select_fields",
    "smn_sink",
]
