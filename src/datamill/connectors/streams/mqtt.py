"""MQTT (paho-mqtt 2.x, MQTT 5): a source reading a topic filter and a sink publishing to a topic.

Source — at-least-once across a crash. The client keeps a persistent session on the broker
(a stable client id per job operator, ``clean_start`` off, a session expiry of
:data:`SESSION_EXPIRY_SECONDS`) and acknowledges nothing by itself (``manual_ack``):
a message is acknowledged only in :meth:`MqttSource.committed`, once a checkpoint holding
it is durable. If the pipeline dies before that, the broker still holds the message as
unacknowledged and delivers it again when the source reconnects. Duplicates are therefore
possible; losses are not (as long as the broker keeps the session).

* The source subscribes with QoS 1 even when the connection says ``qos: 2``: QoS 2's
  exactly-once handshake is completed per connection and cannot survive a restart of the
  client, so it would *lose* messages received but not checkpointed. ``qos: 0`` cannot be
  acknowledged at all and is refused for a source (E18760).
* MQTT cannot seek: :meth:`MqttSource.seek` only connects; redelivery comes from the
  broker's session. A position is ``{"session": <id of this connection>, "read": n,
  "acking": {<packet id>: <digest of topic and payload>}}``: ``acking`` lists the messages
  the checkpoint acknowledges once it is durable.
* A crash after a checkpoint is durable but before the broker has its acknowledgements
  makes the broker deliver those messages again (flagged DUP, same packet id). The source
  resumed at that checkpoint recognises them by packet id and digest from ``acking``, and
  drops them (acknowledging them at its next checkpoint): they are in the committed state
  and output already. A message delivered again while its first copy is read but not yet
  acknowledged (paho reconnected by itself) is dropped the same way.
* Unacknowledged messages count against the client's Receive Maximum
  (:data:`RECEIVE_MAXIMUM`): at most that many records are read between two checkpoints;
  then :meth:`MqttSource.read` returns nothing until the next checkpoint acknowledges them.

Sink — publishes each row (a JSON object, or a CSV line) with the connection's QoS;
:meth:`MqttSink.commit` waits until every message of the checkpoint has been handed to
the broker (PUBACK / PUBCOMP for QoS 1 / 2). After a crash the rows of the unfinished
checkpoint are published again.

Outbound safety: the broker host passes the outbound guard at connect time and the client
connects to the address it resolved to (TLS still verifies the host name).
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from typing import Any

import pyarrow as pa
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

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
from datamill.domain.datasources import MqttSpec
from datamill.errors import DatamillError, E
from datamill.security.outbound import check_host

SESSION_EXPIRY_SECONDS = 7 * 24 * 3600
"""How long the broker keeps a source's session (and its unacknowledged messages) while
the pipeline is down."""
RECEIVE_MAXIMUM = 10_000
"""Unacknowledged messages the broker may send a source: the most records per checkpoint."""
CONNECT_TIMEOUT = 15.0
CLOSE_TIMEOUT = 5.0
"""How long a closing connection waits for the broker to confirm it read what was sent."""
FLUSH_FILTER = "datamill/no-subscription"
"""A topic filter the connection never subscribes: unsubscribing it is a harmless round trip."""
PUBLISH_TIMEOUT = 60.0
"""Seconds :meth:`MqttSink.commit` waits for the broker to take a checkpoint's messages."""


