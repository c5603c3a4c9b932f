"""Streaming jobs through the API: drafts, the check (graph, configs, schemas), states,
list / get / delete and authorization, on every metadata store."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy import select

from datamill.domain.streaming import OPERATORS, JobState, StreamingJobBody, check_pipeline
from datamill.errors import DatamillError
from datamill.services.streaming import engine_transition
from datamill.store.streaming import StreamingJobRow
from tests import builders
from tests.conftest import Api, assert_error

SEED_EXAMPLE = Path(__file__).parent.parent / "data" / "seed000_example.json"
BASIC = "configs.basicConfigs"
ADVANCE = "configs.advanceConfigs"

Body = dict[str, Any]


def seed_example() -> Body:
    body: Body = json.loads(SEED_EXAMPLE.read_text(encoding="utf-8"))
    return body


def jobs_url(project: str) -> str:
    return f"/projects/{project}/streaming/jobs"


op = functools.partial(builders.op, point={"x": 100, "y": 100})  # as the editor saves them


def valid_pipeline() -> Body:
    """PipelineSource with fields -> Filter -> Map -> Aggregate (tumbling, event time) ->
    DISSink: the streaming reference workload (W2) as a pipeline."""
    return {
        "definition": {
            "jobName": "w2_pipeline",
            "jobDescription": "device temperatures per 10 s",
            "jobType": "API",
            "jobInputType": "PIPELINE_DATA",
        },
        "operatorInstances": [
            op(
                "source",
                "PipelineSource",
                [],
                {
                    "name": "events",
                    "fields": [
                        {"field": "device_id", "type": "STRING"},
                        {"field": "value", "type": "DOUBLE"},
                        {"field": "status", "type": "STRING"},
                        {"field": "event_time", "type": "TIMESTAMP"},
                    ],
                    "eventTimeField": "event_time",
                },
            ),
            op(
                "filter",
                "Filter",
                ["source"],
                {
                    "name": "drop x",
                    "conditionRelationship": "AND",
                    "conditions": [
                        {"leftValue": "status", "symbol": "NOT_EQUAL", "rightValue": "'x'"},
                        {"leftValue": "value", "symbol": "NOT_NULL", "rightValue": None},
                    ],
                },
            ),
            op(
                "map",
                "Map",
                ["filter"],
                {
                    "name": "fahrenheit",
                    "mapFieldConfig": [
                        {"field": "fahrenheit", "type": "DOUBLE", "expression": "value * 1.8 + 32"}
                    ],
                },
            ),
            op(
                "aggregate",
                "Aggregate",
                ["map"],
                {
                    "name": "per device and 10 s",
                    "keyFields": ["device_id"],
                    "windowsType": "TumblingTimeWindows",
                    "windowAssigner": {"timeType": "EventTime", "size": 10, "offset": 0},
                    "aggregateFields": [
                        {
                            "field": "n",
                            "type": "LONG",
                            "aggregateField": "",
                            "aggregateType": "COUNT",
                        },
                        {
                            "field": "total",
                            "type": "DOUBLE",
                            "aggregateField": "fahrenheit",
                            "aggregateType": "SUM",
                        },
                        {
                            "field": "mean",
                            "type": "DOUBLE",
                            "aggregateField": "fahrenheit",
                            "aggregateType": "AVG",
                        },
                        {
                            "field": "peak",
                            "type": "DOUBLE",
                            "aggregateField": "fahrenheit",
                            "aggregateType": "MAX",
                        },
                    ],
                    "eventConditions": {"eventOnCondition": None, "eventOffCondition": None},
                },
                {"parallelism": 2, "ttlTime": 3600},
            ),
            op(
                "sink",
                "DISSink",
                ["aggregate"],
                {"name": "out", "target": "streams/w2"},
                {
                    "parallelism": None,
                    "format": "CSV",
                    "csvSeparator": ";",
                    "partitioner": "device_id",
                },
            ),
        ],
    }


def find(body: Body, op_id: str) -> dict[str, Any]:
    operator: dict[str, Any] = next(o for o in body["operatorInstances"] if o["id"] == op_id)
    return operator


def create(api: Api, project: str, body: Body, *, check: bool = False) -> dict[str, Any]:
    response = api.post(jobs_url(project), json=body, params={"check": str(check).lower()})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def check_info(api: Api, project: str, body: Body) -> dict[str, list[str]]:
    result = create(api, project, body, check=True)
    info: dict[str, list[str]] = result["check_info"]
    assert (result["job_state"], result["status"]) == (
        ("DRAFT", "failed") if info else ("READY", "success")
    )
    return info


def ready_job(api: Api, project: str) -> str:
    result = create(api, project, valid_pipeline(), check=True)
    assert result["job_state"] == "READY", result
    return str(result["job_id"])


def state_of(api: Api, project: str, job_id: str) -> str:
    response = api.get(f"{jobs_url(project)}/{job_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["job_state"])


def engine_moves(api: Api, job_id: str, state: JobState, runner: str | None = None) -> None:
    """What the streaming engine will do: record a state change of its own."""
    with api.runtime.sessions() as session:
        row = session.scalars(select(StreamingJobRow).where(StreamingJobRow.job_id == job_id)).one()
        engine_transition(session, row.id, state, runner=runner, message="engine")


# --------------------------------------------------------------------------- the seed's example


def test_seed_example_saves_as_a_draft(api: Api, project: str) -> None:
    body = seed_example()
    result = create(api, project, body)
    assert result["job_state"] == "DRAFT"
    assert result["status"] == "success"
    assert result["check_info"] == {}
    assert 1 <= len(result["job_id"]) <= 100

    job = api.get(f"{jobs_url(project)}/{result['job_id']}").json()
    assert job["job_state"] == "DRAFT"
    assert job["definition"] == body["definition"]
    # the editor gets back exactly what it saved, free-form configs included
    assert job["operatorInstances"] == body["operatorInstances"]
    assert job["runtime"] == {
        "parallelism": None,
        "checkpointIntervalSeconds": 10,
        "restartWhenException": False,
        "resumeMaxNum": -1,
        "outOfOrdernessSeconds": 2,
    }


def test_seed_example_check_reports_every_empty_piece(api: Api, project: str) -> None:
    job_id = create(api, project, seed_example())["job_id"]
    response = api.put(
        f"{jobs_url(project)}/{job_id}", json=seed_example(), params={"check": "true"}
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["job_id"] == job_id
    assert result["job_state"] == "DRAFT"
    assert result["status"] == "failed"
    info = result["check_info"]

    def has(op_id: str, *problems: str) -> None:
        for problem in problems:
            assert any(p.startswith(problem) for p in info[op_id]), (op_id, problem, info[op_id])

    # the source declares no fields: an open schema, not a problem
    assert "operator1" not in info
    # the wiring is sound: operator6 reads operator7 (listed after it), the DIS sink reads
    # three operators; only operator13, a sink nothing feeds, is cut off
    assert "$graph" not in info
    assert not any("fromOperators" in p for p in info["operator6"])
    assert not any("fromOperators" in p for p in info["operator10"])
    has("operator13", "fromOperators: empty")
    has(
        "operator2",
        f"{BASIC}.conditions[0].leftValue: empty",
        f"{BASIC}.conditions[0].rightValue: empty",
    )
    has(
        "operator3",
        f"{BASIC}.flatFieldConfig[0].field: empty",
        f"{BASIC}.flatFieldConfig[0].path: empty",
    )
    for aggregate in ("operator4", "operator6"):
        has(
            aggregate,
            f"{BASIC}.aggregateFields[0].field: empty",
            f"{BASIC}.aggregateFields[0].aggregateField: empty",
            f"{BASIC}.aggregateFields[0].type: SUM gives a number; declare INTEGER, LONG, FLOAT or "
            "DOUBLE, not STRING",
        )
    has(
        "operator5",
        f"{BASIC}.mapFieldConfig[0].field: empty",
        f"{BASIC}.mapFieldConfig[0].expression: empty",
    )
    has(
        "operator7",
        f"{BASIC}.nestFieldConfig.field: empty",
        f"{BASIC}.nestFieldConfig.nestFields[0].path: empty",
        f"{BASIC}.nestFieldConfig.nestFields[0].value: empty",
    )
    has(
        "operator8",
        f"{BASIC}.deduplicateFields: empty",
        f"{ADVANCE}.deduplicatePeriod.period: empty",
        f"{ADVANCE}.deduplicatePeriod.isUseEventTime: the input has no event-time field",
    )
    has("operator9", f"{BASIC}.selectFields: empty")
    has("operator10", f"{BASIC}.dataSourceId: empty")
    for sink in ("operator11", "operator13"):
        has(sink, f"{BASIC}.topicUrn: empty", f"{BASIC}.defaultMessage: empty")
    has(
        "operator12",
        f"{BASIC}.dataSourceId: empty",
        f"{BASIC}.apiParamFields: empty",
        f"{BASIC}.apiOutputField.field: empty",
        f"{BASIC}.apiResponseCode.field: empty",
    )
    assert set(info) == {f"operator{i}" for i in range(2, 14)}

    job = api.get(f"{jobs_url(project)}/{job_id}").json()
    assert job["job_state"] == "DRAFT"
    assert job["check_info"] == info
    assert_error(api.post(f"{jobs_url(project)}/{job_id}/actions/start"), 409, "E18702", "DRAFT")


# --------------------------------------------------------------------------- a valid pipeline


def test_a_complete_pipeline_checks_to_ready(api: Api, project: str) -> None:
    draft = create(api, project, valid_pipeline())
    assert (draft["job_state"], draft["check_info"]) == ("DRAFT", {})
    url = f"{jobs_url(project)}/{draft['job_id']}"
    checked = api.put(url, json=valid_pipeline(), params={"check": "true"})
    assert checked.status_code == 200, checked.text
    assert checked.json() == {
        "job_id": draft["job_id"],
        "job_state": "READY",
        "status": "success",
        "check_info": {},
    }
    assert state_of(api, project, draft["job_id"]) == "READY"
    # saving again without the check makes it a draft again
    assert api.put(url, json=valid_pipeline()).json()["job_state"] == "DRAFT"
    # created checked in one go
    assert create(api, project, valid_pipeline(), check=True)["job_state"] == "READY"


def connection(api: Api, project: str, name: str, type_: str) -> None:
    """A stream connection in the catalog (nothing needs to listen: the check only reads it)."""
    spec = {
        "kafka": {"bootstrapServers": "127.0.0.1:9092", "topic": name},
        "mqtt": {"host": "127.0.0.1", "port": 1883, "topic": name},
        "function": {"url": "http://127.0.0.1:8080/fn"},
        "notification": {"channel": "webhook", "url": "http://127.0.0.1:8080/hook"},
    }[type_]
    response = api.post(
        f"/projects/{project}/datasources/{name}", json={"type": type_, "spec": spec}
    )
    assert response.status_code == 201, response.text


def test_more_operators_check_to_ready(api: Api, project: str) -> None:
    connection(api, project, "classifier", "function")
    connection(api, project, "archive", "kafka")
    body = valid_pipeline()
    body["operatorInstances"][1:1] = [
        op(
            "flat",
            "Flat",
            ["source"],
            {"flatFieldConfig": [{"field": "v2", "type": "DOUBLE", "path": "value"}]},
        ),
    ]
    body["operatorInstances"][0]["configs"]["basicConfigs"]["fields"].append(
        {"field": "payload", "type": "MAP"}
    )
    find(body, "filter")["fromOperators"] = [{"id": "flat"}]
    find(body, "flat")["configs"]["basicConfigs"]["flatFieldConfig"].append(
        {"field": "site", "type": "STRING", "path": "payload.site.name"}
    )
    body["operatorInstances"] += [
        op(
            "nest",
            "Nest",
            ["map"],
            {
                "nestFieldConfig": {
                    "field": "doc",
                    "type": "MAP",
                    "nestFields": [
                        {"path": "device.id", "type": "FIELD", "value": "device_id"},
                        {"path": "device.site", "type": "PATH", "value": "payload.site.name"},
                        {"path": "kind", "type": "CONSTANT", "value": "reading"},
                    ],
                }
            },
        ),
        op(
            "dedup",
            "Deduplicate",
            ["nest"],
            {"keyFields": "device_id", "relationship": "OR", "deduplicateFields": "value, status"},
            {"deduplicatePeriod": {"isUseEventTime": "TRUE", "period": 60}, "ttlTime": 600},
        ),
        op(
            "call",
            "CallFunctionGraph",
            ["dedup"],
            {
                "dataSourceId": "classifier",
                "apiParamFields": ["device_id", "fahrenheit"],
                "apiOutputField": {"field": "label", "type": "STRING"},
                "apiResponseCode": {"field": "code", "type": "INTEGER"},
            },
        ),
        op("select", "SelectFields", ["call"], {"selectFields": "device_id, label, code, doc"}),
        op(
            "notify",
            "SMNSink",
            ["select"],
            {
                "topicUrn": "alerts",
                "messageSubject": "device ${device_id}",
                "defaultMessage": "${device_id} is ${label} (${code})",
            },
        ),
        op("archive", "DISSink", ["select", "call"], {"dataSourceId": "archive"}),
    ]
    assert check_info(api, project, body) == {}


# --------------------------------------------------------------------------- connections

DS = f"{BASIC}.dataSourceId"


def test_a_missing_connection_keeps_the_job_a_draft(api: Api, project: str) -> None:
    body = valid_pipeline()
    find(body, "source")["configs"]["basicConfigs"]["dataSourceId"] = "readings"
    find(body, "sink")["configs"]["basicConfigs"] = {"dataSourceId": "w2_out"}
    # a draft save does not look the connections up
    draft = create(api, project, body)
    assert (draft["job_state"], draft["check_info"]) == ("DRAFT", {})
    url = f"{jobs_url(project)}/{draft['job_id']}"
    checked = api.put(url, json=body, params={"check": "true"})
    assert checked.status_code == 200, checked.text
    assert checked.json() == {
        "job_id": draft["job_id"],
        "job_state": "DRAFT",
        "status": "failed",
        "check_info": {
            "source": [f"{DS}: data source 'readings' does not exist"],
            "sink": [f"{DS}: data source 'w2_out' does not exist"],
        },
    }
    stored = api.get(url).json()
    assert (stored["job_state"], stored["check_info"]) == ("DRAFT", checked.json()["check_info"])
    # once both exist (of a type the operators use) the same body checks to READY
    connection(api, project, "readings", "mqtt")
    connection(api, project, "w2_out", "kafka")
    again = api.put(url, json=body, params={"check": "true"}).json()
    assert (again["job_state"], again["check_info"]) == ("READY", {})


def test_a_connection_of_the_wrong_type_is_named(api: Api, project: str) -> None:
    connection(api, project, "fn", "function")
    connection(api, project, "topic", "kafka")
    (api.data_root / project / "a.json").write_text('{"n": 1}\n')
    spec = {"root": "default", "paths": ["a.json"], "fileType": "json"}
    made = api.post(f"/projects/{project}/datasources/files", json={"type": "file", "spec": spec})
    assert made.status_code == 201, made.text
    body = valid_pipeline()
    find(body, "source")["configs"]["basicConfigs"]["dataSourceId"] = "fn"
    find(body, "sink")["configs"]["basicConfigs"] = {"dataSourceId": "files"}
    body["operatorInstances"].append(
        op(
            "call",
            "CallFunctionGraph",
            ["map"],
            {
                "dataSourceId": "topic",
                "apiParamFields": ["device_id"],
                "apiOutputField": {"field": "label", "type": "STRING"},
            },
        )
    )
    info = check_info(api, project, body)
    assert "its output is not read by any operator (add a sink)" in info["call"]
    info["call"].remove("its output is not read by any operator (add a sink)")
    assert info == {
        "source": [
            f"{DS}: 'fn' is a function data source; PipelineSource uses mqtt or kafka connections"
        ],
        "sink": [f"{DS}: 'files' is a file data source; DISSink uses mqtt or kafka connections"],
        "call": [
            f"{DS}: 'topic' is a kafka data source; CallFunctionGraph uses function connections"
        ],
    }
    assert list(info) == ["source", "sink", "call"]  # in the pipeline's order


def test_connection_problems_join_the_operators_other_problems(api: Api, project: str) -> None:
    body = valid_pipeline()
    basic = find(body, "source")["configs"]["basicConfigs"]
    basic["dataSourceId"] = "nowhere"
    basic["eventTimeField"] = "no_such_field"
    info = check_info(api, project, body)
    assert f"{DS}: data source 'nowhere' does not exist" in info["source"]
    assert len(info["source"]) >= 2, info  # the event time problem is kept as well
    assert next(iter(info)) == "source"


# --------------------------------------------------------------------------- graph rules

Mutation = Callable[[Body], object]


def assert_problem(api: Api, project: str, mutate: Mutation, key: str, problem: str) -> None:
    """The check of :func:`valid_pipeline` changed by ``mutate`` reports, under ``key``
    (an operator id or ``$graph``), a problem starting with ``problem``."""
    body = valid_pipeline()
    mutate(body)
    info = check_info(api, project, body)
    assert key in info, info
    assert any(p.startswith(problem) for p in info[key]), info[key]


def _cycle(body: Body) -> None:
    find(body, "map")["fromOperators"] = [{"id": "aggregate"}]


def _dangling(body: Body) -> None:
    find(body, "sink")["fromOperators"].append({"id": "ghost"})


def _source_with_input(body: Body) -> None:
    find(body, "source")["fromOperators"] = [{"id": "filter"}]


def _sink_with_output(body: Body) -> None:
    body["operatorInstances"].append(
        op("after_sink", "SelectFields", ["sink"], {"selectFields": ["n"]})
    )


def _unreachable(body: Body) -> None:
    body["operatorInstances"] += [
        op("lonely", "Filter", [], {"conditions": [{"leftValue": "a", "symbol": "IS_NULL"}]}),
        op("after_lonely", "SelectFields", ["lonely"], {"selectFields": ["a"]}),
        op("sink2", "DISSink", ["after_lonely"], {"target": "two"}),
    ]


def _duplicate_id(body: Body) -> None:
    body["operatorInstances"].append(copy.deepcopy(find(body, "filter")))


def _unknown_class(body: Body) -> None:
    find(body, "map")["className"] = "Mapper"


def _no_sink(body: Body) -> None:
    body["operatorInstances"].pop()


def _self_loop(body: Body) -> None:
    find(body, "filter")["fromOperators"].append({"id": "filter"})


def _listed_twice(body: Body) -> None:
    find(body, "map")["fromOperators"].append({"id": "filter"})


GRAPH_CASES: list[tuple[str, Mutation, str, str]] = [
    ("cycle", _cycle, "$graph", "operators form a cycle: "),
    ("dangling input", _dangling, "sink", "fromOperators[1].id: operator 'ghost' does not exist"),
    (
        "source with an input",
        _source_with_input,
        "source",
        "fromOperators: a source (PipelineSource) reads no operator",
    ),
    (
        "sink with an output",
        _sink_with_output,
        "after_sink",
        "fromOperators[0].id: 'sink' is a sink (DISSink) and has no output",
    ),
    ("unreachable", _unreachable, "after_lonely", "fromOperators: not reachable from a source"),
    ("no input", _unreachable, "lonely", "fromOperators: empty"),
    ("duplicate id", _duplicate_id, "$graph", "operator id 'filter' is used by 2 operators"),
    ("unknown className", _unknown_class, "map", "className: unknown operator 'Mapper'"),
    ("no sink", _no_sink, "$graph", "the pipeline has no sink"),
    ("dead end", _no_sink, "aggregate", "its output is not read by any operator"),
    ("self loop", _self_loop, "filter", "fromOperators[1].id: an operator cannot read its own"),
    ("listed twice", _listed_twice, "map", "fromOperators[1].id: 'filter' is listed twice"),
]


@pytest.mark.parametrize(
    ("mutate", "key", "problem"),
    [case[1:] for case in GRAPH_CASES],
    ids=[case[0] for case in GRAPH_CASES],
)
def test_graph_rules(api: Api, project: str, mutate: Mutation, key: str, problem: str) -> None:
    assert_problem(api, project, mutate, key, problem)


def test_a_cycle_is_named_in_flow_order(api: Api, project: str) -> None:
    body = valid_pipeline()
    _cycle(body)
    info = check_info(api, project, body)
    assert info["$graph"] == ["operators form a cycle: aggregate -> map -> aggregate"]
    assert any("its output is not read" in p for p in info["filter"])


def test_an_empty_pipeline_and_asset_data(api: Api, project: str) -> None:
    body = valid_pipeline()
    body["operatorInstances"] = []
    body["definition"]["jobInputType"] = "ASSET_DATA"
    assert check_info(api, project, body) == {
        "$definition": ["jobInputType: ASSET_DATA jobs are not supported yet; use PIPELINE_DATA"],
        "$graph": ["the pipeline has no operators"],
    }


# --------------------------------------------------------------------------- schemas


def _set(op_id: str, path: str, value: Any) -> Mutation:
    """A mutation setting ``configs.<path>`` (dots and [i]) of operator ``op_id``."""

    def mutate(body: Body) -> None:
        target: Any = find(body, op_id)["configs"]
        parts = path.replace("]", "").replace("[", ".").split(".")
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target[part]
        last = parts[-1]
        if value is _DROP:
            del target[last]
        elif last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


_DROP = object()

SCHEMA_CASES: list[tuple[str, Mutation, str, str]] = [
    (
        "missing field",
        _set("filter", "basicConfigs.conditions[0].leftValue", "stauts"),
        "filter",
        f"{BASIC}.conditions[0].leftValue: unknown field 'stauts' (did you mean 'status'?)",
    ),
    (
        "SUM over STRING",
        _set("aggregate", "basicConfigs.aggregateFields[1].aggregateField", "device_id"),
        "aggregate",
        f"{BASIC}.aggregateFields[1].aggregateField: SUM needs a number field; 'device_id' is "
        "STRING",
    ),
    (
        "MAX over MAP",
        lambda body: (
            body["operatorInstances"][0]["configs"]["basicConfigs"]["fields"].append(
                {"field": "payload", "type": "MAP"}
            ),
            _set("aggregate", "basicConfigs.aggregateFields[3].aggregateField", "payload")(body),
        ),
        "aggregate",
        f"{BASIC}.aggregateFields[3].aggregateField: MAX needs a number, STRING or TIMESTAMP",
    ),
    (
        "bad expression",
        _set("map", "basicConfigs.mapFieldConfig[0].expression", "value * * 2"),
        "map",
        f"{BASIC}.mapFieldConfig[0].expression: expected a value, found '*' at position 9",
    ),
    (
        "hostile expression",
        _set("map", "basicConfigs.mapFieldConfig[0].expression", "read_csv('/etc/passwd')"),
        "map",
        f"{BASIC}.mapFieldConfig[0].expression: unknown function 'read_csv'",
    ),
    (
        "expression type mismatch",
        _set("map", "basicConfigs.mapFieldConfig[0].expression", "value > 3"),
        "map",
        f"{BASIC}.mapFieldConfig[0].type: the expression gives BOOLEAN, which does not fit DOUBLE",
    ),
    (
        "window without size",
        _set("aggregate", "basicConfigs.windowAssigner.size", None),
        "aggregate",
        f"{BASIC}.windowAssigner.size: empty (a TumblingTimeWindows window needs a size",
    ),
    (
        "negative size",
        _set("aggregate", "basicConfigs.windowAssigner.size", -5),
        "aggregate",
        f"{BASIC}.windowAssigner.size: size must be greater than 0",
    ),
    (
        "sliding without slide",
        _set("aggregate", "basicConfigs.windowsType", "SlidingTimeWindows"),
        "aggregate",
        f"{BASIC}.windowAssigner.slide: empty",
    ),
    (
        "session without gap",
        _set("aggregate", "basicConfigs.windowsType", "SessionWindows"),
        "aggregate",
        f"{BASIC}.windowAssigner.gap: empty",
    ),
    (
        "unknown symbol",
        _set("filter", "basicConfigs.conditions[0].symbol", "GREATER"),
        "filter",
        f"{BASIC}.conditions[0].symbol: Input should be 'EQUAL', 'NOT_EQUAL'",
    ),
    (
        "unknown window type",
        _set("aggregate", "basicConfigs.windowsType", "HoppingWindows"),
        "aggregate",
        f"{BASIC}.windowsType: Input should be",
    ),
    (
        "unknown type name",
        _set("map", "basicConfigs.mapFieldConfig[0].type", "DECIMAL"),
        "map",
        f"{BASIC}.mapFieldConfig[0].type: Input should be 'STRING'",
    ),
    (
        "unknown config field",
        _set("filter", "basicConfigs.conditionz", []),
        "filter",
        f"{BASIC}.conditionz: unknown field",
    ),
    (
        "aggregated-away field",
        _set("sink", "advanceConfigs.partitioner", "status"),
        "sink",
        f"{ADVANCE}.partitioner: field 'status' does not exist upstream; the input's fields are "
        "device_id, windowStart, windowEnd, n, total, mean, peak",
    ),
    (
        "event time without a time field",
        _set("source", "basicConfigs.eventTimeField", _DROP),
        "aggregate",
        f"{BASIC}.windowAssigner.timeField: empty",
    ),
    (
        "event time on a STRING",
        _set("aggregate", "basicConfigs.windowAssigner.timeField", "status"),
        "aggregate",
        f"{BASIC}.windowAssigner.timeField: 'status' is STRING; event time is a TIMESTAMP",
    ),
    (
        "bad field name",
        _set("map", "basicConfigs.mapFieldConfig[0].field", "1st value"),
        "map",
        f"{BASIC}.mapFieldConfig[0].field: invalid field name '1st value'",
    ),
    (
        "grouping by a missing field",
        _set("aggregate", "basicConfigs.keyFields", "device, status"),
        "aggregate",
        f"{BASIC}.keyFields[0]: field 'device' does not exist upstream",
    ),
    (
        "duplicate output",
        _set("aggregate", "basicConfigs.aggregateFields[1].field", "n"),
        "aggregate",
        f"{BASIC}.aggregateFields[1].field: 'n' is already an output field",
    ),
    (
        "CSV separator",
        _set("sink", "advanceConfigs.csvSeparator", ";;"),
        "sink",
        f"{ADVANCE}.csvSeparator: one character",
    ),
    (
        "condition types",
        _set("filter", "basicConfigs.conditions[0].rightValue", 3),
        "filter",
        f"{BASIC}.conditions[0].rightValue: cannot compare STRING with INTEGER using NOT_EQUAL",
    ),
    (
        "source field declared twice",
        lambda body: body["operatorInstances"][0]["configs"]["basicConfigs"]["fields"].append(
            {"field": "value", "type": "LONG"}
        ),
        "source",
        f"{BASIC}.fields[4].field: field 'value' is declared twice",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "key", "problem"),
    [case[1:] for case in SCHEMA_CASES],
    ids=[case[0] for case in SCHEMA_CASES],
)
def test_schema_and_config_errors(
    api: Api, project: str, mutate: Mutation, key: str, problem: str
) -> None:
    assert_problem(api, project, mutate, key, problem)


def test_numbers_convert_between_number_types(api: Api, project: str) -> None:
    body = valid_pipeline()
    _set("map", "basicConfigs.mapFieldConfig[0].type", "INTEGER")(body)  # DOUBLE -> INTEGER
    _set("aggregate", "basicConfigs.aggregateFields[0].type", "INTEGER")(body)  # COUNT
    assert check_info(api, project, body) == {}


def test_an_open_source_schema_accepts_any_field(api: Api, project: str) -> None:
    body = valid_pipeline()
    _set("source", "basicConfigs.fields", _DROP)(body)
    _set("aggregate", "basicConfigs.windowAssigner.timeType", "ProcessingTime")(body)
    _set("map", "basicConfigs.mapFieldConfig[0].expression", "anything * 2")(body)
    assert check_info(api, project, body) == {}
    # the Aggregate closes the schema again: its output has exactly its fields
    _set("sink", "advanceConfigs.partitioner", "anything")(body)
    info = check_info(api, project, body)
    assert list(info) == ["sink"]


# --------------------------------------------------------------------------- states


def test_start_only_from_ready_or_stopped(api: Api, project: str) -> None:
    url = jobs_url(project)
    draft = create(api, project, valid_pipeline())["job_id"]
    assert_error(api.post(f"{url}/{draft}/actions/start"), 409, "E18702", "DRAFT", "READY")
    assert_error(api.post(f"{url}/{draft}/actions/stop"), 409, "E18702", "DRAFT")

    job_id = ready_job(api, project)
    started = api.post(f"{url}/{job_id}/actions/start")
    assert started.status_code == 202, started.text
    assert started.json() == {"job_id": job_id, "job_state": "STARTING", "status": "success"}
    job = api.get(f"{url}/{job_id}").json()
    assert job["job_state"] == "STARTING"
    assert job["startedAt"] is not None
    assert "waiting for the engine" in job["stateMessage"]
    assert_error(api.post(f"{url}/{job_id}/actions/start"), 409, "E18702", "STARTING")

    # nothing runs it yet: stop ends in STOPPED at once
    stopped = api.post(f"{url}/{job_id}/actions/stop")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["job_state"] == "STOPPED"
    assert api.get(f"{url}/{job_id}").json()["stoppedAt"] is not None
    assert_error(api.post(f"{url}/{job_id}/actions/stop"), 409, "E18702", "STOPPED")
    # a stopped job starts again
    assert api.post(f"{url}/{job_id}/actions/start").json()["job_state"] == "STARTING"


def test_editing_and_deleting_wait_for_a_stop(api: Api, project: str) -> None:
    url = jobs_url(project)
    job_id = ready_job(api, project)
    assert api.post(f"{url}/{job_id}/actions/start").status_code == 202
    for state in ("STARTING", "RUNNING"):
        if state == "RUNNING":
            engine_moves(api, job_id, JobState.RUNNING, runner="engine-1")
        edit = api.put(f"{url}/{job_id}", json=valid_pipeline(), params={"check": "true"})
        assert_error(edit, 409, "E18702", state, "stop it before editing")
        assert_error(api.delete(f"{url}/{job_id}"), 409, "E18702", state, "stop it before deleting")
        assert state_of(api, project, job_id) == state

    # an engine runs it now: stop asks it to stop, and it confirms
    stopping = api.post(f"{url}/{job_id}/actions/stop")
    assert stopping.json()["job_state"] == "STOPPING"
    assert_error(api.put(f"{url}/{job_id}", json=valid_pipeline()), 409, "E18702", "STOPPING")
    assert_error(api.post(f"{url}/{job_id}/actions/stop"), 409, "E18702", "STOPPING")
    engine_moves(api, job_id, JobState.STOPPED)
    assert state_of(api, project, job_id) == "STOPPED"

    edited = api.put(f"{url}/{job_id}", json=valid_pipeline(), params={"check": "true"})
    assert edited.json()["job_state"] == "READY"
    assert api.delete(f"{url}/{job_id}").status_code == 204


def test_restarting_failing_and_the_engine_rules(api: Api, project: str) -> None:
    url = jobs_url(project)
    job_id = ready_job(api, project)
    api.post(f"{url}/{job_id}/actions/start")
    engine_moves(api, job_id, JobState.RUNNING, runner="engine-1")
    engine_moves(api, job_id, JobState.RESTARTING)
    assert_error(api.put(f"{url}/{job_id}", json=valid_pipeline()), 409, "E18702", "RESTARTING")
    engine_moves(api, job_id, JobState.RUNNING)
    engine_moves(api, job_id, JobState.FAILED, runner=None)
    assert_error(api.post(f"{url}/{job_id}/actions/start"), 409, "E18702", "FAILED", "check=true")
    assert_error(api.post(f"{url}/{job_id}/actions/stop"), 409, "E18702", "FAILED")
    # the engine cannot make moves the state machine forbids
    with pytest.raises(DatamillError, match="cannot become RUNNING"):
        engine_moves(api, job_id, JobState.RUNNING)
    # a failed job is edited and checked again, then started
    assert (
        api.put(f"{url}/{job_id}", json=valid_pipeline(), params={"check": "true"}).json()[
            "job_state"
        ]
        == "READY"
    )
    assert api.post(f"{url}/{job_id}/actions/start").json()["job_state"] == "STARTING"
    assert_error(api.post(f"{url}/no_such_job/actions/start"), 404, "E18701", "no_such_job")


# --------------------------------------------------------------------------- list, get, delete


def test_list_get_and_delete(api: Api, project: str) -> None:
    url = jobs_url(project)
    ids = {}
    for name, check in (("b_job", True), ("a_job", False), ("c_job", True)):
        body = valid_pipeline()
        body["definition"]["jobName"] = name
        ids[name] = create(api, project, body, check=check)["job_id"]

    listed = api.get(url).json()
    assert listed["total"] == 3
    assert [j["jobName"] for j in listed["jobs"]] == ["c_job", "a_job", "b_job"]  # newest first
    assert set(listed["jobs"][0]) == {
        "job_id",
        "jobName",
        "jobType",
        "jobInputType",
        "job_state",
        "createdAt",
        "updatedAt",
    }
    by_name = api.get(url, params={"sortBy": "jobName"}).json()["jobs"]
    assert [j["jobName"] for j in by_name] == ["a_job", "b_job", "c_job"]
    ready = api.get(url, params={"state": "READY", "sortBy": "-jobName"}).json()
    assert (ready["total"], [j["jobName"] for j in ready["jobs"]]) == (2, ["c_job", "b_job"])
    second = api.get(url, params={"sortBy": "jobName", "page": 2, "size": 2}).json()
    assert (second["total"], second["page"], second["size"]) == (3, 2, 2)
    assert [j["jobName"] for j in second["jobs"]] == ["c_job"]
    assert_error(api.get(url, params={"sortBy": "name"}), 400, "E18011", "sortBy")
    assert_error(api.get(url, params={"state": "BUSY"}), 400, "E18011", "state")

    job = api.get(f"{url}/{ids['a_job']}").json()
    assert job["definition"]["jobName"] == "a_job"
    assert job["job_state"] == "DRAFT"

    assert api.delete(f"{url}/{ids['a_job']}").status_code == 204
    assert_error(api.get(f"{url}/{ids['a_job']}"), 404, "E18701", ids["a_job"])
    assert_error(api.delete(f"{url}/{ids['a_job']}"), 404, "E18701")
    assert_error(api.put(f"{url}/{ids['a_job']}", json=valid_pipeline()), 404, "E18701")
    assert api.get(url).json()["total"] == 2


def test_runtime_settings_are_stored(api: Api, project: str) -> None:
    body = valid_pipeline()
    body["runtime"] = {"restartWhenException": True, "resumeMaxNum": 3, "parallelism": 4}
    job_id = create(api, project, body)["job_id"]
    runtime = api.get(f"{jobs_url(project)}/{job_id}").json()["runtime"]
    assert runtime == {
        "parallelism": 4,
        "checkpointIntervalSeconds": 10,
        "restartWhenException": True,
        "resumeMaxNum": 3,
        "outOfOrdernessSeconds": 2,
    }


@pytest.mark.parametrize(
    ("change", "code", "needle"),
    [
        (lambda b: b["runtime"].update(resumeMaxNum=0), "E18703", "resumeMaxNum"),
        (
            lambda b: b["runtime"].update(checkpointIntervalSeconds=0),
            "E18011",
            "checkpointInterval",
        ),
        (
            lambda b: b["operatorInstances"][0].update(id="has space"),
            "E18703",
            "invalid operator id",
        ),
        (lambda b: b["definition"].update(jobName=" "), "E18703", "jobName"),
        (lambda b: b["definition"].update(jobType="BATCH"), "E18011", "definition.jobType"),
        (lambda b: b.pop("definition"), "E18011", "definition: field required"),
        (lambda b: b["operatorInstances"][0].update(extra=1), "E18011", "unknown field"),
        (lambda b: b["operatorInstances"][0].update(configs=[]), "E18011", "configs"),
    ],
)
def test_malformed_bodies_are_refused(
    api: Api, project: str, change: Callable[[Body], Any], code: str, needle: str
) -> None:
    body = valid_pipeline()
    body["runtime"] = {}
    change(body)
    assert_error(api.post(jobs_url(project), json=body), 400, code, needle)


# --------------------------------------------------------------------------- authorization


def test_visitors_read_and_outsiders_see_nothing(api: Api, project: str) -> None:
    url = jobs_url(project)
    job_id = ready_job(api, project)
    visitor_name, visitor = api.new_user()
    assert api.put(
        f"/projects/{project}/members/{visitor_name}", json={"role": "visitor"}
    ).is_success
    as_visitor = api.as_user(visitor)
    assert as_visitor.get(url).json()["total"] == 1
    assert as_visitor.get(f"{url}/{job_id}").status_code == 200
    for response in (
        as_visitor.post(url, json=valid_pipeline()),
        as_visitor.put(f"{url}/{job_id}", json=valid_pipeline()),
        as_visitor.delete(f"{url}/{job_id}"),
        as_visitor.post(f"{url}/{job_id}/actions/start"),
        as_visitor.post(f"{url}/{job_id}/actions/stop"),
    ):
        assert_error(response, 403, "E18002", "visitor")
    assert state_of(api, project, job_id) == "READY"

    _, outsider = api.new_user()
    as_outsider = api.as_user(outsider)
    assert_error(as_outsider.get(url), 404, "E18402", project)
    assert_error(as_outsider.get(f"{url}/{job_id}"), 404, "E18402", project)
    assert_error(as_outsider.post(f"{url}/{job_id}/actions/start"), 404, "E18402", project)

    # a job of this project is not found through another project, even by its owner
    other = api.post("/projects", json={"name": f"{project}_b"})
    assert other.status_code == 201, other.text
    other_url = jobs_url(f"{project}_b")
    assert_error(api.get(f"{other_url}/{job_id}"), 404, "E18701", job_id)
    assert_error(api.post(f"{other_url}/{job_id}/actions/start"), 404, "E18701")
    assert_error(api.delete(f"{other_url}/{job_id}"), 404, "E18701")
    assert api.get(other_url).json()["total"] == 0
    assert api.delete(f"/projects/{project}_b").status_code == 204


# --------------------------------------------------------------------------- the check is total

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.sampled_from(["", "a", "value", "status", "payload.x", "1 +", "'x'", "EventTime", "SUM"])
    | st.text(st.characters(exclude_characters="\x00"), max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["field", "type", "path", "size", "x"]), children, max_size=3
        )
    ),
    max_leaves=8,
)


def _keys_of(class_name: str, part: str) -> list[str]:
    model = OPERATORS[class_name].config_model.model_fields[part].annotation
    assert isinstance(model, type)
    assert issubclass(model, BaseModel)
    return [*model.model_fields, "unknown"]


@st.composite
def _pipelines(draw: st.DrawFn) -> Body:
    ids = [f"o{i}" for i in range(draw(st.integers(1, 6)))]
    operators = []
    for op_id in ids:
        class_name = draw(st.sampled_from([*sorted(OPERATORS), "Nope"]))
        configs: dict[str, Any] = {}
        if class_name in OPERATORS:
            for part in ("basicConfigs", "advanceConfigs"):
                keys = st.sampled_from(_keys_of(class_name, part))
                configs[part] = draw(st.dictionaries(keys, _JSON, max_size=4))
        inputs = draw(st.lists(st.sampled_from([*ids, "ghost"]), max_size=3))
        operators.append(op(op_id, class_name, inputs, {}) | {"configs": configs})
    return {"definition": {"jobName": "fuzz"}, "operatorInstances": operators}


@pytest.mark.slow
@given(_pipelines())
@settings(max_examples=150, deadline=None, database=None)
def test_the_check_never_fails_on_any_draft(body: Body) -> None:
    """Whatever a draft holds, the check answers with problems, never an exception."""
    result = check_pipeline(StreamingJobBody.model_validate(body))
    ids = {o["id"] for o in body["operatorInstances"]}
    assert set(result.info) <= ids | {"$graph", "$definition"}
    assert all(result.info.values())
