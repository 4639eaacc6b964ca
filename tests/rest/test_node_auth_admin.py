"""node-auth's admin REST API at /admin/api: the admin guard (access token or admin-scoped
API key), users, roles, sessions, webhooks, API keys and inbound-webhook secrets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from authql.models import Role, UserRole, Webhook
from authql.resolvers.accounts import create_admin
from tests.support import PASSWORD, GraphQLClient, set_cookies

MakeClient = Callable[..., GraphQLClient]

API = "/admin/api"
DIALECTS = (("node-auth", "/auth"),)
ADMIN_EMAIL = "root@example.com"
SAFE_USER_KEYS = {"id", "email", "role", "roles", "isEmailVerified", "isTotpEnabled", "createdAt"}


def admin_client(make_client: MakeClient, **overrides: Any) -> GraphQLClient:
    return make_client(rest_dialects=DIALECTS, **overrides)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def token_of(client: GraphQLClient, email: str) -> str:
    login = (await client.login(email)).data["login"]
    return str(login["accessToken"])


async def root_token(client: GraphQLClient) -> str:
    await create_admin(client.services.passwords, email=ADMIN_EMAIL, password=PASSWORD)
    return await token_of(client, ADMIN_EMAIL)


async def user_id_of(client: GraphQLClient, email: str) -> str:
    payload = await client.register(email)
    return str(payload["user"]["id"])


async def new_key(client: GraphQLClient, token: str, *scopes: str) -> dict[str, Any]:
    response = await client.http.post(
        f"{API}/api-keys", json={"name": "ops", "scopes": list(scopes)}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def assert_safe(response: httpx.Response) -> None:
    """No password hash, token digest or key digest ever leaves the admin API."""
    assert "$argon2" not in response.text
    assert "digest" not in response.text.lower()
    assert "password" not in response.text.lower()


# --- the guard -------------------------------------------------------------------------------


async def test_ping_needs_an_admin(make_client: MakeClient) -> None:
    """Anonymous or refused tokens are 401 Unauthorized, non-admins 403 Forbidden, and an
    admin gets ok with the features authql serves."""
    client = admin_client(make_client)
    response = await client.http.get(f"{API}/ping")
    assert (response.status_code, response.json()) == (401, {"error": "Unauthorized"})
    response = await client.http.get(f"{API}/ping", headers=bearer("not.a.token"))
    assert (response.status_code, response.json()) == (401, {"error": "Unauthorized"})
    await client.register("ada@example.com")
    user = await token_of(client, "ada@example.com")
    response = await client.http.get(f"{API}/ping", headers=bearer(user))
    assert (response.status_code, response.json()) == (403, {"error": "Forbidden"})
    response = await client.http.get(f"{API}/ping", headers=bearer(await root_token(client)))
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    features = body["features"]
    assert features["sessions"] and features["roles"] and features["apiKeys"]
    assert features["webhooks"] and features["tenants"] and features["twoFAPolicy"]
    assert not features["metadata"] and not features["upload"] and not features["templates"]


async def test_every_route_is_guarded(make_client: MakeClient) -> None:
    """No admin route answers anything but 401 to an anonymous caller."""
    client = admin_client(make_client)
    for method, path in (
        ("GET", "/users"),
        ("GET", "/users/x"),
        ("DELETE", "/users/x"),
        ("GET", "/users/x/roles"),
        ("POST", "/users/x/roles"),
        ("DELETE", "/users/x/roles/editor"),
        ("GET", "/roles"),
        ("POST", "/roles"),
        ("DELETE", "/roles/editor"),
        ("GET", "/sessions"),
        ("DELETE", "/sessions/x"),
        ("GET", "/webhooks"),
        ("POST", "/webhooks"),
        ("PATCH", "/webhooks/x"),
        ("DELETE", "/webhooks/x"),
        ("GET", "/api-keys"),
        ("POST", "/api-keys"),
        ("DELETE", "/api-keys/x/revoke"),
        ("DELETE", "/api-keys/x"),
        ("GET", "/inbound-webhooks"),
    ):
        response = await client.http.request(method, API + path)
        assert response.status_code == 401, (method, path)
        assert response.json() == {"error": "Unauthorized"}


async def test_the_access_cookie_works_and_csrf_applies(make_client: MakeClient) -> None:
    """The auth router's access cookie admits an admin; with CSRF on, a state change over
    the cookie needs X-CSRF-Token."""
    client = admin_client(make_client, node_auth_csrf=True)
    await create_admin(client.services.passwords, email=ADMIN_EMAIL, password=PASSWORD)
    login = await client.http.post("/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD})
    cookies = set_cookies(login)
    jar = {"accessToken": cookies["accessToken"]["value"]}
    csrf = cookies["csrf-token"]["value"]
    client.http.cookies.update({**jar, "csrf-token": csrf})
    assert (await client.http.get(f"{API}/ping")).status_code == 200
    response = await client.http.post(f"{API}/roles", json={"name": "editor"})
    assert response.status_code == 403
    assert response.json()["code"] == "CSRF_INVALID"
    response = await client.http.post(
        f"{API}/roles", json={"name": "editor"}, headers={"x-csrf-token": csrf}
    )
    assert response.status_code == 200


async def test_admin_scoped_api_keys_act_as_their_creator(make_client: MakeClient) -> None:
    """A key with the admin scope passes the guard (Authorization: ApiKey or X-Api-Key)
    while its creator is an admin; other scopes, revoked keys and demoted creators fail."""
    client = admin_client(make_client)
    root = await root_token(client)
    key = (await new_key(client, root, "admin"))["rawKey"]
    for headers in ({"authorization": f"ApiKey {key}"}, {"x-api-key": key}):
        assert (await client.http.get(f"{API}/ping", headers=headers)).status_code == 200
    tools_only = (await new_key(client, root, "tools:*"))["rawKey"]
    response = await client.http.get(f"{API}/ping", headers={"x-api-key": tools_only})
    assert response.status_code == 403
    assert response.json()["code"] == "API_KEY_INSUFFICIENT_SCOPE"
    response = await client.http.get(f"{API}/ping", headers={"x-api-key": "aq_unknown"})
    assert (response.status_code, response.json()["code"]) == (401, "API_KEY_INVALID")
    # A second admin demotes the creator: the creator's keys stop working.
    await create_admin(client.services.passwords, email="second@example.com", password=PASSWORD)
    second = await token_of(client, "second@example.com")
    users = (await client.http.get(f"{API}/users?filter=root@", headers=bearer(second))).json()
    creator = users["users"][0]["id"]
    response = await client.http.delete(
        f"{API}/users/{creator}/roles/admin", headers=bearer(second)
    )
    assert response.status_code == 200
    response = await client.http.get(f"{API}/ping", headers={"x-api-key": key})
    assert (response.status_code, response.json()) == (403, {"error": "Forbidden"})


# --- users and roles -------------------------------------------------------------------------


async def test_users_are_listed_safely_with_paging_and_filter(make_client: MakeClient) -> None:
    """Users come back oldest first as node-auth's safe user, with the true total, paged by
    limit/offset and narrowed by filter; never a password hash."""
    client = admin_client(make_client)
    root = await root_token(client)
    for name in ("ada", "bob", "cy"):
        await client.register(f"{name}@example.com")
    response = await client.http.get(f"{API}/users", headers=bearer(root))
    assert_safe(response)
    body = response.json()
    assert body["total"] == 4
    assert [user["email"] for user in body["users"]] == [
        ADMIN_EMAIL,
        "ada@example.com",
        "bob@example.com",
        "cy@example.com",
    ]
    assert set(body["users"][0]) >= SAFE_USER_KEYS
    assert body["users"][0]["role"] == "admin"
    assert body["users"][1]["role"] == "user"
    page = (await client.http.get(f"{API}/users?limit=2&offset=1", headers=bearer(root))).json()
    assert [user["email"] for user in page["users"]] == ["ada@example.com", "bob@example.com"]
    assert page["total"] == 4
    found = (await client.http.get(f"{API}/users?filter=BOB", headers=bearer(root))).json()
    assert (found["total"], found["users"][0]["email"]) == (1, "bob@example.com")
    clamped = (await client.http.get(f"{API}/users?limit=500", headers=bearer(root))).json()
    assert len(clamped["users"]) == 4
    response = await client.http.get(f"{API}/users?offset=x", headers=bearer(root))
    assert (response.status_code, response.json()) == (400, {"error": "offset must be a number"})


async def test_one_user_by_id(make_client: MakeClient) -> None:
    """GET /users/:id answers the safe user, or 404 User not found."""
    client = admin_client(make_client)
    root = await root_token(client)
    ada = await user_id_of(client, "ada@example.com")
    response = await client.http.get(f"{API}/users/{ada}", headers=bearer(root))
    assert_safe(response)
    assert response.json()["email"] == "ada@example.com"
    for missing in ("00000000-0000-0000-0000-000000000000", "garbage"):
        response = await client.http.get(f"{API}/users/{missing}", headers=bearer(root))
        assert (response.status_code, response.json()) == (404, {"error": "User not found"})


async def test_users_are_deleted_softly_or_for_good(make_client: MakeClient) -> None:
    """DELETE /users/:id soft-deletes (the account shows deletedAt and its token dies);
    ?hard=true purges it; unknown ids are 404."""
    client = admin_client(make_client)
    root = await root_token(client)
    ada = await user_id_of(client, "ada@example.com")
    ada_token = await token_of(client, "ada@example.com")
    response = await client.http.delete(f"{API}/users/{ada}", headers=bearer(root))
    assert (response.status_code, response.json()) == (200, {"success": True})
    shown = (await client.http.get(f"{API}/users/{ada}", headers=bearer(root))).json()
    assert shown["deletedAt"]
    assert (await client.http.get("/auth/me", headers=bearer(ada_token))).status_code == 403
    response = await client.http.delete(f"{API}/users/{ada}?hard=true", headers=bearer(root))
    assert response.status_code == 200
    for gone in (ada, "garbage"):
        response = await client.http.get(f"{API}/users/{gone}", headers=bearer(root))
        assert (response.status_code, response.json()) == (404, {"error": "User not found"})
        response = await client.http.delete(f"{API}/users/{gone}", headers=bearer(root))
        assert (response.status_code, response.json()) == (404, {"error": "User not found"})


async def test_user_roles_are_granted_and_taken(make_client: MakeClient) -> None:
    """Roles are read, granted and taken per user; the change reaches the user's very next
    token check; the last admin keeps the admin role."""
    client = admin_client(make_client)
    root = await root_token(client)
    ada = await user_id_of(client, "ada@example.com")
    url = f"{API}/users/{ada}/roles"
    assert (await client.http.get(url, headers=bearer(root))).json() == {"roles": []}
    response = await client.http.post(url, json={"role": "editor"}, headers=bearer(root))
    assert (response.status_code, response.json()) == (200, {"success": True})
    await client.http.post(url, json={"role": "admin"}, headers=bearer(root))
    assert (await client.http.get(url, headers=bearer(root))).json() == {
        "roles": ["admin", "editor"]
    }
    ada_token = await token_of(client, "ada@example.com")
    assert (await client.http.get(f"{API}/ping", headers=bearer(ada_token))).status_code == 200
    response = await client.http.delete(f"{url}/admin", headers=bearer(root))
    assert response.status_code == 200
    assert (await client.http.get(f"{API}/ping", headers=bearer(ada_token))).status_code == 403
    response = await client.http.post(url, json={}, headers=bearer(root))
    assert (response.status_code, response.json()) == (400, {"error": "role is required"})
    response = await client.http.post(
        f"{API}/users/00000000-0000-0000-0000-000000000000/roles",
        json={"role": "editor"},
        headers=bearer(root),
    )
    assert response.status_code == 404
    root_id = (await client.http.get(f"{API}/users?filter=root", headers=bearer(root))).json()
    me = root_id["users"][0]["id"]
    response = await client.http.delete(f"{API}/users/{me}/roles/admin", headers=bearer(root))
    assert response.status_code == 409


async def test_role_catalogue(make_client: MakeClient) -> None:
    """Roles are listed with their permissions (admin always), created or replaced, and
    deleted, which also takes them from every account; admin itself cannot go."""
    client = admin_client(make_client)
    root = await root_token(client)
    ada = await user_id_of(client, "ada@example.com")
    assert (await client.http.get(f"{API}/roles", headers=bearer(root))).json() == {
        "roles": [{"name": "admin", "permissions": []}]
    }
    for permissions in (["posts:read"], ["posts:read", "posts:write"]):
        response = await client.http.post(
            f"{API}/roles",
            json={"name": "editor", "permissions": permissions},
            headers=bearer(root),
        )
        assert (response.status_code, response.json()) == (200, {"success": True})
    assert (await Role.get(name="editor")).permissions == ["posts:read", "posts:write"]
    await client.http.post(
        f"{API}/users/{ada}/roles", json={"role": "editor"}, headers=bearer(root)
    )
    response = await client.http.delete(f"{API}/roles/editor", headers=bearer(root))
    assert (response.status_code, response.json()) == (200, {"success": True})
    assert not await UserRole.exists(role="editor")
    assert (await client.http.get(f"{API}/roles", headers=bearer(root))).json()["roles"] == [
        {"name": "admin", "permissions": []}
    ]
    response = await client.http.delete(f"{API}/roles/editor", headers=bearer(root))
    assert (response.status_code, response.json()) == (404, {"error": "Role not found"})
    response = await client.http.delete(f"{API}/roles/admin", headers=bearer(root))
    assert response.status_code == 409
    response = await client.http.post(f"{API}/roles", json={}, headers=bearer(root))
    assert (response.status_code, response.json()) == (400, {"error": "name is required"})
    response = await client.http.post(
        f"{API}/roles", json={"name": "bad name!"}, headers=bearer(root)
    )
    assert response.status_code == 400


# --- sessions --------------------------------------------------------------------------------


async def test_sessions_are_listed_and_revoked(make_client: MakeClient) -> None:
    """Live sessions of every account are listed (filterable, with the true total); ending
    one kills its access token at once; unknown handles are 404."""
    client = admin_client(make_client)
    root = await root_token(client)
    ada = await user_id_of(client, "ada@example.com")
    ada_token = await token_of(client, "ada@example.com")
    body = (await client.http.get(f"{API}/sessions", headers=bearer(root))).json()
    assert body["total"] == 3  # root's login, ada's registration, ada's login
    assert {"sessionHandle", "userId", "createdAt", "expiresAt", "lastActiveAt"} <= set(
        body["sessions"][0]
    )
    adas = (await client.http.get(f"{API}/sessions?filter={ada}", headers=bearer(root))).json()
    assert adas["total"] == 2
    assert {session["userId"] for session in adas["sessions"]} == {ada}
    by_mail = (await client.http.get(f"{API}/sessions?filter=ada@", headers=bearer(root))).json()
    assert by_mail["total"] == 2
    page = (await client.http.get(f"{API}/sessions?limit=1", headers=bearer(root))).json()
    assert (len(page["sessions"]), page["total"]) == (1, 3)
    current = client.services.access_tokens.verify(ada_token)["sid"]
    response = await client.http.delete(f"{API}/sessions/{current}", headers=bearer(root))
    assert (response.status_code, response.json()) == (200, {"success": True})
    assert (await client.http.get("/auth/me", headers=bearer(ada_token))).status_code == 403
    response = await client.http.delete(f"{API}/sessions/{current}", headers=bearer(root))
    assert (response.status_code, response.json()) == (404, {"error": "Session not found"})


# --- webhooks --------------------------------------------------------------------------------


async def test_webhooks_are_managed_with_masked_secrets(make_client: MakeClient) -> None:
    """Webhooks are created, listed, changed and removed; their secret only ever shows as
    ***; stored scripts are refused."""
    client = admin_client(make_client)
    root = await root_token(client)
    response = await client.http.post(
        f"{API}/webhooks",
        json={"url": "https://hooks.example.com/in", "events": ["LOGOUT"], "secret": "s3cr3t!"},
        headers=bearer(root),
    )
    assert response.status_code == 200
    assert "s3cr3t!" not in response.text
    webhook = response.json()["webhook"]
    assert webhook["secret"] == "***"
    assert webhook["events"] == ["identity.auth.logout"]
    assert webhook["isActive"] is True
    listed = (await client.http.get(f"{API}/webhooks", headers=bearer(root))).json()
    assert listed["total"] == 1
    assert listed["webhooks"][0]["secret"] == "***"
    assert "s3cr3t!" not in str(listed)
    url = f"{API}/webhooks/{webhook['id']}"
    response = await client.http.patch(
        url, json={"isActive": False, "secret": ""}, headers=bearer(root)
    )
    assert (response.status_code, response.json()) == (200, {"success": True})
    row = await Webhook.get(id=webhook["id"])
    assert (row.is_active, row.secret_encrypted) == (False, None)
    assert (await client.http.delete(url, headers=bearer(root))).json() == {"success": True}
    assert (await client.http.delete(url, headers=bearer(root))).status_code == 404
    for body, error in (
        ({}, "url is required"),
        ({"url": "https://x.example", "jsScript": "return 1"}, None),
        ({"url": "ftp://x.example"}, None),
    ):
        response = await client.http.post(f"{API}/webhooks", json=body, headers=bearer(root))
        assert response.status_code == 400, body
        if error:
            assert response.json() == {"error": error}
    assert await Webhook.all().count() == 0


# --- API keys --------------------------------------------------------------------------------


async def test_api_keys_show_the_raw_key_once(make_client: MakeClient) -> None:
    """Creating a key returns rawKey once; lists show its prefix and never the key; revoke
    and delete both revoke (delete says so in a note); the key then stops working."""
    client = admin_client(make_client)
    root = await root_token(client)
    created = await new_key(client, root, "tools:track")
    raw = created["rawKey"]
    record = created["record"]
    assert raw.startswith(record["keyPrefix"])
    assert record["scopes"] == ["tools:track"]
    assert record["isActive"] is True
    response = await client.http.get(f"{API}/api-keys", headers=bearer(root))
    assert_safe(response)
    assert raw not in response.text
    listed = response.json()
    assert listed["total"] == 1
    assert listed["keys"][0]["id"] == record["id"]
    track = "/tools/track/app.opened"
    assert (await client.http.post(track, headers={"x-api-key": raw})).status_code == 202
    response = await client.http.delete(f"{API}/api-keys/{record['id']}", headers=bearer(root))
    assert response.status_code == 200
    assert response.json()["success"] is True
    assert response.json()["note"]
    assert (await client.http.post(track, headers={"x-api-key": raw})).status_code == 401
    listed = (await client.http.get(f"{API}/api-keys", headers=bearer(root))).json()
    assert listed["keys"][0]["isActive"] is False
    other = await new_key(client, root)
    url = f"{API}/api-keys/{other['record']['id']}/revoke"
    assert (await client.http.delete(url, headers=bearer(root))).json() == {"success": True}
    response = await client.http.delete(f"{API}/api-keys/nope/revoke", headers=bearer(root))
    assert (response.status_code, response.json()) == (404, {"error": "API key not found"})
    response = await client.http.post(f"{API}/api-keys", json={}, headers=bearer(root))
    assert (response.status_code, response.json()) == (400, {"error": "name is required"})
    response = await client.http.post(
        f"{API}/api-keys", json={"name": "x", "expiresAt": "soon"}, headers=bearer(root)
    )
    assert response.status_code == 400


async def test_inbound_webhook_providers_are_listed_with_their_secret(
    make_client: MakeClient,
) -> None:
    """Admins read each inbound provider's URL and signing secret (authql's own route)."""
    client = admin_client(make_client)
    root = await root_token(client)
    body = (await client.http.get(f"{API}/inbound-webhooks", headers=bearer(root))).json()
    generic = next(item for item in body["providers"] if item["provider"] == "generic")
    assert generic["url"].endswith("/tools/webhook/generic")
    assert len(generic["secret"]) == 64


async def test_openapi_lists_the_admin_routes(make_client: MakeClient) -> None:
    """/admin/api/openapi.json documents the admin routes."""
    client = admin_client(make_client)
    document = (await client.http.get(f"{API}/openapi.json")).json()
    assert {"/admin/api/users", "/admin/api/api-keys", "/admin/api/roles/{name}"} <= set(
        document["paths"]
    )
    assert (await client.http.get(f"{API}/settings")).status_code == 404
