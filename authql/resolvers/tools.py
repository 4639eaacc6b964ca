"""The tools router's logic (node-auth's ``AuthTools``): tracked events, the telemetry query,
notifications, and who may listen to which live topic.

Callers are a signed-in user (an access token) or a machine (an API key, its scope checked
by the router). Users act only on themselves: they track and read their own events and
notify their own topics; admins and API keys act on anyone.

Live topics follow node-auth: ``global``, ``user:<id>``, ``session:<id>``, ``tenant:<id>``
(also ``tenant:<id>:role:<r>`` / ``:group:<g>``) and ``custom:<ns>``. A user may listen to
``global``, ``user:<own id>``, ``session:<current session>`` and ``tenant:<own tenant>``;
admins and API keys to any topic. What is published where:

- an auth event of user U in session S goes to ``user:U`` and ``session:S`` only, never to
  ``global``, so nobody sees another user's sign-ins (node-auth sends tracked events to
  ``global`` too; authql does not);
- a tracked event goes to the user, session and tenant topics it names; one naming none
  reaches ``global`` only when an admin or API key posted it;
- a notification goes to exactly its target topic.

A connection receives each item once (on the first of its topics that matches), and, as in
node-auth, never an item of another tenant than its own.

Delivery: auth events come from ``services.events.subscribe()`` (so they arrive from every
process when the bus spans several); notifications and tracked-event frames go through an
in-process hub, so they reach the streams served by the process that received them.
Carrying them across processes needs the event transport to accept a second message kind
(a topic and a frame) besides AuthEvents.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import math
import re
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tortoise.expressions import Subquery

from authql.context import Principal, RequestContext
from authql.errors import Forbidden, ValidationFailed
from authql.models import ApiKey, AuthEventRecord, TrackedEvent, User
from authql.resolvers.telemetry import SubscriptionSlots, still_signed_in
from authql.services import Services
from authql.services.event_names import DOTTED_NAMES, EVENT_TYPES_BY_NAME
from authql.services.events import AuthEvent, EventBus

#: node-auth event names: lower case, dotted (``identity.user.created``, ``checkout.done``).
EVENT_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,99}$")
#: A notification's ``type`` becomes the SSE ``event:`` line, so it may not hold a newline.
NOTIFICATION_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,99}$")
TOPIC = re.compile(r"^(global|(user|session|tenant|custom):[A-Za-z0-9_.:@-]{1,200})$")
MAX_TOPICS = 20
MAX_PAGE = 100
DEFAULT_PAGE = 50
MAX_OFFSET = 10_000
#: How often a stream re-checks that its caller may still listen, when nothing arrives.
RECHECK_SECONDS = 2.0
#: Frames buffered per connection; past it the oldest are dropped (a slow reader).
QUEUE_SIZE = 256


@dataclass(frozen=True)
class ToolsCaller:
    """Who calls the tools router: a signed-in user, or a machine holding an API key."""

    principal: Principal | None = None
    api_key_id: str | None = None

    @property
    def privileged(self) -> bool:
        """Admins and API keys act on anyone; users only on themselves."""
        return self.api_key_id is not None or (
            self.principal is not None and self.principal.is_admin
        )

    @property
    def user_id(self) -> str | None:
        return self.principal.user.id if self.principal else None


@dataclass(frozen=True)
class TelemetryEvent:
    """A persisted event as ``/tools/telemetry`` and stream frames show it: a tracked event,
    or an auth event from the audit log under its dotted name."""

    id: str
    event: str
    timestamp: dt.datetime
    data: Any
    user_id: str | None = None
    tenant_id: str | None = None
    session_id: str | None = None
    correlation_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class StreamFrame:
    """One item of a live stream; ``topic`` is the connection's topic it matched."""

    type: str
    data: Any
    timestamp: dt.datetime
    topic: str = ""
    user_id: str | None = None
    tenant_id: str | None = None
    metadata: dict[str, Any] | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class StreamGrant:
    """The topics a stream was granted and what its checks need."""

    caller: ToolsCaller
    topics: tuple[str, ...]
    tenant_id: str | None
    #: An admin heard topics beyond their own: a demotion ends the stream.
    needs_admin: bool = False


