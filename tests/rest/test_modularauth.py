"""The ModularAuth-Kit dialect at /auth: envelope bodies, the ``sid`` session cookie, CSRF
double submit, its error table, rate limits, and one account shared with GraphQL."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from authql.models import RefreshToken, Session
from authql.resolvers import sessions as sessions_resolvers
from authql.services.clock import FrozenClock
from authql.settings import DEFAULT_RATE_LIMITS
from tests.support import PASSWORD, GraphQLClient

PREFIX = "/auth"
DIALECTS = (("modularauth", PREFIX),)
EMAIL = "ada@example.com"
NEW_PASSWORD = "a brand new passphrase"
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
USER_KEYS = {"_id", "email", "isEmailVerified", "failedLoginAttempts", "createdAt", "updatedAt"}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LOGOUT = "mutation { logout }"
LOGOUT_ALL = "mutation { logoutAll }"

MakeClient = Callable[..., GraphQLClient]


def error(code: str, message: str, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A ModularAuth-Kit error body."""
    return {"success": False, "error": {"code": code, "message": message, "details": details or []}}


async def assert_no_secrets(response: httpx.Response) -> None:
    """No password hash, stored token digest or 2FA wording in the body or headers."""
    headers = "\n".join(f"{key}: {value}" for key, value in response.headers.multi_items())
    text = response.text + "\n" + headers
    assert "$argon2" not in text
    assert "totp" not in text.lower()
    assert "passwordHash" not in text and "__v" not in text
    digests = await RefreshToken.all().values_list("digest", flat=True)
    digests += await Session.exclude(token_digest=None).values_list("token_digest", flat=True)
    for digest in digests:
        assert str(digest) not in text


