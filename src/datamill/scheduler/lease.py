"""The statements of a named lease (the ``leases`` table): take, look up, give back.

The caller owns the transaction (:func:`datamill.scheduler.tick.acquire_lease`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from datamill.store.base import utcnow
from datamill.store.jobs import LeaseRow

SCHEDULER = "scheduler"
"""The lease whose holder ticks."""


def take(session: Session, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Renew ``holder``'s lease, or take it over once expired; True when the row changed."""
    renewed = session.execute(
        update(LeaseRow)
        .where(LeaseRow.name == name, (LeaseRow.holder == holder) | (LeaseRow.expires_at < now))
        .values(holder=holder, expires_at=now + ttl)
    )
    return bool(renewed.rowcount == 1)  # type: ignore[attr-defined]


def exists(session: Session, name: str) -> bool:
    return session.get(LeaseRow, name) is not None


def add(session: Session, name: str, holder: str, expires_at: datetime) -> None:
    """A new lease row; a second one for ``name`` fails the commit with IntegrityError."""
    session.add(LeaseRow(name=name, holder=holder, expires_at=expires_at))


def expire(session: Session, name: str, holder: str) -> None:
    """End ``holder``'s lease now, so that another process may take it at once."""
    session.execute(
        update(LeaseRow)
        .where(LeaseRow.name == name, LeaseRow.holder == holder)
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
