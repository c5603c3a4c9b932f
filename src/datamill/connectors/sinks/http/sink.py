"""The ``http`` sink (see the package's docs)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel

from datamill.connectors.outbound.http import OutboundHttp, secret_value, statuses_text
from datamill.connectors.sinks.base import (
    ExportBatch,
    ExportContext,
    ExportOutcome,
    SinkError,
    register,
)
from datamill.connectors.sinks.common import batch_key, row_chunks
from datamill.connectors.sinks.http.spec import HttpSpec
from datamill.domain.datasources import SchemaField
from datamill.domain.urls import url_target
from datamill.domain.values import json_value
from datamill.security.outbound import OutboundTarget


def _text_value(value: Any) -> str:
    value = json_value(value, strict=True)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def encode_text(rows: list[dict[str, Any]]) -> bytes:
    lines = ["\t".join(f"{k}={_text_value(v)}" for k, v in row.items()) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def encode_json(rows: list[dict[str, Any]]) -> bytes:
    data = [{k: json_value(v, strict=True) for k, v in row.items()} for row in rows]
    return json.dumps(data, ensure_ascii=False, allow_nan=False).encode()


class HttpSink:
    """POST the rows, ``batchSize`` per request, in ``text`` or ``json`` (module docstring)."""

    type_name: ClassVar[str] = "http"
    spec_model: ClassVar[type[BaseModel]] = HttpSpec

    def validate(self, spec: BaseModel, schema: list[SchemaField]) -> None:
        assert isinstance(spec, HttpSpec)  # every job field is sent: nothing to map

    def secret_name(self, spec: BaseModel) -> str | None:
        assert isinstance(spec, HttpSpec)
        return spec.secret

    def outbound_targets(
        self, spec: BaseModel, secret_values: Mapping[str, str]
    ) -> list[OutboundTarget]:
        assert isinstance(spec, HttpSpec)
        return [url_target(spec.base_url, "spec.host")]

    def write(self, spec: BaseModel, batch: ExportBatch, ctx: ExportContext) -> ExportOutcome:
        assert isinstance(spec, HttpSpec)
        token = secret_value(ctx, spec.secret, "token")
        headers = dict(spec.headers)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        table = batch.read()
        if table.num_rows == 0:
            return ExportOutcome(rows=0, bytes=0, detail="the batch has no rows: nothing sent")
        parts = math.ceil(table.num_rows / spec.batchSize)
        content_type = "application/json" if spec.format == "json" else "text/plain; charset=utf-8"
        stamp = batch_key(batch)
        sent_rows = sent_bytes = 0
        with OutboundHttp(spec.base_url, ctx, "spec.host", spec.timeoutSeconds, headers) as client:
            for index, rows in enumerate(row_chunks(table, spec.batchSize), start=1):
                try:
                    body = encode_json(rows) if spec.format == "json" else encode_text(rows)
                except ValueError as exc:
                    raise SinkError(f"rows {sent_rows + 1}-{sent_rows + len(rows)}: {exc}") from exc
                key = hashlib.sha256(
                    f"{batch.project}/{batch.job}/{batch.export}/{stamp}/{index}".encode()
                ).hexdigest()[:40]
                client.request(
                    "POST",
                    spec.uri,
                    content=body,
                    headers={
                        "Content-Type": content_type,
                        "Idempotency-Key": key,
                        "X-Datamill-Batch": stamp,
                        "X-Datamill-Part": f"{index}/{parts}",
                    },
                )
                sent_rows += len(rows)
                sent_bytes += len(body)
            detail = (
                f"sent {sent_rows} rows in {parts} requests ({spec.format}) to "
                f"{client.shown}{spec.uri}; responses: {statuses_text(client.statuses)}"
            )
        ctx.log(detail)
        return ExportOutcome(rows=sent_rows, bytes=sent_bytes, detail=detail)


register(HttpSink())
