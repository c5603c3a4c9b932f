"""Data sources and schema inference (``/projects/{p}/datasources``, ``/projects/{p}/schemas``)."""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

from datamill.client.base import Moment, Resource, api_path, moment_text, walk_pages
from datamill.client.errors import DatamillProtocolError
from datamill.client.models import DataSource, Page, Preview, SchemaField

__all__ = ["DataSourcesAPI", "SchemasAPI"]

SchemaInput = Sequence[SchemaField | Mapping[str, Any]]


def _schema_json(schema: SchemaInput | None) -> list[dict[str, Any]] | None:
    if schema is None:
        return None
    return [
        item.model_dump(mode="json") if isinstance(item, SchemaField) else dict(item)
        for item in schema
    ]


class DataSourcesAPI(Resource):
    """Data sources of a project's catalog: files (``file``, ``s3``, ``hdfs``) and stream
    connections (``mqtt``, ``kafka``, ``notification``, ``function``; no schema)."""

    def create(
        self,
        project: str,
        name: str,
        *,
        type: Literal["file", "s3", "hdfs", "mqtt", "kafka", "notification", "function"] | str,
        spec: Mapping[str, Any],
        schema: SchemaInput | None = None,
        no_verify_schema: bool = False,
        region: str | None = None,
        workflow: str | None = None,
    ) -> DataSource:
        """Create a data source.

        With ``no_verify_schema`` false the schema is inferred from the data (a given
        ``schema`` is checked against it and may mark fields ``required``); with it true the
        given, non-empty ``schema`` is kept as is.
        """
        body: dict[str, Any] = {
            "type": type,
            "spec": dict(spec),
            "noVerifySchema": no_verify_schema,
        }
        if schema is not None:
            body["schema"] = _schema_json(schema)
        if region is not None:
            body["region"] = region
        if workflow is not None:
            body["workflow"] = workflow
        path = api_path("projects", project, "datasources", name)
        return self._send("POST", DataSource, path, body)

    def update(
        self,
        project: str,
        name: str,
        *,
        spec: Mapping[str, Any],
        schema: SchemaInput | None = None,
    ) -> DataSource:
        """Replace a data source's spec; its schema may gain fields, never lose or retype one."""
        body: dict[str, Any] = {"spec": dict(spec)}
        if schema is not None:
            body["schema"] = _schema_json(schema)
        path = api_path("projects", project, "datasources", name)
        return self._send("PUT", DataSource, path, body)

    def get(self, project: str, name: str) -> DataSource:
        """A data source."""
        return self._get(DataSource, api_path("projects", project, "datasources", name))

    def list(
        self, project: str, *, page: int = 1, size: int = 50, sort_by: str = "name"
    ) -> Page[DataSource]:
        """One page of the project's data sources.

        ``sort_by`` is ``name``, ``createdAt`` or ``updatedAt``; prefix ``-`` for descending.
        """
        path = api_path("projects", project, "datasources")
        return self._page(DataSource, path, "datasources", page, size, {"sortBy": sort_by})

    def iter_all(self, project: str, *, sort_by: str = "name") -> Iterator[DataSource]:
        """Every data source of the project, walking the pages."""
        return walk_pages(lambda p, s: self.list(project, page=p, size=s, sort_by=sort_by))

    def list_all(self, project: str, *, sort_by: str = "name") -> builtins.list[DataSource]:
        """Every data source of the project, as one list."""
        return list(self.iter_all(project, sort_by=sort_by))

    def delete(self, project: str, name: str) -> None:
        """Delete a data source that no job reads."""
        self._delete(api_path("projects", project, "datasources", name))

    def preview(
        self, project: str, name: str, *, limit: int = 20, at: Moment | None = None
    ) -> Preview:
        """The first ``limit`` rows; ``at`` is the batch time for ``fileFilter`` variables."""
        path = api_path("projects", project, "datasources", name, "preview")
        return self._get(Preview, path, {"limit": limit, "at": moment_text(at)})


class SchemasAPI(Resource):
    """Schema inference, without saving anything."""

    def infer(self, project: str, type: str, spec: Mapping[str, Any]) -> list[SchemaField]:
        """The schema the data a spec points at would get."""
        path = api_path("projects", project, "schemas")
        data = self._client.request("POST", path, json={"type": type, "spec": dict(spec)})
        if not isinstance(data, Mapping) or not isinstance(data.get("schema"), list):
            raise DatamillProtocolError("expected {'schema': [...]} from the server")
        return [self._client.parse(SchemaField, item) for item in data["schema"]]
