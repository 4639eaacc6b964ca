"""The node-auth (awesome-node-auth) dialect at /auth: cookie and bearer token delivery,
node-auth's bodies and status codes, CSRF double-submit, and the shared sessions behind it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from authql.models import RefreshToken, Session
from authql.resolvers import accounts
from authql.services.clock import FrozenClock
from tests.support import PASSWORD, GraphQLClient, set_cookies

MakeClient = Callable[..., GraphQLClient]

PREFIX = "/auth"
EMAIL = "ada@example.com"
NEW_PASSWORD = "a brand new passphrase"
BEARER = {"x-auth-strategy": "bearer"}
ACCESS_TTL = 900
REFRESH_TTL = 1_209_600
ME_KEYS = {
    "sub",
    "email",
    "role",
    "roles",
    "loginProvider",
    "isEmailVerified",
    "isTotpEnabled",
    "sid",
}
SESSION_KEYS = {
    "sessionHandle",
    "userId",
    "createdAt",
    "expiresAt",
    "lastActiveAt",
    "ipAddress",
    "userAgent",
    "current",
}
NO_TOKEN = {"error": "No access token provided"}
BAD_TOKEN = {"error": "Invalid or expired access token"}
CSRF_INVALID = {"error": "CSRF token validation failed", "code": "CSRF_INVALID"}
INVALID_CREDENTIALS = {"error": "Invalid credentials", "code": "INVALID_CREDENTIALS"}
INVALID_REFRESH = {"error": "Invalid refresh token", "code": "INVALID_REFRESH_TOKEN"}


# --- helpers ---------------------------------------------------------------------------------


async def assert_no_secrets(response: httpx.Response) -> None:
    """Neither the body nor any header holds a password hash, a stored token digest or a
    TOTP secret (the lower-case word "totp"; the documented flag ``isTotpEnabled`` is a
    boolean and is matched case-sensitively, so it passes, and the documented request field
    ``totpCode`` named in openapi.json is removed before the check)."""
    text = response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
    text = text.replace('"totpCode"', "")
    assert "$argon2" not in text
    assert "totp" not in text
    assert "otpauth" not in text.lower()
    digests = [*await RefreshToken.all().values_list("digest", flat=True)]
    digests += [d for d in await Session.all().values_list("token_digest", flat=True) if d]
    for digest in digests:
        assert digest not in text


class NodeAuth:
    """Sends requests to the dialect and checks every answer for leaked secrets."""

    def __init__(self, client: GraphQLClient) -> None:
        self.client = client
        self.http = client.http

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, PREFIX + path, **kwargs)
        await assert_no_secrets(response)
        return response

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.call("POST", path, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.call("GET", path, **kwargs)

    async def register(self, email: str = EMAIL, **fields: Any) -> httpx.Response:
        return await self.post("/register", json={"email": email, "password": PASSWORD, **fields})

    async def login(
        self, email: str = EMAIL, password: str = PASSWORD, *, bearer: bool = False
    ) -> httpx.Response:
        headers = BEARER if bearer else {}
        return await self.post(
            "/login", json={"email": email, "password": password}, headers=headers
        )

    async def tokens(self, email: str = EMAIL) -> dict[str, str]:
        """Log in in bearer mode and return the body (accessToken, refreshToken)."""
        response = await self.login(email, bearer=True)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


def node_auth(make_client: MakeClient, **overrides: Any) -> NodeAuth:
    return NodeAuth(make_client(rest_dialects=(("node-auth", PREFIX),), **overrides))


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def assert_cookie(
    cookie: dict[str, str], *, path: str, max_age: int, http_only: bool = True
) -> None:
    assert cookie["path"] == path
    assert int(cookie["max-age"]) == max_age
    assert cookie["samesite"].lower() == "lax"
    assert ("httponly" in cookie) is http_only


def assert_cleared(cookie: dict[str, str], *, path: str) -> None:
    assert cookie["path"] == path
    assert int(cookie["max-age"]) == 0


# --- register --------------------------------------------------------------------------------


async def test_register_answers_201_with_the_user_id_and_no_tokens(make_client: MakeClient) -> None:
    """POST /register answers 201 {success, userId}, sets no cookie, and the account logs in."""
    api = node_auth(make_client)
    response = await api.register()
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"success", "userId"} and body["success"] is True
    assert "set-cookie" not in response.headers
    login = await api.login()
    assert login.status_code == 200
    me = await api.get("/me")
    assert me.json()["sub"] == body["userId"]


async def test_register_maps_the_profile_fields(make_client: MakeClient) -> None:
    """username, firstName, lastName and phoneNumber are stored; the username logs in."""
    api = node_auth(make_client)
    response = await api.register(
        username="ada_l", firstName="Ada", lastName="Lovelace", phoneNumber="+14155550100"
    )
    assert response.status_code == 201
    login = await api.post("/login", json={"identifier": "ada_l", "password": PASSWORD})
    assert login.status_code == 200
    me = (await api.get("/me")).json()
    assert me["firstName"] == "Ada" and me["lastName"] == "Lovelace"
    profile = await api.client.gql(
        "query { me { username phone } }", token=(await api.tokens())["accessToken"]
    )
    assert profile.data["me"] == {"username": "ada_l", "phone": "+14155550100"}


async def test_register_validation_errors(make_client: MakeClient) -> None:
    """Missing email or password, and invalid values, answer 400 VALIDATION_ERROR."""
    api = node_auth(make_client)
    missing = await api.post("/register", json={"email": EMAIL})
    assert missing.status_code == 400
    assert missing.json() == {
        "error": "email and password are required",
        "code": "VALIDATION_ERROR",
    }
    invalid = await api.post("/register", json={"email": "not-an-email", "password": "short"})
    assert invalid.status_code == 400
    body = invalid.json()
    assert set(body) == {"error", "code"} and body["code"] == "VALIDATION_ERROR"
    assert "email" in body["error"] and "password" in body["error"]
    mistyped = await api.post("/register", json={"email": EMAIL, "password": PASSWORD, "name": 5})
    assert mistyped.status_code == 400 and mistyped.json()["code"] == "VALIDATION_ERROR"
    malformed = await api.post(
        "/register", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400 and malformed.json()["code"] == "VALIDATION_ERROR"


async def test_register_conflicts_answer_409(make_client: MakeClient) -> None:
    """A taken email (any case) or username answers 409 USER_ALREADY_EXISTS."""
    api = node_auth(make_client)
    assert (await api.register(username="ada_l")).status_code == 201
    taken = await api.register("ADA@example.com")
    assert taken.status_code == 409
    assert taken.json() == {
        "error": "Email address is already in use",
        "code": "USER_ALREADY_EXISTS",
    }
    username = await api.register("other@example.com", username="ADA_L")
    assert username.status_code == 409
    assert username.json() == {"error": "Username is already in use", "code": "USER_ALREADY_EXISTS"}


async def test_register_is_rate_limited_per_ip(make_client: MakeClient) -> None:
    """The shared per-ip registration budget answers 429 RATE_LIMITED with Retry-After."""
    api = node_auth(make_client, rate_limits={"register_ip": (1, 3600)})
    assert (await api.register()).status_code == 201
    limited = await api.register("bob@example.com")
    assert limited.status_code == 429
    assert limited.json()["code"] == "RATE_LIMITED"
    assert int(limited.headers["retry-after"]) > 0


# --- login -----------------------------------------------------------------------------------


async def test_login_sets_http_only_cookies_and_no_tokens_in_the_body(
    make_client: MakeClient,
) -> None:
    """Cookie mode: {success:true}, accessToken at / for the access ttl, refreshToken at
    <prefix>/refresh for the refresh ttl, both HttpOnly and SameSite=Lax, no CSRF cookie."""
    api = node_auth(make_client)
    await api.register()
    response = await api.login()
    assert response.status_code == 200
    assert response.json() == {"success": True}
    assert response.headers["cache-control"] == "no-store"
    cookies = set_cookies(response)
    assert set(cookies) == {"accessToken", "refreshToken"}
    assert_cookie(cookies["accessToken"], path="/", max_age=ACCESS_TTL)
    assert_cookie(cookies["refreshToken"], path="/auth/refresh", max_age=REFRESH_TTL)
    assert all("secure" not in cookie for cookie in cookies.values())
    assert (await api.get("/me")).status_code == 200


async def test_login_bearer_strategy_returns_tokens_and_sets_no_cookie(
    make_client: MakeClient,
) -> None:
    """X-Auth-Strategy: bearer answers {success, accessToken, refreshToken} without cookies."""
    api = node_auth(make_client)
    await api.register()
    response = await api.login(bearer=True)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"success", "accessToken", "refreshToken"} and body["success"] is True
    assert "set-cookie" not in response.headers
    me = await api.get("/me", headers=auth(body["accessToken"]))
    assert me.status_code == 200 and me.json()["email"] == EMAIL


async def test_login_failures_do_not_enumerate_accounts(make_client: MakeClient) -> None:
    """Unknown user, wrong password and missing fields all answer the same 401 body."""
    api = node_auth(make_client)
    await api.register()
    wrong = await api.login(password="wrong password!")
    unknown = await api.login("nobody@example.com", "wrong password!")
    missing = await api.post("/login", json={"email": EMAIL})
    for response in (wrong, unknown, missing):
        assert response.status_code == 401
        assert response.json() == INVALID_CREDENTIALS
        assert "set-cookie" not in response.headers


async def test_login_of_an_unverified_account_is_403(make_client: MakeClient) -> None:
    """With email verification required, login answers 403 EMAIL_NOT_VERIFIED."""
    api = node_auth(make_client, require_email_verification=True)
    assert (await api.register()).status_code == 201
    response = await api.login()
    assert response.status_code == 403
    assert response.json() == {
        "error": "Email address is not verified",
        "code": "EMAIL_NOT_VERIFIED",
    }
    assert "set-cookie" not in response.headers


async def test_login_lockout_answers_423_with_retry_after(make_client: MakeClient) -> None:
    """After the lockout threshold even the right password answers 423 ACCOUNT_LOCKED."""
    api = node_auth(make_client, lockout_threshold=3)
    await api.register()
    for _ in range(3):
        assert (await api.login(password="wrong password!")).status_code == 401
    locked = await api.login()
    assert locked.status_code == 423
    assert locked.json() == {"error": "Account temporarily locked", "code": "ACCOUNT_LOCKED"}
    assert int(locked.headers["retry-after"]) > 0


async def test_login_rate_limit_answers_429_with_retry_after(make_client: MakeClient) -> None:
    """The shared per-ip login budget answers 429 RATE_LIMITED with Retry-After."""
    api = node_auth(make_client, rate_limits={"login_ip": (2, 60)})
    await api.register()
    assert (await api.login()).status_code == 200
    assert (await api.login()).status_code == 200
    limited = await api.login()
    assert limited.status_code == 429
    assert limited.json() == {
        "error": "Too many requests. Try again later",
        "code": "RATE_LIMITED",
    }
    assert int(limited.headers["retry-after"]) > 0


async def test_secure_cookie_names_over_https(make_client: MakeClient) -> None:
    """With an https public URL the cookies are __Host-accessToken and the path-scoped
    __Secure-refreshToken, both Secure; only the prefixed names are read back."""
    api = node_auth(make_client, public_url="https://auth.example.com")
    await api.register()
    response = await api.login()
    cookies = set_cookies(response)
    assert set(cookies) == {"__Host-accessToken", "__Secure-refreshToken"}
    assert_cookie(cookies["__Host-accessToken"], path="/", max_age=ACCESS_TTL)
    assert_cookie(cookies["__Secure-refreshToken"], path="/auth/refresh", max_age=REFRESH_TTL)
    assert all("secure" in cookie for cookie in cookies.values())
    access = cookies["__Host-accessToken"]["value"]
    refresh = cookies["__Secure-refreshToken"]["value"]
    api.http.cookies.clear()
    me = await api.get("/me", headers={"cookie": f"__Host-accessToken={access}"})
    assert me.status_code == 200
    bare = await api.get("/me", headers={"cookie": f"accessToken={access}"})
    assert bare.status_code == 403 and bare.json() == NO_TOKEN
    rotated = await api.post("/refresh", headers={"cookie": f"__Secure-refreshToken={refresh}"})
    assert rotated.status_code == 200
    assert set(set_cookies(rotated)) == {"__Host-accessToken", "__Secure-refreshToken"}
    logout = await api.post("/logout", headers={"cookie": f"__Host-accessToken={access}"})
    cleared = set_cookies(logout)
    assert_cleared(cleared["__Host-accessToken"], path="/")
    assert_cleared(cleared["__Secure-refreshToken"], path="/auth/refresh")


# --- logout ----------------------------------------------------------------------------------


async def test_logout_revokes_the_cookie_session_and_clears_cookies(
    make_client: MakeClient,
) -> None:
    """Logout answers {success:true}, expires both cookies and kills the access token."""
    api = node_auth(make_client)
    await api.register()
    login = await api.login()
    access = set_cookies(login)["accessToken"]["value"]
    response = await api.post("/logout")
    assert response.status_code == 200
    assert response.json() == {"success": True}
    cookies = set_cookies(response)
    assert set(cookies) == {"accessToken", "refreshToken"}
    assert_cleared(cookies["accessToken"], path="/")
    assert_cleared(cookies["refreshToken"], path="/auth/refresh")
    refused = await api.get("/me", headers=auth(access))
    assert refused.status_code == 403 and refused.json() == BAD_TOKEN


async def test_logout_revokes_a_bearer_session(make_client: MakeClient) -> None:
    """A Bearer logout revokes that session: its access and refresh tokens die."""
    api = node_auth(make_client)
    await api.register()
    tokens = await api.tokens()
    response = await api.post("/logout", headers=auth(tokens["accessToken"]))
    assert response.status_code == 200 and response.json() == {"success": True}
    assert (await api.get("/me", headers=auth(tokens["accessToken"]))).status_code == 403
    refresh = await api.post(
        "/refresh", json={"refreshToken": tokens["refreshToken"]}, headers=BEARER
    )
    assert refresh.status_code == 401 and refresh.json() == INVALID_REFRESH


async def test_logout_never_fails(make_client: MakeClient) -> None:
    """Without a credential, or with a dead one, logout still answers {success:true}."""
    api = node_auth(make_client)
    anonymous = await api.post("/logout")
    assert anonymous.status_code == 200 and anonymous.json() == {"success": True}
    dead = await api.post("/logout", headers={"cookie": "accessToken=garbage"})
    assert dead.status_code == 200 and dead.json() == {"success": True}
    bad_bearer = await api.post("/logout", headers=auth("garbage"))
    assert bad_bearer.status_code == 200


# --- refresh ---------------------------------------------------------------------------------


async def test_refresh_with_the_cookie_rotates_and_sets_new_cookies(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """The refresh cookie buys new cookies; the refresh cookie's Max-Age is what is left of
    the session, and the old refresh token is single use."""
    api = node_auth(make_client)
    await api.register()
    old_refresh = set_cookies(await api.login())["refreshToken"]["value"]
    clock.advance(600)
    response = await api.post("/refresh")
    assert response.status_code == 200
    assert response.json() == {"success": True}
    cookies = set_cookies(response)
    assert set(cookies) == {"accessToken", "refreshToken"}
    assert_cookie(cookies["accessToken"], path="/", max_age=ACCESS_TTL)
    assert_cookie(cookies["refreshToken"], path="/auth/refresh", max_age=REFRESH_TTL - 600)
    assert cookies["refreshToken"]["value"] != old_refresh
    assert (await api.get("/me")).status_code == 200
    api.http.cookies.clear()
    reused = await api.post("/refresh", headers={"cookie": f"refreshToken={old_refresh}"})
    assert reused.status_code == 401 and reused.json() == INVALID_REFRESH


async def test_refresh_bearer_strategy_returns_tokens(make_client: MakeClient) -> None:
    """A body refresh token with X-Auth-Strategy: bearer returns a new pair, no cookies;
    reusing the old one is refused and revokes the session."""
    api = node_auth(make_client)
    await api.register()
    tokens = await api.tokens()
    response = await api.post(
        "/refresh", json={"refreshToken": tokens["refreshToken"]}, headers=BEARER
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"success", "accessToken", "refreshToken"} and body["success"] is True
    assert "set-cookie" not in response.headers
    assert (await api.get("/me", headers=auth(body["accessToken"]))).status_code == 200
    reused = await api.post(
        "/refresh", json={"refreshToken": tokens["refreshToken"]}, headers=BEARER
    )
    assert reused.status_code == 401 and reused.json() == INVALID_REFRESH
    assert (await api.get("/me", headers=auth(body["accessToken"]))).status_code == 403


async def test_refresh_without_a_token_is_401(make_client: MakeClient) -> None:
    """No cookie and no body token: 401 {error:'No refresh token provided'}; junk: 401."""
    api = node_auth(make_client)
    missing = await api.post("/refresh")
    assert missing.status_code == 401
    assert missing.json() == {"error": "No refresh token provided"}
    junk = await api.post("/refresh", json={"refreshToken": "junk"})
    assert junk.status_code == 401 and junk.json() == INVALID_REFRESH


# --- me and profile --------------------------------------------------------------------------


async def test_me_returns_flat_claims(make_client: MakeClient) -> None:
    """GET /me answers node-auth's claims: sub (not id), role, roles, loginProvider,
    isEmailVerified, isTotpEnabled and sid; names only when set."""
    api = node_auth(make_client)
    user_id = (await api.register()).json()["userId"]
    tokens = await api.tokens()
    response = await api.get("/me", headers=auth(tokens["accessToken"]))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == ME_KEYS
    assert body["sub"] == user_id and body["email"] == EMAIL
    assert body["role"] == "user" and body["roles"] == []
    assert body["loginProvider"] == "local"
    assert body["isEmailVerified"] is False and body["isTotpEnabled"] is False
    sessions = (await api.get("/sessions", headers=auth(tokens["accessToken"]))).json()
    assert body["sid"] == sessions["sessions"][0]["sessionHandle"]


async def test_me_refusals_are_403(make_client: MakeClient) -> None:
    """No credential: 403 'No access token provided'; a bad one: 403 'Invalid or expired
    access token'; a Bearer header wins over a valid cookie."""
    api = node_auth(make_client)
    await api.register()
    await api.login()
    api.http.cookies.clear()
    none = await api.get("/me")
    assert none.status_code == 403 and none.json() == NO_TOKEN
    bad = await api.get("/me", headers=auth("garbage"))
    assert bad.status_code == 403 and bad.json() == BAD_TOKEN
    bad_cookie = await api.get("/me", headers={"cookie": "accessToken=garbage"})
    assert bad_cookie.status_code == 403 and bad_cookie.json() == BAD_TOKEN
    await api.login()
    bearer_first = await api.get("/me", headers=auth("garbage"))
    assert bearer_first.status_code == 403 and bearer_first.json() == BAD_TOKEN


