"""Read-only snapshots of accounts and sessions.

Resolvers return these instead of ORM rows so that adapters (GraphQL types, REST bodies) can
never reach a password hash or a token digest, and so caches can hold them safely.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from authql.models import Session, User, UserRole


@dataclass(frozen=True)
class UserView:
    """What any surface may show about an account."""

    id: str
    email: str
    email_verified: bool
    username: str | None
    name: str | None
    first_name: str | None
    last_name: str | None
    phone: str | None
    phone_verified: bool
    roles: tuple[str, ...]
    has_password: bool
    two_factor_enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    last_login_at: dt.datetime | None
    locked_until: dt.datetime | None
    deleted_at: dt.datetime | None

    @classmethod
    def of(cls, user: User, roles: list[str] | tuple[str, ...]) -> UserView:
        return cls(
            id=str(user.id),
            email=user.email,
            email_verified=user.email_verified,
            username=user.username,
            name=user.name,
            first_name=user.first_name,
            last_name=user.last_name,
            phone=user.phone,
            phone_verified=user.phone_verified,
            roles=tuple(sorted(roles)),
            has_password=user.password_hash is not None,
            two_factor_enabled=user.two_factor_enabled,
            created_at=user.created_at,
            updated_at=user.updated_at,
            last_login_at=user.last_login_at,
            locked_until=user.locked_until,
            deleted_at=user.deleted_at,
        )

    @classmethod
    async def load(cls, user: User) -> UserView:
        """Snapshot ``user`` with its roles read from the database."""
        roles = await UserRole.filter(user_id=user.id).values_list("role", flat=True)
        return cls.of(user, [str(role) for role in roles])


@dataclass(frozen=True)
class SessionView:
    """What a user (or admin) may see about one session."""

    id: str
    user_id: str
    method: str
    ip_address: str | None
    user_agent: str | None
    remember: bool
    created_at: dt.datetime
    last_seen_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    current: bool = False

    @classmethod
    def of(cls, session: Session, *, current_id: str | None = None) -> SessionView:
        return cls(
            id=str(session.id),
            user_id=str(session.user_id),
            method=session.method,
            ip_address=session.ip_address,
            user_agent=session.user_agent,
            remember=session.remember,
            created_at=session.created_at,
            last_seen_at=session.last_seen_at,
            expires_at=session.expires_at,
            revoked_at=session.revoked_at,
            current=current_id is not None and str(session.id) == current_id,
        )

    def active_at(self, now: dt.datetime) -> bool:
        """Not revoked and not past its absolute expiry."""
        return self.revoked_at is None and self.expires_at > now