def set_cookie(response: httpx.Response, name: str) -> str | None:
    """The Set-Cookie header for ``name`` in ``response``, if any."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header
    return None


def cookie_value(response: httpx.Response, name: str) -> str:
    header = set_cookie(response, name)
    assert header is not None, f"no {name} cookie set"
    return header.split(";", 1)[0].split("=", 1)[1]


def assert_cleared(response: httpx.Response, name: str = "sid") -> None:
    header = set_cookie(response, name)
    assert header is not None and "max-age=0" in header.lower()
    assert "path=/" in header.lower()


class Device:
    """One browser: its own cookie jar, a CSRF cookie from a first GET, the CSRF header on
    every mutation, and the secrets check on every response."""

    def __init__(self, client: GraphQLClient, user_agent: str = CHROME_WINDOWS) -> None:
        self.client = client
        self.http = client.http
        self.user_agent = user_agent

    async def prime(self) -> httpx.Response:
        """A first GET, as a browser app does, to receive the ``_csrf`` cookie."""
        return await self.call("GET", "/me")

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        csrf: bool = True,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = {"user-agent": self.user_agent, **(headers or {})}
        token = self.http.cookies.get("_csrf")
        if csrf and method != "GET" and token:
            sent.setdefault("x-csrf-token", token)
        response = await self.http.request(method, PREFIX + path, json=body, headers=sent)
        await assert_no_secrets(response)
        return response

    async def register(self, email: str = EMAIL, **fields: Any) -> httpx.Response:
        return await self.call(
            "POST", "/register", {"email": email, "password": PASSWORD, **fields}
        )

    async def login(self, identifier: str = EMAIL, password: str = PASSWORD) -> httpx.Response:
        return await self.call("POST", "/login", {"identifier": identifier, "password": password})


@pytest.fixture
def app_client(make_client: MakeClient) -> Callable[..., GraphQLClient]:
    """Clients for one app with the ModularAuth-Kit dialect at /auth."""
    app = None

    def make(**overrides: Any) -> GraphQLClient:
        nonlocal app
        if app is None:
            first = make_client(rest_dialects=DIALECTS, **overrides)
            app = first.app
            return first
        return make_client(app=app)

    return make


async def device(make: Callable[..., GraphQLClient], ua: str = CHROME_WINDOWS, **kw: Any) -> Device:
    browser = Device(make(**kw), ua)
    await browser.prime()
    return browser


async def signed_in(make: Callable[..., GraphQLClient], ua: str = CHROME_WINDOWS) -> Device:
    browser = await device(make, ua)
    assert (await browser.login()).status_code == 200
    return browser


# --- register ----------------------------------------------------------------------------------


async def test_register_answers_201_with_the_user_and_a_session_cookie(
    app_client: Callable[..., GraphQLClient],
) -> None:
    """Registration signs in: 201 envelope with the user and an HttpOnly ``sid`` cookie."""
    browser = await device(app_client)
    response = await browser.register()
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"success", "message", "data"}
    assert body["success"] is True and body["message"] == "Registration successful"
    user = body["data"]["user"]
    assert set(user) == USER_KEYS
    assert user["email"] == EMAIL and user["isEmailVerified"] is False
    assert user["failedLoginAttempts"] == 0
    assert uuid.UUID(user["_id"]) and ISO.match(user["createdAt"]) and ISO.match(user["updatedAt"])
    header = set_cookie(response, "sid")
    assert header is not None
    flags = [part.strip().lower() for part in header.split(";")]
    ttl = browser.client.services.settings.refresh_token_ttl
    assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
    assert f"max-age={ttl}" in flags and "secure" not in flags
    me = await browser.call("GET", "/me")
    assert me.status_code == 200 and me.json()["data"]["user"] == user


async def test_register_keeps_the_optional_profile_fields(
    app_client: Callable[..., GraphQLClient],
) -> None:
    """username (lower-cased), fullName, firstName and lastName come back on the user."""
    browser = await device(app_client)
    response = await browser.register(
        username="Ada_L", fullName="Ada Lovelace", firstName="Ada", lastName="Lovelace", role="x"
    )
    assert response.status_code == 201
    user = response.json()["data"]["user"]
    assert set(user) == USER_KEYS | {"username", "fullName", "firstName", "lastName"}
    assert user["username"] == "ada_l" and user["fullName"] == "Ada Lovelace"
    assert (user["firstName"], user["lastName"]) == ("Ada", "Lovelace")


async def test_register_validation_and_conflicts(app_client: Callable[..., GraphQLClient]) -> None:
    """Bad fields are 400 VALIDATION_ERROR with per-field details; a taken email or username
    is 409 CONFLICT with upstream's messages."""
    browser = await device(app_client)
    bad = await browser.call("POST", "/register", {"email": "nope", "password": "short"})
    assert bad.status_code == 400
    body = bad.json()
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert body["error"]["message"] == "Validation failed"
    assert {d["field"] for d in body["error"]["details"]} == {"email", "password"}
    missing = await browser.call("POST", "/register", {})
    assert {d["field"] for d in missing.json()["error"]["details"]} == {"email", "password"}
    too_long = await browser.register("long@example.com", fullName="x" * 300)
    assert [d["field"] for d in too_long.json()["error"]["details"]] == ["fullName"]
    typed = await browser.call("POST", "/register", {"email": 5, "password": PASSWORD})
    assert typed.status_code == 400 and typed.json()["error"]["details"][0]["field"] == "email"

    assert (await browser.register(username="ada")).status_code == 201
    taken_email = await browser.register()
    assert taken_email.status_code == 409
    assert taken_email.json() == error("CONFLICT", "Email already registered")
    taken_name = await browser.register("other@example.com", username="ADA")
    assert taken_name.status_code == 409
    assert taken_name.json() == error("CONFLICT", "Username already taken")


async def test_cookies_are_secure_behind_an_https_public_url(make_client: MakeClient) -> None:
    """With an https public URL the ``sid`` and ``_csrf`` cookies carry Secure."""
    client = make_client(rest_dialects=DIALECTS, public_url="https://auth.example.com")
    first = await client.http.get(f"{PREFIX}/me")
    assert "secure" in (set_cookie(first, "_csrf") or "").lower()
    response = await client.http.post(
        f"{PREFIX}/register",
        json={"email": EMAIL, "password": PASSWORD},
        headers={"cookie": "_csrf=abc", "x-csrf-token": "abc"},
    )
    await assert_no_secrets(response)
    assert response.status_code == 201
    assert "secure" in [p.strip().lower() for p in (set_cookie(response, "sid") or "").split(";")]


async def test_register_with_verification_required_issues_no_session(
    app_client: Callable[..., GraphQLClient],
) -> None:
    """When email verification is required, register answers 201 without a cookie and login
    answers 403 EMAIL_NOT_VERIFIED."""
    browser = await device(app_client, require_email_verification=True)
    response = await browser.register()
    assert response.status_code == 201 and set_cookie(response, "sid") is None
    login = await browser.login()
    assert login.status_code == 403
    assert login.json() == error(
        "EMAIL_NOT_VERIFIED", "Please verify your email address before logging in"
    )