async def test_me_refuses_an_expired_access_token(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """Past the access ttl the token answers 403 'Invalid or expired access token'."""
    api = node_auth(make_client)
    await api.register()
    token = (await api.tokens())["accessToken"]
    clock.advance(ACCESS_TTL + 1)
    expired = await api.get("/me", headers=auth(token))
    assert expired.status_code == 403 and expired.json() == BAD_TOKEN


async def test_profile_updates_first_and_last_name(make_client: MakeClient) -> None:
    """PATCH /profile answers {success:true}; /me shows the names; null clears one."""
    api = node_auth(make_client)
    await api.register()
    await api.login()
    response = await api.call("PATCH", "/profile", json={"firstName": "Ada", "lastName": "L"})
    assert response.status_code == 200 and response.json() == {"success": True}
    me = (await api.get("/me")).json()
    assert me["firstName"] == "Ada" and me["lastName"] == "L"
    cleared = await api.call("PATCH", "/profile", json={"lastName": None})
    assert cleared.status_code == 200
    me = (await api.get("/me")).json()
    assert me["firstName"] == "Ada" and "lastName" not in me
    mistyped = await api.call("PATCH", "/profile", json={"firstName": 5})
    assert mistyped.status_code == 400 and mistyped.json()["code"] == "VALIDATION_ERROR"
    api.http.cookies.clear()
    anonymous = await api.call("PATCH", "/profile", json={"firstName": "Eve"})
    assert anonymous.status_code == 403 and anonymous.json() == NO_TOKEN


# --- change-password -------------------------------------------------------------------------


async def test_change_password_revokes_other_sessions(make_client: MakeClient) -> None:
    """{success:true}; the current session stays, the others die, the new password works."""
    api = node_auth(make_client)
    await api.register()
    other = await api.tokens()
    current = await api.tokens()
    response = await api.post(
        "/change-password",
        json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD},
        headers=auth(current["accessToken"]),
    )
    assert response.status_code == 200 and response.json() == {"success": True}
    assert (await api.get("/me", headers=auth(current["accessToken"]))).status_code == 200
    assert (await api.get("/me", headers=auth(other["accessToken"]))).status_code == 403
    assert (await api.login()).status_code == 401
    assert (await api.login(password=NEW_PASSWORD)).status_code == 200


