"""The demo project: sample data in the default data root and a catalog that reads it."""

from __future__ import annotations

import csv
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from datamill.domain.datasources import DataSourceCreate
from datamill.domain.projects import ProjectCreate, Role
from datamill.domain.users import Principal
from datamill.domain.variables import VariableIn
from datamill.services import datasources, projects, variables
from datamill.services.access import open_project
from datamill.services.runtime import Runtime
from datamill.store.projects import get_project
from datamill.store.users import UserRow

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
        if get_project(session, DEMO_PROJECT) is not None:
            return False
        admin = session.scalars(select(UserRow).where(UserRow.is_admin.is_(True))).first()
        if admin is None:
            raise RuntimeError("the admin user must exist before the demo is installed")
        principal = Principal(id=admin.id, name=admin.name, isAdmin=True)
        folder = runtime.settings.resolved_data_roots["default"] / "demo"
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
                        "paths": ["demo/events-*.csv"],
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
                    "spec": {"root": "default", "paths": ["demo/devices.json"], "fileType": "json"},
                }
            ),
        )
    return True
