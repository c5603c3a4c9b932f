"""Stream connectors against real servers on loopback: mosquitto, a Kafka broker (Tansu),
an SMTP server (aiosmtpd) and small threaded HTTP servers for webhooks and functions."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from datamill.connectors.streams import SINKS, SOURCES, TRANSFORMS
from datamill.connectors.streams.base import StreamContext, StreamError, StreamSource
from datamill.connectors.streams.notify import render
from datamill.errors import DatamillError
from tests.conftest import Recorder
from tests.servers import RunningServer

LOOPBACK = ["127.0.0.1"]


def context(tmp_path: Path, allow: list[str] | None = None, **secrets: str) -> StreamContext:
    lines: list[str] = []
    ctx = StreamContext(
        project="p1",
        job_id=f"job-{uuid.uuid4().hex[:8]}",
        operator_id="operator1",
        state_dir=tmp_path,
        outbound_allow=LOOPBACK if allow is None else allow,
        secret_values=secrets,
        log=lines.append,
    )
    ctx.extra["lines"] = lines
    return ctx


def log_of(ctx: StreamContext) -> str:
    return "\n".join(ctx.extra["lines"])


def drain(source: StreamSource, quiet: float = 1.0, limit: int = 10_000) -> list[dict[str, Any]]:
    """Everything the source delivers until it stays quiet for ``quiet`` seconds."""
    records: list[dict[str, Any]] = []
    while len(records) < limit:
        batch = source.read(1000, quiet)
        if not batch:
            break
        records.extend(batch)
    return records


def refused(call: Callable[[], Any], code: str, *needles: str) -> DatamillError:
    with pytest.raises(DatamillError) as caught:
        call()
    assert caught.value.code == code, caught.value.message
    for needle in needles:
        assert needle in caught.value.message, (needle, caught.value.message)
    return caught.value


# =============================================================================== MQTT


def mqtt_spec(server: RunningServer, topic: str, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": server.port, "topic": topic, **extra}


def test_mqtt_sink_to_source_round_trip(mqtt_server: RunningServer, tmp_path: Path) -> None:
    base = f"plant-{uuid.uuid4().hex[:6]}"
    ctx = context(tmp_path)
    source = SOURCES["mqtt"](mqtt_spec(mqtt_server, f"{base}/+/t"), {}, ctx)
    source.seek(None)
    json_sink = SINKS["mqtt"](mqtt_spec(mqtt_server, f"{base}/a/t"), {"format": "JSON"}, ctx)
    csv_sink = SINKS["mqtt"](
        mqtt_spec(mqtt_server, f"{base}/b/t", qos=2), {"format": "CSV", "csvSeparator": ";"}, ctx
    )
    try:
        rows = pa.table({"device": ["d1", "d2", None], "value": [1.5, 2.0, 3.25]})
        json_sink.write(rows, 1)
        json_sink.commit(1)
        csv_sink.write(pa.table({"device": ["d;3"], "n": [7], "ok": [True]}), 1)
        csv_sink.commit(1)
        got = drain(source)
        assert got[:3] == [
            {"device": "d1", "value": 1.5},
            {"device": "d2", "value": 2.0},
            {"device": None, "value": 3.25},
        ]
        # A CSV line is not a JSON object: it arrives as the record's payload, quoted per CSV.
        assert got[3:] == [{"payload": '"d;3";7;true'}]
        assert source.position()["read"] == 4
        assert source.lag() == 0
    finally:
        source.close()
        json_sink.close()
        csv_sink.close()


@pytest.mark.slow
def test_mqtt_messages_come_again_until_a_checkpoint_acknowledges_them(
    mqtt_server: RunningServer, tmp_path: Path
) -> None:
    topic = f"acks-{uuid.uuid4().hex[:6]}/x"
    ctx = context(tmp_path)  # the same job operator, hence the same session, on every open
    spec = mqtt_spec(mqtt_server, topic)
    source = SOURCES["mqtt"](spec, {}, ctx)
    source.seek(None)
    sink = SINKS["mqtt"](spec, {}, ctx)
    sink.write(pa.table({"i": list(range(50))}), 1)
    sink.commit(1)
    first = drain(source)
    assert [r["i"] for r in first] == list(range(50))
    source.close()  # a crash: nothing was checkpointed, so nothing was acknowledged

    source = SOURCES["mqtt"](spec, {}, ctx)
    source.seek({"session": "from-before-the-crash", "read": 50})
    again = drain(source)
    assert sorted(r["i"] for r in again) == list(range(50))
    # A checkpoint after 30 records: only those are acknowledged.
    source.committed({**source.position(), "read": 30})
    source.close()

    source = SOURCES["mqtt"](spec, {}, ctx)
    source.seek(None)
    left = drain(source)
    assert sorted(r["i"] for r in left) == sorted(r["i"] for r in again[30:])
    source.committed(source.position())
    sink.write(pa.table({"i": [100, 101]}), 2)
    sink.commit(2)
    assert [r["i"] for r in drain(source)] == [100, 101]
    source.committed(source.position())
    source.close()

    source = SOURCES["mqtt"](spec, {}, ctx)
    source.seek(None)
    assert drain(source, quiet=0.7) == []
    source.close()
    sink.close()


def test_mqtt_settings_refused(mqtt_server: RunningServer, tmp_path: Path) -> None:
    ctx = context(tmp_path)
    refused(lambda: SOURCES["mqtt"](mqtt_spec(mqtt_server, "t", qos=0), {}, ctx), "E18760", "qos 1")
    refused(lambda: SINKS["mqtt"](mqtt_spec(mqtt_server, "a/+"), {}, ctx), "E18760", "wildcards")
    refused(
        lambda: SINKS["mqtt"](mqtt_spec(mqtt_server, "a"), {"format": "XML"}, ctx),
        "E18760",
        "advanceConfigs.format",
    )
    refused(
        lambda: SINKS["mqtt"](
            mqtt_spec(mqtt_server, "a", username="u", passwordSecret="s"), {}, ctx
        ),
        "E18503",
        "'password'",
    )
    refused(lambda: SINKS["mqtt"](mqtt_spec(mqtt_server, "a", port=0), {}, ctx), "E18760", "port")
    # The outbound guard applies again at connect time: loopback is not allowed by default.
    source = SOURCES["mqtt"](mqtt_spec(mqtt_server, "t"), {}, context(tmp_path, allow=[]))
    refused(lambda: source.seek(None), "E18118", "spec.host", "127.0.0.1")
    refused(
        lambda: SINKS["mqtt"](mqtt_spec(mqtt_server, "t"), {}, context(tmp_path, allow=[])),
        "E18118",
    )


@pytest.mark.slow
def test_mqtt_login_with_a_secret_password(tmp_path: Path) -> None:
    from tests.servers import start_mosquitto

    server = start_mosquitto(tmp_path / "broker", users={"plant": "pw-plant-1"})
    try:
        spec = mqtt_spec(server, "secure/t", username="plant", passwordSecret="mqtt_pw")
        ctx = context(tmp_path, password="pw-plant-1")
        source = SOURCES["mqtt"](spec, {}, ctx)
        source.seek(None)
        sink = SINKS["mqtt"](spec, {}, ctx)
        sink.write(pa.table({"n": [1]}), 1)
        sink.commit(1)
        assert drain(source) == [{"n": 1}]
        source.close()
        sink.close()
        with pytest.raises(StreamError, match="refused the connection"):
            SINKS["mqtt"](spec, {}, context(tmp_path, password="wrong"))
        with pytest.raises(StreamError, match="refused the connection"):
            SINKS["mqtt"](mqtt_spec(server, "secure/t"), {}, ctx)  # anonymous
    finally:
        server.stop()


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for ``name`` (its own CA) and its key, as PEM files."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_mqtt_tls_verifies_the_host_name_on_the_checked_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    from tests.servers import start_mosquitto

    cert, key = _self_signed(tmp_path / "tls", "localhost")
    server = start_mosquitto(tmp_path / "broker", tls=(cert, key))
    try:
        spec = mqtt_spec(server, "tls/t", host="localhost", tls=True)
        ctx = context(tmp_path, allow=["localhost", "127.0.0.1", "::1"])
        # Unknown to the system's CAs: refused.
        with pytest.raises(StreamError, match="certificate verify failed"):
            SINKS["mqtt"](spec, {}, ctx)
        # Trusted: the connection goes to the checked address and verifies 'localhost'.
        trusted = ssl.create_default_context(cafile=str(cert))
        monkeypatch.setattr(ssl, "create_default_context", lambda: trusted)
        sink = SINKS["mqtt"](spec, {}, ctx)
        source = SOURCES["mqtt"](spec, {}, ctx)
        source.seek(None)
        sink.write(pa.table({"n": [5]}), 1)
        sink.commit(1)
        assert drain(source) == [{"n": 5}]
        source.close()
        sink.close()
        # A name the certificate does not carry is refused even though the address is right.
        wrong = mqtt_spec(server, "tls/t", host="127.0.0.1", tls=True)
        with pytest.raises(StreamError, match="cannot connect"):
            SINKS["mqtt"](wrong, {}, ctx)
    finally:
        server.stop()


def test_mqtt_unreachable_broker_is_a_stream_error(tmp_path: Path) -> None:
    from tests.servers import free_port

    spec = {"host": "127.0.0.1", "port": free_port(), "topic": "t"}
    with pytest.raises(StreamError, match="cannot connect"):
        SINKS["mqtt"](spec, {}, context(tmp_path))


# ============================================================================== Kafka


def new_topic(server: RunningServer, partitions: int = 3) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": server.url})
    for future in admin.create_topics([NewTopic(name, num_partitions=partitions)]).values():
        future.result(timeout=15)
    return name


def kafka_spec(server: RunningServer, topic: str, **extra: Any) -> dict[str, Any]:
    return {"bootstrapServers": server.url, "topic": topic, **extra}


def raw_messages(server: RunningServer, topic: str, count: int) -> list[Any]:
    consumer = Consumer(
        {"bootstrap.servers": server.url, "group.id": "check", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    got: list[Any] = []
    deadline = time.monotonic() + 15
    while len(got) < count and time.monotonic() < deadline:
        got += [m for m in consumer.consume(count, timeout=1) if m.error() is None]
    consumer.close()
    return got


def test_kafka_sink_keys_by_partitioner(kafka_server: RunningServer, tmp_path: Path) -> None:
    topic = new_topic(kafka_server)
    ctx = context(tmp_path)
    sink = SINKS["kafka"](kafka_spec(kafka_server, topic), {"partitioner": "device"}, ctx)
    devices = [f"d{i % 4}" for i in range(40)]
    sink.write(pa.table({"device": devices, "i": list(range(40))}), 1)
    sink.commit(1)
    sink.close()
    messages = raw_messages(kafka_server, topic, 40)
    assert len(messages) == 40
    partition_of: dict[bytes, set[int]] = {}
    for message in messages:
        record = json.loads(message.value())
        assert message.key() == record["device"].encode()
        partition_of.setdefault(message.key(), set()).add(message.partition())
    assert set(partition_of) == {b"d0", b"d1", b"d2", b"d3"}
    assert all(len(parts) == 1 for parts in partition_of.values())  # a key keeps its partition

    csv_topic = new_topic(kafka_server, partitions=1)
    sink = SINKS["kafka"](
        kafka_spec(kafka_server, csv_topic), {"advanceConfigs": {"format": "CSV"}}, ctx
    )
    sink.write(pa.table({"a": [1, None], "b": ["x,y", "z"]}), 1)
    sink.commit(1)
    sink.close()
    csv_messages = raw_messages(kafka_server, csv_topic, 2)
    assert [(m.key(), m.value()) for m in csv_messages] == [(None, b'1,"x,y"'), (None, b",z")]


@pytest.mark.slow
def test_kafka_source_positions_seek_and_group_commit(
    kafka_server: RunningServer, tmp_path: Path
) -> None:
    topic = new_topic(kafka_server)
    ctx = context(tmp_path)
    spec = kafka_spec(kafka_server, topic, groupId=f"g-{uuid.uuid4().hex[:6]}")
    # One record per request: the test broker (Tansu) reports a partition's high watermark
    # as the last record batch's base offset + 1, which is only right for 1-record batches.
    producer = Producer({"bootstrap.servers": kafka_server.url})
    for i in range(30):
        producer.produce(topic, json.dumps({"i": i}).encode(), key=f"k{i % 5}".encode())
        producer.flush(10)
    sink = SINKS["kafka"](spec, {"partitioner": "k"}, ctx)

    source = SOURCES["kafka"](spec, {}, ctx)
    source.seek(None)
    assert source.lag() == 30
    assert sum(source.position().values()) == 0
    first = drain(source)
    assert sorted(r["i"] for r in first) == list(range(30))
    position = source.position()
    assert set(position) == {"0", "1", "2"}
    assert sum(position.values()) == 30
    assert source.lag() == 0
    source.committed(position)
    source.close()

    checker = Consumer({"bootstrap.servers": kafka_server.url, "group.id": spec["groupId"]})
    committed = checker.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    checker.close()
    assert {str(tp.partition): tp.offset for tp in committed} == position

    # A new source of the same group resumes after the committed offsets ...
    source = SOURCES["kafka"](spec, {}, ctx)
    source.seek(None)
    assert source.read(100, 0.7) == []
    sink.write(pa.table({"k": ["k1"], "i": [30]}), 2)
    sink.commit(2)
    assert [r["i"] for r in drain(source)] == [30]
    # ... and a checkpoint's position wins over the group: seek back to the start.
    source.seek({"0": 0, "1": 0, "2": 0})
    assert sorted(r["i"] for r in drain(source)) == list(range(31))
    # Seek to a saved position reads only what came after it.
    source.seek(position)
    assert [r["i"] for r in drain(source)] == [30]
    source.close()
    sink.close()


def test_kafka_brokers_advertised_by_the_cluster_pass_the_outbound_guard(
    tmp_path: Path,
) -> None:
    from tests.servers import start_kafka

    # The bootstrap address is allowed, but the cluster says its broker is at 10.255.0.7.
    server = start_kafka(tmp_path / "kafka", advertised_host="10.255.0.7")
    try:
        spec = kafka_spec(server, "t")
        error = refused(
            lambda: SOURCES["kafka"](spec, {}, context(tmp_path)), "E18118", "10.255.0.7"
        )
        assert error.field == "spec.bootstrapServers"
        refused(lambda: SINKS["kafka"](spec, {}, context(tmp_path)), "E18118", "10.255.0.7")
    finally:
        server.stop()


def test_kafka_refusals(kafka_server: RunningServer, tmp_path: Path) -> None:
    ctx = context(tmp_path)
    with pytest.raises(StreamError, match="not available"):
        SOURCES["kafka"](kafka_spec(kafka_server, "no-such-topic"), {}, ctx)
    refused(
        lambda: SOURCES["kafka"](kafka_spec(kafka_server, "t"), {}, context(tmp_path, allow=[])),
        "E18118",
        "spec.bootstrapServers",
    )
    refused(
        lambda: SINKS["kafka"](
            kafka_spec(kafka_server, "t", username="u", passwordSecret="kafka"), {}, ctx
        ),
        "E18503",
        "'password'",
    )
    refused(
        lambda: SINKS["kafka"](kafka_spec(kafka_server, "t"), {"csvSeparator": "ab"}, ctx),
        "E18760",
        "csvSeparator",
    )


def ok(_path: str, _body: Any) -> tuple[int, Any, dict[str, str]]:
    return 200, {"ok": True}, {}


# ====================================================================== notifications


def test_templates() -> None:
    record = {"device": "d1", "temp": 21.5, "alarm": None, "tags": ["a"], "hot": True}
    assert render("${device} is ${ temp }°C", record) == "d1 is 21.5°C"
    assert render("[${alarm}] ${hot} ${tags} ${nope}", record) == '[] true ["a"] ${nope}'


def test_webhook_notifications_are_templated_per_record(
    http_server: Callable[..., Recorder], tmp_path: Path
) -> None:
    server = http_server(ok)
    ctx = context(tmp_path, token="hook-token-1")
    spec = {"channel": "webhook", "url": server.url + "/hook?room=ops", "tokenSecret": "hooks"}
    basic = {
        "messageSubject": "Alarm on ${device}",
        "defaultMessage": "default ${device}",
        "httpMessage": "${device} reads ${temp} (limit ${limit})",
    }
    sink = SINKS["notification"](spec, basic, ctx)
    sink.write(pa.table({"device": ["d1", "d2"], "temp": [30.5, None]}), 1)
    sink.commit(1)
    sink.close()
    assert [r["body"] for r in server.requests] == [
        {"subject": "Alarm on d1", "message": "d1 reads 30.5 (limit ${limit})"},
        {"subject": "Alarm on d2", "message": "d2 reads  (limit ${limit})"},
    ]
    assert {r["path"] for r in server.requests} == {"/hook?room=ops"}
    assert server.requests[0]["headers"]["Authorization"] == "Bearer hook-token-1"

    chat = http_server(ok)
    # The operator's configs as saved (not merged) are accepted too.
    configs = {"basicConfigs": {"defaultMessage": "${n} events"}, "advanceConfigs": {}}
    sink = SINKS["notification"]({"channel": "chat", "url": chat.url}, configs, ctx)
    sink.write(pa.table({"n": [3]}), 1)
    sink.close()
    assert chat.requests[0]["body"] == {"text": "3 events"}


def test_rate_limit_drops_and_counts_excess(
    http_server: Callable[..., Recorder], tmp_path: Path
) -> None:
    server = http_server(ok)
    ctx = context(tmp_path)
    spec = {
        "channel": "webhook",
        "url": server.url + f"/{uuid.uuid4().hex}",
        "rateLimitPerMinute": 3,
    }
    sink = SINKS["notification"](spec, {"defaultMessage": "n=${n}"}, ctx)
    sink.write(pa.table({"n": list(range(10))}), 1)
    assert [r["body"]["message"] for r in server.requests] == ["n=0", "n=1", "n=2"]
    assert (sink.sent, sink.dropped) == (3, 7)  # type: ignore[attr-defined]
    assert "rate limit of 3/min reached; 7 records not notified" in log_of(ctx)
    # The bucket belongs to the connection: a second sink on it shares the limit.
    other = SINKS["notification"](spec, {"defaultMessage": "x"}, ctx)
    other.write(pa.table({"n": [1]}), 1)
    assert other.dropped == 1  # type: ignore[attr-defined]
    sink.close()
    other.close()


@pytest.mark.slow
def test_undeliverable_notifications_are_counted_not_fatal(
    http_server: Callable[..., Recorder], tmp_path: Path
) -> None:
    target = http_server(ok)
    moved = http_server(lambda _p, _b: (302, {}, {"Location": target.url + "/elsewhere"}))
    broken = http_server(lambda _p, _b: (500, {"error": "down"}, {}))
    ctx = context(tmp_path)
    for server in (moved, broken):
        sink = SINKS["notification"](
            {"channel": "webhook", "url": server.url}, {"defaultMessage": "m"}, ctx
        )
        sink.write(pa.table({"n": [1]}), 1)
        assert (sink.sent, sink.failed) == (0, 1)  # type: ignore[attr-defined]
        sink.close()
    assert target.requests == []  # the redirect was not followed
    assert "redirects are not followed" in log_of(ctx)
    assert "answered 500" in log_of(ctx)
    assert len(broken.requests) == 3  # tried 3 times

    # A destination that keeps failing is given up on for the rest of the batch.
    sink = SINKS["notification"](
        {"channel": "webhook", "url": broken.url + "/again"}, {"defaultMessage": "m"}, ctx
    )
    sink.write(pa.table({"n": list(range(6))}), 2)
    sink.close()
    assert sink.failed == 6  # type: ignore[attr-defined]
    assert len(broken.requests) == 3 + 3 * 3  # 3 notifications tried 3 times each
    assert "3 failures in a row; 3 more of this batch not sent" in log_of(ctx)


def test_email_notifications_over_smtp(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller

    from tests.servers import free_port

    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        spec = {
            "channel": "email",
            "smtpHost": "127.0.0.1",
            "smtpPort": port,
            "smtpSecurity": "none",
            "from": "alerts@example.com",
            "to": ["ops@example.com", "oncall@example.com"],
        }
        basic = {
            "messageSubject": "Alarm ${device}",
            "defaultMessage": "unused",
            "emailMessage": "Device ${device} is at ${temp}.",
        }
        ctx = context(tmp_path)
        sink = SINKS["notification"](spec, basic, ctx)
        sink.write(pa.table({"device": ["d1", "d2"], "temp": [80, 81]}), 1)
        sink.close()
    finally:
        controller.stop()
    assert len(received) == 2
    assert received[0].mail_from == "alerts@example.com"
    assert received[0].rcpt_tos == ["ops@example.com", "oncall@example.com"]
    text = received[1].content.decode()
    assert "Subject: Alarm d2" in text
    assert "Device d2 is at 81." in text

    # Nothing listens now: counted and logged, not raised.
    ctx = context(tmp_path)
    sink = SINKS["notification"](spec, basic, ctx)
    sink.write(pa.table({"device": ["d3"], "temp": [1]}), 2)
    assert sink.failed == 1  # type: ignore[attr-defined]
    assert "mails not sent" in log_of(ctx)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_email_login_with_the_token_secret(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    from tests.servers import free_port

    received: list[Any] = []
    logins: list[tuple[str, str]] = []

    class Handler:
        async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    def authenticator(_server: Any, _session: Any, _envelope: Any, _mech: str, data: Any) -> Any:
        assert isinstance(data, LoginPassword)
        logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=data.password == b"mail-pw-1", handled=False)

    port = free_port()
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        spec = {
            "channel": "email",
            "smtpHost": "127.0.0.1",
            "smtpPort": port,
            "smtpSecurity": "none",
            "from": "alerts@example.com",
            "to": ["ops@example.com"],
            "tokenSecret": "mail",
        }
        ctx = context(tmp_path, username="alerts", password="mail-pw-1")
        sink = SINKS["notification"](spec, {"defaultMessage": "hello ${n}"}, ctx)
        sink.write(pa.table({"n": [1]}), 1)
        assert (sink.sent, sink.failed) == (1, 0)  # type: ignore[attr-defined]
        bad = context(tmp_path, username="alerts", password="wrong")
        sink = SINKS["notification"](spec, {"defaultMessage": "hello ${n}"}, bad)
        sink.write(pa.table({"n": [2]}), 1)
        assert (sink.sent, sink.failed) == (0, 1)  # type: ignore[attr-defined]
        assert "mails not sent" in log_of(bad)
        assert "wrong" not in log_of(bad)
    finally:
        controller.stop()
    assert logins[0] == ("alerts", "mail-pw-1")
    assert set(logins[1:]) == {("alerts", "wrong")}  # smtplib tries PLAIN, then LOGIN
    assert len(received) == 1
    assert "hello 1" in received[0].content.decode()


def test_notification_outbound_guard_at_connect(tmp_path: Path) -> None:
    closed = context(tmp_path, allow=[])
    refused(
        lambda: SINKS["notification"](
            {"channel": "webhook", "url": "http://127.0.0.1:9/x"}, {"defaultMessage": "m"}, closed
        ),
        "E18118",
        "spec.url",
    )
    email = {
        "channel": "email",
        "smtpHost": "127.0.0.1",
        "from": "a@example.com",
        "to": ["b@example.com"],
    }
    refused(
        lambda: SINKS["notification"](email, {"defaultMessage": "m"}, closed),
        "E18118",
        "spec.smtpHost",
    )
    refused(
        lambda: SINKS["notification"](email, {"defaultMessage": " "}, context(tmp_path)),
        "E18760",
        "defaultMessage",
    )


# ========================================================================== functions


def calculator(path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
    if path == "/batch":
        return 200, [{"sum": item["a"] + item["b"]} for item in body], {}
    if body["a"] == 13:
        return 500, {"error": "unlucky"}, {}
    if body["a"] == 7:
        time.sleep(1.5)
    if path == "/text":
        return 200, b"plain text", {}
    return 200, {"sum": body["a"] + body["b"], "of": [body["a"], body["b"]]}, {}


def function_basic(output_type: str = "MAP", **extra: Any) -> dict[str, Any]:
    return {
        "apiParamFields": "a,b",
        "apiOutputField": {"field": "answer", "type": output_type},
        "apiResponseCode": {"field": "status", "type": "INTEGER"},
        **extra,
    }


def test_function_calls_add_answer_and_status(
    http_server: Callable[..., Recorder], tmp_path: Path
) -> None:
    server = http_server(calculator)
    ctx = context(tmp_path, token="fn-token")
    spec = {"url": server.url + "/fn", "timeoutSeconds": 0.5, "tokenSecret": "fn"}
    transform = TRANSFORMS["function"](spec, function_basic(), ctx)
    table = pa.table({"id": ["r1", "r2", "r3"], "a": [1, 13, 7], "b": [2, 0, 0]})
    out = transform.apply(table)
    transform.close()
    assert out.column_names == ["id", "a", "b", "answer", "status"]
    assert out.schema.field("answer").type == pa.string()
    assert out.schema.field("status").type == pa.int32()
    assert json.loads(out.column("answer")[0].as_py()) == {"sum": 3, "of": [1, 2]}
    # A 500 gives its status and no answer; a timeout gives status 0: the batch survives.
    assert out.column("answer").to_pylist()[1:] == [None, None]
    assert out.column("status").to_pylist() == [200, 500, 0]
    assert out.column("id").to_pylist() == ["r1", "r2", "r3"]
    assert "2 of 3 calls failed" in log_of(ctx)
    assert {r["headers"]["Authorization"] for r in server.requests} == {"Bearer fn-token"}
    assert sorted(r["body"]["a"] for r in server.requests) == [1, 7, 13]
    assert all(set(r["body"]) == {"a", "b"} for r in server.requests)
    transform = TRANSFORMS["function"](spec, function_basic("LONG"), ctx)
    empty = transform.apply(table.slice(0, 0))
    transform.close()
    assert empty.num_rows == 0
    assert empty.schema.field("answer").type == pa.int64()
    assert len(server.requests) == 3  # no call for no records


@pytest.mark.parametrize(
    ("path", "kind", "arrow", "expected"),
    [
        ("/fn", "STRING", pa.string(), '{"sum": 5, "of": [2, 3]}'),
        ("/text", "STRING", pa.string(), "plain text"),
        ("/text", "LONG", pa.int64(), None),
    ],
)
def test_function_output_is_typed(
    http_server: Callable[..., Recorder],
    tmp_path: Path,
    path: str,
    kind: str,
    arrow: pa.DataType,
    expected: Any,
) -> None:
    server = http_server(calculator)
    transform = TRANSFORMS["function"](
        {"url": server.url + path}, function_basic(kind), context(tmp_path)
    )
    out = transform.apply(pa.table({"a": [2], "b": [3]}))
    transform.close()
    assert out.schema.field("answer").type == arrow
    assert out.column("answer").to_pylist() == [expected]
    assert out.column("status").to_pylist() == [200]


def test_function_batches_and_bounded_concurrency(
    http_server: Callable[..., Recorder], tmp_path: Path
) -> None:
    def slow(path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        time.sleep(0.1)
        return 200, (body["a"] * 10 if path == "/one" else [item["a"] * 10 for item in body]), {}

    server = http_server(slow)
    ctx = context(tmp_path)
    spec = {"url": server.url + "/one", "concurrency": 2}
    transform = TRANSFORMS["function"](
        spec, {"apiParamFields": ["a"], "apiOutputField": {"field": "x", "type": "LONG"}}, ctx
    )
    out = transform.apply(pa.table({"a": list(range(8))}))
    transform.close()
    assert out.column("x").to_pylist() == [a * 10 for a in range(8)]
    assert out.column_names == ["a", "x"]
    assert server.most_active == 2

    batched = http_server(slow)
    spec = {"url": batched.url + "/many", "batchSize": 3, "concurrency": 4}
    transform = TRANSFORMS["function"](
        spec, {"apiParamFields": ["a"], "apiOutputField": {"field": "x", "type": "DOUBLE"}}, ctx
    )
    out = transform.apply(pa.table({"a": list(range(7))}))
    transform.close()
    assert out.column("x").to_pylist() == [a * 10.0 for a in range(7)]
    assert [len(r["body"]) for r in batched.requests if True] != []
    assert sorted(len(r["body"]) for r in batched.requests) == [1, 3, 3]


def test_function_redirects_and_outbound_guard(
    http_server: Callable[..., Recorder], tmp_path: Path
) -> None:
    target = http_server(ok)
    moved = http_server(lambda _p, _b: (307, {}, {"Location": target.url}))
    transform = TRANSFORMS["function"]({"url": moved.url}, function_basic(), context(tmp_path))
    out = transform.apply(pa.table({"a": [1], "b": [2]}))
    transform.close()
    assert out.column("status").to_pylist() == [307]
    assert out.column("answer").to_pylist() == [None]
    assert target.requests == []
    refused(
        lambda: TRANSFORMS["function"](
            {"url": moved.url}, function_basic(), context(tmp_path, allow=[])
        ),
        "E18118",
        "spec.url",
    )
    refused(
        lambda: TRANSFORMS["function"](
            {"url": moved.url}, {"apiParamFields": "a"}, context(tmp_path)
        ),
        "E18760",
        "apiOutputField",
    )
    transform = TRANSFORMS["function"]({"url": moved.url}, function_basic(), context(tmp_path))
    refused(lambda: transform.apply(pa.table({"a": [1]})), "E18760", "'b'")
    transform.close()


def test_function_that_does_not_answer_is_given_up_for_the_batch(
    http_server: Callable[..., Recorder], tmp_path: Path
) -> None:
    from datamill.connectors.streams.function import GIVE_UP_AFTER

    def silent(_path: str, _body: Any) -> tuple[int, Any, dict[str, str]]:
        time.sleep(0.6)
        return 200, 1, {}

    server = http_server(silent)
    ctx = context(tmp_path)
    spec = {"url": server.url, "timeoutSeconds": 0.2, "concurrency": 2}
    transform = TRANSFORMS["function"](spec, function_basic("LONG"), ctx)
    started = time.monotonic()
    out = transform.apply(pa.table({"a": list(range(40)), "b": [0] * 40}))
    took = time.monotonic() - started
    transform.close()
    assert out.column("status").to_pylist() == [0] * 40
    assert out.column("answer").null_count == 40
    assert GIVE_UP_AFTER <= len(server.requests) <= GIVE_UP_AFTER + 2
    assert took < 3  # not 40 x 0.2 s / 2
