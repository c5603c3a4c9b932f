"""Values as JSON carries them: one rule for results, previews, exports and streams."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from typing import Any


def json_value(value: Any, *, strict: bool = False) -> Any:
    """An Arrow/Python value as JSON can carry it without loss of meaning.

    Dates and times become ISO 8601, durations seconds, decimals floats, bytes base64,
    nested values are converted throughout and anything else becomes its text. A float
    JSON cannot represent (NaN, infinities) becomes its text, or with ``strict`` raises
    :class:`ValueError` (a destination that must not receive a text in a number's place).
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        if strict:
            raise ValueError(f"{value} cannot be represented in JSON")
        return str(value)
    if isinstance(value, decimal.Decimal):
        return json_value(float(value), strict=True) if strict else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_value(v, strict=strict) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v, strict=strict) for v in value]
    return str(value)
