"""Data sources of the batch catalog: where a job's input data lives and what it looks like.

A data source has a ``type`` that selects its ``spec`` model. File data sources (``file``,
``s3`` — also accepted as ``kodo`` — and ``hdfs``) share a file format and have a ``schema``
of typed fields. Stream connections (``mqtt``, ``kafka``, ``notification``, ``function``)
are what streaming pipelines name in ``dataSourceId``: they have neither a file format nor
a schema (a pipeline declares its records' fields in its source operator).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from datamill.domain.common import FieldName, Model
from datamill.domain.urls import check_http_url, url_target
from datamill.errors import DatamillError, E, field_error

DataSourceSort = Literal["name", "-name", "createdAt", "-createdAt", "updatedAt", "-updatedAt"]
"""The orders of a data source list: a field, with ``-`` for descending."""


class FileType(StrEnum):
    json = "json"
    csv = "csv"
    text = "text"
    parquet = "parquet"


class ValType(StrEnum):
    """The field types of the specification: RFC 3339 ``date``, 64-bit ``long`` and ``float``."""

    boolean = "boolean"
    long = "long"
    date = "date"
    float = "float"
    string = "string"


def _check_valtype(value: str) -> ValType:
    try:
        return ValType(value)
    except ValueError:
        raise field_error(
            E.UNSUPPORTED_FIELD_TYPE,
            "unsupported field type '{value}': use one of boolean, long, date, float, string",
            {"value": str(value)[:64]},
        ) from None


ValTypeField = Annotated[
    str,
    AfterValidator(_check_valtype),
    WithJsonSchema({"type": "string", "enum": [t.value for t in ValType]}),
]
"""A field type; another value is refused with E18107 (not the generic E18011)."""


class SchemaField(Model):
    key: FieldName
    valtype: ValTypeField
    required: bool = False


BUCKET_RULE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9.-]{2,62}$")


def _check_bucket(value: str) -> str:
    if not BUCKET_RULE.fullmatch(value):
        raise field_error(
            E.INVALID_PARAMETER,
            "invalid bucket '{value}': 3-63 letters, digits, dots or hyphens",
            {"value": value[:80]},
        )
    return value


def check_key_prefix(value: str, forbidden: str = "\\<>") -> str:
    """An object key prefix: at most 128 characters, none of ``forbidden`` nor NUL, no
    leading ``/`` and no ``..`` segment (an export's prefix also refuses ``:``)."""
    if len(value) > 128 or set(forbidden) & set(value) or "\x00" in value:
        raise field_error(
            E.INVALID_PARAMETER,
            "invalid key prefix '{value}': 0-128 characters without {forbidden}",
            {"value": value[:140], "forbidden": " ".join(forbidden)},
        )
    if value.startswith("/") or ".." in value.split("/"):
        raise field_error(
            E.PATH_REFUSED,
            "invalid key prefix '{value}': no leading '/' and no '..'",
            {"value": value[:140]},
        )
    return value


Bucket = Annotated[str, AfterValidator(_check_bucket)]
KeyPrefix = Annotated[str, AfterValidator(check_key_prefix)]
SecretRef = Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,127}$", max_length=128)]


class FormatSpec(Model):
    """How the files are read. CSV needs ``delimiter`` and ``containsHeader``."""

    fileType: FileType
    delimiter: str | None = Field(None, min_length=1, max_length=4)
    containsHeader: bool | None = None
    fileFilter: str | None = Field(
        None,
        max_length=256,
        description="appended to every path or prefix; may use magic variables like $(date)",
    )

    @model_validator(mode="after")
    def _csv_rules(self) -> FormatSpec:
        if self.fileType == FileType.csv:
            if self.delimiter is None:
                raise field_error(E.INVALID_PARAMETER, "delimiter is required when fileType is csv")
            if self.containsHeader is None:
                raise field_error(
                    E.INVALID_PARAMETER, "containsHeader is required when fileType is csv"
                )
        elif self.delimiter is not None or self.containsHeader is not None:
            raise field_error(
                E.INVALID_PARAMETER, "delimiter and containsHeader apply only when fileType is csv"
            )
        return self

    def outbound_targets(self) -> list[tuple[str, int, str]]:
        """``(host, port, field)`` of every remote address the files are read from."""
        return []


class FileSpec(FormatSpec):
    """Files under one of the data roots the administrator allows (``DATAMILL_DATA_ROOTS``)."""

    root: str = Field("default", pattern=r"^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$")
    paths: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        min_length=1, max_length=100, description="relative paths, folders or globs"
    )


