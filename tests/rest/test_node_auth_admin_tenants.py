"""node-auth's admin routes for tenants and the 2FA policy (/admin/api/tenants...,
/admin/api/users/:id/tenants, /admin/api/2fa-policy): upstream's shapes over authql's
tenant resolvers, and the policy they set holding on node-auth's own login."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from authql.models import User
from authql.resolvers.accounts import create_admin
from tests.support import PASSWORD, GraphQLClient

MakeClient = Callable[..., GraphQLClient]

API = "/admin/api"
ADMIN_EMAIL = "root@example.com"
TENANT_KEYS = {"id", "name", "slug", "domains", "isActive", "config", "createdAt", "updatedAt"}
CONFIG_KEYS = {
    "loginMethods",
    "registration",
    "requireEmailVerification",
    "requireTwoFactor",
    "passwordMinLength",
    "passwordRules",
}


def node_auth(make_client: MakeClient, **overrides: Any) -> GraphQLClient:
    return make_client(rest_dialects=(("node-auth", "/auth"),), **overrides)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def admin_headers(client: GraphQLClient) -> dict[str, str]:
    await create_admin(client.services.passwords, email=ADMIN_EMAIL, password=PASSWORD)
    login = (await client.login(ADMIN_EMAIL)).data["login"]
    return bearer(login["accessToken"])


async def node_login(client: GraphQLClient, email: str) -> httpx.Response:
    """node-auth's POST /auth/login in bearer mode."""
    return await client.http.post(
        "/auth/login",
        json={"email": email, "password": PASSWORD},
        headers={"x-auth-strategy": "bearer"},
    )


async def test_tenant_routes_need_an_admin(make_client: MakeClient) -> None:
    """Every tenant and 2FA-policy route answers 401 to anonymous callers and 403 to
    non-admins, and changes nothing."""
    client = node_auth(make_client)
    user = (await client.register("ada@example.com"))["accessToken"]
    routes = (
        ("GET", "/tenants", None),
        ("POST", "/tenants", {"name": "Acme"}),
        ("PATCH", "/tenants/acme", {"name": "Evil"}),
        ("DELETE", "/tenants/acme", None),
        ("GET", "/tenants/acme/users", None),
        ("POST", "/tenants/acme/users", {"userId": "x"}),
        ("DELETE", "/tenants/acme/users/x", None),
        ("GET", "/users/x/tenants", None),
        ("POST", "/2fa-policy", {"required": True}),
    )
    for method, path, body in routes:
        anonymous = await client.http.request(method, API + path, json=body)
        assert (anonymous.status_code, anonymous.json()) == (401, {"error": "Unauthorized"})
        signed_in = await client.http.request(method, API + path, json=body, headers=bearer(user))
        assert (signed_in.status_code, signed_in.json()) == (403, {"error": "Forbidden"})
    listed = await client.http.get(f"{API}/tenants", headers=await admin_headers(client))
    assert listed.json() == {"tenants": []}
    assert (await client.login()).data["login"]["status"] == "OK"


