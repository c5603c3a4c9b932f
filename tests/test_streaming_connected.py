"""A pipeline between real brokers through the API: records from a Kafka topic (a catalog
connection named by the source's ``dataSourceId``) through a Map into another Kafka topic
and into files, with the engine killed on the way: the files hold every record once."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import Api
from tests.servers import RunningServer
from tests.test_streaming_engine import (
    create_ready,
    engine_pid,
    metrics,
    op,
    sink_rows,
    start,
    stop,
    wait_for,
    wait_state,
)


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
                got.append(json.loads(message.value()))
    consumer.close()
    return got


def test_kafka_to_kafka_and_files_through_engine_kills(
    api: Api, project: str, kafka_server: RunningServer, streaming_engine: Any
) -> None:
    source_topic, sink_topic = new_topic(kafka_server), new_topic(kafka_server)
    for name, topic in (("readings", source_topic), ("converted", sink_topic)):
        created = api.post(
            f"/projects/{project}/datasources/{name}",
            json={"type": "kafka", "spec": {"bootstrapServers": kafka_server.url, "topic": topic}},
        )
        assert created.status_code == 201, created.text
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
    pid = engine_pid(api, project, job_id)
    produce(kafka_server, source_topic, range(60, 90))
    os.kill(pid, signal.SIGKILL)
    wait_for("a new engine", lambda: engine_pid(api, project, job_id) != pid)
    wait_state(api, project, job_id, "RUNNING")
    produce(kafka_server, source_topic, range(90, 120))
    wait_for("all records", lambda: len(sink_rows(target)) >= 120)
    time.sleep(1.5)  # a checkpoint later: nothing more may appear
    rows = sink_rows(target)
    assert sorted(r["i"] for r in rows) == list(range(120))  # each exactly once
    assert all(r["twice"] == 2 * r["i"] for r in rows)
    figures = metrics(api, project, job_id)
    assert figures["sources"]["src"]["lag"] == 0
    assert figures["operators"]["src"]["recordsOut"] == 120
    stop(api, project, job_id)
    sent = consume(kafka_server, sink_topic, 120)
    assert {r["i"] for r in sent} == set(range(120))  # at least once into Kafka
    assert all(r["twice"] == 2 * r["i"] for r in sent)