async def test_change_password_errors(make_client: MakeClient) -> None:
    """Wrong current password: 401 'Current password is incorrect'; weak new one: 400;
    no credential: 403."""
    api = node_auth(make_client)
    await api.register()
    token = (await api.tokens())["accessToken"]
    wrong = await api.post(
        "/change-password",
        json={"currentPassword": "not my password", "newPassword": NEW_PASSWORD},
        headers=auth(token),
    )
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "Current password is incorrect"}
    weak = await api.post(
        "/change-password",
        json={"currentPassword": PASSWORD, "newPassword": "short"},
        headers=auth(token),
    )
    assert weak.status_code == 400 and weak.json()["code"] == "VALIDATION_ERROR"
    anonymous = await api.post(
        "/change-password", json={"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}
    )
    assert anonymous.status_code == 403 and anonymous.json() == NO_TOKEN


# --- sessions --------------------------------------------------------------------------------


async def test_sessions_list_in_session_info_shape(make_client: MakeClient) -> None:
    """GET /sessions answers {sessions:[SessionInfo + current]} for the caller only."""
    api = node_auth(make_client)
    user_id = (await api.register()).json()["userId"]
    await api.register("bob@example.com")
    await api.tokens("bob@example.com")
    await api.tokens()
    token = (await api.tokens())["accessToken"]
    response = await api.get("/sessions", headers=auth(token))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"sessions"} and len(body["sessions"]) == 2
    for info in body["sessions"]:
        assert set(info) == SESSION_KEYS
        assert info["userId"] == user_id
        assert info["ipAddress"] == "203.0.113.7"
        assert info["createdAt"].endswith("Z") and info["expiresAt"].endswith("Z")
    assert [info["current"] for info in body["sessions"]].count(True) == 1
    anonymous = await api.get("/sessions")
    assert anonymous.status_code == 403 and anonymous.json() == NO_TOKEN


