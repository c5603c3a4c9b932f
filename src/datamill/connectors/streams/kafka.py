"""Kafka (confluent-kafka): a source reading one topic and a sink producing to it.

Source — positions are ``{"<partition>": <next offset>}``. :meth:`KafkaSource.seek`
assigns every partition of the topic explicitly (no group rebalancing): at the offset in
the position, else at the group's committed offset, else at the oldest offset the broker
still holds. Records are processed into state exactly once by the engine's checkpoints;
:meth:`KafkaSource.committed` also commits the checkpointed offsets to the consumer group
(``groupId``, default one per job operator) so tools watching the group see progress.
Partitions added to the topic while the pipeline runs are picked up at the next start.

Sink — an idempotent producer (``enable.idempotence``, ``acks=all``): each row is one
message (a JSON object or a CSV line) keyed by the ``partitioner`` field (no key when the
field is null or not set). :meth:`KafkaSink.commit` flushes and fails if any message of
the checkpoint was not delivered. After a crash the unfinished checkpoint is produced
again (at-least-once).

Outbound safety: the bootstrap servers pass the outbound guard at connect time (the client
connects to the resolved addresses unless TLS needs the names), and so does every broker
the cluster's metadata advertises, before any record is read or written. librdkafka opens
the broker connections itself and the Python client has no hook to veto one (no resolve
or connect callback), so three limits remain, documented in docs/operations.md: the
metadata request itself may already go to an advertised broker (a hostile bootstrap
broker that advertises a refused address gets one connection opened there per client
start before the check refuses it; no record is read or written); librdkafka resolves an
advertised broker's name again when it connects, so a DNS answer that changes after the
check is not seen; and a broker advertised later (a cluster change while running) is only
checked at the next start.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from datamill.connectors.streams.base import (
    Position,
    StreamContext,
    StreamError,
    register_sink,
    register_source,
)
from datamill.connectors.streams.records import (
    SinkOptions,
    client_id,
    decode_payload,
    encode_rows,
    open_spec,
)
from datamill.domain.datasources import KafkaSpec
from datamill.domain.values import json_value
from datamill.errors import DatamillError, E
from datamill.security.outbound import check_host

_LIBRDKAFKA_LOG = logging.getLogger("datamill.kafka")
"""librdkafka's own log lines (errors only) go to Python logging, not to stderr."""
METADATA_TIMEOUT = 15.0
FLUSH_TIMEOUT = 60.0
"""Seconds :meth:`KafkaSink.commit` waits for the brokers to take a checkpoint's messages."""


def _client_config(spec: KafkaSpec, ctx: StreamContext, name: str) -> dict[str, Any]:
    tls = spec.securityProtocol in ("SSL", "SASL_SSL")
    servers = []
    for host, port in spec.servers():
        address = check_host(host, port, ctx.outbound_allow, "spec.bootstrapServers")
        target = host if tls else address  # TLS verifies the broker's name
        servers.append(f"[{target}]:{port}" if ":" in target else f"{target}:{port}")
    config: dict[str, Any] = {
        "bootstrap.servers": ",".join(servers),
        "security.protocol": spec.securityProtocol or "PLAINTEXT",
        "client.id": name,
        "log_level": 3,
        "logger": _LIBRDKAFKA_LOG,
        "error_cb": lambda error: ctx.log(f"kafka: {error.str()}"),
    }
    if spec.username is not None:
        password = ctx.secret_values.get("password")
        if password is None:
            raise DatamillError(
                E.SECRET_KEY_MISSING,
                f"spec.passwordSecret: secret '{spec.passwordSecret}' has no value 'password'",
                field="spec.passwordSecret",
            )
        config.update(
            {"sasl.mechanism": "PLAIN", "sasl.username": spec.username, "sasl.password": password}
        )
    return config


def _check_cluster(client: Consumer | Producer, spec: KafkaSpec, ctx: StreamContext) -> int:
    """Refuse advertised brokers the outbound guard refuses; the topic's partition count."""
    try:
        metadata = client.list_topics(spec.topic, timeout=METADATA_TIMEOUT)
    except KafkaException as exc:
        raise StreamError(
            f"kafka {spec.bootstrapServers}: no cluster metadata within "
            f"{METADATA_TIMEOUT:g} s: {exc}"
        ) from exc
    for broker in metadata.brokers.values():
        check_host(broker.host, broker.port, ctx.outbound_allow, "spec.bootstrapServers")
    topic = metadata.topics.get(spec.topic)
    if topic is None or topic.error is not None or not topic.partitions:
        reason = (
            topic.error.str() if topic is not None and topic.error is not None else "no partitions"
        )
        raise StreamError(f"kafka topic '{spec.topic}' is not available: {reason}")
    return len(topic.partitions)


