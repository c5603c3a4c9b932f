"""The demo project: sample data in the default data root and a catalog that reads it."""

from __future__ import annotations

import csv
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from datamill.domain.datasources import DataSourceCreate
from datamill.domain.projects import ProjectCreate, Role
from datamill.domain.streaming import StreamingJobBody
from datamill.domain.variables import VariableIn
from datamill.services import datasources, projects, streaming, users, variables
from datamill.services.access import ProjectAccess, open_project
from datamill.services.runtime import Runtime

DEMO_PROJECT = "demo"
STATUSES = ["ok", "ok", "ok", "warn", "error"]


def write_sample_data(folder: Path, days: int = 3, rows_per_day: int = 200) -> None:
    """Device events as CSV (one file per day) and device metadata as JSON lines."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for day in range(days):
        date = start + timedelta(days=day)
        with (folder / f"events-{date:%Y-%m-%d}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["device_id", "event_time", "value", "status"])
            for i in range(rows_per_day):
                moment = date + timedelta(seconds=i * 86400 // rows_per_day)
                writer.writerow(
                    [
                        f"dev{rng.randrange(20):02d}",
                        moment.isoformat(),
                        round(rng.uniform(10, 40), 2),
                        rng.choice(STATUSES),
                    ]
                )
    with (folder / "devices.json").open("w") as handle:
        for i in range(20):
            handle.write(
                json.dumps(
                    {"device_id": f"dev{i:02d}", "site": f"site{i % 4}", "active": i % 5 != 0}
                )
                + "\n"
            )


def install_demo(runtime: Runtime) -> bool:
    """Create the demo project once; returns False when it already exists."""
    with runtime.sessions() as session:
        if projects.project_exists(session, DEMO_PROJECT):
            return False
        principal = users.admin_principal(session)
        if principal is None:
            raise RuntimeError("the admin user must exist before the demo is installed")
        folder = streaming.project_root(runtime.settings, DEMO_PROJECT)
        write_sample_data(folder)
        projects.create_project(
            runtime,
            session,
            principal,
            ProjectCreate(name=DEMO_PROJECT, description="Sample device events to explore"),
        )
        access = open_project(session, principal, DEMO_PROJECT, Role.owner)
        variables.create_variable(
            session,
            access,
            "yesterday",
            VariableIn.model_validate(
                {"type": "time", "value": "$(now)-1d", "format": "yyyy-MM-dd"}
            ),
        )
        datasources.create_datasource(
            runtime,
            session,
            access,
            "events",
            DataSourceCreate.model_validate(
                {
                    "type": "file",
                    "spec": {
                        "root": "default",
                        "paths": ["events-*.csv"],
                        "fileType": "csv",
                        "delimiter": ",",
                        "containsHeader": True,
                    },
                }
            ),
        )
        datasources.create_datasource(
            runtime,
            session,
            access,
            "devices",
            DataSourceCreate.model_validate(
                {
                    "type": "file",
                    "spec": {"root": "default", "paths": ["devices.json"], "fileType": "json"},
                }
            ),
        )
        install_demo_pipeline(runtime, session, access, folder)
    return True


def demo_pipeline() -> dict[str, Any]:
    """A small pipeline: device events -> readings that are not OK, in Fahrenheit (JSON
    files), and the count of such readings per device and minute (event time)."""

    def op(
        op_id: str,
        class_name: str,
        inputs: list[str],
        basic: dict[str, Any],
        advance: dict[str, Any] | None = None,
    ) -> Any:
        return {
            "id": op_id,
            "className": class_name,
            "fromOperators": [{"id": i} for i in inputs],
            "configs": {"basicConfigs": basic, "advanceConfigs": advance or {}},
        }

    json_files = {"format": "JSON"}
    return {
        "definition": {
            "jobName": "device_alerts",
            "jobDescription": "readings that are not OK, and their count per device and minute",
        },
        "operatorInstances": [
            op(
                "events",
                "PipelineSource",
                [],
                {
                    "fields": [
                        {"field": "device_id", "type": "STRING"},
                        {"field": "event_time", "type": "TIMESTAMP"},
                        {"field": "value", "type": "DOUBLE"},
                        {"field": "status", "type": "STRING"},
                    ],
                    "eventTimeField": "event_time",
                },
            ),
            op(
                "not_ok",
                "Filter",
                ["events"],
                {
                    "conditions": [
                        {"leftValue": "status", "symbol": "NOT_EQUAL", "rightValue": "'ok'"}
                    ]
                },
            ),
            op(
                "fahrenheit",
                "Map",
                ["not_ok"],
                {
                    "mapFieldConfig": [
                        {"field": "temp_f", "type": "DOUBLE", "expression": "value * 1.8 + 32"}
                    ]
                },
            ),
            op("alerts", "DISSink", ["fahrenheit"], {"target": "stream/alerts"}, json_files),
            op(
                "per_minute",
                "Aggregate",
                ["not_ok"],
                {
                    "keyFields": ["device_id"],
                    "windowsType": "TumblingTimeWindows",
                    "windowAssigner": {"timeType": "EventTime", "size": 60},
                    "aggregateFields": [
                        {"field": "readings", "type": "LONG", "aggregateType": "COUNT"}
                    ],
                },
            ),
            op("counts", "DISSink", ["per_minute"], {"target": "stream/per_minute"}, json_files),
        ],
        "runtime": {"checkpointIntervalSeconds": 5, "restartWhenException": True},
    }


def install_demo_pipeline(
    runtime: Runtime, session: Session, access: ProjectAccess, folder: Path
) -> str:
    """Create and start the demo pipeline, and post the first day's events to it (they
    wait in its ingest log until the engine runs it)."""
    body = StreamingJobBody.model_validate(demo_pipeline())
    job_id = streaming.create_job(session, access, body, check=True).job_id
    streaming.start_job(session, access, job_id)
    first_day = sorted(folder.glob("events-*.csv"))[0]
    with first_day.open(newline="") as handle:
        records = [{**row, "value": float(row["value"])} for row in csv.DictReader(handle)]
    raw = json.dumps(records).encode()
    streaming.ingest_records(runtime, session, access, job_id, raw, "application/json")
    return job_id