# --- the in-process hub ------------------------------------------------------------------


class _Connection:
    def __init__(self, topics: Sequence[str], tenant_id: str | None) -> None:
        self.id = str(uuid.uuid4())
        self.topics = frozenset(topics)
        self.tenant_id = tenant_id
        self.queue: asyncio.Queue[StreamFrame] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.dropped = 0

    def offer(self, frame: StreamFrame, topics: Sequence[str]) -> None:
        """Queue ``frame`` once, on the first of ``topics`` this connection holds."""
        topic = next((each for each in topics if each in self.topics), None)
        if topic is None:
            return
        if frame.tenant_id and self.tenant_id and frame.tenant_id != self.tenant_id:
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(dataclasses.replace(frame, topic=topic))


class StreamHub:
    """The open streams of one process, fan-out to them by topic, and the per-user cap on
    how many a user may hold open (``AUTHQL_WS_MAX_SUBSCRIPTIONS_PER_USER``)."""

    def __init__(self, per_user: int) -> None:
        self._connections: set[_Connection] = set()
        self.slots = SubscriptionSlots(per_user)

    def publish(self, frame: StreamFrame, topics: Sequence[str]) -> None:
        for connection in tuple(self._connections):
            connection.offer(frame, topics)

    @contextlib.contextmanager
    def connect(self, topics: Sequence[str], tenant_id: str | None) -> Iterator[_Connection]:
        """A registered connection, removed when the block ends however it ends."""
        connection = _Connection(topics, tenant_id)
        self._connections.add(connection)
        try:
            yield connection
        finally:
            self._connections.discard(connection)

    @property
    def connection_count(self) -> int:
        return len(self._connections)


#: One hub per event bus, i.e. per app (tests build many apps in one process).
_HUBS: weakref.WeakKeyDictionary[EventBus, StreamHub] = weakref.WeakKeyDictionary()


def hub_for(services: Services) -> StreamHub:
    """The hub of the app ``services`` belong to."""
    hub = _HUBS.get(services.events)
    if hub is None:
        per_user = services.settings.ws_max_subscriptions_per_user
        hub = _HUBS[services.events] = StreamHub(per_user)
    return hub


# --- input rules ---------------------------------------------------------------------------


def _uuid(value: str | None, field_name: str) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValidationFailed(
            f"{field_name} is not a valid id.", fields={field_name: "Not a valid id."}
        ) from None


def _bounded(value: str | None, field_name: str, max_length: int) -> str | None:
    if value is not None and (not value or len(value) > max_length):
        raise ValidationFailed(
            f"{field_name} is invalid.", fields={field_name: f"1 to {max_length} characters."}
        )
    return value


def check_event_name(name: str) -> str:
    """``name`` if it is a node-auth event name, else VALIDATION_ERROR."""
    if not EVENT_NAME.match(name):
        raise ValidationFailed(
            "Invalid event name.",
            fields={"eventName": "Lower-case letters, digits, '.', '_' or '-' (max 100)."},
        )
    return name


def check_topic(topic: str, field_name: str = "target") -> str:
    if not TOPIC.match(topic):
        raise ValidationFailed("Invalid topic.", fields={field_name: "Not a known topic."})
    return topic


async def _tenant_of(user_id: str) -> str | None:
    rows = await User.filter(id=user_id).values_list("tenant_id", flat=True)
    return str(rows[0]) if rows and rows[0] else None


def _require_caller(caller: ToolsCaller) -> None:
    if caller.principal is None and caller.api_key_id is None:
        raise Forbidden()


# --- track ---------------------------------------------------------------------------------