S3_ENDPOINT_RULE = re.compile(r"https?://[^\s/?#@]+/?")


class S3Store(Model):
    """Where an S3-compatible store is and how to sign in: shared by the ``s3`` data source
    and the ``s3`` export, so both accept the same endpoints.

    ``endpoint`` is ``http(s)://host[:port]`` (none: AWS). Credentials are never part of
    it: the access keys come from the stored secret named in ``secret``.
    """

    bucket: Bucket
    endpoint: str | None = Field(
        None, max_length=512, description="endpoint URL, e.g. http://minio:9000; none = AWS"
    )
    secret: SecretRef | None = Field(
        None, description="secret with accessKeyId and secretAccessKey; none = anonymous"
    )
    regionName: str | None = Field(None, max_length=64)

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_url(cls, value: str | None) -> str | None:
        if value is not None and "@" in value:
            raise field_error(
                E.INVALID_PARAMETER,
                "credentials in the endpoint URL are not accepted; store the keys in a secret "
                "and name it in secret",
            )
        if value is not None and not S3_ENDPOINT_RULE.fullmatch(value):
            raise field_error(
                E.INVALID_PARAMETER,
                "endpoint must look like http(s)://host[:port], got '{value}'",
                {"value": value[:200]},
            )
        return value

    def endpoint_targets(self) -> list[tuple[str, int, str]]:
        """``(host, port, "spec.endpoint")`` of the endpoint; none for AWS, whose address
        is not the user's choice."""
        return [url_target(self.endpoint, "spec.endpoint")] if self.endpoint else []


class S3Spec(FormatSpec, S3Store):
    """Objects in an S3-compatible store; credentials come from a stored secret."""

    keyPrefixes: list[KeyPrefix] = Field(min_length=1, max_length=100)

    def outbound_targets(self) -> list[tuple[str, int, str]]:
        return self.endpoint_targets()


HDFS_PATH_RULE = re.compile(r"^(hdfs|webhdfs)://[A-Za-z0-9.\-\[\]:]+(/[^\x00\\<>]*)?$")


def _check_hdfs_path(value: str) -> str:
    if len(value) > 1024 or not HDFS_PATH_RULE.fullmatch(value):
        raise field_error(
            E.INVALID_PARAMETER,
            "invalid HDFS path '{value}': use hdfs://namenode:port/path (the WebHDFS port)",
            {"value": value[:200]},
        )
    if ".." in value.split("/"):
        raise field_error(E.PATH_REFUSED, "'..' is not allowed in HDFS paths")
    return value


class HdfsSpec(FormatSpec):
    """Files in HDFS, read over WebHDFS (``hdfs://host:port/path`` names the HTTP port)."""

    paths: list[Annotated[str, AfterValidator(_check_hdfs_path)]] = Field(
        min_length=1, max_length=100
    )
    user: str | None = Field(None, pattern=r"^[a-zA-Z_][a-zA-Z0-9_.-]{0,63}$")
    useHttps: bool = False

    def outbound_targets(self) -> list[tuple[str, int, str]]:
        """Each path's NameNode (WebHDFS port 9870 unless the path names one)."""
        return [url_target(p, f"spec.paths[{i}]", 9870) for i, p in enumerate(self.paths)]


SPEC_MODELS: dict[str, type[FormatSpec]] = {"file": FileSpec, "s3": S3Spec, "hdfs": HdfsSpec}
"""The file data source types."""


def parse_spec(type_: str, spec: dict[str, Any]) -> FormatSpec:
    """Validate ``spec`` with the model of ``type_``; errors carry the field under ``spec``."""
    return SPEC_MODELS[type_].model_validate(spec)


# --------------------------------------------------------------------- stream connections

HOST_RULE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$|^\[?[0-9a-fA-F:.]+\]?$"
)
FILE_ONLY_FIELDS = frozenset(
    (
        "fileType",
        "delimiter",
        "containsHeader",
        "fileFilter",
        "root",
        "paths",
        "bucket",
        "keyPrefixes",
        "endpoint",
        "regionName",
        "user",
        "useHttps",
        "secret",
    )
)
"""Spec fields of file data sources, named in the error when given to a stream connection."""


def _check_host(value: str) -> str:
    value = value.strip()
    if not HOST_RULE.fullmatch(value):
        raise field_error(
            E.INVALID_PARAMETER,
            "invalid host '{value}': a host name or IP address, without scheme or port",
            {"value": value[:200]},
        )
    return value.strip("[]")