async def test_delete_session_revokes_only_own_sessions(make_client: MakeClient) -> None:
    """DELETE /sessions/{handle} revokes one of the caller's sessions; another user's or an
    unknown handle answers 404 {error:'Session not found'}."""
    api = node_auth(make_client)
    await api.register()
    await api.register("bob@example.com")
    bob = await api.tokens("bob@example.com")
    other = await api.tokens()
    token = (await api.tokens())["accessToken"]
    bob_sid = (await api.get("/me", headers=auth(bob["accessToken"]))).json()["sid"]
    other_sid = (await api.get("/me", headers=auth(other["accessToken"]))).json()["sid"]
    for handle in (bob_sid, "not-a-session"):
        response = await api.call("DELETE", f"/sessions/{handle}", headers=auth(token))
        assert response.status_code == 404
        assert response.json() == {"error": "Session not found"}
    assert (await api.get("/me", headers=auth(bob["accessToken"]))).status_code == 200
    response = await api.call("DELETE", f"/sessions/{other_sid}", headers=auth(token))
    assert response.status_code == 200 and response.json() == {"success": True}
    assert (await api.get("/me", headers=auth(other["accessToken"]))).status_code == 403
    assert (await api.get("/me", headers=auth(token))).status_code == 200


async def test_sessions_cleanup_needs_an_admin(make_client: MakeClient) -> None:
    """POST /sessions/cleanup: 403 anonymously and for non-admins; an admin gets
    {success:true, deleted:n} counting dead sessions."""
    api = node_auth(make_client)
    await api.register()
    await accounts.create_admin(
        api.client.services.passwords, email="root@example.com", password=PASSWORD
    )
    user = await api.tokens()
    anonymous = await api.post("/sessions/cleanup")
    assert anonymous.status_code == 403 and anonymous.json() == NO_TOKEN
    forbidden = await api.post("/sessions/cleanup", headers=auth(user["accessToken"]))
    assert forbidden.status_code == 403 and forbidden.json() == {"error": "Forbidden"}
    await api.post("/logout", headers=auth(user["accessToken"]))
    admin_token = (await api.tokens("root@example.com"))["accessToken"]
    response = await api.post("/sessions/cleanup", headers=auth(admin_token))
    assert response.status_code == 200
    assert response.json() == {"success": True, "deleted": 1}


