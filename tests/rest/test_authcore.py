"""The AuthCore dialect: its routes, envelope, NextAuth-style cookies and CSRF, rate limits,
and one account and one session model shared with every other surface."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import httpx
import pyotp
import pytest

from authql.models import RefreshToken, Session
from authql.resolvers import mfa
from authql.services.clock import FrozenClock
from tests.support import PASSWORD, GraphQLClient

PREFIX = "/api/auth"
SESSION_COOKIE = "authcore.session-token"
CSRF_COOKIE = "authcore.csrf-token"
TTL = 1_209_600
USER_KEYS = {
    "id",
    "email",
    "name",
    "firstName",
    "lastName",
    "username",
    "image",
    "emailVerified",
    "twoFactorEnabled",
    "roles",
    "createdAt",
}
LIMITS = {"authcore_auth": (5, 15 * 60), "authcore_public": (20, 60)}
LOGOUT = "mutation { logout }"
LOGOUT_ALL = "mutation { logoutAll }"
MY_SESSIONS = "query { mySessions { id current } }"
REVOKE_SESSION = "mutation($id: ID!) { revokeSession(id: $id) }"

MakeClient = Callable[..., GraphQLClient]


# --- helpers ---------------------------------------------------------------------------------


async def assert_clean(response: httpx.Response, *, methods_may_name_totp: bool = False) -> None:
    """No password hash, refresh-token or session-token digest, or 'totp' in body or headers
    (except, when allowed, the documented factor name in a check-2fa methods list)."""
    text = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    assert "$argon2" not in text
    digests = [
        *await RefreshToken.all().values_list("digest", flat=True),
        *await Session.exclude(token_digest=None).values_list("token_digest", flat=True),
    ]
    for value in digests:
        assert value not in text
    if methods_may_name_totp:
        text = text.replace('"totp"', "")
    assert "totp" not in text.lower()


class AuthCore:
    """Sends requests to the dialect and checks every answer for leaked secrets."""

    def __init__(self, client: GraphQLClient) -> None:
        self.client = client
        self.http = client.http

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, PREFIX + path, **kwargs)
        await assert_clean(response)
        return response

    async def register(self, email: str = "ada@example.com", **fields: Any) -> httpx.Response:
        body = {"email": email, "password": PASSWORD, **fields}
        return await self.request("POST", "/register", json=body)

    async def csrf(self) -> str:
        response = await self.request("GET", "/csrf")
        return str(response.json()["csrfToken"])

    async def sign_in(
        self, email: str = "ada@example.com", password: str = PASSWORD, **extra: Any
    ) -> httpx.Response:
        body = {"email": email, "password": password, "csrfToken": await self.csrf(), **extra}
        return await self.request("POST", "/callback/credentials", json=body)

    async def session(self, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", "/session", **kwargs)


@pytest.fixture
def make_authcore(make_client: MakeClient) -> Callable[..., AuthCore]:
    def make(**overrides: Any) -> AuthCore:
        return AuthCore(make_client(rest_dialects=(("authcore", PREFIX),), **overrides))

    return make


@pytest.fixture
def authcore(make_authcore: Callable[..., AuthCore]) -> AuthCore:
    return make_authcore()


def cookie(response: httpx.Response, name: str) -> dict[str, str]:
    """The attributes (lower-cased names) of the Set-Cookie for ``name``; ``value`` too."""
    for header in response.headers.get_list("set-cookie"):
        first, *attributes = (part.strip() for part in header.split(";"))
        key, _, value = first.partition("=")
        if key == name:
            parsed = {"value": value.strip('"')}
            for attribute in attributes:
                attr, _, attr_value = attribute.partition("=")
                parsed[attr.lower()] = attr_value
            return parsed
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers.get_list('set-cookie')}")


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The envelope ``{success:false, error:{message, code}}`` with ``status``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "error"} and body["success"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert set(body["error"]) <= {"message", "code", "fields"}
    return body  # type: ignore[no-any-return]


# --- register --------------------------------------------------------------------------------


async def test_register_answers_201_with_the_user_and_no_steps(authcore: AuthCore) -> None:
    """Register creates the account, answers 201 {success, data:{user, steps:[]}}, no cookie."""
    response = await authcore.register(
        "Ada@Example.com", name="Ada Lovelace", firstName="Ada", lastName="Lovelace"
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"success", "data"} and body["success"] is True
    assert set(body["data"]) == {"user", "steps"}
    assert body["data"]["steps"] == []
    user = body["data"]["user"]
    assert set(user) == USER_KEYS
    assert user["email"] == "ada@example.com"
    assert (user["name"], user["firstName"], user["lastName"]) == (
        "Ada Lovelace",
        "Ada",
        "Lovelace",
    )
    assert user["emailVerified"] is False and user["image"] is None and user["roles"] == []
    assert "set-cookie" not in response.headers
    assert (await authcore.session()).json() == {}


async def test_register_lists_email_verification_as_a_step(
    make_authcore: Callable[..., AuthCore],
) -> None:
    """With verification required, steps is ["verify_email"]."""
    authcore = make_authcore(require_email_verification=True)
    response = await authcore.register()
    assert response.status_code == 201
    assert response.json()["data"]["steps"] == ["verify_email"]


async def test_register_rejects_bad_input_with_field_messages(authcore: AuthCore) -> None:
    """Invalid fields answer 400 VALIDATION_ERROR naming each field; so does a bad body."""
    response = await authcore.request(
        "POST", "/register", json={"email": "nope", "password": "short", "username": "x"}
    )
    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert set(body["error"]["fields"]) == {"email", "password", "username"}
    missing = await authcore.request("POST", "/register", json={})
    assert set(assert_error(missing, 400, "VALIDATION_ERROR")["error"]["fields"]) == {
        "email",
        "password",
    }
    malformed = await authcore.request(
        "POST", "/register", content=b"{", headers={"content-type": "application/json"}
    )
    assert_error(malformed, 400, "VALIDATION_ERROR")


async def test_register_taken_email_is_409_conflict(authcore: AuthCore) -> None:
    """A taken email (any case) answers 409 CONFLICT naming the field."""
    await authcore.register()
    response = await authcore.register("ADA@example.com")
    body = assert_error(response, 409, "CONFLICT")
    assert body["error"]["fields"] == {"email": "Already in use."}


# --- check-2fa -------------------------------------------------------------------------------


async def test_check_2fa_answers_alike_for_unknown_and_plain_accounts(authcore: AuthCore) -> None:
    """No enumeration: an unknown email and an account without a factor get the same answer."""
    await authcore.register()
    known = await authcore.request(
        "POST", "/check-2fa", json={"email": "ada@example.com", "password": PASSWORD}
    )
    unknown = await authcore.request("POST", "/check-2fa", json={"email": "nobody@example.com"})
    expected = {"success": True, "data": {"requires2FA": False, "methods": []}}
    assert known.status_code == unknown.status_code == 200
    assert known.json() == unknown.json() == expected


async def enrol_totp(client: GraphQLClient) -> None:
    """Turn TOTP on for ada@example.com through the GraphQL mutations."""
    login = await client.login("ada@example.com")
    token = login.data["login"]["accessToken"]
    setup = await client.gql("mutation { beginTotpSetup { secret } }", token=token)
    secret = setup.data["beginTotpSetup"]["secret"]
    code = pyotp.TOTP(secret).at(client.services.clock.now().timestamp())
    confirmed = await client.gql(
        "mutation($c: String!) { confirmTotpSetup(code: $c) }", {"c": code}, token=token
    )
    assert len(confirmed.data["confirmTotpSetup"]) == 10


async def test_check_2fa_names_the_factors_of_an_enrolled_account(authcore: AuthCore) -> None:
    """An account with a second factor gets requires2FA and lower-case method names."""
    await authcore.register()
    await enrol_totp(authcore.client)
    response = await authcore.http.post(
        f"{PREFIX}/check-2fa", json={"email": "ada@example.com", "password": "anything at all"}
    )
    await assert_clean(response, methods_may_name_totp=True)
    assert response.json() == {
        "success": True,
        "data": {"requires2FA": True, "methods": ["totp", "backup_code"]},
    }


async def test_check_2fa_requires_an_email(authcore: AuthCore) -> None:
    """A missing email is 400 VALIDATION_ERROR."""
    response = await authcore.request("POST", "/check-2fa", json={"password": PASSWORD})
    assert assert_error(response, 400, "VALIDATION_ERROR")["error"]["fields"] == {
        "email": "Required."
    }


# --- csrf and providers ----------------------------------------------------------------------


async def test_csrf_returns_a_token_and_its_signed_cookie(authcore: AuthCore) -> None:
    """GET /csrf answers {csrfToken} and sets an HttpOnly Lax session cookie holding it."""
    response = await authcore.request("GET", "/csrf")
    assert response.status_code == 200
    assert set(response.json()) == {"csrfToken"}
    token = response.json()["csrfToken"]
    attributes = cookie(response, CSRF_COOKIE)
    value, _, mac = attributes["value"].partition("|")
    assert value == token and len(mac) == 64
    assert "httponly" in attributes and attributes["samesite"].lower() == "lax"
    assert attributes["path"] == "/" and "max-age" not in attributes
    assert "secure" not in attributes
    again = await authcore.request("GET", "/csrf")
    assert again.json()["csrfToken"] == token


async def test_providers_lists_the_credentials_provider(authcore: AuthCore) -> None:
    """GET /providers answers NextAuth's provider map with the credentials provider."""
    response = await authcore.request("GET", "/providers")
    assert response.status_code == 200
    assert response.json() == {
        "credentials": {
            "id": "credentials",
            "name": "Credentials",
            "type": "credentials",
            "signinUrl": f"{PREFIX}/signin/credentials",
            "callbackUrl": f"{PREFIX}/callback/credentials",
        }
    }