def _check_mqtt_topic(value: str) -> str:
    """A topic filter: levels split by ``/``; ``+`` a whole level, ``#`` only the last level."""
    if not value or len(value.encode()) > 65535 or "\x00" in value:
        raise field_error(E.INVALID_PARAMETER, "a topic is 1-65535 bytes without NUL")
    levels = value.split("/")
    for i, level in enumerate(levels):
        if ("+" in level and level != "+") or (
            "#" in level and (level != "#" or i != len(levels) - 1)
        ):
            raise field_error(
                E.INVALID_PARAMETER,
                "invalid topic '{value}': '+' must be a whole level and '#' the whole last level",
                {"value": value[:200]},
            )
    return value


def _check_kafka_topic(value: str) -> str:
    if not re.fullmatch(r"[a-zA-Z0-9._-]{1,249}", value) or value in (".", ".."):
        raise field_error(
            E.INVALID_PARAMETER,
            "invalid topic '{value}': 1-249 letters, digits, '.', '_' or '-'",
            {"value": value[:200]},
        )
    return value


def _check_servers(value: Any) -> str:
    items = (
        value if isinstance(value, list) else value.split(",") if isinstance(value, str) else None
    )
    if items is None or not all(isinstance(item, str) for item in items):
        raise field_error(
            E.INVALID_PARAMETER, "give the servers as 'host:port,…' or a list of them"
        )
    servers = [item.strip() for item in items if item.strip()]
    if not servers or len(servers) > 32:
        raise field_error(E.INVALID_PARAMETER, "give 1-32 servers as host:port")
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise field_error(
                E.INVALID_PARAMETER,
                "invalid server '{value}': use host:port",
                {"value": server[:200]},
            )
        _check_host(host)
    return ",".join(servers)