# --- CSRF ------------------------------------------------------------------------------------


async def test_csrf_cookie_and_header_when_enabled(make_client: MakeClient) -> None:
    """With CSRF on, login also sets a readable csrf-token cookie; cookie-authenticated
    non-GET requests need a matching X-CSRF-Token header, GETs do not."""
    api = node_auth(make_client, node_auth_csrf=True)
    await api.register()
    login = await api.login()
    cookies = set_cookies(login)
    assert set(cookies) == {"accessToken", "refreshToken", "csrf-token"}
    assert_cookie(cookies["csrf-token"], path="/", max_age=ACCESS_TTL, http_only=False)
    csrf = cookies["csrf-token"]["value"]
    assert (await api.get("/me")).status_code == 200
    missing = await api.call("PATCH", "/profile", json={"firstName": "Ada"})
    assert missing.status_code == 403 and missing.json() == CSRF_INVALID
    wrong = await api.call(
        "PATCH", "/profile", json={"firstName": "Ada"}, headers={"x-csrf-token": "nope"}
    )
    assert wrong.status_code == 403 and wrong.json() == CSRF_INVALID
    good = await api.call(
        "PATCH", "/profile", json={"firstName": "Ada"}, headers={"x-csrf-token": csrf}
    )
    assert good.status_code == 200 and good.json() == {"success": True}