# --- CSRF -----------------------------------------------------------------------------------


async def test_get_sets_a_csrf_cookie_and_mutations_need_the_header(
    app_client: Callable[..., GraphQLClient],
) -> None:
    """A GET sets a readable ``_csrf`` cookie once; a mutation without the matching
    ``x-csrf-token`` header is 403 FORBIDDEN."""
    browser = Device(app_client())
    first = await browser.call("GET", "/me")
    assert first.status_code == 401
    header = set_cookie(first, "_csrf")
    assert header is not None
    flags = [part.strip().lower() for part in header.split(";")]
    assert "httponly" not in flags and "samesite=lax" in flags and "path=/" in flags
    assert not any(flag.startswith("max-age") for flag in flags)
    assert re.fullmatch(r"[0-9a-f]{64}", cookie_value(first, "_csrf"))
    again = await browser.call("GET", "/me")
    assert set_cookie(again, "_csrf") is None

    forbidden = error("FORBIDDEN", "You are not authorized to perform this action")
    missing = await browser.call(
        "POST", "/register", {"email": EMAIL, "password": PASSWORD}, csrf=False
    )
    assert missing.status_code == 403 and missing.json() == forbidden
    wrong = await browser.call(
        "POST",
        "/login",
        {"identifier": EMAIL, "password": PASSWORD},
        headers={"x-csrf-token": "f00"},
    )
    assert wrong.status_code == 403 and wrong.json() == forbidden
    assert (await browser.register()).status_code == 201
    for method, path in (("PATCH", "/me"), ("DELETE", f"/sessions/{uuid.uuid4()}")):
        refused = await browser.call(method, path, {}, csrf=False)
        assert refused.status_code == 403 and refused.json() == forbidden


# --- login ----------------------------------------------------------------------------------


async def test_login_by_email_or_username_issues_a_fresh_session(
    app_client: Callable[..., GraphQLClient],
) -> None:
    """Login by email or username answers the user and a new ``sid`` every time."""
    browser = await device(app_client)
    await browser.register(username="ada")
    first = await browser.login()
    assert first.status_code == 200
    body = first.json()
    assert body["success"] is True and body["message"] == "Login successful"
    assert set(body["data"]) == {"user"} and set(body["data"]["user"]) == USER_KEYS | {"username"}
    second = await browser.login("ADA")
    assert second.status_code == 200
    assert cookie_value(first, "sid") != cookie_value(second, "sid")
    sid = cookie_value(second, "sid")
    assert sid not in second.text


async def test_login_failures_are_identical_for_unknown_and_wrong(
    app_client: Callable[..., GraphQLClient],
) -> None:
    """An unknown account and a wrong password give byte-identical 401 bodies."""
    browser = await device(app_client)
    await browser.register()
    unknown = await browser.login("nobody@example.com")
    wrong = await browser.login(EMAIL, "wrong password!")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.content == wrong.content
    assert wrong.json() == error(
        "INVALID_CREDENTIALS", "The email or password you entered is incorrect"
    )


async def test_login_validation(app_client: Callable[..., GraphQLClient]) -> None:
    """Missing or empty identifier and password are 400 VALIDATION_ERROR with details."""
    browser = await device(app_client)
    missing = await browser.call("POST", "/login", {})
    assert missing.status_code == 400
    assert missing.json() == error(
        "VALIDATION_ERROR",
        "Validation failed",
        [
            {"field": "identifier", "message": "Required"},
            {"field": "password", "message": "Required"},
        ],
    )
    empty = await browser.call("POST", "/login", {"identifier": "", "password": ""})
    assert empty.json()["error"]["details"] == [
        {"field": "identifier", "message": "Email or username is required"},
        {"field": "password", "message": "Password is required"},
    ]


async def test_repeated_failures_lock_without_revealing_the_account(
    app_client: Callable[..., GraphQLClient],
) -> None:
    """After the lockout threshold login is 423 ACCOUNT_LOCKED with Retry-After, the same
    for a real and an unknown account, even with the right password."""
    browser = await device(app_client, lockout_threshold=2)
    await browser.register()
    for _ in range(2):
        await browser.login(EMAIL, "wrong password!")
        await browser.login("ghost@example.com", "wrong password!")
    locked = await browser.login()
    ghost = await browser.login("ghost@example.com", "wrong password!")
    assert locked.status_code == ghost.status_code == 423
    assert locked.content == ghost.content
    assert locked.json() == error(
        "ACCOUNT_LOCKED",
        "Account temporarily locked due to too many failed attempts. Please try again later",
    )
    assert int(locked.headers["retry-after"]) > 0