async def track(
    ctx: RequestContext,
    caller: ToolsCaller,
    *,
    name: str,
    data: Any = None,
    user_id: str | None = None,
    tenant_id: str | None = None,
    session_id: str | None = None,
    correlation_id: str | None = None,
) -> TelemetryEvent:
    """Store a tracked event and send it to the live topics it names.

    A user's events are always their own: ``userId`` defaults to them, and another
    user's id, another session or another tenant is FORBIDDEN. VALIDATION_ERROR for a bad
    name or malformed ids.
    """
    _require_caller(caller)
    check_event_name(name)
    user_id = _uuid(user_id, "userId")
    session_id = _uuid(session_id, "sessionId")
    tenant_id = _bounded(tenant_id, "tenantId", 64)
    correlation_id = _bounded(correlation_id, "correlationId", 200)
    principal = caller.principal
    if not caller.privileged:
        assert principal is not None
        if user_id not in (None, principal.user.id):
            raise Forbidden("You may only track your own events.")
        if session_id not in (None, principal.session.id):
            raise Forbidden("You may only track events of your current session.")
        if tenant_id is not None and tenant_id != await _tenant_of(principal.user.id):
            raise Forbidden("You may only track events of your own tenant.")
        user_id = principal.user.id
    return await record(
        ctx,
        name=name,
        data=data,
        user_id=user_id,
        tenant_id=tenant_id,
        session_id=session_id,
        correlation_id=correlation_id,
        broadcast=caller.privileged,
    )


async def record(
    ctx: RequestContext,
    *,
    name: str,
    data: Any = None,
    user_id: str | None = None,
    tenant_id: str | None = None,
    session_id: str | None = None,
    correlation_id: str | None = None,
    broadcast: bool = False,
) -> TelemetryEvent:
    """Persist a tracked event (already checked) and publish it to its topics; ``global``
    only when it names nobody and ``broadcast`` allows it."""
    row = await TrackedEvent.create(
        name=name,
        at=ctx.services.clock.now(),
        user_id=user_id,
        tenant_id=tenant_id,
        session_id=session_id,
        correlation_id=correlation_id,
        data=data if data is not None else {},
    )
    event = _tracked(row)
    topics = [f"{kind}:{ident}" for kind, ident in _scopes(user_id, session_id, tenant_id)]
    if not topics and broadcast:
        topics = ["global"]
    if topics:
        frame = StreamFrame(
            type=name,
            data=event,
            timestamp=event.timestamp,
            user_id=user_id,
            tenant_id=tenant_id,
        )
        hub_for(ctx.services).publish(frame, topics)
    return event


def _scopes(
    user_id: str | None, session_id: str | None, tenant_id: str | None
) -> list[tuple[str, str]]:
    pairs = [("user", user_id), ("session", session_id), ("tenant", tenant_id)]
    return [(kind, ident) for kind, ident in pairs if ident]


def _tracked(row: TrackedEvent) -> TelemetryEvent:
    return TelemetryEvent(
        id=str(row.id),
        event=row.name,
        timestamp=row.at,
        data=row.data,
        user_id=str(row.user_id) if row.user_id else None,
        tenant_id=row.tenant_id,
        session_id=str(row.session_id) if row.session_id else None,
        correlation_id=row.correlation_id,
    )


def auth_event_view(event: AuthEvent) -> TelemetryEvent:
    """An auth event in the telemetry shape, under its node-auth name."""
    return TelemetryEvent(
        id=event.id,
        event=DOTTED_NAMES.get(event.type, event.type.value.lower()),
        timestamp=event.at,
        data={"type": event.type.value, "success": event.success, "detail": event.detail},
        user_id=event.user_id,
        session_id=event.session_id,
        ip=event.ip_address,
        user_agent=event.user_agent,
    )


# --- telemetry query -----------------------------------------------------------------------


