"""The event bus: the one pipeline every auth flow publishes to.

``publish`` persists the event (the audit log) and then fans it out: first to local
listeners that must act before the response returns (the session cache, so a revocation
holds on the very next request), then to subscribers (GraphQL subscriptions and, later, SSE,
webhooks and metrics). Subscriber queues are bounded; when one is full its oldest event is
dropped and counted, so a slow subscriber never slows a publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tortoise.transactions import in_transaction

from authql.models import AuthEventRecord

logger = logging.getLogger("authql.events")


class AuthEventType(enum.Enum):
    """The contract's AuthEventType (plus PROFILE_UPDATED and DELIVERY_FAILED)."""

    REGISTERED = "REGISTERED"
    LOGIN_SUCCEEDED = "LOGIN_SUCCEEDED"
    LOGIN_FAILED = "LOGIN_FAILED"
    LOGOUT = "LOGOUT"
    TOKEN_REFRESHED = "TOKEN_REFRESHED"
    REFRESH_REUSE_DETECTED = "REFRESH_REUSE_DETECTED"
    PASSWORD_CHANGED = "PASSWORD_CHANGED"
    PASSWORD_RESET_REQUESTED = "PASSWORD_RESET_REQUESTED"
    PASSWORD_RESET = "PASSWORD_RESET"
    EMAIL_VERIFICATION_SENT = "EMAIL_VERIFICATION_SENT"
    EMAIL_VERIFIED = "EMAIL_VERIFIED"
    EMAIL_CHANGE_REQUESTED = "EMAIL_CHANGE_REQUESTED"
    EMAIL_CHANGED = "EMAIL_CHANGED"
    MAGIC_LINK_SENT = "MAGIC_LINK_SENT"
    MAGIC_LINK_USED = "MAGIC_LINK_USED"
    SMS_CODE_SENT = "SMS_CODE_SENT"
    SMS_CODE_VERIFIED = "SMS_CODE_VERIFIED"
    TWO_FACTOR_ENABLED = "TWO_FACTOR_ENABLED"
    TWO_FACTOR_DISABLED = "TWO_FACTOR_DISABLED"
    TWO_FACTOR_FAILED = "TWO_FACTOR_FAILED"
    BACKUP_CODE_USED = "BACKUP_CODE_USED"
    OAUTH_LOGIN = "OAUTH_LOGIN"
    OAUTH_LINKED = "OAUTH_LINKED"
    OAUTH_UNLINKED = "OAUTH_UNLINKED"
    ACCOUNT_LOCKED = "ACCOUNT_LOCKED"
    ACCOUNT_UNLOCKED = "ACCOUNT_UNLOCKED"
    ACCOUNT_DELETED = "ACCOUNT_DELETED"
    ACCOUNT_RESTORED = "ACCOUNT_RESTORED"
    SESSION_REVOKED = "SESSION_REVOKED"
    ROLES_CHANGED = "ROLES_CHANGED"
    RATE_LIMITED = "RATE_LIMITED"
    PROFILE_UPDATED = "PROFILE_UPDATED"
    DELIVERY_FAILED = "DELIVERY_FAILED"


#: Events after which cached user and session state must be re-read.
STATE_CHANGING = frozenset(
    {
        AuthEventType.LOGOUT,
        AuthEventType.REFRESH_REUSE_DETECTED,
        AuthEventType.PASSWORD_CHANGED,
        AuthEventType.PASSWORD_RESET,
        AuthEventType.EMAIL_VERIFIED,
        AuthEventType.SMS_CODE_VERIFIED,
        AuthEventType.EMAIL_CHANGED,
        AuthEventType.TWO_FACTOR_ENABLED,
        AuthEventType.TWO_FACTOR_DISABLED,
        AuthEventType.OAUTH_LINKED,
        AuthEventType.OAUTH_UNLINKED,
        AuthEventType.ACCOUNT_LOCKED,
        AuthEventType.ACCOUNT_UNLOCKED,
        AuthEventType.ACCOUNT_DELETED,
        AuthEventType.ACCOUNT_RESTORED,
        AuthEventType.SESSION_REVOKED,
        AuthEventType.ROLES_CHANGED,
        AuthEventType.PROFILE_UPDATED,
    }
)