class KafkaSource:
    """Reads every partition of a topic from explicit offsets (module docstring)."""

    def __init__(self, spec: KafkaSpec, ctx: StreamContext) -> None:
        self.spec = spec
        self.ctx = ctx
        config = _client_config(spec, ctx, client_id(ctx, "in"))
        config.update(
            {
                "group.id": spec.groupId or client_id(ctx, "group"),
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            }
        )
        self._consumer = Consumer(config)
        try:
            self._partitions = _check_cluster(self._consumer, spec, ctx)
        except BaseException:
            self._consumer.close()
            raise
        self._next: dict[int, int] = {}

    def seek(self, position: Position | None) -> None:
        wanted = {int(p): int(o) for p, o in (position or {}).items()}
        missing = [
            TopicPartition(self.spec.topic, p) for p in range(self._partitions) if p not in wanted
        ]
        if missing:
            for tp in self._consumer.committed(missing, timeout=METADATA_TIMEOUT):
                if tp.offset >= 0:
                    wanted[tp.partition] = tp.offset
                else:
                    low, _high = self._consumer.get_watermark_offsets(
                        TopicPartition(self.spec.topic, tp.partition), timeout=METADATA_TIMEOUT
                    )
                    wanted[tp.partition] = low
        self._next = {p: wanted[p] for p in range(self._partitions)}
        self._consumer.assign(
            [TopicPartition(self.spec.topic, p, o) for p, o in self._next.items()]
        )

    def read(self, max_records: int, timeout_seconds: float) -> list[dict[str, Any]]:
        if not self._next:
            self.seek(None)
        first = self._consumer.poll(timeout_seconds)
        if first is None:
            return []
        messages: list[Message] = [first]
        if max_records > 1:
            messages += self._consumer.consume(max_records - 1, timeout=0)
        records: list[dict[str, Any]] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal() or error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    raise StreamError(f"kafka topic '{self.spec.topic}': {error.str()}")
                self.ctx.log(f"kafka topic '{self.spec.topic}': {error.str()}")
                continue
            partition, offset = message.partition(), message.offset()
            if partition is None or offset is None:
                continue
            self._next[partition] = offset + 1
            records.extend(decode_payload(message.value() or b""))
        return records

    def position(self) -> Position:
        return {str(p): o for p, o in sorted(self._next.items())}

    def committed(self, position: Position) -> None:
        offsets = [TopicPartition(self.spec.topic, int(p), int(o)) for p, o in position.items()]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # the checkpoint holds the offsets anyway
            self.ctx.log(f"kafka: committing offsets to the group failed: {exc}")

    def lag(self) -> int | None:
        """Sum over partitions of high watermark minus next offset. The high watermark comes
        from the consumer's last fetch when it has one, else from a query to the broker."""
        total = 0
        try:
            for partition, offset in self._next.items():
                tp = TopicPartition(self.spec.topic, partition)
                _low, high = self._consumer.get_watermark_offsets(tp, cached=True) or (-1, -1)
                if high < 0:
                    _low, high = self._consumer.get_watermark_offsets(tp, timeout=2.0)
                total += max(high - offset, 0)
        except KafkaException:
            return None
        return total

    def close(self) -> None:
        self._consumer.close()


class KafkaSink:
    """Produces each row as one message, keyed by the ``partitioner`` field."""

    def __init__(self, spec: KafkaSpec, options: SinkOptions, ctx: StreamContext) -> None:
        self.spec = spec
        self.options = options
        self.ctx = ctx
        config = _client_config(spec, ctx, client_id(ctx, "out"))
        config.update({"enable.idempotence": True, "acks": "all", "linger.ms": 5})
        self._producer = Producer(config)
        self._failures: list[str] = []
        try:
            _check_cluster(self._producer, spec, ctx)
        except BaseException:
            self._producer.flush(0)
            raise
        self.sent = 0

    def _delivered(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._failures.append(error.str())

    def write(self, table: pa.Table, epoch: int) -> None:
        key_field = self.options.partitioner
        for row, payload in encode_rows(table, self.options):
            key = None
            if key_field is not None:
                value = json_value(row.get(key_field), strict=True)
                if value is not None:
                    key = value if isinstance(value, str) else json.dumps(value)
            while True:
                try:
                    self._producer.produce(
                        self.spec.topic, payload, key=key, on_delivery=self._delivered
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self._producer.poll(0.5)
            self.sent += 1
        self._producer.poll(0)

    def commit(self, epoch: int) -> None:
        left = self._producer.flush(FLUSH_TIMEOUT)
        if left:
            raise StreamError(
                f"kafka topic '{self.spec.topic}': {left} messages not delivered within "
                f"{FLUSH_TIMEOUT:g} s"
            )
        if self._failures:
            first, count = self._failures[0], len(self._failures)
            self._failures = []
            raise StreamError(
                f"kafka topic '{self.spec.topic}': {count} messages were not delivered: {first}"
            )

    def close(self) -> None:
        self._producer.flush(5)


@register_source("kafka")
def kafka_source(spec: dict[str, Any], _basic: dict[str, Any], ctx: StreamContext) -> KafkaSource:
    return KafkaSource(open_spec(KafkaSpec, spec, "kafka"), ctx)


@register_sink("kafka")
def kafka_sink(spec: dict[str, Any], configs: dict[str, Any], ctx: StreamContext) -> KafkaSink:
    return KafkaSink(open_spec(KafkaSpec, spec, "kafka"), SinkOptions.of(configs), ctx)
