"""API keys: machine credentials for the node-auth tools and admin routers.

A raw key (``aq_`` + 256 random bits, URL-safe) is shown once, at creation; only its SHA-256
digest is stored, so a database dump yields no usable key, and a key is found by an indexed
lookup of its digest (then compared in constant time), never by scanning or comparing raw
keys. ``prefix`` (the first characters) tells keys apart in lists.

Scopes: a key is accepted for ``scope`` when its scopes contain ``scope`` itself, ``"*"``
(every scope), or ``"<family>:*"`` covering ``"<family>:<anything>"``. ``admin`` has no
special meaning here: it is an ordinary scope a router may require. A key without scopes
passes only where no scope is required. ``allowed_ips`` (addresses or CIDR networks, v4 or
v6) restricts where a key may be used; empty means anywhere.

Creation and revocation are written to the ``authql.audit`` log with the acting admin.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
import secrets
import uuid
from dataclasses import dataclass

from authql.context import RequestContext
from authql.errors import ApiKeyRejected, NotFound, ValidationFailed
from authql.models import ApiKey
from authql.services.tokens import digest, same_secret

audit = logging.getLogger("authql.audit")

KEY_PREFIX = "aq_"
#: Characters of the raw key kept for display (``aq_`` + 8).
DISPLAY_CHARS = 11
MAX_PAGE = 100
MAX_RAW_KEY = 256
#: ``last_used_at`` is refreshed at most this often per key (it is informative only).
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
_SCOPE = re.compile(r"^[A-Za-z0-9_.:*-]{1,100}$")


@dataclass(frozen=True)
class ApiKeyView:
    """What any surface may show about a key (never the digest or the raw key)."""

    id: str
    name: str
    prefix: str
    scopes: list[str]
    allowed_ips: list[str]
    service_id: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> ApiKeyView:
        return cls(
            id=str(row.id),
            name=row.name,
            prefix=row.prefix,
            scopes=list(row.scopes or []),
            allowed_ips=list(row.allowed_ips or []),
            service_id=row.service_id,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
        )

    def allows(self, scope: str | None) -> bool:
        """Whether this key may be used where ``scope`` is required (None: no scope)."""
        return scope_granted(self.scopes, scope)


def scope_granted(scopes: list[str], scope: str | None) -> bool:
    """The module's scope rule: exact, ``"*"``, or a ``"family:*"`` wildcard."""
    if scope is None:
        return True
    if scope in scopes or "*" in scopes:
        return True
    family, sep, _ = scope.partition(":")
    return bool(sep) and f"{family}:*" in scopes


def ip_allowed(ip: str | None, allowed: list[str]) -> bool:
    """Whether ``ip`` is in one of ``allowed`` (addresses or networks); empty allows all."""
    if not allowed:
        return True
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for entry in allowed:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


# --- validation ---------------------------------------------------------------------------


def _check_name(name: str) -> str:
    value = (name or "").strip()
    if not value or len(value) > 200:
        raise ValidationFailed("Invalid key name.", fields={"name": "1 to 200 characters."})
    return value


def _check_scopes(scopes: list[str] | None) -> list[str]:
    result: list[str] = []
    for raw in scopes or []:
        scope = str(raw).strip()
        if not _SCOPE.match(scope):
            raise ValidationFailed(
                "Invalid scope.",
                fields={"scopes": "Letters, digits and _ . : * - (at most 100 characters)."},
            )
        if scope not in result:
            result.append(scope)
    return result


def _check_ips(allowed_ips: list[str] | None) -> list[str]:
    result: list[str] = []
    for raw in allowed_ips or []:
        entry = str(raw).strip()
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValidationFailed(
                "Invalid IP allowlist.",
                fields={"allowedIps": f"Not an IP address or CIDR network: {entry[:50]}"},
            ) from None
        canonical = str(network.network_address) if "/" not in entry else str(network)
        if canonical not in result:
            result.append(canonical)
    return result


def _check_expiry(ctx: RequestContext, expires_at: dt.datetime | None) -> dt.datetime | None:
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=dt.UTC)
    if expires_at <= ctx.services.clock.now():
        raise ValidationFailed(
            "Expiry in the past.", fields={"expiresAt": "Must be in the future."}
        )
    return expires_at