async def test_csrf_exempts_bearer_requests(make_client: MakeClient) -> None:
    """Bearer logins get no cookie at all, and Bearer requests need no CSRF header."""
    api = node_auth(make_client, node_auth_csrf=True)
    await api.register()
    login = await api.login(bearer=True)
    assert "set-cookie" not in login.headers
    token = login.json()["accessToken"]
    response = await api.call("PATCH", "/profile", json={"firstName": "Ada"}, headers=auth(token))
    assert response.status_code == 200
    assert "set-cookie" not in response.headers


async def test_csrf_guards_a_cookie_logout(make_client: MakeClient) -> None:
    """A cookie logout needs the header (403 CSRF_INVALID otherwise, session intact); with
    it, the session is revoked and the csrf-token cookie cleared too."""
    api = node_auth(make_client, node_auth_csrf=True)
    await api.register()
    cookies = set_cookies(await api.login())
    access, csrf = cookies["accessToken"]["value"], cookies["csrf-token"]["value"]
    refused = await api.post("/logout")
    assert refused.status_code == 403 and refused.json() == CSRF_INVALID
    assert (await api.get("/me", headers=auth(access))).status_code == 200
    response = await api.post("/logout", headers={"x-csrf-token": csrf})
    assert response.status_code == 200 and response.json() == {"success": True}
    cleared = set_cookies(response)
    assert set(cleared) == {"accessToken", "refreshToken", "csrf-token"}
    assert_cleared(cleared["csrf-token"], path="/")
    assert (await api.get("/me", headers=auth(access))).status_code == 403
    api.http.cookies.clear()
    dead = await api.post("/logout", headers={"cookie": f"accessToken={access}"})
    assert dead.status_code == 200