Host = Annotated[str, Field(max_length=255), AfterValidator(_check_host)]
Port = Annotated[int, Field(ge=1, le=65535)]
HttpUrl = Annotated[str, Field(max_length=2048), AfterValidator(check_http_url)]
EmailAddress = Annotated[
    str, Field(max_length=254, pattern=r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")
]


class StreamSpec(Model):
    """Base of the stream connection specs: refuses file fields with a clear message."""

    @model_validator(mode="before")
    @classmethod
    def _no_file_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in FILE_ONLY_FIELDS and key not in cls.model_fields:
                    # A DatamillError (not a pydantic error) so the message names the field.
                    hint = (
                        " (name secrets in passwordSecret or tokenSecret)"
                        if key == "secret"
                        else ""
                    )
                    raise DatamillError(
                        E.NOT_A_FILE_SOURCE,
                        f"spec.{key}: a stream connection has no files; '{key}' applies to "
                        f"file, s3 and hdfs data sources only{hint}",
                        field=f"spec.{key}",
                    )
        return data

    def secret_name(self) -> str | None:
        """The secret this connection reads (by name), if any."""
        return None

    def outbound_targets(self) -> list[tuple[str, int, str]]:
        """``(host, port, field)`` of every address the connection opens."""
        return []


class MqttSpec(StreamSpec):
    """An MQTT broker topic (filter, for sources). The password is a secret's ``password``."""

    host: Host
    port: Port = 1883
    topic: Annotated[str, AfterValidator(_check_mqtt_topic)]
    qos: Literal[0, 1, 2] = 1
    clientId: str | None = Field(None, pattern=r"^[a-zA-Z0-9_.-]{1,64}$")
    username: str | None = Field(None, min_length=1, max_length=256)
    passwordSecret: SecretRef | None = Field(None, description="secret with value 'password'")
    tls: bool = False

    def secret_name(self) -> str | None:
        return self.passwordSecret

    def outbound_targets(self) -> list[tuple[str, int, str]]:
        return [(self.host, self.port, "spec.host")]


class KafkaSpec(StreamSpec):
    """A Kafka topic. With ``username`` the client authenticates with SASL PLAIN, the
    password being the value ``password`` of ``passwordSecret``."""

    bootstrapServers: Annotated[str, BeforeValidator(_check_servers)] = Field(
        description="host:port[,host:port…] (a JSON list is accepted too)"
    )
    topic: Annotated[str, AfterValidator(_check_kafka_topic)]
    groupId: str | None = Field(None, pattern=r"^[a-zA-Z0-9._-]{1,249}$")
    username: str | None = Field(None, min_length=1, max_length=256)
    passwordSecret: SecretRef | None = Field(None, description="secret with value 'password'")
    securityProtocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = Field(
        None, description="default PLAINTEXT, or SASL_SSL with a username"
    )

    @model_validator(mode="after")
    def _sasl_rules(self) -> KafkaSpec:
        if (self.username is None) != (self.passwordSecret is None):
            raise field_error(
                E.INVALID_PARAMETER, "username and passwordSecret go together (SASL PLAIN)"
            )
        if self.securityProtocol is None:
            self.securityProtocol = "SASL_SSL" if self.username else "PLAINTEXT"
        sasl = self.securityProtocol.startswith("SASL_")
        if sasl != (self.username is not None):
            raise field_error(
                E.INVALID_PARAMETER,
                "securityProtocol {protocol} "
                + ("needs" if sasl else "takes no")
                + " username and passwordSecret",
                {"protocol": self.securityProtocol},
            )
        return self

    def secret_name(self) -> str | None:
        return self.passwordSecret

    def servers(self) -> list[tuple[str, int]]:
        out = []
        for server in self.bootstrapServers.split(","):
            host, _, port = server.rpartition(":")
            out.append((host.strip("[]"), int(port)))
        return out

    def outbound_targets(self) -> list[tuple[str, int, str]]:
        return [(h, p, "spec.bootstrapServers") for h, p in self.servers()]


class NotificationChannel(StrEnum):
    email = "email"
    webhook = "webhook"
    chat = "chat"


class NotificationSpec(StreamSpec):
    """Where SMNSink notifications go: an HTTP webhook, a chat webhook or email (SMTP).

    ``tokenSecret`` names a secret: for webhook and chat its value ``token`` is sent as
    ``Authorization: Bearer``; for email its values ``username`` and ``password`` log in.
    """

    channel: NotificationChannel
    url: HttpUrl | None = Field(None, description="webhook and chat: the URL posted to")
    smtpHost: Host | None = None
    smtpPort: Port | None = Field(None, description="default 587 (starttls), 465 (tls), 25")
    smtpSecurity: Literal["starttls", "tls", "none"] = "starttls"
    from_: EmailAddress | None = Field(None, alias="from")
    to: list[EmailAddress] | None = Field(None, min_length=1, max_length=100)
    tokenSecret: SecretRef | None = None
    rateLimitPerMinute: int = Field(60, ge=1, le=100_000)
    timeoutSeconds: float = Field(10, gt=0, le=120)

    @model_validator(mode="after")
    def _channel_fields(self) -> NotificationSpec:
        email_fields = ("smtpHost", "from", "to")
        if self.channel == NotificationChannel.email:
            for key in email_fields:
                if getattr(self, "from_" if key == "from" else key) is None:
                    raise field_error(
                        E.INVALID_PARAMETER, "{key} is required for the email channel", {"key": key}
                    )
            if self.url is not None:
                raise field_error(E.INVALID_PARAMETER, "url applies to webhook and chat only")
            if self.smtpPort is None:
                self.smtpPort = {"starttls": 587, "tls": 465, "none": 25}[self.smtpSecurity]
        else:
            if self.url is None:
                raise field_error(
                    E.INVALID_PARAMETER,
                    "url is required for the {channel} channel",
                    {"channel": self.channel.value},
                )
            for key in (*email_fields, "smtpPort"):
                if getattr(self, "from_" if key == "from" else key) is not None:
                    raise field_error(
                        E.INVALID_PARAMETER, "{key} applies to the email channel only", {"key": key}
                    )
        return self

    def secret_name(self) -> str | None:
        return self.tokenSecret

    def outbound_targets(self) -> list[tuple[str, int, str]]:
        if self.channel == NotificationChannel.email:
            return [(self.smtpHost or "", self.smtpPort or 25, "spec.smtpHost")]
        return [url_target(self.url or "", "spec.url")]


class FunctionSpec(StreamSpec):
    """An HTTP function CallFunctionGraph calls with each record's ``apiParamFields``."""

    url: HttpUrl
    method: Literal["POST", "PUT"] = "POST"
    timeoutSeconds: float = Field(10, gt=0, le=300)
    tokenSecret: SecretRef | None = Field(
        None, description="secret whose value 'token' is sent as Authorization: Bearer"
    )
    batchSize: int = Field(
        1,
        ge=1,
        le=1000,
        description="records per request: 1 posts one JSON object, more post a JSON array "
        "and expect an array of as many results",
    )
    concurrency: int = Field(4, ge=1, le=64, description="requests in flight at once")

    def secret_name(self) -> str | None:
        return self.tokenSecret

    def outbound_targets(self) -> list[tuple[str, int, str]]:
        return [url_target(self.url, "spec.url")]


STREAM_SPEC_MODELS: dict[str, type[StreamSpec]] = {
    "mqtt": MqttSpec,
    "kafka": KafkaSpec,
    "notification": NotificationSpec,
    "function": FunctionSpec,
}
"""The stream connection types: no files, no schema; named by streaming operators."""
TYPE_ALIASES = {"kodo": "s3"}
"""Other names accepted for a type on input (stored and returned under the canonical name)."""

DataSourceType = Literal["file", "s3", "hdfs", "mqtt", "kafka", "notification", "function"]


def is_stream_type(type_: str) -> bool:
    return type_ in STREAM_SPEC_MODELS


def parse_stream_spec(type_: str, spec: dict[str, Any]) -> StreamSpec:
    """Validate a stream connection's ``spec`` with the model of ``type_``."""
    return STREAM_SPEC_MODELS[type_].model_validate(spec)


def _canonical_type(value: Any) -> Any:
    return TYPE_ALIASES.get(value, value) if isinstance(value, str) else value


class DataSourceBase(Model):
    spec: dict[str, Any] = Field(description="type-specific spec (see the API guide)")
    schema_: list[SchemaField] | None = Field(
        None,
        alias="schema",
        max_length=1000,
        description="the fields; each key at most once (a repeated key: 400 E18106)",
    )

    @field_validator("schema_")
    @classmethod
    def _unique_keys(cls, value: list[SchemaField] | None) -> list[SchemaField] | None:
        if value is not None:
            seen: set[str] = set()
            for item in value:
                if item.key in seen:
                    raise field_error(
                        E.INVALID_FIELD_NAME,
                        "field '{key}' appears twice in the schema",
                        {"key": item.key},
                    )
                seen.add(item.key)
        return value


class DataSourceCreate(DataSourceBase):
    type: Annotated[DataSourceType, BeforeValidator(_canonical_type)] = Field(
        description="file, s3 (alias kodo), hdfs; stream connections: mqtt, kafka, "
        "notification, function"
    )
    region: str | None = Field(None, max_length=64)
    workflow: str | None = Field(None, max_length=128)
    noVerifySchema: bool = Field(
        False,
        description="true: keep the given schema; false: infer the schema from the data",
    )

    @model_validator(mode="after")
    def _schema_needed(self) -> DataSourceCreate:
        if is_stream_type(self.type):
            if self.schema_:
                raise field_error(
                    E.NOT_A_FILE_SOURCE,
                    "schema: a {type} connection has no schema; a streaming pipeline declares "
                    "its records' fields in its source operator",
                    {"type": self.type},
                )
            return self
        if self.noVerifySchema and not self.schema_:
            raise field_error(
                E.SCHEMA_EMPTY, "schema is required (non-empty) when noVerifySchema is true"
            )
        return self


class DataSourceUpdate(DataSourceBase):
    """An update: the spec, and a schema that may only grow."""


class DataSource(Model):
    name: str
    type: str
    region: str | None
    spec: dict[str, Any]
    noVerifySchema: bool
    schema_: list[SchemaField] = Field(alias="schema")
    createdAt: datetime
    updatedAt: datetime


class SchemaRequest(Model):
    type: Annotated[DataSourceType, BeforeValidator(_canonical_type)]
    spec: dict[str, Any]


class SchemaResponse(Model):
    schema_: list[SchemaField] = Field(alias="schema")


class Preview(Model):
    schema_: list[SchemaField] = Field(alias="schema")
    rows: list[dict[str, Any]]
    files: int = Field(description="how many files the data source resolves to")


def schema_changes(old: list[SchemaField], new: list[SchemaField]) -> list[str]:
    """Why ``new`` is not a compatible extension of ``old`` (empty when it is)."""
    problems = []
    new_by_key = {f.key: f for f in new}
    for field in old:
        replacement = new_by_key.get(field.key)
        if replacement is None:
            problems.append(f"field '{field.key}' would be removed")
        elif replacement.valtype != field.valtype:
            problems.append(
                f"field '{field.key}' would change type {field.valtype} -> {replacement.valtype}"
            )
    return problems
