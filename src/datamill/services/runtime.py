"""The long-lived objects every service call needs, built once per process."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from datamill.config import Settings
from datamill.security.crypto import SecretBox, load_or_create_key
from datamill.services.wakeups import Wakeups, wakeup_folder
from datamill.store.base import make_engine, make_session_factory
from datamill.store.migrate import upgrade


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    secret_box: SecretBox
    wakeups: Wakeups = field(default_factory=lambda: Wakeups(None))

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Runtime:
        """Connect to the metadata store (migrating it to the newest schema) and load keys."""
        data_dir = settings.resolved_data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        data_dir.chmod(0o700)  # metadata, keys and tokens: the server's user only
        engine = make_engine(settings.metadata_url)
        if migrate:
            upgrade(engine)
        key = settings.secret_key or load_or_create_key(data_dir / "secret.key")
        sessions = make_session_factory(engine)
        wakeups = Wakeups(wakeup_folder(data_dir) if settings.wakeups else None)
        wakeups.install(sessions)
        return cls(settings, engine, sessions, SecretBox(key), wakeups)

    def close(self) -> None:
        self.wakeups.close()
        self.engine.dispose()
