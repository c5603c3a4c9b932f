"""Pipelines between real servers through the API and the streaming engine: records from a
Kafka or MQTT topic (a catalog connection named by the source's ``dataSourceId``) through
a Filter / Map into another topic and into files, with the engine killed on the way (the
files hold every record once, the topic at least once); notifications to a webhook
(SMNSink) and calls to an HTTP function (CallFunctionGraph) per record."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from datamill.connectors.streams.base import StreamConnection
from datamill.connectors.streams.mqtt import MqttSource
from datamill.runtime.streaming.engine import Engine, EngineConfig
from tests.builders import create_ready, op
from tests.conftest import Api, Recorder
from tests.runtime.test_streaming_engine import (
    engine_pid,
    metrics,
    post,
    sink_rows,
    start,
    stop,
    wait_for,
    wait_state,
)
from tests.servers import RunningServer

pytestmark = pytest.mark.slow  # real brokers, engines killed on the way


def datasource(api: Api, project: str, name: str, type_: str, spec: dict[str, Any]) -> None:
    path = f"/projects/{project}/datasources/{name}"
    created = api.post(path, json={"type": type_, "spec": spec})
    assert created.status_code == 201, created.text


def kill_and_wait_for_recovery(api: Api, project: str, job_id: str) -> None:
    """kill -9 the job's engine; wait until a new one runs it."""
    pid = engine_pid(api, project, job_id)
    os.kill(pid, signal.SIGKILL)
    wait_for("a new engine", lambda: engine_pid(api, project, job_id) != pid)
    wait_state(api, project, job_id, "RUNNING")


def new_topic(server: RunningServer, partitions: int = 2) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": server.url})
    for future in admin.create_topics([NewTopic(name, num_partitions=partitions)]).values():
        future.result(timeout=15)
    return name


def produce(server: RunningServer, topic: str, values: range) -> None:
    producer = Producer({"bootstrap.servers": server.url})
    for i in values:
        producer.produce(topic, json.dumps({"i": i, "device": f"d{i % 3}"}).encode())
        producer.flush(10)  # one record per batch: what the test broker counts right


MARKER = 1_000_001
"""The first ``i`` of the marker messages sent behind the ones a test checks: once they are
in the sink, whatever the job writes for the earlier ones (a duplicate included) is too."""


def wait_for_markers(target: Path, count: int) -> list[dict[str, Any]]:
    """Wait until ``count`` markers are in the sink at ``target``; its rows without them."""
    wait_for("the markers", lambda: sum(r["i"] >= MARKER for r in sink_rows(target)) >= count)
    return [r for r in sink_rows(target) if r["i"] < MARKER]


