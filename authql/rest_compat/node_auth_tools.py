"""awesome-node-auth's tools router (``createToolsRouter``), mounted beside the node-auth
dialect at ``AUTHQL_TOOLS_PREFIX`` (default ``/tools``).

Contract: DIALECTS.md section (b2); upstream ``src/router/tools.router.ts``,
``src/tools/auth-tools.ts`` and ``src/tools/sse-manager.ts``. The logic (who may track,
read, notify or hear what) is in ``authql.resolvers.tools``; inbound webhooks in
``authql.resolvers.inbound_webhooks``.

Served (relative to the prefix): POST /track/{eventName} (202 ``{ok: true}``),
GET /telemetry (``{data: [TelemetryEvent]}``), POST /notify/{target} (202 ``{ok: true}``),
GET /stream (server-sent events), POST /webhook/{provider} (200 ``{ok: true}``),
GET /openapi.json. Not served: ``/docs`` (Swagger UI).

Authentication. Upstream protects these routes with whichever middleware the operator
passes; authql accepts both of node-auth's:

- a node-auth access token: ``Authorization: Bearer``, else the ``accessToken`` cookie
  (cookie requests that change state pass the CSRF double-submit check when
  ``AUTHQL_NODE_AUTH_CSRF`` is on, as in node-auth's JWT middleware). ``GET /stream`` also
  takes ``?token=`` (copied into the Bearer header for EventSource, as upstream does).
- an API key (``createApiKeyMiddleware``): ``Authorization: ApiKey <key>`` or
  ``X-Api-Key: <key>``; it wins when a token is sent too. Each route needs a scope:
  ``tools:track``, ``tools:telemetry``, ``tools:notify``, ``tools:stream``; ``*`` grants
  every scope and ``tools:*`` every tools scope.

``POST /webhook/{provider}`` needs neither: its handler authenticates the sender.

Errors are ``{error, code?}``: 401 ``{error: 'API key is required', code:
'API_KEY_MISSING'}`` without any credential; 401 ``API_KEY_INVALID`` / ``API_KEY_REVOKED`` /
``API_KEY_EXPIRED``; 403 ``API_KEY_IP_BLOCKED`` / ``API_KEY_INSUFFICIENT_SCOPE``; 401
``{error: 'Invalid or expired access token', code: 'INVALID_TOKEN'}`` for a refused token;
403 ``CSRF_INVALID``; 403 ``FORBIDDEN`` for acting on someone else; 400
``VALIDATION_ERROR``; 429 ``RATE_LIMITED`` (too many open streams); 500 ``{error:
'Internal server error'}``.

The stream: ``text/event-stream`` with ``Cache-Control: no-cache`` and
``X-Accel-Buffering: no``; first a ``connected`` event ``{connectionId, topics}`` (topic
``meta``), then frames ``id: <id>`` / ``event: <type>`` / ``data: {id, type, timestamp,
topic, userId?, tenantId?, metadata?, rawData}``, and a ``: heartbeat`` comment every
``AUTHQL_SSE_HEARTBEAT_SECONDS`` of silence. ``topics=a,b`` is filtered to what the caller
may hear; without it a user hears every topic granted to them.

Deliberate deviations (security):
- Auth events of user U reach only ``user:U`` and ``session:<sid>``; tracked events only the
  topics they name (upstream also sends every tracked event to ``global``); ``global``
  carries only notifications and tracked events an admin or API key sent to nobody.
- Users (not admins, not API keys) act only on themselves: tracking for another user,
  session or tenant, reading another user's telemetry, or notifying any topic but their
  own ``user:``/``session:`` topic is 403 (upstream trusts the body's ``userId``).
- Inbound webhooks run registered Python handlers (``inbound_webhooks``), never stored
  scripts; a failing handler is logged and answered 200 ``{ok: true}`` as upstream answers
  a failing script. A refused signature is 401 ``{error: 'Invalid webhook signature', code:
  'INVALID_SIGNATURE'}``, an unknown provider 404 ``{error: 'Unknown webhook provider'}``,
  an unreadable body 400 ``{error: 'Webhook processing failed'}``.
- The stream ends when the caller's session is revoked, its token expires or its API key is
  revoked (upstream streams until the client leaves); each user or key holds at most
  ``AUTHQL_WS_MAX_SUBSCRIPTIONS_PER_USER`` streams per process (429 past it).
- Token failures are 401 (upstream's JWT middleware answers 403) so both credentials fail
  alike.

[inferred] choices:
- Event names (tracked) match ``^[a-z][a-z0-9_.-]{0,99}$``; a notification's ``type``
  ``^[A-Za-z][A-Za-z0-9_.:-]{0,99}$`` (default ``notification``): both become an SSE
  ``event:`` line. ``/telemetry`` pages hold 1-100 events (default 50), offset at most 10000,
  newest first, tracked events and audit-log events (under node-auth's dotted names, e.g.
  ``identity.auth.login.success``, data ``{type, success, detail}``) merged; ``from``/``to``
  are ISO 8601. Times are ISO 8601 UTC with milliseconds, as JavaScript writes them.
- Notifications and tracked-event frames reach the streams of the process that received
  them; auth events reach every process's streams through the event bus.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response, StreamingResponse

from authql.context import authenticate, bearer_token
from authql.errors import (
    ApiKeyRejected,
    AuthError,
    ErrorCode,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from authql.resolvers import api_keys, inbound_webhooks, tools
from authql.rest_compat._base import Dialect, DialectRequest, Endpoint, json_response
from authql.rest_compat.node_auth import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    CSRF_HEADER,
    CsrfInvalid,
    NodeAuthTransport,
)
from authql.rest_compat.node_auth_mail import BAD_ACCESS_TOKEN, Said, iso, read_cookie
from authql.services.tokens import same_secret

SCOPE_TRACK = "tools:track"
SCOPE_TELEMETRY = "tools:telemetry"
SCOPE_NOTIFY = "tools:notify"
SCOPE_STREAM = "tools:stream"
WEBHOOK_FAILED = "Webhook processing failed"
_OK = {"ok": True}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: ErrorCode -> (HTTP status, node-auth code or None).
_ERRORS: dict[ErrorCode, tuple[int, str | None]] = {
    ErrorCode.VALIDATION_ERROR: (400, "VALIDATION_ERROR"),
    ErrorCode.UNAUTHORIZED: (401, "UNAUTHORIZED"),
    ErrorCode.INVALID_TOKEN: (401, "INVALID_TOKEN"),
    ErrorCode.FORBIDDEN: (403, "FORBIDDEN"),
    ErrorCode.NOT_FOUND: (404, None),
    ErrorCode.CONFLICT: (409, "CONFLICT"),
    ErrorCode.RATE_LIMITED: (429, "RATE_LIMITED"),
}


def api_key_of(request: DialectRequest) -> str | None:
    """The key of ``Authorization: ApiKey <k>`` or ``X-Api-Key: <k>`` (in that order)."""
    headers = request.request.headers
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "apikey" and value.strip():
        return value.strip()
    return headers.get("x-api-key", "").strip() or None


def check_csrf(request: DialectRequest, endpoint: Endpoint) -> None:
    """node-auth's JWT middleware: with ``AUTHQL_NODE_AUTH_CSRF`` on, a request that changes
    state with the access cookie (not a Bearer token) must echo ``csrf-token`` in
    ``X-CSRF-Token``."""
    http, settings = request.request, request.settings
    if (
        not settings.node_auth_csrf
        or endpoint.method in _SAFE_METHODS
        or bearer_token(http.headers.get("authorization"))
        or not read_cookie(http, settings, ACCESS_COOKIE)
    ):
        return
    expected = read_cookie(http, settings, CSRF_COOKIE)
    sent = http.headers.get(CSRF_HEADER)
    if not expected or not sent or not same_secret(expected, sent):
        raise CsrfInvalid()


def caller_of(request: DialectRequest) -> tools.ToolsCaller:
    """The caller ``NodeAuthToolsRouter.before`` established."""
    caller: tools.ToolsCaller = request.request.state.tools_caller
    return caller


def telemetry_json(event: tools.TelemetryEvent) -> dict[str, Any]:
    """node-auth's TelemetryEvent: absent values are left out, as JSON leaves undefined."""
    body: dict[str, Any] = {"id": event.id, "event": event.event}
    body["timestamp"] = iso(event.timestamp)
    body["data"] = event.data
    for key, value in (
        ("userId", event.user_id),
        ("tenantId", event.tenant_id),
        ("sessionId", event.session_id),
        ("correlationId", event.correlation_id),
        ("ip", event.ip),
        ("userAgent", event.user_agent),
    ):
        if value is not None:
            body[key] = value
    return body


