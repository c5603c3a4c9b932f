"""HTTP functions (CallFunctionGraph): call a function per record and add its answer.

For each record the transform sends ``method url`` with a JSON object of the record's
``apiParamFields`` (``{"field": value, …}``). With the connection's ``batchSize`` above 1
it sends a JSON array of up to that many such objects instead and expects a JSON array
of as many results, in order. The answer's JSON value goes into ``apiOutputField``,
converted to its declared type (a JSON string is taken as is for STRING, anything else
is written as JSON text; MAP and ARRAY hold JSON text; TIMESTAMP takes ISO 8601 text or
epoch milliseconds); a body that is not JSON is taken as text. The HTTP status goes into
``apiResponseCode`` when the operator names that field.

Failures never stop the pipeline: a call that times out or cannot connect gives status
``0`` and a null output; a non-2xx answer gives its status and a null output; a value that
does not convert to the declared type gives a null output. Failures are counted
(:attr:`FunctionTransform.failed`) and summarised in the job log once per batch.

Up to ``concurrency`` requests are in flight at once, each limited to ``timeoutSeconds``.
So that a function that does not answer cannot hold a batch for records times the timeout, once
:data:`GIVE_UP_AFTER` calls in a row got no answer the rest of the batch is not called
(status ``0``, counted as failed); the next batch tries again.
The URL's host passes the outbound guard when the transform opens, requests go to the
address it resolved to (TLS still verifies the name), redirects are not followed (a 3xx
is a failed call) and proxies from the environment are ignored. The ``tokenSecret``'s
value ``token`` is sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pyarrow as pa

from datamill.connectors.outbound.http import pin_url, secret_value
from datamill.connectors.streams.base import StreamContext, register_transform
from datamill.connectors.streams.records import flat, open_spec
from datamill.domain.datasources import FunctionSpec
from datamill.domain.expressions import FieldType
from datamill.domain.values import json_value
from datamill.errors import DatamillError, E

ARROW_TYPES: dict[FieldType, pa.DataType] = {
    FieldType.STRING: pa.string(),
    FieldType.INTEGER: pa.int32(),
    FieldType.LONG: pa.int64(),
    FieldType.FLOAT: pa.float32(),
    FieldType.DOUBLE: pa.float64(),
    FieldType.BOOLEAN: pa.bool_(),
    FieldType.TIMESTAMP: pa.timestamp("us"),
    FieldType.MAP: pa.string(),
    FieldType.ARRAY: pa.string(),
}
"""The Arrow type of an added field: MAP and ARRAY values are JSON text (DuckDB JSON)."""
_INT_RANGE = {FieldType.INTEGER: (-(2**31), 2**31 - 1), FieldType.LONG: (-(2**63), 2**63 - 1)}

GIVE_UP_AFTER = 8
"""Calls in a row without an answer (status 0) after which a batch stops calling."""

Outcome = tuple[int, Any]
"""(HTTP status or 0, the answer's JSON value or None)."""
_NO_ANSWER = object()


def convert(value: Any, kind: FieldType) -> Any:
    """``value`` (decoded JSON) as ``kind``; raises ValueError when it does not fit."""
    if value is None:
        return None
    if kind == FieldType.STRING:
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if kind in (FieldType.MAP, FieldType.ARRAY):
        wanted = dict if kind == FieldType.MAP else list
        if not isinstance(value, wanted):
            raise ValueError(f"expected a JSON {'object' if wanted is dict else 'array'}")
        return json.dumps(value, ensure_ascii=False)
    if kind in _INT_RANGE:
        number = int(value) if isinstance(value, str) else value
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if isinstance(number, bool) or not isinstance(number, int):
            raise ValueError("not an integer")
        low, high = _INT_RANGE[kind]
        if not low <= number <= high:
            raise ValueError("out of range")
        return number
    if kind in (FieldType.FLOAT, FieldType.DOUBLE):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("not a number")
        return float(value)
    if kind == FieldType.BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError("not a boolean")
    if kind == FieldType.TIMESTAMP:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return dt.datetime.fromtimestamp(value / 1000, dt.UTC).replace(tzinfo=None)
        if isinstance(value, str):
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is not None:
                moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
            return moment
        raise ValueError("not a timestamp")
    raise ValueError(f"unsupported type {kind}")


def _typed_field(basic: dict[str, Any], key: str, required: bool) -> tuple[str, FieldType] | None:
    item = basic.get(key)
    if not item or not item.get("field"):
        if required:
            raise DatamillError(
                E.STREAM_SETTINGS_INVALID,
                f"basicConfigs.{key}.field: name the field that receives the answer",
                field=f"basicConfigs.{key}.field",
            )
        return None
    default = FieldType.STRING if key == "apiOutputField" else FieldType.INTEGER
    try:
        kind = FieldType(item.get("type") or default)
    except ValueError:
        raise DatamillError(
            E.STREAM_SETTINGS_INVALID,
            f"basicConfigs.{key}.type: '{str(item.get('type'))[:40]}' is not a field type",
            field=f"basicConfigs.{key}.type",
        ) from None
    return str(item["field"]), kind


class FunctionTransform:
    """Adds the function's answer (and status) to every record (module docstring)."""

    def __init__(self, spec: FunctionSpec, basic: dict[str, Any], ctx: StreamContext) -> None:
        params = basic.get("apiParamFields") or []
        if isinstance(params, str):
            params = [p.strip() for p in params.split(",") if p.strip()]
        if not params:
            raise DatamillError(
                E.STREAM_SETTINGS_INVALID,
                "basicConfigs.apiParamFields: name the fields sent to the function",
                field="basicConfigs.apiParamFields",
            )
        self.params: list[str] = [str(p) for p in params]
        output = _typed_field(basic, "apiOutputField", required=True)
        assert output is not None
        self.output = output
        self.status = _typed_field(basic, "apiResponseCode", required=False)
        self.spec = spec
        self.ctx = ctx
        self.pinned = pin_url(spec.url, ctx.outbound_allow, "spec.url")
        headers = {"Host": self.pinned.host, "Content-Type": "application/json"}
        token = secret_value(ctx, spec.tokenSecret, "token")
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            timeout=httpx.Timeout(spec.timeoutSeconds),
            follow_redirects=False,
            trust_env=False,
            headers=headers,
            limits=httpx.Limits(max_connections=spec.concurrency),
        )
        self._pool = ThreadPoolExecutor(spec.concurrency, thread_name_prefix="function-call")
        self._lock = threading.Lock()
        self._silent = 0
        """Calls in a row without an answer, in the current batch."""
        self.calls = 0
        self.failed = 0
        self.statuses: Counter[int] = Counter()

    def _call(self, bodies: list[dict[str, Any]]) -> list[Outcome]:
        if self._silent >= GIVE_UP_AFTER:
            return [(0, _NO_ANSWER)] * len(bodies)
        outcomes = self._request(bodies)
        with self._lock:
            self._silent = self._silent + 1 if outcomes[0][0] == 0 else 0
        return outcomes

    def _request(self, bodies: list[dict[str, Any]]) -> list[Outcome]:
        single = self.spec.batchSize == 1
        payload = json.dumps(bodies[0] if single else bodies, ensure_ascii=False)
        try:
            response = self._client.request(
                self.spec.method,
                self.pinned.base,
                content=payload.encode(),
                extensions=self.pinned.extensions,
            )
        except httpx.HTTPError:
            return [(0, _NO_ANSWER)] * len(bodies)
        status = response.status_code
        if not 200 <= status < 300:
            return [(status, _NO_ANSWER)] * len(bodies)
        try:
            answer: Any = response.json()
        except ValueError:
            answer = response.text
        if single:
            return [(status, answer)]
        if not isinstance(answer, list) or len(answer) != len(bodies):
            return [(status, _NO_ANSWER)] * len(bodies)
        return [(status, item) for item in answer]

    def apply(self, table: pa.Table) -> pa.Table:
        missing = [p for p in self.params if p not in table.column_names]
        if missing:
            raise DatamillError(
                E.STREAM_SETTINGS_INVALID,
                f"basicConfigs.apiParamFields: the records have no field '{missing[0][:80]}'",
                field="basicConfigs.apiParamFields",
            )
        bodies = [
            {key: json_value(value, strict=True) for key, value in row.items()}
            for row in table.select(self.params).to_pylist()
        ]
        size = self.spec.batchSize
        self._silent = 0
        chunks = [bodies[i : i + size] for i in range(0, len(bodies), size)]
        outcomes = [o for chunk in self._pool.map(self._call, chunks) for o in chunk]
        name, kind = self.output
        values: list[Any] = []
        failed = unconverted = 0
        statuses: Counter[int] = Counter()
        for status, answer in outcomes:
            statuses[status] += 1
            if answer is _NO_ANSWER:
                failed += 1
                values.append(None)
                continue
            try:
                values.append(convert(answer, kind))
            except (ValueError, TypeError, OverflowError):
                unconverted += 1
                values.append(None)
        self.calls += len(chunks)
        self.failed += failed
        self.statuses.update(statuses)
        if failed or unconverted:
            shown = ", ".join(f"{code} x{n}" for code, n in sorted(statuses.items()))
            self.ctx.log(
                f"function {self.pinned.shown}: {failed} of {len(outcomes)} calls failed, "
                f"{unconverted} answers are not {kind.value} (statuses: {shown}; 0 = no answer)"
            )
        table = _put(table, name, pa.array(values, ARROW_TYPES[kind]))
        if self.status is not None:
            status_name, status_kind = self.status
            codes = pa.array([s for s, _ in outcomes], ARROW_TYPES[status_kind])
            table = _put(table, status_name, codes)
        return table

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()


def _put(table: pa.Table, name: str, column: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, column)
    return table.append_column(name, column)


@register_transform("function")
def function_transform(
    spec: dict[str, Any], basic: dict[str, Any], ctx: StreamContext
) -> FunctionTransform:
    return FunctionTransform(open_spec(FunctionSpec, spec, "function"), flat(basic), ctx)
