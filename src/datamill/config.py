"""Server settings, read from ``DATAMILL_*`` environment variables (or a ``.env`` file).

The embedded defaults need nothing: metadata in SQLite under the data folder, data roots
inside it, the encryption key generated on first start.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DATAMILL_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=Path("./.datamill"),
        description="Where datamill keeps its SQLite metadata, keys, tokens and project data.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata store; default: SQLite in data_dir.",
    )
    data_roots: dict[str, Path] = Field(
        default_factory=dict,
        description=(
            "Named folders that `file` data sources and exports use, as JSON "
            '(`{"default": "/srv/data"}`); default: {"default": data_dir/files}. Each '
            "project sees only its own folder of a root unless the root is granted to it."
        ),
    )
    secret_key: str | None = Field(
        default=None,
        description="Fernet key that encrypts stored secrets; default: generated into data_dir.",
    )
    outbound_allow: list[str] = Field(
        default_factory=list,
        description=(
            "Hosts or CIDR networks that outbound connections (S3 endpoints, WebHDFS, HTTP "
            "exports) may reach although they are private or loopback, as a JSON list."
        ),
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    host: str = "127.0.0.1"
    port: int = Field(default=8270, ge=1, le=65535)
    log_level: str = "info"
    log_json: bool = True
    workers: int = Field(default=2, ge=0, le=64, description="worker processes per server")
    worker_poll_seconds: float = Field(
        default=0.02,
        gt=0,
        le=10,
        description=(
            "how often an idle worker looks for runs to claim; with wakeups on, at most "
            "every 0.5 s (runs queued on this host wake it at once)"
        ),
    )
    wakeups: bool = Field(
        default=True,
        description=(
            "processes on this host wake each other when runs are queued or end (Unix "
            "datagram sockets in data_dir/wakeups): idle workers claim at once, waiting "
            "clients hear at once; off: idle workers poll every worker_poll_seconds"
        ),
    )
    heartbeat_seconds: float = Field(default=0.5, gt=0, le=60)
    run_lost_after_seconds: float = Field(
        default=10, gt=0, description="a run without heartbeat this long lost its worker"
    )
    max_run_seconds: int = Field(default=6 * 3600, ge=1, description="the watchdog's default")
    scheduler: bool = Field(default=True, description="run a scheduler in this server")
    scheduler_lease_seconds: float = Field(
        default=6, gt=0, description="a silent scheduler's lease expires after this long"
    )
    scheduler_idle_seconds: float = Field(
        default=0.5, gt=0, description="longest sleep between scheduler ticks"
    )
    streaming_engine: bool = Field(
        default=True, description="run a streaming supervisor (and its jobs) in this server"
    )
    streaming_poll_seconds: float = Field(
        default=0.5, gt=0, le=10, description="how often the streaming supervisor looks"
    )
    streaming_lease_seconds: float = Field(
        default=10, gt=0, description="a streaming job whose runner is silent this long moves"
    )
    streaming_batch_records: int = Field(
        default=100_000, ge=1, description="most records a micro-batch reads from a source"
    )
    streaming_epoch_records: int = Field(
        default=2_000_000,
        ge=1,
        description="a checkpoint also comes after this many records (bounds an epoch's memory)",
    )
    streaming_memory_limit: str = Field(default="1GB", description="DuckDB memory per job")
    streaming_threads: int = Field(default=2, ge=1, le=64, description="DuckDB threads per job")
    preview_max_rows: int = Field(default=1000, ge=1)
    inference_sample_files: int = Field(default=10, ge=1)

    @field_validator("secret_key")
    @classmethod
    def _refuse_weak_key(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() in {"changeme", "secret", "", "default"}:
            raise ValueError("DATAMILL_SECRET_KEY must be a real Fernet key, not a placeholder")
        return value

    @cached_property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def metadata_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'datamill.db'}"

    @property
    def resolved_data_roots(self) -> dict[str, Path]:
        roots = self.data_roots or {"default": self.resolved_data_dir / "files"}
        return {name: path.expanduser().resolve() for name, path in roots.items()}

    @property
    def projects_dir(self) -> Path:
        return self.resolved_data_dir / "projects"

    @property
    def admin_token_file(self) -> Path:
        return self.resolved_data_dir / "admin.token"
