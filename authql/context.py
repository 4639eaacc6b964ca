"""The request context every resolver receives, built the same way for GraphQL and REST.

``build_context`` turns transport facts (peer address, headers, a bearer token or session
credential) into a RequestContext with the client ip (X-Forwarded-For honoured only from
trusted proxies) and, when a credential is valid and its session live, the principal.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass, field
from typing import TypeVar

from authql.errors import Forbidden, Unauthorized
from authql.services import Services
from authql.services.tokens import TokenInvalid
from authql.views import SessionView, UserView


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: their account, the session used, the token's claims."""

    user: UserView
    session: SessionView
    claims: dict[str, object]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.user.roles


@dataclass
class RequestContext:
    """Per-request facts. ``principal`` is None for anonymous callers."""

    services: Services
    ip_address: str | None = None
    user_agent: str | None = None
    principal: Principal | None = None
    credential_rejected: bool = False
    #: True on surfaces that carry an opaque session token in a cookie (sign-ins then
    #: issue one).
    session_transport: bool = False
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def require_principal(self) -> Principal:
        """The principal, or UNAUTHORIZED."""
        if self.principal is None:
            if self.credential_rejected:
                raise Unauthorized("Invalid or expired token.")
            raise Unauthorized()
        return self.principal

    def require_admin(self) -> Principal:
        """The principal if it holds the ``admin`` role; UNAUTHORIZED or FORBIDDEN otherwise."""
        principal = self.require_principal()
        if not principal.is_admin:
            raise Forbidden()
        return principal


ContextT = TypeVar("ContextT", bound=RequestContext)


def client_ip(services: Services, peer: str | None, forwarded_for: str | None) -> str | None:
    """The client's address: the peer, or the first untrusted hop of X-Forwarded-For when
    the peer is a trusted proxy (walking right to left, so a client cannot spoof it)."""
    proxies = services.settings.trusted_proxies
    if not peer or not forwarded_for or not proxies or not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop if _valid_ip(hop) else peer
    return hops[0] if hops and _valid_ip(hops[0]) else peer


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _trusted(
    address: str, proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


async def principal_from_access_token(services: Services, token: str) -> Principal | None:
    """The principal behind ``token`` if it verifies and its session and user are live."""
    now = services.clock.now()
    try:
        claims = services.access_tokens.verify(token, now=now.timestamp())
    except TokenInvalid:
        return None
    session = await services.principals.session(str(claims["sid"]))
    if session is None or not session.active_at(now) or session.user_id != claims["sub"]:
        return None
    user = await services.principals.user(session.user_id)
    if user is None or user.deleted_at is not None:
        return None
    return Principal(user=user, session=session, claims=claims)


async def principal_from_session_token(services: Services, token: str) -> Principal | None:
    """The principal behind an opaque session-cookie token, if its session is live."""
    from authql.models import Session
    from authql.services.tokens import digest

    if not token or len(token) > 256:
        return None
    row = await Session.get_or_none(token_digest=digest(token)).only("id")
    if row is None:
        return None
    now = services.clock.now()
    session = await services.principals.session(str(row.id))
    if session is None or not session.active_at(now):
        return None
    user = await services.principals.user(session.user_id)
    if user is None or user.deleted_at is not None:
        return None
    claims: dict[str, object] = {"sub": user.id, "sid": session.id, "roles": list(user.roles)}
    return Principal(user=user, session=session, claims=claims)


async def authenticate_session_token(context: RequestContext, token: str) -> bool:
    """Attach the principal for an opaque session token; False when it is refused."""
    principal = await principal_from_session_token(context.services, token)
    context.principal = principal
    context.credential_rejected = principal is None
    return principal is not None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if that is what it is."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def build_context(
    services: Services,
    *,
    peer: str | None,
    forwarded_for: str | None = None,
    user_agent: str | None = None,
    access_token: str | None = None,
    context_class: type[ContextT] = RequestContext,  # type: ignore[assignment]
    **extra: object,
) -> ContextT:
    """A RequestContext (or subclass, for adapter extras) for one request or websocket."""
    context = context_class(
        services=services,
        ip_address=client_ip(services, peer, forwarded_for),
        user_agent=(user_agent or None) and user_agent[:512],
        **extra,
    )
    if access_token:
        await authenticate(context, access_token)
    return context


async def authenticate(context: RequestContext, access_token: str) -> bool:
    """Attach the principal for ``access_token`` to ``context``; False when it is refused."""
    principal = await principal_from_access_token(context.services, access_token)
    context.principal = principal
    context.credential_rejected = principal is None
    return principal is not None
