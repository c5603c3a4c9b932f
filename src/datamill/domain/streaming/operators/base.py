"""What every streaming operator is: its config model, role, check and compile step."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import BeforeValidator, Field, ValidationError

from datamill.domain.common import Model, error_text, location_text, merge_union_members
from datamill.domain.expressions import FieldType
from datamill.domain.streaming.jobs import Configs
from datamill.domain.streaming.schema import Problems, Schema
from datamill.domain.streaming.steps import Step

MAX_FIELDS = 256
BASIC = "configs.basicConfigs"
ADVANCE = "configs.advanceConfigs"


def _field_list(value: Any) -> Any:
    """Field lists come as a JSON list or as one comma-separated string (seed: ``""``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _flag(value: Any) -> Any:
    if isinstance(value, str) and value.strip().upper() in ("TRUE", "FALSE"):
        return value.strip().upper() == "TRUE"
    return value


FieldList = Annotated[list[Annotated[str, Field(max_length=128)]], BeforeValidator(_field_list)]
Flag = Annotated[bool | None, BeforeValidator(_flag)]
ShortText = Annotated[str | None, Field(max_length=256)]
Text = Annotated[str | None, Field(max_length=4096)]
Scalar = str | int | float | bool | None


class Advance(Model):
    """``advanceConfigs`` every operator accepts."""

    parallelism: int | None = Field(None, description="parallel tasks of this operator")


class Basic(Model):
    """``basicConfigs`` every operator accepts."""

    name: ShortText = Field(None, description="the operator's display name")


class OperatorConfig(Model):
    basicConfigs: Basic = Field(default_factory=Basic)
    advanceConfigs: Advance = Field(default_factory=Advance)


class Role(StrEnum):
    SOURCE = "source"
    TRANSFORM = "transform"
    SINK = "sink"


C = TypeVar("C", bound=OperatorConfig)


class CompileError(Exception):
    """A checked operator that cannot run as configured (the job fails with this reason)."""


class Operator(ABC, Generic[C]):
    """One kind of operator, chosen by ``className``.

    A subclass declares its ``class_name``, its ``role`` and its ``config_model`` (the
    shape of ``configs``); it computes its output schema from its inputs and config (the
    check) and compiles a checked config into the step an engine runs (:mod:`.steps`).
    It is registered once with :func:`~.registry.register`.
    """

    class_name: ClassVar[str]
    role: ClassVar[Role] = Role.TRANSFORM
    merge_inputs: ClassVar[bool] = True
    """True: several inputs are merged into one schema first (sinks take them apart)."""
    connection_types: ClassVar[tuple[str, ...]] = ()
    """The data source types the operator can name in ``dataSourceId`` (none: it names
    no connection)."""
    config_model: type[C]

    def parse_config(self, configs: Configs | None) -> tuple[C | None, Problems]:
        """The typed config, or None and the problems found parsing it."""
        data = {
            "basicConfigs": (configs.basicConfigs if configs else None) or {},
            "advanceConfigs": (configs.advanceConfigs if configs else None) or {},
        }
        try:
            return self.config_model.model_validate(data), Problems()
        except ValidationError as exc:
            problems = Problems()
            for error in merge_union_members(exc.errors()):
                problems.add(location_text(tuple(error["loc"]), "configs"), error_text(error))
            return None, problems

    @abstractmethod
    def output_schema(self, inputs: Sequence[Schema], config: C) -> tuple[Schema, Problems]:
        """The schema of the records this operator outputs, and the problems found.

        ``inputs`` holds one merged schema unless :attr:`merge_inputs` is false; a sink
        returns an empty schema. Problems name their path from ``configs`` on.
        """

    @abstractmethod
    def compile(self, config: C, input_schema: Schema, output_schema: Schema) -> Step:
        """The step an engine runs for this operator, from a config that passed the check.

        ``input_schema`` is the merged schema of the inputs (unknown for a source). Called
        once when a job starts; raises :class:`CompileError`.
        """


def settings(model: Model) -> dict[str, Any]:
    """A config part as plain JSON, without the fields left unset (what connectors get)."""
    return model.model_dump(mode="json", exclude_none=True)


class TypedField(Model):
    """A field an operator adds: its name and type (the base of the ``*Field`` models)."""

    field: ShortText = None
    type: FieldType | None = None


class Relationship(StrEnum):
    AND = "AND"
    OR = "OR"


class StateAdvance(Advance):
    ttlTime: int | None = Field(None, description="seconds idle state is kept")
