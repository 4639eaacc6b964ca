"""The event bus: the one pipeline every auth flow publishes to.

``publish`` persists the event (the audit log) and then fans it out: first to local
listeners that must act before the response returns (the session cache, so a revocation
holds on the very next request), then to subscribers (GraphQL subscriptions and, later, SSE,
webhooks and metrics). Subscriber queues are bounded; when one is full its oldest event is
dropped and counted, so a slow subscriber never slows a publisher.

With several processes (``AUTHQL_EVENT_BUS=postgres`` or ``redis://``) the bus also sends each
event to its peers through an ``EventTransport``, and delivers what its peers send exactly as
if it had been published here, so a logout on one instance clears the session caches of all.
The publisher still delivers its own events at once (revocation must hold on the very next
request, without a round trip) and ignores its own echo, recognised by a per-process origin
id. Sending goes through a bounded outbox drained by a background task, so a slow or broken
transport never slows a publisher; receiving goes through a bounded inbox drained in order.
Events too big for one message (NOTIFY stops at 8000 bytes) travel as their id and are read
back from the audit log, which every process shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import hashlib
import hmac
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tortoise.transactions import in_transaction

from authql.models import AuthEventRecord
from authql.services.event_transport import EventTransport, TransportUnavailable

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


#: Version of the message format peers exchange; messages of another version are ignored.
WIRE_VERSION = 1


def event_to_wire(event: AuthEvent) -> dict[str, Any]:
    """Every field of ``event`` as JSON-ready values (the inverse of ``event_from_wire``)."""
    return {
        "id": event.id,
        "type": event.type.value,
        "at": event.at.isoformat(),
        "user_id": event.user_id,
        "session_id": event.session_id,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "success": event.success,
        "detail": event.detail,
    }


def event_from_wire(data: dict[str, Any]) -> AuthEvent:
    """The event a peer sent; raises (KeyError, ValueError, TypeError) on a malformed one."""
    detail = data.get("detail") or {}
    if not isinstance(detail, dict):
        raise TypeError("detail must be an object")
    return AuthEvent(
        id=str(uuid.UUID(str(data["id"]))),
        type=AuthEventType(data["type"]),
        at=dt.datetime.fromisoformat(data["at"]),
        user_id=_optional_str(data.get("user_id")),
        session_id=_optional_str(data.get("session_id")),
        ip_address=_optional_str(data.get("ip_address")),
        user_agent=_optional_str(data.get("user_agent")),
        success=bool(data.get("success", True)),
        detail=detail,
    )


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


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
    """Persist, then notify listeners, then fan out to subscribers and to peer processes."""

    def __init__(
        self,
        *,
        queue_size: int = 256,
        transport: EventTransport | None = None,
        signing_key: str | bytes | None = None,
        outbox_size: int = 10_000,
        flush_timeout: float = 2.0,
    ) -> None:
        self._listeners: list[Listener] = []
        self._subscribers: set[_Subscriber] = set()
        self._queue_size = queue_size
        self._persist_hooks: list[PersistHook] = []
        self.dropped = 0
        #: Identifies this process's messages, so it can ignore its own echoes.
        self.origin = uuid.uuid4().hex
        self._transport = transport
        self._signing_key = (
            signing_key.encode() if isinstance(signing_key, str) else signing_key
        ) or None
        self._outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=outbox_size)
        self._inbox: asyncio.Queue[str] = asyncio.Queue(maxsize=outbox_size)
        self._flush_timeout = flush_timeout
        self._tasks: list[asyncio.Task[None]] = []
        self._sending = False
        # Ids of recently delivered remote events: a message that arrives twice (a retried
        # send, an id replayed) is delivered once.
        self._seen: OrderedDict[str, None] = OrderedDict()
        #: Messages lost because the outbox or inbox was full (the transport was down or slow).
        self.remote_dropped = 0
        self._outbox_overflowing = False

    @property
    def transport(self) -> EventTransport | None:
        return self._transport

    def add_listener(self, listener: Listener) -> None:
        """Run ``listener`` synchronously for every event (local or from a peer); for local
        events, before publish returns."""
        self._listeners.append(listener)

    def add_persist_hook(self, hook: PersistHook) -> None:
        """Run ``hook`` in the transaction that stores each event (local events only)."""
        self._persist_hooks.append(hook)

    async def start(self) -> None:
        """Connect to the cross-process transport, if any (called from the app lifespan)."""
        if self._transport is None or self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="authql-events-send"),
            asyncio.create_task(self._receive_loop(), name="authql-events-receive"),
        ]
        self._sending = True
        await self._transport.start(self._received)

    async def stop(self) -> None:
        """Let queued messages leave (briefly), then disconnect from the transport."""
        if self._transport is None or not self._tasks:
            return
        self._sending = False
        if self._transport.connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), self._flush_timeout)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._transport.stop()

    async def publish(self, event: AuthEvent) -> None:
        """Persist ``event`` in the audit log, then deliver it here and to peer processes."""
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
        if self._sending:
            self._post(self._encode(event))

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

    # --- between processes ------------------------------------------------------------------

    def _encode(self, event: AuthEvent) -> str:
        """The whole event when it fits in one message, else just its id."""
        assert self._transport is not None
        try:
            whole = self._sign(
                json.dumps(
                    {"v": WIRE_VERSION, "origin": self.origin, "event": event_to_wire(event)},
                    separators=(",", ":"),
                )
            )
        except (TypeError, ValueError):  # detail the JSON encoder cannot carry: go by id
            whole = None
        if whole is not None and len(whole.encode()) <= self._transport.max_payload_bytes:
            return whole
        return self._sign(json.dumps({"v": WIRE_VERSION, "origin": self.origin, "id": event.id}))

    def _sign(self, body: str) -> str:
        if self._signing_key is None:
            return body
        mac = hmac.new(self._signing_key, body.encode(), hashlib.sha256).hexdigest()
        return f"{mac}.{body}"

    def _verified(self, message: str) -> str | None:
        """The body of a message, or None if it is not signed with our key."""
        if self._signing_key is None:
            return message
        mac, _, body = message.partition(".")
        expected = hmac.new(self._signing_key, body.encode(), hashlib.sha256).hexdigest()
        return body if hmac.compare_digest(mac, expected) else None

    def _post(self, message: str) -> None:
        if self._outbox.full():
            self._outbox.get_nowait()
            self._outbox.task_done()
            self.remote_dropped += 1
            if not self._outbox_overflowing:
                logger.error("event bus: outbox full, peers are missing events")
            self._outbox_overflowing = True
        self._outbox.put_nowait(message)

    async def _send_loop(self) -> None:
        """Drain the outbox in order. While the transport is down, hold the message until it
        is back (peers then still hear of it); a message the transport refuses is dropped."""
        assert self._transport is not None
        transport = self._transport
        while True:
            message = await self._outbox.get()
            try:
                while True:
                    try:
                        await transport.send(message)
                        break
                    except TransportUnavailable:
                        await asyncio.sleep(0.02)  # let the transport notice and reconnect
                        await transport.wait_connected(5.0)
                    except Exception as exc:
                        self.remote_dropped += 1
                        logger.error("event bus: could not send an event to peers (%r)", exc)
                        break
            finally:
                self._outbox.task_done()
            if self._outbox.empty():
                self._outbox_overflowing = False

    def _received(self, message: str) -> None:
        """Transport callback: queue the message; never block the connection's reader."""
        if self._inbox.full():
            self._inbox.get_nowait()
            self.remote_dropped += 1
            logger.error("event bus: inbox full, dropped an event from a peer")
        self._inbox.put_nowait(message)

    async def _receive_loop(self) -> None:
        while True:
            message = await self._inbox.get()
            try:
                event = await self._decode(message)
            except Exception as exc:
                logger.warning("event bus: ignored a malformed message from a peer (%r)", exc)
                continue
            if event is not None:
                self.deliver(event)

    async def _decode(self, message: str) -> AuthEvent | None:
        """The event a peer sent, or None for our own echoes, repeats and foreign messages."""
        body = self._verified(message)
        if body is None:
            logger.warning("event bus: ignored a message with a bad signature")
            return None
        data = json.loads(body)
        if not isinstance(data, dict) or data.get("v") != WIRE_VERSION:
            logger.warning("event bus: ignored a message in an unknown format")
            return None
        if data.get("origin") == self.origin:
            return None
        if "event" in data:
            event = event_from_wire(data["event"])
            _refuse_secrets(event.detail)  # peers run this code too; a forger may not
            if self._already_seen(event.id):
                return None
        else:
            event_id = str(uuid.UUID(str(data["id"])))
            if self._already_seen(event_id):
                return None
            try:
                record = await AuthEventRecord.get_or_none(id=event_id)
            except Exception as exc:  # the database is unreachable: this one is lost
                logger.error("event bus: could not read announced event %s (%r)", event_id, exc)
                return None
            if record is None:
                logger.warning("event bus: a peer announced event %s, not in the log", event_id)
                return None
            event = AuthEvent.from_record(record)
        self._seen[event.id] = None
        while len(self._seen) > 4096:
            self._seen.popitem(last=False)
        return event

    def _already_seen(self, event_id: str) -> bool:
        return event_id in self._seen
