"""Stream connector throughput: MQTT and Kafka sources and sinks, HTTP function calls.

``python -m benchmarks.bench_stream_connectors [--kafka-records N] [--mqtt-records N]
[--function-records N] [--json-out FILE]``

Starts mosquitto and a Kafka-compatible broker (Tansu) on loopback (``tests/servers.py``)
and a threaded HTTP server in process, then times, in one run:

1. Kafka sink: ``write`` + ``commit`` of N JSON records keyed by a field (idempotent
   producer), against a plain confluent-kafka producer sending the same payloads.
2. Kafka source: ``seek`` + ``read`` of those N records, against a plain consumer.
3. MQTT sink (QoS 1) and MQTT source (QoS 1, manual acknowledgement, ``committed`` every
   5 000 records, reading what the broker queued for its session) for N records, against
   a plain paho publisher.
4. Function transform: N records, one call each, ``concurrency`` 4, a server that answers
   at once: calls per second.

Figures are records per second; ratios are connector / plain client in the same run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from tests.servers import start_kafka, start_mosquitto

from datamill.connectors.streams import SINKS, SOURCES, TRANSFORMS
from datamill.connectors.streams.base import StreamContext


def context(workdir: Path) -> StreamContext:
    return StreamContext(
        project="bench",
        job_id=uuid.uuid4().hex[:8],
        operator_id="op",
        state_dir=workdir,
        outbound_allow=["127.0.0.1"],
        secret_values={},
    )


def records(n: int) -> pa.Table:
    return pa.table(
        {
            "device_id": [f"d{i % 10_000}" for i in range(n)],
            "event_time": [1_700_000_000_000 + i for i in range(n)],
            "value": [i * 0.5 for i in range(n)],
            "status": [("ok", "warn", "x")[i % 3] for i in range(n)],
        }
    )


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_kafka(url: str, n: int, workdir: Path) -> dict[str, float]:
    admin = AdminClient({"bootstrap.servers": url})
    topics = [f"bench-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for future in admin.create_topics([NewTopic(t, num_partitions=3) for t in topics]).values():
        future.result(timeout=30)
    table = records(n)
    payloads = [json.dumps(row).encode() for row in table.to_pylist()]

    start = time.perf_counter()
    producer = Producer({"bootstrap.servers": url, "enable.idempotence": True, "linger.ms": 5})
    for row, payload in zip(table.column("device_id").to_pylist(), payloads, strict=True):
        while True:
            try:
                producer.produce(topics[0], payload, key=row)
                break
            except BufferError:
                producer.poll(0.5)
    producer.flush(60)
    plain_produce = time.perf_counter() - start

    ctx = context(workdir)
    spec = {"bootstrapServers": url, "topic": topics[1]}
    start = time.perf_counter()
    sink = SINKS["kafka"](spec, {"partitioner": "device_id"}, ctx)
    sink.write(table, 1)
    sink.commit(1)
    sink.close()
    connector_produce = time.perf_counter() - start

    start = time.perf_counter()
    consumer = Consumer(
        {"bootstrap.servers": url, "group.id": "bench", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topics[0], p, 0) for p in range(3)])
    got = 0
    while got < n:
        batch = consumer.consume(10_000, timeout=5)
        if not batch:
            break
        got += len([json.loads(m.value() or b"") for m in batch if m.error() is None])
    consumer.close()
    plain_consume = time.perf_counter() - start

    start = time.perf_counter()
    source = SOURCES["kafka"](spec, {}, ctx)
    source.seek(None)
    read = 0
    while read < n:
        batch_records = source.read(10_000, 5)
        if not batch_records:
            break
        read += len(batch_records)
    source.committed(source.position())
    source.close()
    connector_consume = time.perf_counter() - start
    assert read == n == got, (read, got, n)
    return {
        "kafka_sink_per_s": rate(n, connector_produce),
        "kafka_plain_producer_per_s": rate(n, plain_produce),
        "kafka_source_per_s": rate(n, connector_consume),
        "kafka_plain_consumer_per_s": rate(n, plain_consume),
    }


def bench_mqtt(port: int, n: int, workdir: Path) -> dict[str, float]:
    table = records(n)
    payloads = [json.dumps(row).encode() for row in table.to_pylist()]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.perf_counter()
    infos = [client.publish("bench/plain", payload, qos=1) for payload in payloads]
    for info in infos:
        info.wait_for_publish(60)
    plain_publish = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()

    ctx = context(workdir)
    spec = {"host": "127.0.0.1", "port": port, "topic": "bench/connector"}
    # The source's session subscribes, then goes offline: the broker queues the messages
    # for it while the sink publishes (as for the plain publisher, no one reads meanwhile).
    source = SOURCES["mqtt"](spec, {}, ctx)
    source.seek(None)
    source.close()
    start = time.perf_counter()
    sink = SINKS["mqtt"](spec, {}, ctx)
    sink.write(table, 1)
    sink.commit(1)
    connector_publish = time.perf_counter() - start
    start = time.perf_counter()
    source = SOURCES["mqtt"](spec, {}, ctx)
    source.seek(None)
    read = since_commit = 0
    while read < n:
        batch = source.read(5_000, 5)
        if not batch:
            break
        read += len(batch)
        since_commit += len(batch)
        if since_commit >= 5_000:
            source.committed(source.position())
            since_commit = 0
    source.committed(source.position())
    connector_read = time.perf_counter() - start
    source.close()
    sink.close()
    assert read == n, (read, n)
    return {
        "mqtt_sink_per_s": rate(n, connector_publish),
        "mqtt_plain_publisher_per_s": rate(n, plain_publish),
        "mqtt_source_per_s": rate(n, connector_read),
    }


def bench_function(n: int, workdir: Path) -> dict[str, float]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in separate writes

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = json.dumps(body["value"] * 2).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = {"url": f"http://127.0.0.1:{server.server_address[1]}/f", "concurrency": 4}
        basic = {"apiParamFields": ["value"], "apiOutputField": {"field": "y", "type": "DOUBLE"}}
        transform = TRANSFORMS["function"](spec, basic, context(workdir))
        table = records(n)
        start = time.perf_counter()
        out = transform.apply(table)
        seconds = time.perf_counter() - start
        transform.close()
        assert out.column("y").null_count == 0
    finally:
        server.shutdown()
        server.server_close()
    return {"function_calls_per_s": rate(n, seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kafka-records", type=int, default=200_000)
    parser.add_argument("--mqtt-records", type=int, default=20_000)
    parser.add_argument("--function-records", type=int, default=2_000)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="datamill-bench-streams-"))
    kafka = start_kafka(workdir / "kafka")
    broker = start_mosquitto(workdir / "mosquitto")
    try:
        figures = {
            **bench_kafka(kafka.url, args.kafka_records, workdir),
            **bench_mqtt(broker.port, args.mqtt_records, workdir),
            **bench_function(args.function_records, workdir),
        }
    finally:
        kafka.stop()
        broker.stop()
    figures["kafka_sink_ratio"] = (
        figures["kafka_sink_per_s"] / figures["kafka_plain_producer_per_s"]
    )
    figures["kafka_source_ratio"] = (
        figures["kafka_source_per_s"] / figures["kafka_plain_consumer_per_s"]
    )
    figures["mqtt_sink_ratio"] = figures["mqtt_sink_per_s"] / figures["mqtt_plain_publisher_per_s"]
    for key, value in figures.items():
        print(f"{key:32} {value:12,.2f}")
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
