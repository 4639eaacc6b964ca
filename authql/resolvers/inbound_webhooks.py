"""Inbound webhooks (``POST <tools prefix>/webhook/<provider>``): a registry of static Python
handlers, never stored scripts.

node-auth runs a JavaScript snippet an admin saved per provider in a ``vm`` sandbox. authql
runs no stored code (DIALECTS.md rule 2): a provider is a Python function registered here
(``register``), shipped with the server or added by an operator's own module at start-up.
A handler authenticates the sender and maps its payload to a tracked event, which is stored
and shown in ``/tools/telemetry`` (to admins and API keys: it names no user, so it is never
sent to anyone's live stream).

Outcomes, as node-auth answers them: an unknown provider is NOT_FOUND; a refused signature
is UNAUTHORIZED; a payload the handler cannot read is VALIDATION_ERROR ("Webhook processing
failed"); any other failure inside a handler is logged and the sender still hears success,
so a bug here does not make it retry forever.

Shipped: ``generic``, for senders that sign like node-auth's own outgoing webhooks:
``X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the raw body>``. Its secret is derived
from ``AUTHQL_SECRET_KEY`` (``signing_secret``: stable across restarts and processes,
changed with the key) and shown to admins at ``GET <admin prefix>/api/inbound-webhooks``.
The body must be JSON; it is recorded as ``webhook.generic.received`` with
``{event, payload}`` (``event`` from ``X-Webhook-Event``). A repeated ``X-Webhook-Delivery``
id is accepted and not recorded twice, so senders' retries are harmless.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from authql.context import RequestContext
from authql.errors import AuthError, NotFound, Unauthorized, ValidationFailed
from authql.models import TrackedEvent
from authql.resolvers import tools
from authql.settings import Settings

logger = logging.getLogger("authql.inbound_webhooks")

PROVIDER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SIGNATURE_HEADER = "x-webhook-signature"
DELIVERY_HEADER = "x-webhook-delivery"
EVENT_HEADER = "x-webhook-event"


@dataclass(frozen=True)
class InboundRequest:
    """What a handler sees: the provider, the headers (lower-case names), the raw body."""

    provider: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or VALIDATION_ERROR."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise ValidationFailed("The webhook body is not JSON.") from None


@dataclass(frozen=True)
class InboundEvent:
    """What a handler makes of a delivery: the tracked event to record."""

    name: str
    data: Any = None
    user_id: str | None = None
    tenant_id: str | None = None
    correlation_id: str | None = None


Handler = Callable[[RequestContext, InboundRequest], Awaitable[InboundEvent | None]]

_HANDLERS: dict[str, Handler] = {}


def register(provider: str) -> Callable[[Handler], Handler]:
    """Decorator: serve ``provider`` with the decorated handler (one handler per name)."""
    if not PROVIDER.match(provider):
        raise ValueError(f"bad webhook provider name {provider!r}")

    def decorate(handler: Handler) -> Handler:
        if provider in _HANDLERS and _HANDLERS[provider] is not handler:
            raise ValueError(f"webhook provider {provider!r} is already registered")
        _HANDLERS[provider] = handler
        return handler

    return decorate


def providers() -> list[str]:
    """The registered provider names, sorted."""
    return sorted(_HANDLERS)


def signing_secret(settings: Settings, provider: str) -> str:
    """The HMAC secret senders of ``provider`` sign with (derived, never stored)."""
    label = f"authql inbound webhook signing secret:{provider}".encode()
    return hmac.new(settings.secret_key.encode(), label, hashlib.sha256).hexdigest()


def verify_signature(settings: Settings, request: InboundRequest) -> None:
    """UNAUTHORIZED unless the body carries node-auth's ``sha256=<hex>`` HMAC signature."""
    sent = request.headers.get(SIGNATURE_HEADER, "")
    secret = signing_secret(settings, request.provider).encode()
    expected = "sha256=" + hmac.new(secret, request.body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(sent.strip().encode(), expected.encode()):
        raise Unauthorized("Invalid webhook signature.")


async def receive(
    ctx: RequestContext, *, provider: str, headers: Mapping[str, str], body: bytes
) -> bool:
    """Hand a delivery to its provider's handler and record what it returns; True when an
    event was recorded. Raises NOT_FOUND, UNAUTHORIZED or VALIDATION_ERROR (see above)."""
    handler = _HANDLERS.get(provider) if PROVIDER.match(provider) else None
    if handler is None:
        raise NotFound("Unknown webhook provider.")
    request = InboundRequest(provider=provider, headers=headers, body=body)
    try:
        result = await handler(ctx, request)
        if result is None:
            return False
        tools.check_event_name(result.name)
        if result.correlation_id and await TrackedEvent.exists(
            name=result.name, correlation_id=result.correlation_id
        ):
            return False
        await tools.record(
            ctx,
            name=result.name,
            data=result.data,
            user_id=result.user_id,
            tenant_id=result.tenant_id,
            correlation_id=result.correlation_id,
        )
    except AuthError:
        raise
    except Exception:
        logger.exception("inbound webhook handler for %r failed", provider)
        return False
    return True


@register("generic")
async def generic(ctx: RequestContext, request: InboundRequest) -> InboundEvent:
    """Any sender signing like node-auth: the JSON body recorded as it came."""
    verify_signature(ctx.services.settings, request)
    payload = request.json()
    delivery = request.headers.get(DELIVERY_HEADER, "").strip()[:200] or None
    event = request.headers.get(EVENT_HEADER, "").strip()[:200] or None
    return InboundEvent(
        name=f"webhook.{request.provider}.received",
        data={"event": event, "payload": payload},
        correlation_id=delivery,
    )