def sse_frame(frame: tools.StreamFrame) -> bytes:
    """One event in upstream's wire form (``SseManager.write``)."""
    body: dict[str, Any] = {
        "id": frame.id,
        "type": frame.type,
        "timestamp": iso(frame.timestamp),
        "topic": frame.topic,
    }
    if frame.user_id is not None:
        body["userId"] = frame.user_id
    if frame.tenant_id is not None:
        body["tenantId"] = frame.tenant_id
    if frame.metadata is not None:
        body["metadata"] = frame.metadata
    data = frame.data
    body["rawData"] = telemetry_json(data) if isinstance(data, tools.TelemetryEvent) else data
    text = json.dumps(body, separators=(",", ":"), default=str)
    return f"id: {frame.id}\nevent: {frame.type}\ndata: {text}\n\n".encode()


HEARTBEAT = b": heartbeat\n\n"


def _int(request: DialectRequest, name: str, default: int) -> int:
    raw = request.query(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        message = f"{name} must be a number."
        raise ValidationFailed(message, fields={name: "Not a number."}) from None


class NodeAuthToolsRouter(Dialect):
    """node-auth's tools router: telemetry, notifications, live stream, inbound webhooks."""

    name = "node-auth-tools"
    title = "awesome-node-auth tools router"
    transport = NodeAuthTransport()

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "POST",
                "/track/{eventName}",
                self.track,
                "Record an application event (scope tools:track)",
                authenticated=True,
                body={
                    "data": "object",
                    "userId": "string",
                    "tenantId": "string",
                    "sessionId": "string",
                    "correlationId": "string",
                },
                status=202,
            ),
            Endpoint(
                "GET",
                "/telemetry",
                self.telemetry,
                "Query tracked and auth events, newest first (scope tools:telemetry)",
                authenticated=True,
                query={
                    "event": "string",
                    "userId": "string",
                    "tenantId": "string",
                    "from": "string",
                    "to": "string",
                    "limit": "integer",
                    "offset": "integer",
                },
            ),
            Endpoint(
                "POST",
                "/notify/{target}",
                self.notify,
                "Send a notification to a live topic (scope tools:notify)",
                authenticated=True,
                body={
                    "data": "object",
                    "type": "string",
                    "tenantId": "string",
                    "userId": "string",
                    "metadata": "object",
                },
                status=202,
            ),
            Endpoint(
                "GET",
                "/stream",
                self.stream,
                "Server-sent events of the topics the caller may hear (scope tools:stream)",
                authenticated=True,
                query={"topics": "string", "token": "string"},
            ),
            Endpoint(
                "POST",
                "/webhook/{provider}",
                self.webhook,
                "Inbound webhook for a registered provider (the handler verifies the sender)",
            ),
        ]

    #: Endpoint path -> the API-key scope it needs.
    SCOPES = {
        "/track/{eventName}": SCOPE_TRACK,
        "/telemetry": SCOPE_TELEMETRY,
        "/notify/{target}": SCOPE_NOTIFY,
        "/stream": SCOPE_STREAM,
    }

    def render_error(self, error: AuthError) -> tuple[int, dict[str, Any]]:
        if isinstance(error, Said):
            return error.status, dict(error.body)
        if isinstance(error, ApiKeyRejected):
            status = 403 if error.code is ErrorCode.FORBIDDEN else 401
            return status, {"error": error.message.rstrip("."), "code": error.reason}
        if isinstance(error, CsrfInvalid):
            return 403, {"error": error.message, "code": "CSRF_INVALID"}
        if error.code not in _ERRORS:
            return 500, {"error": "Internal server error"}
        status, code = _ERRORS[error.code]
        message = error.message.rstrip(".")
        if error.code is ErrorCode.VALIDATION_ERROR and error.fields:
            message = "; ".join(f"{field}: {text}" for field, text in error.fields.items())
        body: dict[str, Any] = {"error": message}
        if code is not None:
            body["code"] = code
        return status, body

    # --- authentication --------------------------------------------------------------------

    async def before(self, request: DialectRequest, endpoint: Endpoint) -> None:
        """Establish the caller: an API key (checked for the route's scope), else the access
        token (``?token=`` too on /stream), else 401; CSRF for cookie-borne tokens."""
        scope = self.SCOPES.get(endpoint.path)
        if scope is None:
            return
        context, http = request.context, request.request
        raw_key = api_key_of(request)
        if raw_key is not None:
            key = await api_keys.authenticate_api_key(context, raw_key, scope=scope)
            http.state.tools_caller = tools.ToolsCaller(api_key_id=key.id)
            return
        bearer = bearer_token(http.headers.get("authorization"))
        query_token = http.query_params.get("token") if endpoint.path == "/stream" else None
        if bearer is None and query_token and context.principal is None:
            bearer = query_token
            await authenticate(context, query_token)
        if not bearer and not read_cookie(http, self.settings, ACCESS_COOKIE):
            raise ApiKeyRejected("API_KEY_MISSING")
        check_csrf(request, endpoint)
        if context.principal is None:
            raise Said(401, BAD_ACCESS_TOKEN, "INVALID_TOKEN", code=ErrorCode.UNAUTHORIZED)
        http.state.tools_caller = tools.ToolsCaller(principal=context.principal)

    # --- handlers --------------------------------------------------------------------------

    async def track(self, request: DialectRequest) -> Response:
        body = await request.body()
        await tools.track(
            request.context,
            caller_of(request),
            name=request.path("eventName"),
            data=body.get("data"),
            user_id=await request.string("userId", required=False),
            tenant_id=await request.string("tenantId", required=False),
            session_id=await request.string("sessionId", required=False),
            correlation_id=await request.string("correlationId", required=False),
        )
        return json_response(_OK, 202)

    async def telemetry(self, request: DialectRequest) -> Response:
        events = await tools.query_telemetry(
            request.context,
            caller_of(request),
            event=request.query("event") or None,
            user_id=request.query("userId") or None,
            tenant_id=request.query("tenantId") or None,
            since=tools.parse_time(request.query("from"), "from"),
            until=tools.parse_time(request.query("to"), "to"),
            limit=_int(request, "limit", tools.DEFAULT_PAGE),
            offset=_int(request, "offset", 0),
        )
        return json_response({"data": [telemetry_json(event) for event in events]})

    async def notify(self, request: DialectRequest) -> Response:
        body = await request.body()
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise ValidationFailed(
                "metadata must be an object.", fields={"metadata": "Must be an object."}
            )
        await tools.notify(
            request.context,
            caller_of(request),
            target=request.path("target"),
            data=body.get("data"),
            type_=await request.string("type", required=False),
            tenant_id=await request.string("tenantId", required=False),
            user_id=await request.string("userId", required=False),
            metadata=metadata,
        )
        return json_response(_OK, 202)

    async def stream(self, request: DialectRequest) -> Response:
        requested = (request.query("topics") or "").split(",")
        grant = await tools.grant_topics(request.context, caller_of(request), requested)
        frames = tools.stream(request.context, grant, heartbeat=self.settings.sse_heartbeat_seconds)
        connected = await anext(frames)  # the slot and subscriptions are held from here

        async def body() -> AsyncIterator[bytes]:
            async with contextlib.aclosing(frames):
                assert connected is not None
                yield sse_frame(connected)
                async for frame in frames:
                    yield HEARTBEAT if frame is None else sse_frame(frame)

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    async def webhook(self, request: DialectRequest) -> Response:
        http = request.request
        try:
            await inbound_webhooks.receive(
                request.context,
                provider=request.path("provider"),
                headers=dict(http.headers.items()),
                body=await http.body(),
            )
        except NotFound:
            raise Said(404, "Unknown webhook provider", code=ErrorCode.NOT_FOUND) from None
        except Unauthorized:
            raise Said(
                401, "Invalid webhook signature", "INVALID_SIGNATURE", code=ErrorCode.UNAUTHORIZED
            ) from None
        except ValidationFailed:
            raise Said(400, WEBHOOK_FAILED) from None
        return json_response(_OK)


DIALECT = NodeAuthToolsRouter