# --- sign-in ---------------------------------------------------------------------------------


async def test_sign_in_sets_the_session_cookie_and_answers_the_callback_url(
    authcore: AuthCore, clock: FrozenClock
) -> None:
    """A JSON sign-in answers {url} and sets the HttpOnly session cookie; /session shows it."""
    registered = (await authcore.register(name="Ada")).json()["data"]["user"]
    response = await authcore.sign_in(callbackUrl="/dashboard")
    assert response.status_code == 200
    assert response.json() == {"url": "/dashboard"}
    attributes = cookie(response, SESSION_COOKIE)
    assert "httponly" in attributes and attributes["samesite"].lower() == "lax"
    assert attributes["path"] == "/" and attributes["max-age"] == str(TTL)
    assert "secure" not in attributes
    session = await authcore.session()
    assert session.status_code == 200
    expires = (clock.now() + dt.timedelta(seconds=TTL)).isoformat(timespec="milliseconds")
    assert session.json() == {
        "user": {
            "id": registered["id"],
            "email": "ada@example.com",
            "name": "Ada",
            "image": None,
            "roles": [],
            "emailVerified": False,
        },
        "expires": expires.replace("+00:00", "Z"),
    }


async def test_signin_route_and_form_posts_redirect(authcore: AuthCore) -> None:
    """A form post without json redirects (302) to the callback, defaulting to the public URL;
    with json=true it answers {url}."""
    await authcore.register()
    form = {"email": "ada@example.com", "password": PASSWORD, "csrfToken": await authcore.csrf()}
    redirected = await authcore.request("POST", "/signin/credentials", data=form)
    assert redirected.status_code == 302
    assert redirected.headers["location"] == "http://127.0.0.1:8000"
    assert cookie(redirected, SESSION_COOKIE)["value"]
    as_json = await authcore.request(
        "POST", "/signin/credentials", data={**form, "json": "true", "callbackUrl": "/home"}
    )
    assert as_json.status_code == 200 and as_json.json() == {"url": "/home"}


