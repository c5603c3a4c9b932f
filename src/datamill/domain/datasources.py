"""Data sources of the batch catalog: where a job's input data lives and what it looks like.

A data source has a ``type`` (``file``, ``s3`` or ``hdfs``) that selects its ``spec`` model,
a file format shared by all types, and a ``schema`` of typed fields.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from datamill.domain.common import FieldName, Model


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
        raise PydanticCustomError(
            "E18107",
            "unsupported field type '{value}': use one of boolean, long, date, float, string",
            {"value": str(value)[:64]},
        ) from None


ValTypeField = Annotated[str, AfterValidator(_check_valtype)]


class SchemaField(Model):
    key: FieldName
    valtype: ValTypeField
    required: bool = False


BUCKET_RULE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9.-]{2,62}$")
KEY_PREFIX_FORBIDDEN = set("\\<>")


def _check_bucket(value: str) -> str:
    if not BUCKET_RULE.fullmatch(value):
        raise PydanticCustomError(
            "E18011",
            "invalid bucket '{value}': 3-63 letters, digits, dots or hyphens",
            {"value": value[:80]},
        )
    return value


def _check_key_prefix(value: str) -> str:
    if len(value) > 128 or KEY_PREFIX_FORBIDDEN & set(value) or "\x00" in value:
        raise PydanticCustomError(
            "E18011",
            "invalid key prefix '{value}': 0-128 characters without \\ < >",
            {"value": value[:140]},
        )
    if value.startswith("/") or ".." in value.split("/"):
        raise PydanticCustomError(
            "E18116",
            "invalid key prefix '{value}': no leading '/' and no '..'",
            {"value": value[:140]},
        )
    return value


Bucket = Annotated[str, AfterValidator(_check_bucket)]
KeyPrefix = Annotated[str, AfterValidator(_check_key_prefix)]
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
                raise PydanticCustomError("E18011", "delimiter is required when fileType is csv")
            if self.containsHeader is None:
                raise PydanticCustomError(
                    "E18011", "containsHeader is required when fileType is csv"
                )
        elif self.delimiter is not None or self.containsHeader is not None:
            raise PydanticCustomError(
                "E18011", "delimiter and containsHeader apply only when fileType is csv"
            )
        return self


class FileSpec(FormatSpec):
    """Files under one of the data roots the administrator allows (``DATAMILL_DATA_ROOTS``)."""

    root: str = Field("default", pattern=r"^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$")
    paths: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        min_length=1, max_length=100, description="relative paths, folders or globs"
    )


class S3Spec(FormatSpec):
    """Objects in an S3-compatible store; credentials come from a stored secret."""

    bucket: Bucket
    keyPrefixes: list[KeyPrefix] = Field(min_length=1, max_length=100)
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
        if value is not None and not re.fullmatch(r"https?://[^\s/?#]+/?", value):
            raise PydanticCustomError(
                "E18011",
                "endpoint must look like http(s)://host[:port], got '{value}'",
                {"value": value[:200]},
            )
        return value


HDFS_PATH_RULE = re.compile(r"^(hdfs|webhdfs)://[A-Za-z0-9.\-\[\]:]+(/[^\x00\\<>]*)?$")


def _check_hdfs_path(value: str) -> str:
    if len(value) > 1024 or not HDFS_PATH_RULE.fullmatch(value):
        raise PydanticCustomError(
            "E18011",
            "invalid HDFS path '{value}': use hdfs://namenode:port/path (the WebHDFS port)",
            {"value": value[:200]},
        )
    if ".." in value.split("/"):
        raise PydanticCustomError("E18116", "'..' is not allowed in HDFS paths")
    return value


class HdfsSpec(FormatSpec):
    """Files in HDFS, read over WebHDFS (``hdfs://host:port/path`` names the HTTP port)."""

    paths: list[Annotated[str, AfterValidator(_check_hdfs_path)]] = Field(
        min_length=1, max_length=100
    )
    user: str | None = Field(None, pattern=r"^[a-zA-Z_][a-zA-Z0-9_.-]{0,63}$")
    useHttps: bool = False


SPEC_MODELS: dict[str, type[FormatSpec]] = {"file": FileSpec, "s3": S3Spec, "hdfs": HdfsSpec}
DataSourceType = Literal["file", "s3", "hdfs"]


def parse_spec(type_: str, spec: dict[str, Any]) -> FormatSpec:
    """Validate ``spec`` with the model of ``type_``; errors carry the field under ``spec``."""
    return SPEC_MODELS[type_].model_validate(spec)


class DataSourceBase(Model):
    spec: dict[str, Any] = Field(description="type-specific spec (see the API guide)")
    schema_: list[SchemaField] | None = Field(None, alias="schema", max_length=1000)

    @field_validator("schema_")
    @classmethod
    def _unique_keys(cls, value: list[SchemaField] | None) -> list[SchemaField] | None:
        if value is not None:
            seen: set[str] = set()
            for item in value:
                if item.key in seen:
                    raise PydanticCustomError(
                        "E18106", "field '{key}' appears twice in the schema", {"key": item.key}
                    )
                seen.add(item.key)
        return value


class DataSourceCreate(DataSourceBase):
    type: DataSourceType
    region: str | None = Field(None, max_length=64)
    workflow: str | None = Field(None, max_length=128)
    noVerifySchema: bool = Field(
        False,
        description="true: keep the given schema; false: infer the schema from the data",
    )

    @model_validator(mode="after")
    def _schema_needed(self) -> DataSourceCreate:
        if self.noVerifySchema and not self.schema_:
            raise PydanticCustomError(
                "E18105", "schema is required (non-empty) when noVerifySchema is true"
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
    type: DataSourceType
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
