"""API keys: shown once, stored as digests, refused for every reason node-auth names.

Keys are managed and checked through the resolvers the node-auth admin and tools routers
call, with request contexts built the way those routers build them (client ip included).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable

import pytest

from authql.context import RequestContext, build_context
from authql.errors import (
    ApiKeyRejected,
    ErrorCode,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from authql.models import ApiKey
from authql.resolvers import api_keys as keys
from authql.resolvers.accounts import create_admin
from authql.services.clock import FrozenClock
from tests.support import PASSWORD, GraphQLClient

MakeClient = Callable[..., GraphQLClient]

ADMIN = "root@example.com"


async def admin_context(client: GraphQLClient) -> RequestContext:
    """A request context for a freshly created, signed-in admin."""
    await create_admin(client.services.passwords, email=ADMIN, password=PASSWORD)
    token = (await client.login(ADMIN)).data["login"]["accessToken"]
    return await build_context(client.services, peer="127.0.0.1", access_token=token)


async def caller(client: GraphQLClient, ip: str | None = "198.51.100.20") -> RequestContext:
    """An anonymous request from ``ip``, as a router sees it before checking the key."""
    return await build_context(client.services, peer=ip)


async def rejection(ctx: RequestContext, raw: str, scope: str | None = None) -> ApiKeyRejected:
    with pytest.raises(ApiKeyRejected) as refused:
        await keys.authenticate_api_key(ctx, raw, scope=scope)
    return refused.value


async def test_raw_key_is_shown_once_and_only_its_digest_is_stored(
    client: GraphQLClient,
) -> None:
    """Creation returns the raw key; lists and the database never hold it."""
    admin = await admin_context(client)
    view, raw = await keys.create_api_key(
        admin, name="billing", scopes=["tools:read"], service_id="billing-svc"
    )
    assert raw.startswith("aq_") and len(raw) >= 40
    assert view.prefix == raw[:11] and view.name == "billing" and view.scopes == ["tools:read"]
    assert view.service_id == "billing-svc" and view.revoked_at is None
    assert raw not in repr(view)
    listed, total = await keys.list_api_keys(admin)
    assert total == 1 and listed == [view]
    assert raw not in repr(listed)
    row = await ApiKey.get(id=view.id).values()
    stored = json.dumps(row, default=str)
    assert raw not in stored and raw[11:] not in stored
    assert row["key_digest"] == hashlib.sha256(raw.encode()).hexdigest()
    _, other = await keys.create_api_key(admin, name="billing")
    assert other != raw


async def test_a_valid_key_authenticates_and_records_its_use(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """A genuine key is accepted (with surrounding spaces) and its last use is recorded."""
    admin = await admin_context(client)
    view, raw = await keys.create_api_key(admin, name="ci")
    used = await keys.authenticate_api_key(await caller(client), f"  {raw} ")
    assert used.id == view.id and used.last_used_at == clock.now()
    assert (await ApiKey.get(id=view.id)).last_used_at == clock.now()


async def test_unknown_and_missing_keys_are_refused(client: GraphQLClient) -> None:
    """A made-up key is API_KEY_INVALID (401), an empty one API_KEY_MISSING."""
    admin = await admin_context(client)
    _, raw = await keys.create_api_key(admin, name="ci")
    ctx = await caller(client)
    for guess in (raw[:-1] + ("A" if raw[-1] != "A" else "B"), "aq_nope", "x" * 5000):
        refused = await rejection(ctx, guess)
        assert refused.reason == "API_KEY_INVALID" and refused.code is ErrorCode.UNAUTHORIZED
    assert (await rejection(ctx, "")).reason == "API_KEY_MISSING"


async def test_revocation_is_immediate(client: GraphQLClient) -> None:
    """The request right after revocation is refused with API_KEY_REVOKED."""
    admin = await admin_context(client)
    view, raw = await keys.create_api_key(admin, name="ci")
    ctx = await caller(client)
    await keys.authenticate_api_key(ctx, raw)
    assert await keys.revoke_api_key(admin, key_id=view.id)
    refused = await rejection(ctx, raw)
    assert refused.reason == "API_KEY_REVOKED" and isinstance(refused, Unauthorized)
    assert await keys.revoke_api_key(admin, key_id=view.id)  # idempotent
    [listed], _ = await keys.list_api_keys(admin)
    assert listed.revoked_at is not None
    for missing in ("5b0e8d4e-0000-4000-8000-000000000000", "nope"):
        with pytest.raises(NotFound):
            await keys.revoke_api_key(admin, key_id=missing)


async def test_expired_keys_are_refused(client: GraphQLClient, clock: FrozenClock) -> None:
    """A key past its expiry is API_KEY_EXPIRED; before it, it works."""
    admin = await admin_context(client)
    _, raw = await keys.create_api_key(
        admin, name="temp", expires_at=clock.now() + dt.timedelta(minutes=5)
    )
    ctx = await caller(client)
    await keys.authenticate_api_key(ctx, raw)
    clock.advance(301)
    assert (await rejection(ctx, raw)).reason == "API_KEY_EXPIRED"


async def test_ip_allowlist_blocks_other_addresses(client: GraphQLClient) -> None:
    """With an allowlist, only listed addresses and networks may use the key (403 otherwise)."""
    admin = await admin_context(client)
    view, raw = await keys.create_api_key(
        admin, name="internal", allowed_ips=["10.0.0.0/8", "2001:db8::1", "192.0.2.7"]
    )
    assert view.allowed_ips == ["10.0.0.0/8", "2001:db8::1", "192.0.2.7"]
    for allowed in ("10.1.2.3", "::ffff:10.9.9.9", "2001:db8::1", "192.0.2.7"):
        await keys.authenticate_api_key(await caller(client, allowed), raw)
    for blocked in ("203.0.113.7", "192.0.2.8", "2001:db8::2", None):
        refused = await rejection(await caller(client, blocked), raw)
        assert refused.reason == "API_KEY_IP_BLOCKED" and refused.code is ErrorCode.FORBIDDEN


async def test_scopes_limit_what_a_key_may_do(client: GraphQLClient) -> None:
    """A key works only for its scopes, "*" for all, "family:*" for its family."""
    admin = await admin_context(client)
    ctx = await caller(client)
    _, reader = await keys.create_api_key(admin, name="r", scopes=["tools:read"])
    _, tools = await keys.create_api_key(admin, name="t", scopes=["tools:*"])
    _, anything = await keys.create_api_key(admin, name="a", scopes=["*"])
    _, bare = await keys.create_api_key(admin, name="b")
    await keys.authenticate_api_key(ctx, reader, scope="tools:read")
    await keys.authenticate_api_key(ctx, tools, scope="tools:write")
    await keys.authenticate_api_key(ctx, anything, scope="admin")
    await keys.authenticate_api_key(ctx, bare)
    for raw, scope in ((reader, "tools:write"), (tools, "admin"), (bare, "tools:read")):
        refused = await rejection(ctx, raw, scope)
        assert refused.reason == "API_KEY_INSUFFICIENT_SCOPE"
        assert refused.code is ErrorCode.FORBIDDEN


async def test_key_administration_is_validated_and_admin_only(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """Bad input is VALIDATION_ERROR; non-admins are FORBIDDEN, anonymous UNAUTHORIZED."""
    admin = await admin_context(client)
    bad: list[dict[str, object]] = [
        {"name": " "},
        {"name": "x", "allowed_ips": ["10.0.0.300"]},
        {"name": "x", "scopes": ["has space"]},
        {"name": "x", "expires_at": clock.now() - dt.timedelta(seconds=1)},
    ]
    for arguments in bad:
        with pytest.raises(ValidationFailed):
            await keys.create_api_key(admin, **arguments)  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed):
        await keys.list_api_keys(admin, limit=101)
    token = (await client.register("ada@example.com"))["accessToken"]
    user = await build_context(client.services, peer="127.0.0.1", access_token=token)
    with pytest.raises(Forbidden):
        await keys.create_api_key(user, name="mine")
    with pytest.raises(Forbidden):
        await keys.list_api_keys(user)
    with pytest.raises(Unauthorized):
        await keys.revoke_api_key(await caller(client), key_id="x")
    assert not await ApiKey.exists()


async def test_list_pages_newest_first(client: GraphQLClient) -> None:
    """Listing pages through keys newest first with a total count."""
    admin = await admin_context(client)
    made = [(await keys.create_api_key(admin, name=f"k{index}"))[0] for index in range(3)]
    page, total = await keys.list_api_keys(admin, limit=2)
    assert total == 3 and len(page) == 2
    rest, _ = await keys.list_api_keys(admin, limit=2, offset=2)
    assert [v.id for v in page + rest] == [v.id for v in reversed(made)]