def consume(server: RunningServer, topic: str, count: int) -> list[dict[str, Any]]:
    consumer = Consumer(
        {"bootstrap.servers": server.url, "group.id": "check", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while len(got) < count and time.monotonic() < deadline:
        for message in consumer.consume(count, timeout=1):
            if message.error() is None:
                got.append(json.loads(message.value() or b""))
    consumer.close()
    return got


def test_kafka_to_kafka_and_files_through_engine_kills(
    api: Api, project: str, kafka_server: RunningServer, streaming_engine: Any
) -> None:
    source_topic, sink_topic = new_topic(kafka_server), new_topic(kafka_server)
    for name, topic in (("readings", source_topic), ("converted", sink_topic)):
        spec = {"bootstrapServers": kafka_server.url, "topic": topic}
        datasource(api, project, name, "kafka", spec)
    fields = [{"field": "i", "type": "LONG"}, {"field": "device", "type": "STRING"}]
    body = {
        "definition": {"jobName": "kafka_pipeline"},
        "operatorInstances": [
            op("src", "PipelineSource", [], {"dataSourceId": "readings", "fields": fields}),
            op(
                "twice",
                "Map",
                ["src"],
                {"mapFieldConfig": [{"field": "twice", "type": "LONG", "expression": "i * 2"}]},
            ),
            op("to_kafka", "DISSink", ["twice"], {"dataSourceId": "converted"}),
            op("to_files", "DISSink", ["twice"], {"target": "kafka_out"}, {"format": "JSON"}),
        ],
        "runtime": {"checkpointIntervalSeconds": 1, "restartWhenException": True},
    }
    job_id = create_ready(api, project, body)
    records = api.post(f"/projects/{project}/streaming/jobs/{job_id}/records", json=[])
    assert records.status_code == 409, records.text  # fed by Kafka, not by the endpoint
    start(api, project, job_id)
    target: Path = api.data_root / project / "kafka_out"
    produce(kafka_server, source_topic, range(0, 60))
    wait_for("the first records", lambda: len(sink_rows(target)) >= 60)
    produce(kafka_server, source_topic, range(60, 90))
    kill_and_wait_for_recovery(api, project, job_id)
    produce(kafka_server, source_topic, range(90, 120))
    wait_for("all records", lambda: len(sink_rows(target)) >= 120)
    producer = Producer({"bootstrap.servers": kafka_server.url})
    for partition in range(2):  # one marker behind the records of each partition
        marker = {"i": MARKER + partition, "device": "marker"}
        producer.produce(source_topic, json.dumps(marker).encode(), partition=partition)
    producer.flush(10)
    rows = wait_for_markers(target, 2)
    assert sorted(r["i"] for r in rows) == list(range(120))  # each exactly once
    assert all(r["twice"] == 2 * r["i"] for r in rows)
    figures = wait_for(
        "the markers' count",
        lambda: (m := metrics(api, project, job_id))["operators"]["src"]["recordsOut"] >= 122 and m,
    )
    assert figures["sources"]["src"]["lag"] == 0
    assert figures["operators"]["src"]["recordsOut"] == 120 + 2
    stop(api, project, job_id)
    sent = [r for r in consume(kafka_server, sink_topic, 122) if r["i"] < MARKER]
    assert {r["i"] for r in sent} == set(range(120))  # at least once into Kafka
    assert all(r["twice"] == 2 * r["i"] for r in sent)


# =============================================================================== MQTT


class MqttClient:
    """A plain paho client on the test side: publishes readings, collects a topic's messages."""

    def __init__(self, server: RunningServer, subscribe: str | None = None) -> None:
        self.received: list[dict[str, Any]] = []
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"check-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = lambda _c, _u, message: self.received.append(
            json.loads(message.payload)
        )
        self.client.connect("127.0.0.1", server.port)
        self.client.loop_start()
        if subscribe is not None:
            info = self.client.subscribe(subscribe, qos=1)
            assert info[0] == mqtt.MQTT_ERR_SUCCESS

    def publish(self, topic: str, values: range) -> None:
        for i in values:
            status = "x" if i % 4 == 0 else "ok"
            record = {"i": i, "device": f"d{i % 3}", "status": status}
            self.client.publish(topic, json.dumps(record), qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_client(mqtt_server: RunningServer) -> Iterator[Callable[..., MqttClient]]:
    clients: list[MqttClient] = []

    def connect(subscribe: str | None = None) -> MqttClient:
        clients.append(MqttClient(mqtt_server, subscribe))
        return clients[-1]

    yield connect
    for client in clients:
        client.close()


def test_mqtt_to_mqtt_and_files_through_engine_kills(
    api: Api,
    project: str,
    mqtt_server: RunningServer,
    mqtt_client: Callable[..., MqttClient],
    streaming_engine: Any,
) -> None:
    base = f"plant-{uuid.uuid4().hex[:6]}"
    mqtt_spec = {"host": "127.0.0.1", "port": mqtt_server.port, "qos": 1}
    datasource(api, project, "readings", "mqtt", {**mqtt_spec, "topic": f"{base}/+/r"})
    datasource(api, project, "alerts", "mqtt", {**mqtt_spec, "topic": f"{base}/out"})
    fields = [
        {"field": "i", "type": "LONG"},
        {"field": "device", "type": "STRING"},
        {"field": "status", "type": "STRING"},
    ]
    keep = {"conditions": [{"leftValue": "status", "symbol": "NOT_EQUAL", "rightValue": "'x'"}]}
    twice = {"mapFieldConfig": [{"field": "twice", "type": "LONG", "expression": "i * 2"}]}
    body = {
        "definition": {"jobName": "mqtt_pipeline"},
        "operatorInstances": [
            op("src", "PipelineSource", [], {"dataSourceId": "readings", "fields": fields}),
            op("keep", "Filter", ["src"], keep),
            op("twice", "Map", ["keep"], twice),
            op("to_mqtt", "DISSink", ["twice"], {"dataSourceId": "alerts"}),
            op("to_files", "DISSink", ["twice"], {"target": "mqtt_out"}, {"format": "JSON"}),
        ],
        "runtime": {"checkpointIntervalSeconds": 1, "restartWhenException": True},
    }
    job_id = create_ready(api, project, body)
    watcher = mqtt_client(f"{base}/out")
    publisher = mqtt_client()
    start(api, project, job_id)
    target: Path = api.data_root / project / "mqtt_out"
    expected = [i for i in range(120) if i % 4 != 0]
    publisher.publish(f"{base}/a/r", range(0, 60))
    wait_for("the first records", lambda: len(sink_rows(target)) >= 45)
    publisher.publish(f"{base}/b/r", range(60, 90))
    kill_and_wait_for_recovery(api, project, job_id)
    publisher.publish(f"{base}/a/r", range(90, 120))
    wait_for("all records", lambda: len(sink_rows(target)) >= len(expected))
    publisher.publish(f"{base}/a/r", range(MARKER, MARKER + 1))  # behind each topic's records
    publisher.publish(f"{base}/b/r", range(MARKER + 1, MARKER + 2))
    rows = wait_for_markers(target, 2)
    assert sorted(r["i"] for r in rows) == expected  # each exactly once, the 'x' filtered out
    assert all(r["twice"] == 2 * r["i"] and r["status"] == "ok" for r in rows)
    stop(api, project, job_id)
    wait_for("the MQTT output", lambda: {r["i"] for r in watcher.received} >= set(expected))
    received = [r for r in watcher.received if r["i"] < MARKER]
    assert {r["i"] for r in received} == set(expected)  # at least once, nothing else
    assert all(r["twice"] == 2 * r["i"] for r in watcher.received)


def run_mqtt_engine(
    work: str, spec: dict[str, Any], stop: EventType, ready: EventType, crash_before_ack: bool
) -> None:
    """An engine (in a child process) reading an MQTT topic into files; with
    ``crash_before_ack`` it dies by SIGKILL at its first checkpoint, once the checkpoint is
    durable and the files are published but before the broker got the acknowledgements."""
    if crash_before_ack:
        MqttSource.committed = lambda _self, _position: os.kill(os.getpid(), signal.SIGKILL)  # type: ignore[method-assign, assignment]
    root = Path(work) / "files"
    root.mkdir(parents=True, exist_ok=True)
    fields = [{"field": "i", "type": "LONG"}, {"field": "device", "type": "STRING"}]
    body = {
        "definition": {"jobName": "mqtt_acks"},
        "operatorInstances": [
            op("src", "PipelineSource", [], {"dataSourceId": "readings", "fields": fields}),
            op("out", "DISSink", ["src"], {"target": "out"}, {"format": "JSON"}),
        ],
        "runtime": {"checkpointIntervalSeconds": 1},
    }
    config = EngineConfig(
        project="p",
        job_id="mqtt-acks",
        job_dir=Path(work) / "job",
        project_root=root,
        body=body,
        connections={"readings": StreamConnection("readings", "mqtt", spec, {})},
        outbound_allow=["127.0.0.1"],
        threads=1,
    )
    Engine(config, log=lambda _line: None).run(stop, on_ready=ready.set)  # type: ignore[arg-type]


def test_mqtt_records_checkpointed_before_a_crash_are_not_written_twice(
    mqtt_server: RunningServer, mqtt_client: Callable[..., MqttClient], tmp_path: Path
) -> None:
    """A kill between a checkpoint and its acknowledgements: the broker delivers the
    checkpointed messages again, and the source must recognise them."""
    topic = f"acks-{uuid.uuid4().hex[:6]}/r"
    spec = {"host": "127.0.0.1", "port": mqtt_server.port, "topic": topic, "qos": 1}
    context = multiprocessing.get_context("spawn")
    stop_event, ready = context.Event(), context.Event()
    args = (str(tmp_path), spec, stop_event, ready)
    crashing = context.Process(target=run_mqtt_engine, args=(*args, True))
    crashing.start()
    assert ready.wait(30)
    publisher = mqtt_client()
    publisher.publish(topic, range(20))
    crashing.join(30)
    assert crashing.exitcode == -signal.SIGKILL
    first = sink_rows(tmp_path / "files" / "out")
    assert first  # the checkpoint before the kill published its files
    ready.clear()
    engine = context.Process(target=run_mqtt_engine, args=(*args, False))
    engine.start()
    try:
        assert ready.wait(30)
        wait_for("every record", lambda: len(sink_rows(tmp_path / "files" / "out")) >= 20)
        publisher.publish(topic, range(MARKER, MARKER + 1))  # behind any redelivered one
        rows = wait_for_markers(tmp_path / "files" / "out", 1)
    finally:
        stop_event.set()
        engine.join(30)
    assert engine.exitcode == 0
    assert sorted(r["i"] for r in rows) == list(range(20))


# ======================================================================= notifications


def test_notifications_to_a_webhook_per_record(
    api: Api, project: str, http_server: Callable[..., Recorder], streaming_engine: Any
) -> None:
    hook = http_server(lambda _path, _body: (204, b"", {}))
    spec = {"channel": "webhook", "url": hook.url + "/hook", "rateLimitPerMinute": 1000}
    datasource(api, project, "ops_hook", "notification", spec)
    fields = [{"field": "device", "type": "STRING"}, {"field": "temp", "type": "DOUBLE"}]
    hot = {"conditions": [{"leftValue": "temp", "symbol": "MORE_THAN", "rightValue": "30"}]}
    notify = {
        "dataSourceId": "ops_hook",
        "messageSubject": "Hot: ${device}",
        "defaultMessage": "${device} reads ${temp} °C",
    }
    body = {
        "definition": {"jobName": "notify_pipeline"},
        "operatorInstances": [
            op("src", "PipelineSource", [], {"fields": fields}),
            op("hot", "Filter", ["src"], hot),
            op("alarm", "SMNSink", ["hot"], notify),
        ],
        "runtime": {"checkpointIntervalSeconds": 1},
    }
    job_id = create_ready(api, project, body)
    start(api, project, job_id)
    readings = [{"device": f"d{i}", "temp": 20.0 + i * 2.5} for i in range(8)]
    assert post(api, project, job_id, readings) == 8
    wait_for("the notifications", lambda: len(hook.requests) >= 3)
    # a hot marker reading behind the others: once its notification came, no more may come
    assert post(api, project, job_id, [{"device": "marker", "temp": 99.0}]) == 1
    wait_for(
        "the marker", lambda: any(r["body"]["subject"] == "Hot: marker" for r in hook.requests)
    )
    figures = wait_for(
        "the marker's count",
        lambda: (m := metrics(api, project, job_id))["operators"]["alarm"]["recordsIn"] > 3 and m,
    )
    stop(api, project, job_id)
    requests = [r for r in hook.requests if r["body"]["subject"] != "Hot: marker"]
    assert sorted(r["body"]["message"] for r in requests) == [
        "d5 reads 32.5 °C",
        "d6 reads 35.0 °C",
        "d7 reads 37.5 °C",
    ]
    assert sorted(r["body"]["subject"] for r in requests) == ["Hot: d5", "Hot: d6", "Hot: d7"]
    assert {r["path"] for r in hook.requests} == {"/hook"}
    assert figures["operators"]["alarm"]["recordsIn"] == 3 + 1


# =========================================================================== functions


def scorer(_path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
    """A function answering ``a * b + 1``, and 500 whenever ``a`` is 13."""
    if body["a"] == 13:
        return 500, {"error": "unlucky"}, {}
    return 200, body["a"] * body["b"] + 1, {}


def test_function_answers_and_statuses_reach_the_sink(
    api: Api, project: str, http_server: Callable[..., Recorder], streaming_engine: Any
) -> None:
    function = http_server(scorer)
    datasource(api, project, "score", "function", {"url": function.url + "/score"})
    fields = [
        {"field": "id", "type": "STRING"},
        {"field": "a", "type": "LONG"},
        {"field": "b", "type": "LONG"},
    ]
    call = {
        "dataSourceId": "score",
        "apiParamFields": "a,b",
        "apiOutputField": {"field": "score", "type": "LONG"},
        "apiResponseCode": {"field": "code", "type": "INTEGER"},
    }
    body = {
        "definition": {"jobName": "function_pipeline"},
        "operatorInstances": [
            op("src", "PipelineSource", [], {"fields": fields}),
            op("call", "CallFunctionGraph", ["src"], call),
            op("out", "DISSink", ["call"], {"target": "scored"}, {"format": "JSON"}),
        ],
        "runtime": {"checkpointIntervalSeconds": 1},
    }
    job_id = create_ready(api, project, body)
    start(api, project, job_id)
    target: Path = api.data_root / project / "scored"
    first = [{"id": f"r{a}", "a": a, "b": 3} for a in range(10, 16)]
    assert post(api, project, job_id, first) == 6
    wait_for("the first answers", lambda: len(sink_rows(target)) >= 6)
    assert post(api, project, job_id, [{"id": "later", "a": 2, "b": 5}]) == 1
    wait_for("a later answer", lambda: len(sink_rows(target)) >= 7)
    stop(api, project, job_id)
    rows = {r["id"]: r for r in sink_rows(target)}
    assert len(rows) == 7
    for a in (10, 11, 12, 14, 15):
        assert rows[f"r{a}"] == {"id": f"r{a}", "a": a, "b": 3, "score": a * 3 + 1, "code": 200}
    # A 500 gives its status and no answer; the pipeline goes on.
    assert rows["r13"] == {"id": "r13", "a": 13, "b": 3, "score": None, "code": 500}
    assert rows["later"] == {"id": "later", "a": 2, "b": 5, "score": 11, "code": 200}
    assert sorted((r["body"]["a"], r["body"]["b"]) for r in function.requests) == sorted(
        [(a, 3) for a in range(10, 16)] + [(2, 5)]
    )