async def test_failed_sign_in_points_at_the_credentials_error(authcore: AuthCore) -> None:
    """Wrong password and unknown account alike: 401 {url: error?error=CredentialsSignin}
    for JSON, 302 there for forms, and no cookie."""
    await authcore.register()
    failure = {"url": f"{PREFIX}/error?error=CredentialsSignin"}
    wrong = await authcore.sign_in(password="wrong password!")
    unknown = await authcore.sign_in("nobody@example.com", "wrong password!")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == failure
    assert "set-cookie" not in wrong.headers
    form = {"email": "ada@example.com", "password": "nope", "csrfToken": await authcore.csrf()}
    redirected = await authcore.request("POST", "/callback/credentials", data=form)
    assert redirected.status_code == 302 and redirected.headers["location"] == failure["url"]
    assert (await authcore.session()).json() == {}


async def test_sign_in_needs_the_csrf_token_of_the_cookie(authcore: AuthCore) -> None:
    """No token, a token not matching the cookie, or a forged cookie: 403 FORBIDDEN (a
    token that is not a string: 400 VALIDATION_ERROR)."""
    await authcore.register()
    token = await authcore.csrf()
    body = {"email": "ada@example.com", "password": PASSWORD}
    for sent in ({}, {"csrfToken": "0" * 64}, {"csrfToken": "\u00e9t\u00e9"}):
        response = await authcore.request("POST", "/callback/credentials", json={**body, **sent})
        assert_error(response, 403, "FORBIDDEN")
    mistyped = {**body, "csrfToken": 7}
    response = await authcore.request("POST", "/callback/credentials", json=mistyped)
    assert_error(response, 400, "VALIDATION_ERROR")
    authcore.http.cookies.clear()
    authcore.http.cookies.set(CSRF_COOKIE, f"{token}|{'0' * 64}")
    forged = await authcore.request(
        "POST", "/signin/credentials", json={**body, "csrfToken": token}
    )
    assert_error(forged, 403, "FORBIDDEN")
    assert (await authcore.session()).json() == {}


