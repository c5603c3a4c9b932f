"""The ``logdb`` sink (see the package's docs)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel

from datamill.connectors.outbound.http import OutboundHttp, basic_auth, statuses_text
from datamill.connectors.sinks.base import (
    ExportBatch,
    ExportContext,
    ExportOutcome,
    SinkError,
    TransientSinkError,
    register,
)
from datamill.connectors.sinks.common import batch_key, check_fields, check_mapping, row_chunks
from datamill.connectors.sinks.logdb.spec import LogdbSpec
from datamill.domain.datasources import SchemaField
from datamill.domain.urls import url_target
from datamill.domain.values import json_value
from datamill.security.outbound import OutboundTarget


def document_ids(
    job: str, stamp: str, rows: list[dict[str, Any]], id_fields: list[str], seen: Counter[str]
) -> list[str]:
    """Deterministic ids for ``rows``; ``seen`` counts equal keys across the whole batch."""
    ids = []
    for row in rows:
        key = json.dumps(
            [plain_or_repr(row.get(f)) for f in id_fields], ensure_ascii=False, sort_keys=True
        )
        occurrence = seen[key]
        seen[key] += 1
        ids.append(
            hashlib.sha256(f"{job}\x1f{stamp}\x1f{key}\x1f{occurrence}".encode()).hexdigest()[:40]
        )
    return ids


def plain_or_repr(value: Any) -> Any:
    try:
        return json_value(value, strict=True)
    except ValueError:
        return repr(value)


class LogdbSink:
    """Bulk-index rows with deterministic ids (module docstring)."""

    type_name: ClassVar[str] = "logdb"
    spec_model: ClassVar[type[BaseModel]] = LogdbSpec

    def validate(self, spec: BaseModel, schema: list[SchemaField]) -> None:
        assert isinstance(spec, LogdbSpec)
        check_mapping(spec.doc, schema, "spec.doc")
        if spec.idFields is not None:
            check_fields(spec.idFields, schema, "spec.idFields")

    def secret_name(self, spec: BaseModel) -> str | None:
        assert isinstance(spec, LogdbSpec)
        return spec.secret

    def outbound_targets(
        self, spec: BaseModel, secret_values: Mapping[str, str]
    ) -> list[OutboundTarget]:
        assert isinstance(spec, LogdbSpec)
        return [url_target(spec.endpoint, "spec.endpoint")]

    def write(self, spec: BaseModel, batch: ExportBatch, ctx: ExportContext) -> ExportOutcome:
        assert isinstance(spec, LogdbSpec)
        auth = basic_auth(ctx, spec.secret)
        required = {f.key for f in batch.schema if f.required}
        id_fields = spec.idFields or sorted(set(spec.doc.values()))
        table = batch.read()
        stamp = batch_key(batch)
        seen: Counter[str] = Counter()
        written = skipped = sent_bytes = 0
        first_problem = ""

        # Rows checked locally: all of them before the first request, so that an export
        # that is going to fail on them writes nothing.
        chunks: list[tuple[list[str], list[dict[str, Any]]]] = []
        row_number = 0
        for rows in row_chunks(table, spec.batchSize):
            kept_ids: list[str] = []
            kept_docs: list[dict[str, Any]] = []
            for doc_id, row in zip(
                document_ids(batch.job, stamp, rows, id_fields, seen), rows, strict=True
            ):
                row_number += 1
                try:
                    doc = self._document(spec, row, required)
                except ValueError as exc:
                    problem = f"row {row_number}: {exc}"
                    if not spec.omitInvalid:
                        raise SinkError(f"{problem} (set omitInvalid to skip such rows)") from exc
                    skipped += 1
                    first_problem = first_problem or problem
                    continue
                kept_ids.append(doc_id)
                kept_docs.append(doc)
            chunks.append((kept_ids, kept_docs))

        with OutboundHttp(
            spec.endpoint, ctx, "spec.endpoint", spec.timeoutSeconds, auth=auth
        ) as client:
            for ids_, docs_ in chunks:
                if not docs_:
                    continue
                lines: list[str] = []
                for doc_id, doc in zip(ids_, docs_, strict=True):
                    lines.append(
                        json.dumps({"index": {"_index": spec.destRepoName, "_id": doc_id}})
                    )
                    lines.append(json.dumps(doc, ensure_ascii=False, allow_nan=False))
                body = ("\n".join(lines) + "\n").encode()
                response = client.request(
                    "POST",
                    "/_bulk",
                    content=body,
                    headers={"Content-Type": "application/x-ndjson"},
                )
                sent_bytes += len(body)
                try:
                    answer = response.json()
                except ValueError as exc:
                    raise SinkError(f"the bulk response from {client.shown} is not JSON") from exc
                ok, rejected, transient, reason = _bulk_result(answer)
                written += ok
                if transient:
                    raise TransientSinkError(
                        f"{transient} documents were not indexed (server busy or failing): {reason}"
                    )
                if rejected:
                    if not spec.omitInvalid:
                        raise SinkError(
                            f"{rejected} documents rejected by index '{spec.destRepoName}': "
                            f"{reason} (set omitInvalid to skip such rows)"
                        )
                    skipped += rejected
                    first_problem = first_problem or reason
            detail = (
                f"indexed {written} documents into '{spec.destRepoName}' at {client.shown}"
                + (f"; skipped {skipped} invalid rows (first: {first_problem})" if skipped else "")
                + f"; responses: {statuses_text(client.statuses)}"
            )
        ctx.log(detail)
        return ExportOutcome(rows=written, bytes=sent_bytes, detail=detail)

    @staticmethod
    def _document(spec: LogdbSpec, row: dict[str, Any], required: set[str]) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for target, source in spec.doc.items():
            value = row.get(source)
            if value is None and source in required:
                raise ValueError(f"job field '{source}' is required but null")
            try:
                doc[target] = json_value(value, strict=True)
            except ValueError as exc:
                raise ValueError(f"field '{target}': {exc}") from None
        return doc


def _bulk_result(body: Any) -> tuple[int, int, int, str]:
    """``(indexed, rejected, transient, first reason)`` from a ``_bulk`` response."""
    if not isinstance(body, dict):
        raise SinkError("the bulk response is not a JSON object")
    ok = rejected = transient = 0
    reason = ""
    for item in body.get("items") or []:
        result = next(iter(item.values()), None) if isinstance(item, dict) else None
        if not isinstance(result, dict):
            result = {}
        status = int(result.get("status", 500))
        if status < 300:
            ok += 1
            continue
        error = result.get("error")
        if isinstance(error, dict):
            text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
        else:
            text = str(error)
        if not reason:
            reason = f"{status} {text}"[:500]
        if status == 429 or status >= 500:
            transient += 1
        else:
            rejected += 1
    return ok, rejected, transient, reason


register(LogdbSink())