# --- logout -----------------------------------------------------------------------------------


async def test_logout_ends_the_session_and_clears_the_cookie(
    app_client: Callable[..., GraphQLClient],
) -> None:
    """Logout answers 200 with null data, clears ``sid``, and the old id is refused."""
    browser = await device(app_client)
    sid = cookie_value(await browser.register(), "sid")
    response = await browser.call("POST", "/logout")
    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Logged out successfully", "data": None}
    assert_cleared(response)
    stale = await browser.call("GET", "/me", headers={"cookie": f"sid={sid}"})
    assert stale.status_code == 401
    assert stale.json() == error("UNAUTHORIZED", "Authentication required")
    assert_cleared(stale)


async def test_logout_without_a_session_is_401(app_client: Callable[..., GraphQLClient]) -> None:
    """Logout and logout-all need a session: 401 UNAUTHORIZED without one; a bogus ``sid``
    is also cleared."""
    browser = await device(app_client)
    for path in ("/logout", "/logout-all"):
        response = await browser.call("POST", path)
        assert response.status_code == 401
        assert response.json() == error("UNAUTHORIZED", "Authentication required")
    csrf = browser.http.cookies["_csrf"]
    bogus = await browser.call(
        "POST", "/logout", headers={"cookie": f"sid=forged; _csrf={csrf}", "x-csrf-token": csrf}
    )
    assert bogus.status_code == 401
    assert_cleared(bogus)


async def test_logout_all_ends_every_device(app_client: Callable[..., GraphQLClient]) -> None:
    """logout-all answers like logout and every other device is 401 on its next request."""
    laptop = await device(app_client)
    await laptop.register()
    phone = await signed_in(app_client, SAFARI_IPHONE)
    response = await laptop.call("POST", "/logout-all")
    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Logged out successfully", "data": None}
    assert_cleared(response)
    refused = await phone.call("GET", "/me")
    assert refused.status_code == 401
    assert_cleared(refused)


# --- profile ----------------------------------------------------------------------------------


async def test_me_requires_a_session(app_client: Callable[..., GraphQLClient]) -> None:
    """GET /me without a cookie is 401 UNAUTHORIZED (and sets no sid)."""
    browser = Device(app_client())
    response = await browser.call("GET", "/me")
    assert response.status_code == 401
    assert response.json() == error("UNAUTHORIZED", "Authentication required")
    assert set_cookie(response, "sid") is None


async def test_profile_read_and_update(app_client: Callable[..., GraphQLClient]) -> None:
    """GET /me wraps the user; PATCH /me changes the profile fields, ignores the others, and
    refuses a taken username (409) or an invalid one (400)."""
    other = await device(app_client)
    await other.register("grace@example.com", username="grace")
    browser = await device(app_client)
    await browser.register()
    me = await browser.call("GET", "/me")
    assert me.json()["message"] == "Profile retrieved successfully"
    assert set(me.json()["data"]["user"]) == USER_KEYS

    changes = {
        "username": "Ada",
        "fullName": "Ada Lovelace",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "email": "evil@example.com",
        "isEmailVerified": True,
    }
    response = await browser.call("PATCH", "/me", changes)
    assert response.status_code == 200
    assert response.json()["message"] == "Profile updated successfully"
    user = response.json()["data"]["user"]
    assert user["email"] == EMAIL and user["isEmailVerified"] is False
    assert (user["username"], user["fullName"], user["firstName"], user["lastName"]) == (
        "ada",
        "Ada Lovelace",
        "Ada",
        "Lovelace",
    )
    assert (await browser.call("GET", "/me")).json()["data"]["user"] == user

    taken = await browser.call("PATCH", "/me", {"username": "Grace"})
    assert taken.status_code == 409 and taken.json() == error("CONFLICT", "Username already taken")
    invalid = await browser.call("PATCH", "/me", {"username": "a b"})
    assert invalid.status_code == 400
    assert invalid.json()["error"]["details"][0]["field"] == "username"
    anonymous = await device(app_client)
    assert (await anonymous.call("PATCH", "/me", {"fullName": "x"})).status_code == 401


# --- change password ------------------------------------------------------------------------------