async def test_sign_in_never_redirects_off_site(make_authcore: Callable[..., AuthCore]) -> None:
    """Foreign callback URLs fall back to the public URL; allowed origins and URLs pass."""
    authcore = make_authcore(
        allowed_redirects=("https://app.example.com", "https://docs.example.com/welcome")
    )
    await authcore.register()
    expectations = {
        "https://evil.example/steal": "http://127.0.0.1:8000",
        "//evil.example/steal": "http://127.0.0.1:8000",
        "/\\evil.example": "http://127.0.0.1:8000",
        "javascript:alert(1)": "http://127.0.0.1:8000",
        "https://app.example.com@evil.example/": "http://127.0.0.1:8000",
        "https://docs.example.com/other": "http://127.0.0.1:8000",
        "https://app.example.com/dashboard": "https://app.example.com/dashboard",
        "https://docs.example.com/welcome": "https://docs.example.com/welcome",
        "http://127.0.0.1:8000/account": "http://127.0.0.1:8000/account",
    }
    for sent, expected in expectations.items():
        response = await authcore.sign_in(callbackUrl=sent)
        assert response.json() == {"url": expected}, sent


async def test_sign_in_with_an_unverified_email_when_verification_is_required(
    make_authcore: Callable[..., AuthCore],
) -> None:
    """Verification required: the right password answers 403 {url: error=EmailNotVerified}."""
    authcore = make_authcore(require_email_verification=True)
    await authcore.register()
    response = await authcore.sign_in()
    assert response.status_code == 403
    assert response.json() == {"url": f"{PREFIX}/error?error=EmailNotVerified"}
    assert "set-cookie" not in response.headers


async def test_locked_account_answers_423_with_retry_after(
    make_authcore: Callable[..., AuthCore],
) -> None:
    """After the lockout threshold, sign-in answers 423 ACCOUNT_LOCKED with Retry-After."""
    authcore = make_authcore(lockout_threshold=2, lockout_minutes=15)
    await authcore.register()
    for _ in range(2):
        assert (await authcore.sign_in(password="wrong password!")).status_code == 401
    locked = await authcore.sign_in()
    assert_error(locked, 423, "ACCOUNT_LOCKED")
    assert 0 < int(locked.headers["retry-after"]) <= 15 * 60


# --- session and sign-out --------------------------------------------------------------------


async def test_dead_session_cookie_reads_as_signed_out_and_is_cleared(authcore: AuthCore) -> None:
    """An unknown session cookie: /session answers {} and expires the cookie."""
    authcore.http.cookies.set(SESSION_COOKIE, "not-a-session")
    response = await authcore.session()
    assert response.status_code == 200 and response.json() == {}
    cleared = cookie(response, SESSION_COOKIE)
    assert cleared["max-age"] == "0" and cleared["path"] == "/"


async def test_signout_revokes_the_session_and_clears_the_cookie(authcore: AuthCore) -> None:
    """Sign-out answers {url}, expires the cookie, and the old cookie value is dead."""
    await authcore.register()
    signed_in = await authcore.sign_in()
    old = cookie(signed_in, SESSION_COOKIE)["value"]
    response = await authcore.request(
        "POST", "/signout", json={"csrfToken": await authcore.csrf(), "callbackUrl": "/bye"}
    )
    assert response.status_code == 200 and response.json() == {"url": "/bye"}
    cleared = cookie(response, SESSION_COOKIE)
    assert cleared["max-age"] == "0" and cleared["path"] == "/" and "httponly" in cleared
    replay = await authcore.session(headers={"cookie": f"{SESSION_COOKIE}={old}"})
    assert replay.json() == {}
    assert await Session.filter(revoked_at=None).count() == 0