class _PinnedClient(mqtt.Client):
    """A paho client that opens its TCP connection to an address resolved in advance.

    paho keeps using the host name for TLS (server name and certificate check); only the
    socket's destination is replaced, so a name cannot resolve elsewhere after the check.
    """

    def __init__(self, address: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pinned_address = address

    def _create_socket_connection(self) -> socket.socket:
        return socket.create_connection(
            (self._pinned_address, self._port), timeout=self._connect_timeout
        )


class _Connection:
    """One connected paho client running its network loop in a background thread."""

    def __init__(
        self,
        spec: MqttSpec,
        ctx: StreamContext,
        name: str,
        *,
        persistent: bool,
        manual_ack: bool,
        on_message: Any = None,
        on_connected: Any = None,
        on_subscribed: Any = None,
        max_inflight: int = 20,
    ) -> None:
        address = check_host(spec.host, spec.port, ctx.outbound_allow, "spec.host")
        self.spec = spec
        self.ctx = ctx
        self.shown = f"mqtt://{spec.host}:{spec.port}"
        self._connected = threading.Event()
        self._refused: str | None = None
        self._closing = False
        self._on_connected = on_connected
        client = _PinnedClient(
            address,
            callback_api_version=CallbackAPIVersion.VERSION2,
            # A sink has no session to keep: its own id, so that sinks never take over
            # each other's connection (a broker drops the older client with the same id).
            client_id=(spec.clientId if persistent else f"{spec.clientId}-{name[-8:]}")
            if spec.clientId
            else name,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
        )
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(max_inflight)
        username = spec.username or ctx.secret_values.get("username")
        if spec.passwordSecret is not None:
            password = ctx.secret_values.get("password")
            if password is None:
                raise DatamillError(
                    E.SECRET_KEY_MISSING,
                    f"spec.passwordSecret: secret '{spec.passwordSecret}' has no value 'password'",
                    field="spec.passwordSecret",
                )
            client.username_pw_set(username or "", password)
        elif username:
            client.username_pw_set(username)
        if spec.tls:
            client.tls_set_context(ssl.create_default_context())
        client.on_connect = self._connect_done
        client.on_disconnect = self._disconnected
        if on_message is not None:
            client.on_message = on_message
        if on_subscribed is not None:
            client.on_subscribe = on_subscribed
        self.client = client
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if persistent:
            properties.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
            properties.ReceiveMaximum = RECEIVE_MAXIMUM
        try:
            client.connect(
                spec.host,
                spec.port,
                keepalive=30,
                clean_start=not persistent,
                properties=properties,
            )
        except (OSError, ssl.SSLError) as exc:
            raise StreamError(f"{self.shown}: cannot connect: {exc}") from exc
        client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT) or self._refused:
            self.close()
            reason = self._refused or f"no answer within {CONNECT_TIMEOUT:g} s"
            raise StreamError(f"{self.shown}: the broker refused the connection: {reason}")

    def _connect_done(
        self,
        client: mqtt.Client,
        _userdata: Any,
        _flags: Any,
        reason: ReasonCode,
        _properties: Any,
    ) -> None:
        if reason.is_failure:
            self._refused = str(reason)
        elif self._on_connected is not None:
            self._on_connected(client)
        self._connected.set()

    def _disconnected(
        self, _client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        """paho reconnects by itself; the session (and unacknowledged messages) survive."""
        if not self._closing:
            self.ctx.log(f"{self.shown}: disconnected ({reason}); reconnecting")

    def close(self) -> None:
        """Disconnect once the broker has processed what was sent before (acknowledgements).

        Written is not enough: paho closes the socket right after DISCONNECT, and a close
        with unread data on the socket resets the connection, which may lose packets the
        broker has not read yet. The broker answers packets in order, so the answer to an
        UNSUBSCRIBE (of a filter never subscribed: it changes nothing) sent after the
        acknowledgements proves it has processed them."""
        self._closing = True
        if self.client.is_connected():
            flushed = threading.Event()
            self.client.on_unsubscribe = lambda *_args: flushed.set()
            code, _mid = self.client.unsubscribe(FLUSH_FILTER)
            if code == MQTTErrorCode.MQTT_ERR_SUCCESS:
                flushed.wait(CLOSE_TIMEOUT)
        self.client.disconnect()
        self.client.loop_stop()


class MqttSource:
    """Reads a topic filter; acknowledges messages once their checkpoint is durable."""

    def __init__(self, spec: MqttSpec, ctx: StreamContext) -> None:
        if spec.qos == 0:
            raise DatamillError(
                E.STREAM_SETTINGS_INVALID,
                "spec.qos: a pipeline source needs qos 1 or 2 (qos 0 messages cannot be "
                "acknowledged after a checkpoint, so a crash would lose them)",
                field="spec.qos",
            )
        self.spec = spec
        self.ctx = ctx
        self._session = uuid.uuid4().hex[:12]
        self._arrived: deque[mqtt.MQTTMessage] = deque()
        self._ready = threading.Condition()
        self._pending: deque[tuple[int, int, int]] = deque()
        """(sequence number, message id, qos) of messages read, not yet acknowledged."""
        self._unacked: dict[int, str] = {}
        """Packet id → digest of the messages in ``_pending``."""
        self._acked_before: dict[int, str] = {}
        """Packet id → digest of the messages the checkpoint resumed from acknowledges:
        delivered again, they are dropped (module docstring)."""
        self._read = 0
        self._conn: _Connection | None = None
        self._subscribed = threading.Event()
        self._refused: str | None = None

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._ready:
            self._arrived.append(message)
            self._ready.notify()

    def _subscribe(self, client: mqtt.Client) -> None:
        client.subscribe(self.spec.topic, qos=1)

    def _subscribe_done(
        self, _client: Any, _userdata: Any, _mid: int, reasons: list[ReasonCode], _props: Any
    ) -> None:
        failed = [str(reason) for reason in reasons if reason.is_failure]
        self._refused = failed[0] if failed else None
        self._subscribed.set()

    def seek(self, position: Position | None) -> None:
        if position is not None:
            acking = position.get("acking") or {}
            self._acked_before = {int(mid): str(digest) for mid, digest in acking.items()}
        if self._conn is None:
            self._conn = _Connection(
                self.spec,
                self.ctx,
                client_id(self.ctx, "in"),
                persistent=True,
                manual_ack=True,
                on_message=self._on_message,
                on_connected=self._subscribe,
                on_subscribed=self._subscribe_done,
            )
            # Records published from now on are the source's: wait for the broker's SUBACK.
            if not self._subscribed.wait(CONNECT_TIMEOUT) or self._refused:
                reason = self._refused or f"no answer within {CONNECT_TIMEOUT:g} s"
                self.close()
                raise StreamError(
                    f"mqtt://{self.spec.host}:{self.spec.port}: subscribing to "
                    f"'{self.spec.topic}' failed: {reason}"
                )
            self.ctx.log(f"mqtt source: connected to {self._conn.shown}, topic '{self.spec.topic}'")

    def read(self, max_records: int, timeout_seconds: float) -> list[dict[str, Any]]:
        if self._conn is None:
            self.seek(None)
        deadline = time.monotonic() + timeout_seconds
        messages: list[mqtt.MQTTMessage] = []
        with self._ready:
            while not self._arrived:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._ready.wait(left)
            while self._arrived and len(messages) < max_records:
                messages.append(self._arrived.popleft())
        records: list[dict[str, Any]] = []
        for message in messages:
            digest = ""
            if message.qos > 0:
                digest = _digest(message)
                if message.dup and self._unacked.get(message.mid) == digest:
                    continue  # read already, acknowledged with its checkpoint
            self._read += 1
            if message.qos > 0:
                self._pending.append((self._read, message.mid, message.qos))
                self._unacked[message.mid] = digest
                if message.dup and self._acked_before.pop(message.mid, None) == digest:
                    continue  # in the resumed checkpoint already
            records.extend(decode_payload(message.payload))
        return records

    def position(self) -> Position:
        position: Position = {"session": self._session, "read": self._read}
        if self._unacked:
            position["acking"] = {str(mid): digest for mid, digest in self._unacked.items()}
        return position

    def committed(self, position: Position) -> None:
        """Acknowledge every message read up to ``position``; a position from an earlier
        connection means nothing here (the broker redelivers what that one left open)."""
        if self._conn is None or position.get("session") != self._session:
            return
        upto = int(position.get("read", 0))
        while self._pending and self._pending[0][0] <= upto:
            _seq, mid, qos = self._pending.popleft()
            self._unacked.pop(mid, None)
            self._conn.client.ack(mid, qos)

    def lag(self) -> int | None:
        """Messages received from the broker but not read yet (the broker's backlog is
        not visible to an MQTT client)."""
        with self._ready:
            return len(self._arrived)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _digest(message: mqtt.MQTTMessage) -> str:
    """Tells a message delivered again from another one given the same packet id."""
    data = message.topic.encode() + b"\0" + message.payload
    return hashlib.blake2b(data, digest_size=8).hexdigest()


class MqttSink:
    """Publishes each row to the connection's topic with its QoS."""

    def __init__(self, spec: MqttSpec, options: SinkOptions, ctx: StreamContext) -> None:
        if "+" in spec.topic or "#" in spec.topic:
            raise DatamillError(
                E.STREAM_SETTINGS_INVALID,
                f"spec.topic: '{spec.topic[:100]}' has wildcards; a sink publishes to one topic",
                field="spec.topic",
            )
        self.spec = spec
        self.options = options
        self.ctx = ctx
        self._conn = _Connection(
            spec,
            ctx,
            client_id(ctx, "out-" + uuid.uuid4().hex[:8]),
            persistent=False,
            manual_ack=False,
            max_inflight=1000,
        )
        self._inflight: list[mqtt.MQTTMessageInfo] = []
        self.sent = 0
        """Messages handed to the client since the sink opened."""

    def write(self, table: pa.Table, epoch: int) -> None:
        for _row, payload in encode_rows(table, self.options):
            info = self._conn.client.publish(self.spec.topic, payload, qos=self.spec.qos)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                raise StreamError(
                    f"{self._conn.shown}: publish failed: {mqtt.error_string(info.rc)}"
                )
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and self.spec.qos == 0:
                raise StreamError(f"{self._conn.shown}: not connected; a qos 0 message was lost")
            self._inflight.append(info)
            self.sent += 1
        self._inflight = [info for info in self._inflight if not self._published(info)]

    def _published(self, info: mqtt.MQTTMessageInfo) -> bool:
        try:
            return info.is_published()
        except (RuntimeError, ValueError) as exc:
            raise StreamError(f"{self._conn.shown}: publish failed: {exc}") from exc

    def commit(self, epoch: int) -> None:
        deadline = time.monotonic() + PUBLISH_TIMEOUT
        for info in self._inflight:
            left = deadline - time.monotonic()
            try:
                info.wait_for_publish(max(left, 0.001))
            except (RuntimeError, ValueError) as exc:
                raise StreamError(f"{self._conn.shown}: publish failed: {exc}") from exc
            if not self._published(info):
                raise StreamError(
                    f"{self._conn.shown}: the broker did not take the checkpoint's messages "
                    f"within {PUBLISH_TIMEOUT:g} s"
                )
        self._inflight = []

    def close(self) -> None:
        self._conn.close()


@register_source("mqtt")
def mqtt_source(spec: dict[str, Any], _basic: dict[str, Any], ctx: StreamContext) -> MqttSource:
    return MqttSource(open_spec(MqttSpec, spec, "mqtt"), ctx)


@register_sink("mqtt")
def mqtt_sink(spec: dict[str, Any], configs: dict[str, Any], ctx: StreamContext) -> MqttSink:
    return MqttSink(open_spec(MqttSpec, spec, "mqtt"), SinkOptions.of(configs), ctx)