async def test_change_password_keeps_this_session_and_ends_the_others(
    app_client: Callable[..., GraphQLClient],
) -> None:
    """A password change answers 200 with null data, keeps the current session, ends the
    other devices', and the new password signs in."""
    laptop = await device(app_client)
    await laptop.register()
    phone = await signed_in(app_client, SAFARI_IPHONE)
    response = await laptop.call(
        "POST", "/change-password", {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}
    )
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "message": "Password changed successfully",
        "data": None,
    }
    assert (await laptop.call("GET", "/me")).status_code == 200
    assert (await phone.call("GET", "/me")).status_code == 401
    assert (await phone.login(EMAIL, NEW_PASSWORD)).status_code == 200
    assert (await phone.login(EMAIL, PASSWORD)).status_code == 401


async def test_change_password_errors(app_client: Callable[..., GraphQLClient]) -> None:
    """Wrong current password is 401 INVALID_CREDENTIALS; weak, unchanged or missing fields
    are 400; no session is 401 UNAUTHORIZED."""
    browser = await device(app_client)
    await browser.register()

    async def change(body: dict[str, Any]) -> httpx.Response:
        return await browser.call("POST", "/change-password", body)

    wrong = await change({"currentPassword": "not my password", "newPassword": NEW_PASSWORD})
    assert wrong.status_code == 401
    assert wrong.json() == error("INVALID_CREDENTIALS", "Current password is incorrect")
    weak = await change({"currentPassword": PASSWORD, "newPassword": "short"})
    assert weak.status_code == 400
    assert weak.json()["error"]["details"][0]["field"] == "newPassword"
    same = await change({"currentPassword": PASSWORD, "newPassword": PASSWORD})
    assert same.status_code == 400 and same.json()["error"]["code"] == "VALIDATION_ERROR"
    missing = await change({})
    assert [d["field"] for d in missing.json()["error"]["details"]] == [
        "currentPassword",
        "newPassword",
    ]
    await browser.call("POST", "/logout")
    anonymous = await change({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD})
    assert anonymous.status_code == 401
    assert anonymous.json() == error("UNAUTHORIZED", "Authentication required")


# --- sessions ---------------------------------------------------------------------------------


async def test_sessions_are_listed_with_their_devices(
    app_client: Callable[..., GraphQLClient],
) -> None:
    """GET /sessions lists every live session with its parsed device and marks the current
    one; the session id in the cookie is never shown."""
    laptop = await device(app_client)
    sid = cookie_value(await laptop.register(), "sid")
    await signed_in(app_client, SAFARI_IPHONE)
    response = await laptop.call("GET", "/sessions")
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Active sessions retrieved successfully"
    listed = body["data"]["sessions"]
    assert len(listed) == 2 and sid not in response.text
    for entry in listed:
        assert set(entry) == {
            "_id",
            "device",
            "ipAddress",
            "lastActiveAt",
            "createdAt",
            "isCurrent",
        }
        assert entry["ipAddress"] == "203.0.113.7"
        assert ISO.match(entry["lastActiveAt"]) and ISO.match(entry["createdAt"])
    devices = {entry["isCurrent"]: entry["device"] for entry in listed}
    assert devices[True] == {"browser": "Chrome 120.0.0.0", "os": "Windows 10", "type": "desktop"}
    assert devices[False] == {"browser": "Mobile Safari 17.1", "os": "iOS 17.1", "type": "mobile"}


async def test_revoking_sessions(app_client: Callable[..., GraphQLClient]) -> None:
    """DELETE /sessions/{id} ends another device's session; the current one is 400 (use
    logout); unknown ids and other users' sessions are 404."""
    laptop = await device(app_client)
    await laptop.register()
    phone = await signed_in(app_client, SAFARI_IPHONE)
    stranger = await device(app_client)
    await stranger.register("grace@example.com")
    listed = (await laptop.call("GET", "/sessions")).json()["data"]["sessions"]
    current = next(entry["_id"] for entry in listed if entry["isCurrent"])
    other = next(entry["_id"] for entry in listed if not entry["isCurrent"])
    strangers = (await stranger.call("GET", "/sessions")).json()["data"]["sessions"][0]["_id"]

    own = await laptop.call("DELETE", f"/sessions/{current}")
    assert own.status_code == 400
    assert own.json() == error(
        "VALIDATION_ERROR", "Cannot revoke current session. Use logout instead."
    )
    not_found = error("NOT_FOUND", "Session not found")
    for target in (str(uuid.uuid4()), strangers, "not-an-id"):
        missing = await laptop.call("DELETE", f"/sessions/{target}")
        assert missing.status_code == 404 and missing.json() == not_found
    response = await laptop.call("DELETE", f"/sessions/{other}")
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "message": "Session revoked successfully",
        "data": None,
    }
    assert (await phone.call("GET", "/me")).status_code == 401
    assert (await stranger.call("GET", "/me")).status_code == 200
    assert (await laptop.call("DELETE", f"/sessions/{other}")).status_code == 404


