"""The statements of a named lease (the ``leases`` table): take, look up, give back.

The caller owns the transaction (:func:`datamill.scheduler.tick.acquire_lease`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from datamill.store.base import utcnow
from datamill.store.jobs import LeaseRow

SCHEDULER = "scheduler"
"""The lease whose holder ticks."""


def take(
    session: Session,
    name: str,
    holder: str,
    now: datetime,
    ttl: timedelta,
    gone: str | None = None,
) -> bool:
    """Renew ``holder``'s lease, or take it over once expired, or at once from ``gone`` (a
    holder known to have ended); True when the row changed.

    One conditional UPDATE: of two processes taking the lease from ``gone`` at once, the
    second finds another holder in the row (PostgreSQL re-reads the row it waited for;
    SQLite runs one writer at a time) and changes nothing.
    """
    mine_or_free = (LeaseRow.holder == holder) | (LeaseRow.expires_at < now)
    if gone is not None:
        mine_or_free |= LeaseRow.holder == gone
    renewed = session.execute(
        update(LeaseRow)
        .where(LeaseRow.name == name, mine_or_free)
        .values(holder=holder, expires_at=now + ttl)
    )
    return bool(renewed.rowcount == 1)  # type: ignore[attr-defined]


def holder_of(session: Session, name: str) -> str | None:
    """Who holds (or last held) lease ``name``; None when there is no such lease."""
    return session.scalar(select(LeaseRow.holder).where(LeaseRow.name == name))


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