async def test_csrf_cookie_is_reissued_when_missing(make_client: MakeClient) -> None:
    """A cookie-mode client without a csrf-token cookie gets a fresh one, so it can retry."""
    api = node_auth(make_client, node_auth_csrf=True)
    await api.register()
    access = set_cookies(await api.login())["accessToken"]["value"]
    api.http.cookies.clear()
    refused = await api.call(
        "PATCH", "/profile", json={"lastName": "L"}, headers={"cookie": f"accessToken={access}"}
    )
    assert refused.status_code == 403 and refused.json() == CSRF_INVALID
    csrf = set_cookies(refused)["csrf-token"]["value"]
    retried = await api.call(
        "PATCH",
        "/profile",
        json={"lastName": "L"},
        headers={"cookie": f"accessToken={access}; csrf-token={csrf}", "x-csrf-token": csrf},
    )
    assert retried.status_code == 200


async def test_csrf_is_off_by_default(make_client: MakeClient) -> None:
    """Without node_auth_csrf no csrf-token cookie is set and no header is needed."""
    api = node_auth(make_client)
    await api.register()
    assert "csrf-token" not in set_cookies(await api.login())
    response = await api.call("PATCH", "/profile", json={"firstName": "Ada"})
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert (await api.post("/logout")).status_code == 200