# --- login history -----------------------------------------------------------------------------


async def test_login_history_lists_sign_in_events_newest_first(
    app_client: Callable[..., GraphQLClient], clock: FrozenClock
) -> None:
    """GET /login-history pages through login successes and failures, password changes and
    logouts, newest first, in upstream's event names."""
    browser = await device(app_client)
    other = await device(app_client)
    await browser.register()
    for step in (
        lambda: browser.login(EMAIL, "wrong password!"),
        lambda: browser.call(
            "POST", "/change-password", {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}
        ),
        lambda: other.login(EMAIL, NEW_PASSWORD),
        lambda: other.call("POST", "/logout"),
    ):
        clock.advance(1)
        await step()

    response = await browser.call("GET", "/login-history")
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Login history retrieved successfully"
    assert set(body["data"]) == {"history", "page", "limit"}
    assert (body["data"]["page"], body["data"]["limit"]) == (1, 20)
    history = body["data"]["history"]
    assert [entry["event"] for entry in history] == [
        "logout",
        "login_success",
        "password_change",
        "login_failure",
        "login_success",
    ]
    keys = {"_id", "userId", "event", "ipAddress", "userAgent", "device", "success", "createdAt"}
    for entry in history:
        assert set(entry) == keys
        assert entry["userAgent"] == CHROME_WINDOWS and entry["ipAddress"] == "203.0.113.7"
        assert entry["device"]["os"] == "Windows 10"
        assert entry["success"] is (entry["event"] != "login_failure")

    second = (await browser.call("GET", "/login-history?page=2&limit=2")).json()["data"]
    assert (second["page"], second["limit"]) == (2, 2)
    assert [entry["event"] for entry in second["history"]] == ["password_change", "login_failure"]
    clamped = (await browser.call("GET", "/login-history?page=abc&limit=500")).json()["data"]
    assert (clamped["page"], clamped["limit"]) == (1, 100)
    anonymous = await device(app_client)
    assert (await anonymous.call("GET", "/login-history")).status_code == 401


# --- expiry, routes, errors ----------------------------------------------------------------------


async def test_an_expired_session_is_401_and_clears_the_cookie(
    app_client: Callable[..., GraphQLClient], clock: FrozenClock
) -> None:
    """Past the session lifetime the ``sid`` is refused with 401 and cleared."""
    browser = await device(app_client)
    await browser.register()
    clock.advance(browser.client.services.settings.refresh_token_ttl + 1)
    response = await browser.call("GET", "/me")
    assert response.status_code == 401
    assert response.json() == error("UNAUTHORIZED", "Authentication required")
    assert_cleared(response)


async def test_google_sign_in_is_not_mounted_without_the_provider(
    app_client: Callable[..., GraphQLClient],
) -> None:
    """Google sign-in answers 404 while no provider named google is configured."""
    browser = await device(app_client)
    for method, path in (
        ("GET", "/google"),
        ("GET", "/google/callback"),
    ):
        assert (await browser.call(method, path, {})).status_code == 404


