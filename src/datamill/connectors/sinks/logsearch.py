"""The ``logdb`` sink: index a batch's rows as documents in OpenSearch or Elasticsearch.

Rows go through the ``_bulk`` API, ``batchSize`` documents per request, into the index
``destRepoName`` (created by the server on first write unless it exists). ``doc`` maps
document fields to job fields.

Re-exporting a batch never duplicates: every document has a deterministic ``_id``, a hash
of the job, the batch time and the values of ``idFields`` (default: every mapped field),
plus the occurrence number among rows with equal id values, so the same batch always
produces the same set of ids and a rerun overwrites them.

A row is *invalid* when one of its mapped values cannot be written as JSON (NaN,
infinities), when a job field the schema marks required is null, or when the server
rejects the document (a per-item 4xx such as a mapping conflict). With ``omitInvalid``
such rows are skipped and counted; without it the export fails (rows checked locally fail
it before anything is sent). Per-item 429/5xx answers make the run fail transiently, and
the retry rewrites the same ids.

Credentials come only from the secret (``username`` and ``password``, basic auth).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, Field, field_validator

from datamill.connectors.sinks.base import (
    ExportBatch,
    ExportContext,
    ExportOutcome,
    SinkError,
    TransientSinkError,
    register,
)
from datamill.connectors.sinks.http import (
    OutboundHttp,
    SinkSpec,
    basic_auth,
    batch_key,
    check_fields,
    check_http_url,
    check_mapping,
    plain,
    row_chunks,
    statuses_text,
)
from datamill.domain.common import FieldName, Name
from datamill.domain.datasources import SchemaField

_INDEX_RULE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,254}$")
_DOC_FIELD_RULE = re.compile(r"^[A-Za-z0-9@][A-Za-z0-9_.@\-]{0,254}$")


def _check_doc_field(value: str) -> str:
    from pydantic_core import PydanticCustomError

    if not _DOC_FIELD_RULE.fullmatch(value) or ".." in value or value.endswith("."):
        raise PydanticCustomError(
            "E18106",
            "invalid document field name '{value}': letters, digits, _ . @ -, "
            "not starting with _ or .",
            {"value": value[:140]},
        )
    return value


DocField = Annotated[str, AfterValidator(_check_doc_field)]


class LogdbSpec(SinkSpec):
    endpoint: str = Field(
        max_length=1024, description="the cluster's URL, e.g. http://opensearch:9200"
    )
    destRepoName: str = Field(description="the index to write to")
    doc: dict[DocField, FieldName] = Field(
        min_length=1, max_length=1000, description="document field -> job field"
    )
    omitInvalid: bool = Field(False, description="skip invalid rows instead of failing")
    idFields: list[FieldName] | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="job fields whose values identify a document (default: all mapped fields)",
    )
    batchSize: int = Field(500, ge=1, le=10_000, description="documents per bulk request")
    timeoutSeconds: float = Field(30, gt=0, le=600)
    secret: Name | None = Field(
        None, description="a secret with 'username' and 'password' for basic authentication"
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("destRepoName")
    @classmethod
    def _index(cls, value: str) -> str:
        from pydantic_core import PydanticCustomError

        if not _INDEX_RULE.fullmatch(value) or value in {".", ".."}:
            raise PydanticCustomError(
                "E18103",
                "invalid index name '{value}': 1-255 lowercase letters, digits, _ . -, "
                "starting with a letter or digit",
                {"value": value[:140]},
            )
        return value


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
        return plain(value)
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
                doc[target] = plain(value)
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