async def test_admins_manage_tenants(make_client: MakeClient) -> None:
    """POST creates a tenant from {name, domains, config} (slug from the name), GET lists
    it in upstream's shape with the policy in config, PATCH changes it (by id or slug),
    DELETE removes it; unknown tenants are 404 and a missing name 400."""
    client = node_auth(make_client)
    admin = await admin_headers(client)
    created = await client.http.post(
        f"{API}/tenants",
        json={
            "name": "Acme Corp",
            "domains": ["acme.test"],
            "config": {"registration": "approval", "passwordMinLength": 12},
            "requireTwoFactor": True,
        },
        headers=admin,
    )
    assert created.status_code == 200, created.text
    tenant = created.json()["tenant"]
    assert set(tenant) == TENANT_KEYS and set(tenant["config"]) == CONFIG_KEYS
    assert (tenant["slug"], tenant["name"], tenant["domains"], tenant["isActive"]) == (
        "acme-corp",
        "Acme Corp",
        ["acme.test"],
        True,
    )
    assert tenant["config"] == {
        "loginMethods": [],
        "registration": "approval",
        "requireEmailVerification": False,
        "requireTwoFactor": True,
        "passwordMinLength": 12,
        "passwordRules": [],
    }
    assert tenant["createdAt"].endswith("Z")
    listed = (await client.http.get(f"{API}/tenants", headers=admin)).json()
    assert listed == {"tenants": [tenant]}

    patched = await client.http.patch(
        f"{API}/tenants/{tenant['id']}",
        json={"name": "Acme", "slug": "acme", "config": {"loginMethods": ["password"]}},
        headers=admin,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["tenant"]["slug"] == "acme"
    assert patched.json()["tenant"]["config"]["loginMethods"] == ["password"]
    by_slug = await client.http.patch(
        f"{API}/tenants/acme", json={"registration": "open"}, headers=admin
    )
    assert by_slug.json()["tenant"]["config"]["registration"] == "open"

    no_name = await client.http.post(f"{API}/tenants", json={}, headers=admin)
    assert (no_name.status_code, no_name.json()) == (400, {"error": "name is required"})
    bad = await client.http.post(
        f"{API}/tenants", json={"name": "x", "registration": "maybe"}, headers=admin
    )
    assert bad.status_code == 400 and "registration" in bad.json()["error"]
    inactive = await client.http.post(
        f"{API}/tenants", json={"name": "Dormant", "isActive": False}, headers=admin
    )
    assert inactive.status_code == 400
    taken = await client.http.post(
        f"{API}/tenants", json={"name": "Other", "domains": ["acme.test"]}, headers=admin
    )
    assert taken.status_code == 409

    deleted = await client.http.delete(f"{API}/tenants/{tenant['id']}", headers=admin)
    assert (deleted.status_code, deleted.json()) == (200, {"success": True})
    again = await client.http.delete(f"{API}/tenants/{tenant['id']}", headers=admin)
    assert (again.status_code, again.json()) == (404, {"error": "Tenant not found"})
    assert (await client.http.get(f"{API}/tenants", headers=admin)).json() == {"tenants": []}


async def test_membership_routes_move_accounts_between_policies(make_client: MakeClient) -> None:
    """POST /tenants/:id/users adds an account (its node-auth login then follows the
    tenant: 403 where passwords are not allowed), GET lists {userIds}, GET
    /users/:id/tenants names it, DELETE takes it out again (404 the second time)."""
    client = node_auth(make_client)
    admin = await admin_headers(client)
    tenant = (
        await client.http.post(
            f"{API}/tenants",
            json={"name": "Links", "config": {"loginMethods": ["magic-link"]}},
            headers=admin,
        )
    ).json()["tenant"]
    user_id = (await client.register("ada@example.com"))["user"]["id"]
    members = f"{API}/tenants/{tenant['id']}/users"

    missing = await client.http.post(members, json={}, headers=admin)
    assert (missing.status_code, missing.json()) == (400, {"error": "userId is required"})
    unknown = await client.http.post(members, json={"userId": "nobody"}, headers=admin)
    assert (unknown.status_code, unknown.json()) == (404, {"error": "User not found"})
    added = await client.http.post(members, json={"userId": user_id}, headers=admin)
    assert (added.status_code, added.json()) == (200, {"success": True})
    assert (await client.http.get(members, headers=admin)).json() == {"userIds": [user_id]}
    tenants_of = await client.http.get(f"{API}/users/{user_id}/tenants", headers=admin)
    assert tenants_of.json() == {"tenantIds": [tenant["id"]]}
    refused = await node_login(client, "ada@example.com")
    assert (refused.status_code, refused.json()) == (403, {"error": "Forbidden"})

    removed = await client.http.delete(f"{members}/{user_id}", headers=admin)
    assert (removed.status_code, removed.json()) == (200, {"success": True})
    assert (await client.http.get(members, headers=admin)).json() == {"userIds": []}
    tenants_of = await client.http.get(f"{API}/users/{user_id}/tenants", headers=admin)
    assert tenants_of.json() == {"tenantIds": []}
    assert (await client.http.delete(f"{members}/{user_id}", headers=admin)).status_code == 404
    allowed = await node_login(client, "ada@example.com")
    assert allowed.status_code == 200 and allowed.json()["accessToken"]


async def test_two_factor_policy_route_toggles_setup_required(make_client: MakeClient) -> None:
    """POST /2fa-policy {required:true} answers {success, updated:<accounts>} and node-auth
    login then answers 403 2FA_SETUP_REQUIRED for accounts without 2FA; {required:false}
    lifts it; anything but a boolean is 400."""
    client = node_auth(make_client)
    admin = await admin_headers(client)
    await client.register("ada@example.com")
    for body in ({}, {"required": "true"}, {"required": 1}, {"required": None}):
        response = await client.http.post(f"{API}/2fa-policy", json=body, headers=admin)
        assert (response.status_code, response.json()) == (
            400,
            {"error": '"required" must be a boolean'},
        ), body
    on = await client.http.post(f"{API}/2fa-policy", json={"required": True}, headers=admin)
    assert (on.status_code, on.json()) == (200, {"success": True, "updated": 2})
    held = await node_login(client, "ada@example.com")
    assert held.status_code == 403
    assert held.json()["code"] == "2FA_SETUP_REQUIRED" and held.json()["tempToken"]
    graphql = (await client.login()).data["login"]
    assert graphql["status"] == "TWO_FACTOR_SETUP_REQUIRED"

    off = await client.http.post(f"{API}/2fa-policy", json={"required": False}, headers=admin)
    assert off.json() == {"success": True, "updated": 2}
    released = await node_login(client, "ada@example.com")
    assert released.status_code == 200 and released.json()["accessToken"]
    assert await User.filter(deleted_at=None).count() == 2