async def test_unexpected_failures_answer_internal_error(
    app_client: Callable[..., GraphQLClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash answers 500 INTERNAL_ERROR in the envelope, without internals."""
    browser = await device(app_client)
    await browser.register()

    async def boom(*_: Any, **__: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(sessions_resolvers, "my_sessions", boom)
    response = await browser.call("GET", "/sessions")
    assert response.status_code == 500
    assert response.json() == error(
        "INTERNAL_ERROR", "An unexpected error occurred. Please try again later"
    )
    assert "secret internals" not in response.text


async def test_openapi_lists_every_endpoint(app_client: Callable[..., GraphQLClient]) -> None:
    """<prefix>/openapi.json documents each route with the ``sid`` cookie as credential."""
    client = app_client()
    spec = (await client.http.get(f"{PREFIX}/openapi.json")).json()
    operations = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    assert operations == {
        ("POST", "/auth/register"),
        ("POST", "/auth/login"),
        ("POST", "/auth/login/2fa"),
        ("POST", "/auth/login/2fa/send"),
        ("POST", "/auth/login/2fa/setup"),
        ("POST", "/auth/login/2fa/setup/verify"),
        ("POST", "/auth/logout"),
        ("POST", "/auth/logout-all"),
        ("GET", "/auth/me"),
        ("PATCH", "/auth/me"),
        ("POST", "/auth/change-password"),
        ("GET", "/auth/sessions"),
        ("DELETE", "/auth/sessions/{id}"),
        ("GET", "/auth/login-history"),
        ("POST", "/auth/forgot-password"),
        ("POST", "/auth/reset-password"),
        ("POST", "/auth/verify-email"),
        ("POST", "/auth/resend-verification"),
    }
    assert spec["components"]["securitySchemes"]["credential"] == {
        "type": "apiKey",
        "in": "cookie",
        "name": "sid",
    }
    assert spec["paths"]["/auth/register"]["post"]["responses"].keys() >= {"201"}


# --- rate limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "path", "body", "limit"),
    [
        ("modularauth_login", "/login", {"identifier": EMAIL, "password": "wrong password!"}, 10),
        ("modularauth_register", "/register", {"email": "x", "password": "y"}, 5),
        (
            "modularauth_change_password",
            "/change-password",
            {"currentPassword": "wrong password!", "newPassword": NEW_PASSWORD},
            5,
        ),
    ],
)
async def test_documented_rate_limits(
    app_client: Callable[..., GraphQLClient],
    action: str,
    path: str,
    body: dict[str, str],
    limit: int,
) -> None:
    """Login (10/15 min), register (5/h) and change-password (5/15 min) answer 429
    RATE_LIMITED with Retry-After and RateLimit-* headers once spent."""
    assert DEFAULT_RATE_LIMITS[action][0] == limit
    browser = await device(app_client, rate_limits={action: DEFAULT_RATE_LIMITS[action]})
    if action != "modularauth_register":
        await browser.register("owner@example.com")
    for attempt in range(limit):
        response = await browser.call("POST", path, body)
        assert response.status_code != 429, attempt
        assert response.headers["ratelimit-limit"] == str(limit)
    limited = await browser.call("POST", path, body)
    assert limited.status_code == 429
    assert limited.json() == error("RATE_LIMITED", "Too many requests. Please try again later")
    assert int(limited.headers["retry-after"]) > 0
    assert limited.headers["ratelimit-remaining"] == "0"
    assert "ratelimit-reset" in limited.headers


# --- one account, every surface ----------------------------------------------------------------


async def test_accounts_are_shared_with_graphql(app_client: Callable[..., GraphQLClient]) -> None:
    """An account registered over GraphQL logs in here, and one registered here logs in over
    GraphQL."""
    browser = await device(app_client)
    await browser.client.register("grace@example.com")
    assert (await browser.login("grace@example.com")).status_code == 200
    assert (await browser.register()).status_code == 201
    assert (await browser.client.login(EMAIL)).data["login"]["status"] == "OK"


async def test_sessions_revoked_over_graphql_are_refused_here(
    app_client: Callable[..., GraphQLClient], clock: FrozenClock
) -> None:
    """GraphQL ``logout`` with a token for this cookie's session, or ``logoutAll`` from
    another sign-in, makes the ``sid`` 401 on its next request."""
    browser = await device(app_client)
    await browser.register()
    services = browser.client.services
    listed = (await browser.call("GET", "/sessions")).json()["data"]["sessions"]
    user_id = (await browser.call("GET", "/me")).json()["data"]["user"]["_id"]
    token = services.access_tokens.issue(
        user_id=user_id, session_id=listed[0]["_id"], roles=[], now=clock.now().timestamp()
    )
    assert (await browser.client.gql(LOGOUT, token=token)).data["logout"] is True
    refused = await browser.call("GET", "/me")
    assert refused.status_code == 401
    assert_cleared(refused)

    assert (await browser.login()).status_code == 200
    graphql = (await browser.client.login(EMAIL)).data["login"]
    assert (await browser.client.gql(LOGOUT_ALL, token=graphql["accessToken"])).errors == []
    assert (await browser.call("GET", "/me")).status_code == 401