def _check_service(service_id: str | None) -> str | None:
    value = (service_id or "").strip()
    if len(value) > 200:
        raise ValidationFailed("Invalid service id.", fields={"serviceId": "At most 200."})
    return value or None


# --- administration -----------------------------------------------------------------------


async def create_api_key(
    ctx: RequestContext,
    *,
    name: str,
    scopes: list[str] | None = None,
    allowed_ips: list[str] | None = None,
    service_id: str | None = None,
    expires_at: dt.datetime | None = None,
) -> tuple[ApiKeyView, str]:
    """Make a key; returns its view and the raw key, which is never available again."""
    admin = ctx.require_admin()
    fields = {
        "name": _check_name(name),
        "scopes": _check_scopes(scopes),
        "allowed_ips": _check_ips(allowed_ips),
        "service_id": _check_service(service_id),
        "expires_at": _check_expiry(ctx, expires_at),
    }
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    row = await ApiKey.create(
        prefix=raw[:DISPLAY_CHARS],
        key_digest=digest(raw),
        created_by=admin.user.id,
        **fields,
    )
    audit.info("api key %s (%s) created by %s", row.id, row.prefix, admin.user.id)
    return ApiKeyView.of(row), raw


async def list_api_keys(
    ctx: RequestContext, *, limit: int = 20, offset: int = 0
) -> tuple[list[ApiKeyView], int]:
    """Keys newest first (revoked ones included, marked), and how many there are."""
    ctx.require_admin()
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed("Invalid page size.", fields={"limit": f"Between 1 and {MAX_PAGE}."})
    if offset < 0:
        raise ValidationFailed("Invalid offset.", fields={"offset": "Must not be negative."})
    total = await ApiKey.all().count()
    rows = await ApiKey.all().order_by("-created_at", "id").offset(offset).limit(limit)
    return [ApiKeyView.of(row) for row in rows], total


async def revoke_api_key(ctx: RequestContext, *, key_id: str) -> bool:
    """Revoke a key at once (the next request with it is refused); NOT_FOUND if unknown.
    Revoking a revoked key changes nothing and succeeds."""
    admin = ctx.require_admin()
    try:
        ident = uuid.UUID(str(key_id))
    except ValueError:
        raise NotFound("API key not found.") from None
    row = await ApiKey.get_or_none(id=ident)
    if row is None:
        raise NotFound("API key not found.")
    if row.revoked_at is None:
        await ApiKey.filter(id=ident, revoked_at=None).update(revoked_at=ctx.services.clock.now())
        audit.info("api key %s (%s) revoked by %s", row.id, row.prefix, admin.user.id)
    return True


# --- use ------------------------------------------------------------------------------------


async def authenticate_api_key(
    ctx: RequestContext, raw_key: str, *, scope: str | None = None
) -> ApiKeyView:
    """The key's view if ``raw_key`` may be used from ``ctx.ip_address`` for ``scope``;
    otherwise ApiKeyRejected with node-auth's reason, checked in node-auth's order
    (invalid, revoked, expired, ip, scope)."""
    raw = (raw_key or "").strip()
    if not raw:
        raise ApiKeyRejected("API_KEY_MISSING")
    if len(raw) > MAX_RAW_KEY:
        raise ApiKeyRejected("API_KEY_INVALID")
    wanted = digest(raw)
    row = await ApiKey.get_or_none(key_digest=wanted)
    if row is None or not same_secret(row.key_digest, wanted):
        raise ApiKeyRejected("API_KEY_INVALID")
    now = ctx.services.clock.now()
    if row.revoked_at is not None:
        raise ApiKeyRejected("API_KEY_REVOKED")
    if row.expires_at is not None and row.expires_at <= now:
        raise ApiKeyRejected("API_KEY_EXPIRED")
    if not ip_allowed(ctx.ip_address, list(row.allowed_ips or [])):
        raise ApiKeyRejected("API_KEY_IP_BLOCKED")
    if not scope_granted(list(row.scopes or []), scope):
        raise ApiKeyRejected("API_KEY_INSUFFICIENT_SCOPE")
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        await ApiKey.filter(id=row.id).update(last_used_at=now)
        row.last_used_at = now
    return ApiKeyView.of(row)