async def test_signout_needs_csrf_but_no_session(authcore: AuthCore) -> None:
    """Without CSRF: 403 FORBIDDEN; signed out already: still a redirect that clears."""
    assert_error(await authcore.request("POST", "/signout", json={}), 403, "FORBIDDEN")
    form = {"csrfToken": await authcore.csrf()}
    response = await authcore.request("POST", "/signout", data=form)
    assert response.status_code == 302
    assert response.headers["location"] == "http://127.0.0.1:8000"
    assert cookie(response, SESSION_COOKIE)["max-age"] == "0"


async def test_https_uses_secure_prefixed_cookies(make_authcore: Callable[..., AuthCore]) -> None:
    """With an https public URL the cookies are __Secure-/__Host- prefixed and Secure."""
    authcore = make_authcore(public_url="https://auth.example.com")
    await authcore.register()
    csrf = await authcore.request("GET", "/csrf")
    token = csrf.json()["csrfToken"]
    csrf_cookie = cookie(csrf, f"__Host-{CSRF_COOKIE}")
    assert "secure" in csrf_cookie and csrf_cookie["path"] == "/"
    authcore.http.cookies.clear()
    response = await authcore.request(
        "POST",
        "/callback/credentials",
        json={"email": "ada@example.com", "password": PASSWORD, "csrfToken": token},
        headers={"cookie": f"__Host-{CSRF_COOKIE}={csrf_cookie['value']}"},
    )
    assert response.json() == {"url": "https://auth.example.com"}
    session_cookie = cookie(response, f"__Secure-{SESSION_COOKIE}")
    assert "secure" in session_cookie and "httponly" in session_cookie
    authcore.http.cookies.clear()
    plain = await authcore.session(
        headers={"cookie": f"{SESSION_COOKIE}={session_cookie['value']}"}
    )
    assert plain.json() == {}
    secure = await authcore.session(
        headers={"cookie": f"__Secure-{SESSION_COOKIE}={session_cookie['value']}"}
    )
    assert secure.json()["user"]["email"] == "ada@example.com"


# --- one account, one session model ----------------------------------------------------------


async def test_accounts_cross_surfaces(authcore: AuthCore) -> None:
    """An account registered over GraphQL signs in here, and one registered here over GraphQL."""
    await authcore.client.register("grace@example.com")
    assert (await authcore.sign_in("grace@example.com")).status_code == 200
    assert (await authcore.register("ada@example.com")).status_code == 201
    login = await authcore.client.login("ada@example.com")
    assert login.data["login"]["status"] == "OK"


async def test_bearer_access_token_works_until_graphql_logout(authcore: AuthCore) -> None:
    """A server caller's Bearer token reads the session; after GraphQL logout it is refused."""
    payload = await authcore.client.register("grace@example.com")
    bearer = {"authorization": f"Bearer {payload['accessToken']}"}
    assert (await authcore.session(headers=bearer)).json()["user"]["email"] == "grace@example.com"
    assert (await authcore.client.gql(LOGOUT, token=payload["accessToken"])).data["logout"]
    assert (await authcore.session(headers=bearer)).json() == {}


async def test_cookie_session_revoked_over_graphql_is_refused(authcore: AuthCore) -> None:
    """A cookie session revoked over GraphQL (revokeSession, then logoutAll) is dead here."""
    payload = await authcore.client.register("ada@example.com")
    token = payload["accessToken"]
    await authcore.sign_in()
    assert (await authcore.session()).json()["user"]["email"] == "ada@example.com"
    sessions = (await authcore.client.gql(MY_SESSIONS, token=token)).data["mySessions"]
    other = next(item["id"] for item in sessions if not item["current"])
    assert (await authcore.client.gql(REVOKE_SESSION, {"id": other}, token=token)).data
    assert (await authcore.session()).json() == {}
    await authcore.sign_in()
    assert (await authcore.session()).json() != {}
    assert (await authcore.client.gql(LOGOUT_ALL, token=token)).data["logoutAll"] == 2
    assert (await authcore.session()).json() == {}


# --- documentation, limits, failures ---------------------------------------------------------