_SECRET_KEYS = ("password", "token", "secret", "code", "hash", "digest")


@dataclass(frozen=True)
class AuthEvent:
    """One thing that happened. ``detail`` must never carry a secret (enforced in publish)."""

    type: AuthEventType
    at: dt.datetime
    user_id: str | None = None
    session_id: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    success: bool = True
    detail: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @classmethod
    def from_record(cls, record: AuthEventRecord) -> AuthEvent:
        """The event as it was published, read back from the audit log."""
        return cls(
            id=str(record.id),
            type=AuthEventType(record.type),
            at=record.at,
            user_id=str(record.user_id) if record.user_id else None,
            session_id=str(record.session_id) if record.session_id else None,
            ip_address=record.ip_address,
            user_agent=record.user_agent,
            success=record.success,
            detail=dict(record.detail or {}),
        )


Listener = Callable[[AuthEvent], None]
#: Runs inside the transaction that persists an event (e.g. writing webhook outbox rows), so
#: the event and what it owes are committed together or not at all.
PersistHook = Callable[[AuthEvent], Awaitable[None]]


def _refuse_secrets(detail: object) -> None:
    """Refuse detail keys (at any depth) that name a secret: events are stored and shown."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if any(word in str(key).lower() for word in _SECRET_KEYS):
                raise ValueError(f"event detail key {key!r} looks like a secret")
            _refuse_secrets(value)
    elif isinstance(detail, list | tuple):
        for item in detail:
            _refuse_secrets(item)


class _Subscriber:
    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[AuthEvent] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0

    def offer(self, event: AuthEvent) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)


class EventBus:
    """In-process bus: persist, then notify listeners, then fan out to subscribers."""

    def __init__(self, *, queue_size: int = 256) -> None:
        self._listeners: list[Listener] = []
        self._subscribers: set[_Subscriber] = set()
        self._queue_size = queue_size
        self._persist_hooks: list[PersistHook] = []
        self.dropped = 0

    def add_listener(self, listener: Listener) -> None:
        """Run ``listener`` synchronously for every event, before publish returns."""
        self._listeners.append(listener)

    def add_persist_hook(self, hook: PersistHook) -> None:
        """Run ``hook`` in the transaction that stores each event."""
        self._persist_hooks.append(hook)

    async def start(self) -> None:
        """Connect to the cross-process transport, if any (called from the app lifespan)."""

    async def stop(self) -> None:
        """Disconnect from the cross-process transport, if any."""

    async def publish(self, event: AuthEvent) -> None:
        """Persist ``event`` in the audit log, then deliver it everywhere."""
        _refuse_secrets(event.detail)
        async with in_transaction():
            await AuthEventRecord.create(
                id=event.id,
                type=event.type.value,
                at=event.at,
                user_id=event.user_id,
                session_id=event.session_id,
                ip_address=event.ip_address,
                user_agent=event.user_agent,
                success=event.success,
                detail=event.detail,
            )
            for hook in self._persist_hooks:
                await hook(event)
        self.deliver(event)

    def deliver(self, event: AuthEvent) -> None:
        """Fan an already-persisted event out (also the entry point for remote events)."""
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("event listener failed for %s", event.type.value)
        for subscriber in self._subscribers:
            before = subscriber.dropped
            subscriber.offer(event)
            self.dropped += subscriber.dropped - before

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[AuthEvent]]:
        """A bounded queue receiving every event published while the context is open."""
        subscriber = _Subscriber(self._queue_size)
        self._subscribers.add(subscriber)
        try:
            yield subscriber.queue
        finally:
            self._subscribers.discard(subscriber)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