# --- one account, every surface --------------------------------------------------------------


async def test_graphql_account_logs_in_over_node_auth_and_back(make_client: MakeClient) -> None:
    """An account registered over GraphQL logs in here, and one registered here logs in
    over GraphQL."""
    api = node_auth(make_client)
    await api.client.register("grace@example.com")
    assert (await api.login("grace@example.com")).status_code == 200
    assert (await api.register()).status_code == 201
    result = await api.client.login(EMAIL)
    assert result.data["login"]["status"] == "OK"


async def test_graphql_logout_is_refused_here(make_client: MakeClient) -> None:
    """A session revoked by GraphQL logout is refused by /me and /refresh at once."""
    api = node_auth(make_client)
    await api.register()
    tokens = await api.tokens()
    result = await api.client.gql("mutation { logout }", token=tokens["accessToken"])
    assert result.data["logout"] is True
    me = await api.get("/me", headers=auth(tokens["accessToken"]))
    assert me.status_code == 403 and me.json() == BAD_TOKEN
    refresh = await api.post(
        "/refresh", json={"refreshToken": tokens["refreshToken"]}, headers=BEARER
    )
    assert refresh.status_code == 401 and refresh.json() == INVALID_REFRESH


# --- framework -------------------------------------------------------------------------------


async def test_openapi_lists_every_endpoint(make_client: MakeClient) -> None:
    """<prefix>/openapi.json documents every route this dialect serves."""
    api = node_auth(make_client)
    response = await api.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    served = {(method, path) for path, operations in paths.items() for method in operations}
    assert served == {
        ("post", "/auth/register"),
        ("post", "/auth/login"),
        ("post", "/auth/logout"),
        ("post", "/auth/refresh"),
        ("get", "/auth/me"),
        ("patch", "/auth/profile"),
        ("post", "/auth/change-password"),
        ("get", "/auth/sessions"),
        ("delete", "/auth/sessions/{handle}"),
        ("post", "/auth/sessions/cleanup"),
        ("post", "/auth/forgot-password"),
        ("post", "/auth/reset-password"),
        ("post", "/auth/send-verification-email"),
        ("get", "/auth/verify-email"),
        ("post", "/auth/change-email/request"),
        ("post", "/auth/change-email/confirm"),
        ("post", "/auth/magic-link/send"),
        ("post", "/auth/magic-link/verify"),
        ("post", "/auth/sms/send"),
        ("post", "/auth/sms/verify"),
        ("post", "/auth/add-phone"),
        ("post", "/auth/2fa/setup"),
        ("post", "/auth/2fa/verify-setup"),
        ("post", "/auth/2fa/verify"),
        ("post", "/auth/2fa/disable"),
        ("get", "/auth/oauth/{provider}"),
        ("get", "/auth/oauth/{provider}/callback"),
        ("get", "/auth/linked-accounts"),
        ("delete", "/auth/linked-accounts/{provider}/{providerAccountId}"),
        ("post", "/auth/link-request"),
        ("post", "/auth/link-verify"),
        ("delete", "/auth/account"),
    }


async def test_unexpected_errors_answer_500_without_internals(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unplanned failure answers 500 {error:'Internal server error'} and nothing more."""
    from authql.resolvers import sessions

    async def boom(*_: Any, **__: Any) -> None:
        raise RuntimeError("secret internals")

    api = node_auth(make_client)
    await api.register()
    token = (await api.tokens())["accessToken"]
    monkeypatch.setattr(sessions, "my_sessions", boom)
    response = await api.get("/sessions", headers=auth(token))
    assert response.status_code == 500
    assert response.json() == {"error": "Internal server error"}