def parse_time(raw: str | None, field_name: str) -> dt.datetime | None:
    """An ISO 8601 time (``Z`` or an offset; none means UTC), or VALIDATION_ERROR."""
    if raw is None or raw == "":
        return None
    try:
        moment = dt.datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ValidationFailed(
            f"{field_name} is not a date.", fields={field_name: "Use ISO 8601."}
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


async def query_telemetry(
    ctx: RequestContext,
    caller: ToolsCaller,
    *,
    event: str | None = None,
    user_id: str | None = None,
    tenant_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = DEFAULT_PAGE,
    offset: int = 0,
) -> list[TelemetryEvent]:
    """Tracked events and audit-log events, newest first, filtered as asked.

    Users read only their own (another ``userId`` is FORBIDDEN); admins and API keys read
    everyone's. VALIDATION_ERROR for a page outside 1..100 or an offset past 10000.
    """
    _require_caller(caller)
    if not 1 <= limit <= MAX_PAGE or not 0 <= offset <= MAX_OFFSET:
        raise ValidationFailed(
            "Invalid page.",
            fields={"limit": f"Between 1 and {MAX_PAGE}.", "offset": f"0 to {MAX_OFFSET}."},
        )
    user_id = _uuid(user_id, "userId")
    if not caller.privileged:
        assert caller.principal is not None
        if user_id not in (None, caller.principal.user.id):
            raise Forbidden("You may only read your own events.")
        user_id = caller.principal.user.id
    wanted = offset + limit
    tracked = TrackedEvent.all()
    audit = AuthEventRecord.all()
    audited = True
    if event:
        tracked = tracked.filter(name=event)
        kind = EVENT_TYPES_BY_NAME.get(event)
        audited = kind is not None
        if kind is not None:
            audit = audit.filter(type=kind.value)
    if user_id:
        tracked = tracked.filter(user_id=user_id)
        audit = audit.filter(user_id=user_id)
    if tenant_id:
        tracked = tracked.filter(tenant_id=tenant_id)
        try:
            members = User.filter(tenant_id=uuid.UUID(tenant_id)).values("id")
            audit = audit.filter(user_id__in=Subquery(members))
        except ValueError:
            audited = False
    for query_field, bound in (("at__gte", since), ("at__lte", until)):
        if bound is not None:
            tracked = tracked.filter(**{query_field: bound})
            audit = audit.filter(**{query_field: bound})
    events = [_tracked(row) for row in await tracked.order_by("-at", "-id").limit(wanted)]
    if audited:
        rows = await audit.order_by("-at", "-id").limit(wanted)
        events += [auth_event_view(AuthEvent.from_record(row)) for row in rows]
    events.sort(key=lambda item: (item.timestamp, item.id), reverse=True)
    return events[offset:wanted]


# --- notify --------------------------------------------------------------------------------


async def notify(
    ctx: RequestContext,
    caller: ToolsCaller,
    *,
    target: str,
    data: Any,
    type_: str | None = None,
    tenant_id: str | None = None,
    user_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> StreamFrame:
    """Send ``data`` to the streams listening to ``target``.

    Admins and API keys notify any topic; users only ``user:<own id>`` and
    ``session:<current session>``, in their own name (FORBIDDEN otherwise).
    VALIDATION_ERROR for an unknown topic or type.
    """
    _require_caller(caller)
    check_topic(target)
    kind = type_ or "notification"
    if not NOTIFICATION_TYPE.match(kind):
        raise ValidationFailed("Invalid type.", fields={"type": "Letters, digits, '.', '_'."})
    tenant_id = _bounded(tenant_id, "tenantId", 64)
    user_id = _bounded(user_id, "userId", 64)
    principal = caller.principal
    if not caller.privileged:
        assert principal is not None
        own = {f"user:{principal.user.id}", f"session:{principal.session.id}"}
        if target not in own:
            raise Forbidden("You may only notify your own topics.")
        if user_id not in (None, principal.user.id):
            raise Forbidden("You may only notify in your own name.")
        if tenant_id is not None and tenant_id != await _tenant_of(principal.user.id):
            raise Forbidden("You may only notify in your own tenant.")
        user_id = principal.user.id
    frame = StreamFrame(
        type=kind,
        data=data,
        timestamp=ctx.services.clock.now(),
        topic=target,
        user_id=user_id,
        tenant_id=tenant_id,
        metadata=metadata,
    )
    hub_for(ctx.services).publish(frame, [target])
    return frame


# --- the live stream -----------------------------------------------------------------------


async def grant_topics(
    ctx: RequestContext, caller: ToolsCaller, requested: Sequence[str]
) -> StreamGrant:
    """The requested topics the caller may hear (others are silently dropped, as in
    node-auth), or, when none were asked for, every topic granted to a user of its kind.

    VALIDATION_ERROR for more than 20 topics.
    """
    _require_caller(caller)
    wanted = list(dict.fromkeys(topic.strip() for topic in requested if topic.strip()))
    if len(wanted) > MAX_TOPICS:
        raise ValidationFailed("Too many topics.", fields={"topics": f"At most {MAX_TOPICS}."})
    principal = caller.principal
    tenant_id = await _tenant_of(principal.user.id) if principal else None
    own = ["global"]
    if principal is not None:
        own += [f"user:{principal.user.id}", f"session:{principal.session.id}"]
    if tenant_id:
        own.append(f"tenant:{tenant_id}")
    if not wanted:
        topics = own
    elif caller.privileged:
        topics = [topic for topic in wanted if TOPIC.match(topic)]
    else:
        topics = [topic for topic in wanted if topic in own]
    needs_admin = principal is not None and any(topic not in own for topic in topics)
    return StreamGrant(
        caller=caller, topics=tuple(topics), tenant_id=tenant_id, needs_admin=needs_admin
    )


def _auth_topics(event: AuthEvent) -> list[str]:
    topics = []
    if event.user_id:
        topics.append(f"user:{event.user_id}")
    if event.session_id:
        topics.append(f"session:{event.session_id}")
    return topics


async def _pump(events: asyncio.Queue[AuthEvent], connection: _Connection) -> None:
    """Move auth events from the bus to the connection, on their owner's topics."""
    while True:
        event = await events.get()
        topics = _auth_topics(event)
        if topics:
            view = auth_event_view(event)
            frame = StreamFrame(
                id=event.id,
                type=view.event,
                data=view,
                timestamp=event.at,
                user_id=event.user_id,
            )
            connection.offer(frame, topics)


async def _may_listen(ctx: RequestContext, grant: StreamGrant) -> bool:
    """The user is still signed in (and still an admin if that is what the grant needs);
    the API key is still unrevoked and unexpired."""
    caller = grant.caller
    if caller.principal is not None:
        principal = caller.principal
        if not await still_signed_in(ctx, principal):
            return False
        if grant.needs_admin:
            user = await ctx.services.principals.user(principal.user.id)
            return user is not None and "admin" in user.roles
        return True
    key = await ApiKey.get_or_none(id=caller.api_key_id).only("revoked_at", "expires_at")
    now = ctx.services.clock.now()
    return (
        key is not None
        and key.revoked_at is None
        and (key.expires_at is None or key.expires_at > now)
    )


async def stream(
    ctx: RequestContext, grant: StreamGrant, *, heartbeat: float
) -> AsyncIterator[StreamFrame | None]:
    """The live stream: first a ``connected`` frame, then every item published to the
    granted topics, with None every ``heartbeat`` seconds of silence (0: never).

    RATE_LIMITED (raised before the first frame, so callers can answer it before they
    start streaming) when the caller already holds its cap of open streams.

    Ends within seconds of the caller's session being revoked or token expiring (users are
    re-checked on every wake-up, API keys every RECHECK_SECONDS), and never delivers after.
    Leaving, however it happens, unsubscribes from the bus and the hub.
    """
    loop = asyncio.get_running_loop()
    hub = hub_for(ctx.services)
    holder = grant.caller.user_id or f"api-key:{grant.caller.api_key_id}"
    with hub.slots.hold(holder), hub.connect(grant.topics, grant.tenant_id) as connection:
        async with ctx.services.events.subscribe() as events:
            pump = asyncio.create_task(_pump(events, connection))
            try:
                yield StreamFrame(
                    type="connected",
                    data={"connectionId": connection.id, "topics": list(grant.topics)},
                    timestamp=ctx.services.clock.now(),
                    topic="meta",
                )
                beat = heartbeat if heartbeat > 0 else math.inf
                next_beat = loop.time() + beat
                next_check = loop.time() + RECHECK_SECONDS
                while True:
                    timeout = max(0.0, min(next_beat, next_check) - loop.time())
                    try:
                        frame: StreamFrame | None = await asyncio.wait_for(
                            connection.queue.get(), timeout
                        )
                    except TimeoutError:
                        frame = None
                    now = loop.time()
                    if grant.caller.principal is not None or now >= next_check:
                        if not await _may_listen(ctx, grant):
                            return
                        next_check = now + RECHECK_SECONDS
                    if frame is not None:
                        yield frame
                    elif now >= next_beat:
                        yield None
                        next_beat = loop.time() + beat
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
