"""The ``logdb`` export's spec."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator

from datamill.connectors.sinks.common import EndpointUrl, SinkSpec
from datamill.domain.common import FieldName, Name
from datamill.errors import E, field_error

_INDEX_RULE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,254}$")
_DOC_FIELD_RULE = re.compile(r"^[A-Za-z0-9@][A-Za-z0-9_.@\-]{0,254}$")


def _check_doc_field(value: str) -> str:

    if not _DOC_FIELD_RULE.fullmatch(value) or ".." in value or value.endswith("."):
        raise field_error(
            E.INVALID_FIELD_NAME,
            "invalid document field name '{value}': letters, digits, _ . @ -, "
            "not starting with _ or .",
            {"value": value[:140]},
        )
    return value


DocField = Annotated[str, AfterValidator(_check_doc_field)]


class LogdbSpec(SinkSpec):
    endpoint: EndpointUrl = Field(description="the cluster's URL, e.g. http://opensearch:9200")
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

    @field_validator("destRepoName")
    @classmethod
    def _index(cls, value: str) -> str:

        if not _INDEX_RULE.fullmatch(value) or value in {".", ".."}:
            raise field_error(
                E.INVALID_NAME,
                "invalid index name '{value}': 1-255 lowercase letters, digits, _ . -, "
                "starting with a letter or digit",
                {"value": value[:140]},
            )
        return value
