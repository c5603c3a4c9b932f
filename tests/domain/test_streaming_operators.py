"""The operator registry: every operator of seed 000 is one registered module whose
compile step gives what the engine runs; an unknown className is refused; the job's
engine is checked with the rest."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from datamill import engines
from datamill.domain.expressions import FieldType
from datamill.domain.streaming import (
    ENGINE,
    OPERATORS,
    AddFields,
    CompileError,
    Configs,
    ExplodeArray,
    KeepRecords,
    Operator,
    Role,
    Schema,
    SelectColumns,
    SinkStep,
    SourceStep,
    StatefulSpec,
    Step,
    StreamingJobBody,
    TransformStep,
    UnknownOperator,
    check_pipeline,
    operator,
    register,
)
from datamill.domain.streaming.operators import filter as filter_module
from datamill.engines import base as engine_registry
from datamill.engines.duckdb import DuckDBEngine
from datamill.engines.duckdb.streaming.render import query_renderer
from tests.conftest import Api
from tests.services.test_streaming_jobs import create, jobs_url, valid_pipeline

SEED_000_OPERATORS = {
    "PipelineSource",
    "Filter",
    "Flat",
    "Aggregate",
    "Map",
    "Nest",
    "Deduplicate",
    "SelectFields",
    "DISSink",
    "SMNSink",
    "CallFunctionGraph",
}

INPUT = Schema(
    {
        "device": FieldType.STRING,
        "value": FieldType.DOUBLE,
        "payload": FieldType.MAP,
        "ts": FieldType.TIMESTAMP,
    },
    event_time="ts",
)

BASICS: dict[str, dict[str, Any]] = {
    "PipelineSource": {"fields": [{"field": "device", "type": "STRING"}]},
    "Filter": {"conditions": [{"leftValue": "value", "symbol": "MORE_THAN", "rightValue": 1}]},
    "Flat": {"flatFieldConfig": [{"field": "t", "type": "DOUBLE", "path": "payload.t"}]},
    "Aggregate": {
        "windowsType": "TumblingTimeWindows",
        "windowAssigner": {"timeType": "ProcessingTime", "size": 10},
        "aggregateFields": [
            {"field": "n", "type": "LONG", "aggregateField": "", "aggregateType": "COUNT"}
        ],
    },
    "Map": {"mapFieldConfig": [{"field": "f", "type": "DOUBLE", "expression": "value * 2"}]},
    "Nest": {
        "nestFieldConfig": {
            "field": "nested",
            "type": "MAP",
            "nestFields": [{"path": "a.b", "type": "FIELD", "value": "device"}],
        }
    },
    "Deduplicate": {"deduplicateFields": ["device"]},
    "SelectFields": {"selectFields": ["device", "value"]},
    "DISSink": {"target": "out"},
    "SMNSink": {"dataSourceId": "notify", "defaultMessage": "${device}"},
    "CallFunctionGraph": {
        "dataSourceId": "fn",
        "apiParamFields": ["device"],
        "apiOutputField": {"field": "answer", "type": "STRING"},
    },
}
ADVANCES: dict[str, dict[str, Any]] = {"Deduplicate": {"deduplicatePeriod": {"period": 60}}}

STEPS: dict[str, type[Any] | tuple[type[Any], ...]] = {
    "PipelineSource": SourceStep,
    "Filter": KeepRecords,
    "Flat": AddFields,
    "Aggregate": StatefulSpec,
    "Map": AddFields,
    "Nest": AddFields,
    "Deduplicate": StatefulSpec,
    "SelectFields": SelectColumns,
    "DISSink": SinkStep,
    "SMNSink": SinkStep,
    "CallFunctionGraph": TransformStep,
}


def compiled(class_name: str, basic: dict[str, Any], advance: dict[str, Any] | None = None) -> Step:
    kind = operator(class_name)
    config, problems = kind.parse_config(Configs(basicConfigs=basic, advanceConfigs=advance))
    assert config is not None, problems
    inputs = [] if kind.role == Role.SOURCE else [INPUT]
    output, problems = kind.output_schema(inputs, config)
    assert not problems, problems
    return kind.compile(config, INPUT, output)


def test_every_operator_of_seed_000_is_registered_once_under_its_class_name() -> None:
    assert set(OPERATORS) == SEED_000_OPERATORS
    for class_name, kind in OPERATORS.items():
        assert isinstance(kind, Operator)
        assert kind.class_name == class_name


@pytest.mark.parametrize("class_name", sorted(SEED_000_OPERATORS))
def test_each_operator_compiles_to_its_step(class_name: str) -> None:
    step = compiled(class_name, BASICS[class_name], ADVANCES.get(class_name))
    assert isinstance(step, STEPS[class_name])


def test_stateless_steps_render_once_into_a_template_over_their_input() -> None:
    step = compiled("Filter", BASICS["Filter"])
    assert isinstance(step, KeepRecords)
    render = query_renderer(step)
    assert render('"t"') == 'SELECT * FROM "t" WHERE (("value" > 1))'
    flat = compiled("Flat", {**BASICS["Flat"], "multiRecordsPath": "payload.items"})
    assert isinstance(flat, ExplodeArray)
    assert query_renderer(flat)("(INPUT)").count("(INPUT)") == 1


def test_a_literal_naming_the_placeholder_does_not_break_the_template() -> None:
    condition = {"leftValue": "device", "symbol": "EQUAL", "rightValue": "'\"__dm_input0\"'"}
    step = compiled("Filter", {"conditions": [condition]})
    assert isinstance(step, KeepRecords)
    assert query_renderer(step)("INPUT").startswith("SELECT * FROM INPUT WHERE")


def test_sinks_name_their_connection_or_their_built_in_kind() -> None:
    assert compiled("DISSink", {"target": "out"}) == SinkStep(
        None, "folder", {"target": "out", "format": "JSON"}
    )
    step = compiled("DISSink", {"targetJobId": "other"})
    assert isinstance(step, SinkStep)
    assert (step.connection, step.kind) == (None, "job")
    step = compiled("DISSink", {"dataSourceId": "bucket"})
    assert isinstance(step, SinkStep)
    assert (step.connection, step.kind) == ("bucket", None)


def test_a_notification_without_a_connection_cannot_compile() -> None:
    kind = operator("SMNSink")
    config, _ = kind.parse_config(Configs(basicConfigs={"topicUrn": "t", "defaultMessage": "m"}))
    assert config is not None
    with pytest.raises(CompileError, match="dataSourceId"):
        kind.compile(config, INPUT, Schema())


def test_an_unknown_class_name_is_refused() -> None:
    with pytest.raises(UnknownOperator) as caught:
        operator("Teleport")
    assert "unknown operator 'Teleport'" in str(caught.value)
    assert "PipelineSource" in str(caught.value)
    body = StreamingJobBody.model_validate(
        {
            "definition": {"jobName": "x"},
            "operatorInstances": [{"id": "a", "className": "Teleport"}],
        }
    )
    problems = check_pipeline(body).info["a"]
    assert problems[0].startswith("className: unknown operator 'Teleport'; the operators are")


def test_a_class_name_registers_once() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register(filter_module.Filter)
    assert isinstance(OPERATORS["Filter"], filter_module.Filter)


def test_an_unknown_engine_is_a_check_problem() -> None:
    body = StreamingJobBody.model_validate(valid_pipeline())
    assert body.engine == "duckdb"
    assert check_pipeline(body).passed
    body.engine = "teleport"
    info = check_pipeline(body).info
    assert list(info) == [ENGINE]
    assert info[ENGINE] == ["engine: unknown engine 'teleport'; the engines are duckdb"]


def test_the_engine_is_saved_and_checked_through_the_api(api: Api, project: str) -> None:
    body = valid_pipeline()
    saved = create(api, project, body, check=True)
    assert saved["job_state"] == "READY"
    job = api.get(f"{jobs_url(project)}/{saved['job_id']}").json()
    assert job["engine"] == "duckdb"
    body["engine"] = "teleport"
    draft = create(api, project, body)
    assert draft["job_state"] == "DRAFT"
    assert api.get(f"{jobs_url(project)}/{draft['job_id']}").json()["engine"] == "teleport"
    failed = create(api, project, body, check=True)
    assert (failed["job_state"], failed["status"]) == ("DRAFT", "failed")
    assert failed["check_info"] == {
        "$engine": ["engine: unknown engine 'teleport'; the engines are duckdb"]
    }


class BatchOnly(DuckDBEngine):
    type = "batchonly"
    capabilities = dataclasses.replace(DuckDBEngine.capabilities, streaming=False)


def test_only_engines_that_stream_pass_the_check(
    api: Api, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_registry, "_ENGINES", dict(engine_registry._ENGINES))
    engines.register(BatchOnly())
    assert "batchonly" in engines.types()
    assert engines.streaming_types() == ["duckdb"]
    body = valid_pipeline()
    body["engine"] = "batchonly"
    failed = create(api, project, body, check=True)
    assert failed["check_info"] == {
        "$engine": ["engine: unknown engine 'batchonly'; the engines are duckdb"]
    }


def test_operators_declare_the_connection_types_they_name() -> None:
    declared = {name: kind.connection_types for name, kind in OPERATORS.items()}
    assert declared == {
        **dict.fromkeys(SEED_000_OPERATORS, ()),
        "PipelineSource": ("mqtt", "kafka"),
        "DISSink": ("mqtt", "kafka"),
        "SMNSink": ("notification",),
        "CallFunctionGraph": ("function",),
    }