async def test_openapi_lists_every_endpoint(authcore: AuthCore) -> None:
    """<prefix>/openapi.json documents each route served, with request bodies (sign-in's
    second-factor field ``totpCode`` is the only mention of "totp")."""
    response = await authcore.http.get(f"{PREFIX}/openapi.json")
    assert "totp" not in response.text.replace('"totpCode"', "").lower()
    paths = response.json()["paths"]
    served = {(method, path) for path, operations in paths.items() for method in operations}
    assert served == {
        ("post", f"{PREFIX}/register"),
        ("post", f"{PREFIX}/check-2fa"),
        ("get", f"{PREFIX}/csrf"),
        ("get", f"{PREFIX}/providers"),
        ("post", f"{PREFIX}/signin/credentials"),
        ("post", f"{PREFIX}/callback/credentials"),
        ("post", f"{PREFIX}/signin/{{provider}}"),
        ("get", f"{PREFIX}/callback/{{provider}}"),
        ("get", f"{PREFIX}/session"),
        ("post", f"{PREFIX}/signout"),
        ("post", f"{PREFIX}/magic-link"),
        ("get", f"{PREFIX}/verify"),
        ("post", f"{PREFIX}/verify-email"),
        ("post", f"{PREFIX}/resend-verification"),
        ("post", f"{PREFIX}/forgot-password"),
        ("post", f"{PREFIX}/reset-password"),
        ("get", f"{PREFIX}/2fa/setup"),
        ("post", f"{PREFIX}/2fa/setup"),
        ("post", f"{PREFIX}/2fa/verify"),
        ("post", f"{PREFIX}/2fa/disable"),
        ("post", f"{PREFIX}/2fa/backup-codes"),
        ("get", f"{PREFIX}/policy"),
        ("post", f"{PREFIX}/restore-request"),
        ("post", f"{PREFIX}/restore"),
    }
    register = paths[f"{PREFIX}/register"]["post"]
    schema = register["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["email", "password"] and "201" in register["responses"]
    schemes = response.json()["components"]["securitySchemes"]
    assert schemes["credential"] == {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE}
    assert schemes["bearer"]["scheme"] == "bearer"


async def test_auth_routes_allow_5_per_15_minutes_per_ip(
    make_authcore: Callable[..., AuthCore], clock: FrozenClock
) -> None:
    """register, check-2fa and sign-in share 5 requests / 15 min; the 6th is 429 with
    Retry-After and RateLimit-* headers, and the budget comes back with time."""
    authcore = make_authcore(rate_limits=LIMITS)
    first = await authcore.register("a0@example.com")
    assert first.headers["ratelimit-limit"] == "5"
    assert first.headers["ratelimit-remaining"] == "4"
    await authcore.register("a1@example.com")
    await authcore.request("POST", "/check-2fa", json={"email": "a0@example.com"})
    await authcore.sign_in("a0@example.com")
    assert (await authcore.sign_in("a1@example.com")).status_code == 200
    limited = await authcore.register("a2@example.com")
    assert_error(limited, 429, "RATE_LIMITED")
    retry_after = int(limited.headers["retry-after"])
    assert 0 < retry_after <= 30 * 60
    assert limited.headers["ratelimit-limit"] == "5"
    assert limited.headers["ratelimit-remaining"] == "0"
    assert int(limited.headers["ratelimit-reset"]) > 0
    assert (await authcore.session()).status_code == 200
    clock.advance(retry_after)
    assert (await authcore.register("a2@example.com")).status_code == 201


async def test_public_routes_allow_20_per_minute_per_ip(
    make_authcore: Callable[..., AuthCore],
) -> None:
    """csrf, providers and session share 20 requests a minute; the 21st is 429."""
    authcore = make_authcore(rate_limits=LIMITS)
    for index in range(20):
        path = ("/csrf", "/providers", "/session")[index % 3]
        assert (await authcore.request("GET", path)).status_code == 200
    limited = await authcore.request("GET", "/providers")
    assert_error(limited, 429, "RATE_LIMITED")
    assert int(limited.headers["retry-after"]) > 0
    assert limited.headers["ratelimit-limit"] == "20"


async def test_unexpected_failure_is_a_masked_500(
    authcore: AuthCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unplanned exception answers 500 {success:false, error:{message, code:'INTERNAL'}}."""

    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(mfa, "check_two_factor", broken)
    response = await authcore.request("POST", "/check-2fa", json={"email": "ada@example.com"})
    assert response.status_code == 500
    assert response.json() == {
        "success": False,
        "error": {"message": "Internal server error", "code": "INTERNAL"},
    }
