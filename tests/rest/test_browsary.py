"""The Browsary dialect: GET /api/auth status, register, login, GET logout and the GET /api
root, in Browsary's shapes, with the ``token`` JWT cookie."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest

from authql.models import RefreshToken, Session, User
from authql.resolvers import accounts, sessions
from authql.services.clock import FrozenClock
from tests.support import PASSWORD, GraphQLClient

MakeClient = Callable[..., GraphQLClient]
PREFIX = "/api/auth"
DIALECTS = (("browsary", PREFIX),)
EMAIL = "ada@example.com"
REGISTER_BODY = {
    "firstName": "Ada",
    "lastName": "Lovelace",
    "email": EMAIL,
    "password": PASSWORD,
    "confirmPassword": PASSWORD,
}
CLAIMS = {"sub", "sid", "roles", "iat", "exp", "iss", "aud", "jti", "info"}
INFO = {"id", "email", "emailVerified", "twoFactorConfigured", "twoFactorPassed"}
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*")


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def client(make_client: MakeClient) -> GraphQLClient:
    """A client for an app serving the Browsary dialect at /api/auth."""
    return make_client(rest_dialects=DIALECTS)


def _decoded(match: re.Match[str]) -> str:
    """A JWT's header and payload as text, so secrets inside it are checked too."""
    parts = match.group(0).split(".")[:2]
    return " ".join(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)).decode() for p in parts)


async def assert_clean(response: httpx.Response) -> None:
    """No body or header carries a password hash, a stored token digest or the word totp."""
    text = response.text + " " + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    assert "$argon2" not in text
    assert "totp" not in _JWT.sub(_decoded, text).lower()
    digests = await RefreshToken.all().values_list("digest", flat=True)
    digests += await Session.exclude(token_digest=None).values_list("token_digest", flat=True)
    for value in digests:
        assert str(value) not in text


async def call(client: GraphQLClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """Send a request to the app and check the answer leaks nothing."""
    response = await client.http.request(method, path, **kwargs)
    await assert_clean(response)
    return response


def cookie_of(response: httpx.Response, name: str = "token") -> dict[str, Any] | None:
    """The attributes of the Set-Cookie for ``name`` (value under ``value``), or None."""
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if name in jar:
            morsel = jar[name]
            attrs = {key: morsel[key] for key in morsel if morsel[key] != ""}
            return {"value": morsel.value, **attrs}
    return None


def assert_error(response: httpx.Response, status: int) -> str:
    """Browsary's error shape; returns the message."""
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"status", "message"}
    assert body["status"] == "error"
    assert isinstance(body["message"], str) and body["message"]
    return str(body["message"])


async def register(client: GraphQLClient, **extra: Any) -> httpx.Response:
    return await call(client, "POST", f"{PREFIX}/register", json={**REGISTER_BODY, **extra})


async def login(
    client: GraphQLClient, email: str = EMAIL, password: str = PASSWORD, **extra: Any
) -> httpx.Response:
    body = {"email": email, "password": password, **extra}
    return await call(client, "POST", f"{PREFIX}/login", json=body)


async def status(client: GraphQLClient, **kwargs: Any) -> dict[str, Any]:
    response = await call(client, "GET", PREFIX, **kwargs)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    assert set(body) == {"status", "auth"}
    return body


async def verified_account(client: GraphQLClient, email: str = EMAIL) -> str:
    """An account whose email is verified (the CLI's admin bootstrap marks it so)."""
    return await accounts.create_admin(client.services.passwords, email=email, password=PASSWORD)


# --- GET /api/auth ---------------------------------------------------------------------------


async def test_status_is_ok_with_null_auth_when_anonymous(client: GraphQLClient) -> None:
    """Without a token the status route answers status ok and auth null."""
    assert await status(client) == {"status": "ok", "auth": None}


async def test_status_echoes_claims_and_info_of_the_cookie(client: GraphQLClient) -> None:
    """After login the cookie's claims come back with the library's info object."""
    user_id = await verified_account(client)
    await login(client)
    body = await status(client)
    assert body["status"] == "ok"
    auth = body["auth"]
    assert set(auth) == CLAIMS
    assert auth["sub"] == user_id and auth["roles"] == ["admin"]
    assert auth["exp"] - auth["iat"] == client.services.settings.refresh_token_ttl
    assert auth["info"] == {
        "id": user_id,
        "email": EMAIL,
        "emailVerified": True,
        "twoFactorConfigured": False,
        "twoFactorPassed": True,
    }


async def test_status_reports_unverified_email(client: GraphQLClient) -> None:
    """A signed-in user whose email is not verified gets status email_not_verified."""
    await register(client, remember=True)
    body = await status(client)
    assert body["status"] == "email_not_verified"
    assert set(body["auth"]["info"]) == INFO
    assert body["auth"]["info"]["emailVerified"] is False


async def test_status_accepts_a_bearer_header(client: GraphQLClient) -> None:
    """The JWT is also accepted as Authorization: Bearer."""
    token = (await register(client)).json()["token"]
    body = await status(client, headers={"authorization": f"Bearer {token}"})
    assert body["auth"]["info"]["email"] == EMAIL


async def test_status_treats_expired_or_garbage_tokens_as_anonymous(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """A forged or expired token leaves auth null."""
    token = (await register(client)).json()["token"]
    garbage = await status(client, headers={"authorization": "Bearer not.a.jwt"})
    assert garbage == {"status": "ok", "auth": None}
    clock.advance(client.services.settings.refresh_token_ttl + 1)
    expired = await status(client, headers={"authorization": f"Bearer {token}"})
    assert expired == {"status": "ok", "auth": None}


# --- POST /api/auth/register -----------------------------------------------------------------


async def test_register_returns_token_and_no_cookie_without_remember(
    client: GraphQLClient,
) -> None:
    """Registration signs in: status email_not_verified and the token, body only."""
    response = await register(client)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "token"}
    assert body["status"] == "email_not_verified"
    assert cookie_of(response) is None
    user = await User.get(email=EMAIL)
    assert (user.first_name, user.last_name) == ("Ada", "Lovelace")
    claims = (await status(client, headers={"authorization": f"Bearer {body['token']}"}))["auth"]
    assert claims["sub"] == str(user.id)


async def test_register_with_remember_sets_a_persistent_cookie(client: GraphQLClient) -> None:
    """remember=true sets the token cookie for refresh_token_ttl, HttpOnly, SameSite=Lax."""
    response = await register(client, remember=True)
    cookie = cookie_of(response)
    assert cookie is not None
    assert cookie["value"] == response.json()["token"]
    assert cookie["max-age"] == str(client.services.settings.refresh_token_ttl)
    assert cookie["httponly"] is True and cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/" and "secure" not in cookie


async def test_register_refuses_a_mismatched_confirmation_before_creating(
    client: GraphQLClient,
) -> None:
    """confirmPassword must equal password: 400 naming it, and no account is created."""
    response = await register(client, confirmPassword="something else entirely")
    assert "confirmPassword" in assert_error(response, 400)
    assert not await User.exists(email=EMAIL)


async def test_register_requires_every_field(client: GraphQLClient) -> None:
    """A missing field is a 400 naming it."""
    for missing in ("firstName", "lastName", "email", "password", "confirmPassword"):
        body = {k: v for k, v in REGISTER_BODY.items() if k != missing}
        response = await call(client, "POST", f"{PREFIX}/register", json=body)
        assert missing in assert_error(response, 400)


async def test_register_rejects_invalid_email_and_short_password(client: GraphQLClient) -> None:
    """Field problems from the shared rules answer 400 with every field named."""
    response = await register(client, email="nope", password="short", confirmPassword="short")
    message = assert_error(response, 400)
    assert "email" in message and "password" in message


async def test_register_rejects_malformed_json(client: GraphQLClient) -> None:
    """A body that is not a JSON object is a 400."""
    response = await call(
        client,
        "POST",
        f"{PREFIX}/register",
        content=b"{nope",
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400)


async def test_register_conflict_on_taken_email(client: GraphQLClient) -> None:
    """A taken email answers 409."""
    await register(client)
    assert_error(await register(client, email="ADA@example.com"), 409)


async def test_register_withholds_tokens_when_verification_is_required(
    make_client: MakeClient,
) -> None:
    """With email verification required, register answers email_not_verified and no token."""
    client = make_client(rest_dialects=DIALECTS, require_email_verification=True)
    response = await register(client, remember=True)
    assert response.status_code == 200
    assert response.json() == {"status": "email_not_verified"}
    assert cookie_of(response) is None
    assert await User.exists(email=EMAIL)


# --- POST /api/auth/login --------------------------------------------------------------------


async def test_login_without_remember_sets_a_session_cookie(client: GraphQLClient) -> None:
    """Login answers {status, token} and a browser-session cookie (no Max-Age)."""
    await verified_account(client)
    response = await login(client)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "token"} and body["status"] == "ok"
    cookie = cookie_of(response)
    assert cookie is not None and cookie["value"] == body["token"]
    assert "max-age" not in cookie and "expires" not in cookie
    assert cookie["httponly"] is True and cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/"


async def test_login_with_remember_sets_a_persistent_cookie(client: GraphQLClient) -> None:
    """remember=true makes the cookie last refresh_token_ttl and marks the session."""
    await verified_account(client)
    response = await login(client, remember=True)
    cookie = cookie_of(response)
    assert cookie is not None
    assert cookie["max-age"] == str(client.services.settings.refresh_token_ttl)
    assert await Session.filter(remember=True).count() == 1


async def test_login_reports_unverified_email(client: GraphQLClient) -> None:
    """An unverified account logs in with status email_not_verified and a token."""
    await register(client)
    body = (await login(client)).json()
    assert body["status"] == "email_not_verified" and body["token"]


async def test_login_withholds_tokens_when_verification_is_required(
    make_client: MakeClient,
) -> None:
    """With verification required, an unverified login answers email_not_verified only."""
    client = make_client(rest_dialects=DIALECTS, require_email_verification=True)
    await register(client)
    response = await login(client, remember=True)
    assert response.json() == {"status": "email_not_verified"}
    assert cookie_of(response) is None


async def test_login_failures_answer_identically(client: GraphQLClient) -> None:
    """Unknown email and wrong password both answer 401 with the same message."""
    await verified_account(client)
    wrong = assert_error(await login(client, password="wrong password!"), 401)
    unknown = assert_error(await login(client, email="nobody@example.com"), 401)
    assert wrong == unknown
    assert_error(await call(client, "POST", f"{PREFIX}/login", json={"email": EMAIL}), 400)


async def test_login_lockout_answers_423_with_retry_after(make_client: MakeClient) -> None:
    """After the lockout threshold even the right password answers 423 with Retry-After."""
    client = make_client(rest_dialects=DIALECTS, lockout_threshold=2, lockout_minutes=10)
    await verified_account(client)
    for _ in range(2):
        assert_error(await login(client, password="wrong password!"), 401)
    locked = await login(client)
    assert_error(locked, 423)
    assert 0 < int(locked.headers["retry-after"]) <= 600


async def test_login_rate_limit_answers_429_with_retry_after(make_client: MakeClient) -> None:
    """The shared per-ip login limit answers 429 in Browsary's shape with Retry-After."""
    client = make_client(rest_dialects=DIALECTS, rate_limits={"login_ip": (1, 900)})
    await verified_account(client)
    assert (await login(client)).status_code == 200
    limited = await login(client)
    assert_error(limited, 429)
    assert 0 < int(limited.headers["retry-after"]) <= 2 * 900  # sliding window


async def test_unexpected_failures_answer_500_without_internals(
    client: GraphQLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unplanned exception answers 500 {status:'error', message} and hides the cause."""

    async def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(sessions, "login", explode)
    response = await login(client)
    assert assert_error(response, 500) == "Internal server error."
    assert "secret internals" not in response.text


async def test_cookies_are_secure_behind_https(make_client: MakeClient) -> None:
    """With an https public URL the token cookie is Secure."""
    client = make_client(rest_dialects=DIALECTS, public_url="https://auth.example.com")
    await verified_account(client)
    cookie = cookie_of(await login(client))
    assert cookie is not None and cookie["secure"] is True


# --- GET /api/auth/logout --------------------------------------------------------------------


async def test_logout_clears_the_cookie_and_revokes_the_session(client: GraphQLClient) -> None:
    """Logout answers {status:'logout'}, expires the cookie, and the old token is dead."""
    await verified_account(client)
    token = (await login(client)).json()["token"]
    response = await call(client, "GET", f"{PREFIX}/logout")
    assert response.status_code == 200
    assert response.json() == {"status": "logout"}
    cookie = cookie_of(response)
    assert cookie is not None and cookie["max-age"] == "0"
    assert cookie["path"] == "/" and cookie["httponly"] is True
    assert await Session.filter(revoked_at=None).count() == 0
    refused = await status(client, headers={"authorization": f"Bearer {token}"})
    assert refused == {"status": "ok", "auth": None}
    assert await client.me(token) is None


async def test_logout_always_answers_logout(client: GraphQLClient) -> None:
    """Logout without or with a dead token still answers {status:'logout'}."""
    anonymous = await call(client, "GET", f"{PREFIX}/logout")
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "logout"}
    dead = await call(
        client, "GET", f"{PREFIX}/logout", headers={"authorization": "Bearer not.a.jwt"}
    )
    assert dead.status_code == 200 and dead.json() == {"status": "logout"}


# --- GET /api --------------------------------------------------------------------------------


async def test_root_names_the_service_and_the_subject(client: GraphQLClient) -> None:
    """GET /api answers the service, version and 'public' or the signed-in {id, email}."""
    anonymous = await call(client, "GET", "/api")
    assert anonymous.status_code == 200
    assert anonymous.json() == {
        "service": "browsary::root",
        "version": "2024-05-01",
        "subject": "public",
    }
    user_id = await verified_account(client)
    await login(client)
    signed_in = (await call(client, "GET", "/api")).json()
    assert signed_in["subject"] == {"id": user_id, "email": EMAIL}


async def test_other_prefix_moves_the_root_beside_it(make_client: MakeClient) -> None:
    """Mounted at /compat/browsary/api/auth, the root is /compat/browsary/api."""
    client = make_client(rest_dialects=(("browsary", "/compat/browsary/api/auth"),))
    root = await call(client, "GET", "/compat/browsary/api")
    assert root.status_code == 200 and root.json()["service"] == "browsary::root"
    stat = await call(client, "GET", "/compat/browsary/api/auth")
    assert stat.json() == {"status": "ok", "auth": None}
    assert (await call(client, "GET", "/api")).status_code == 404
    assert (await call(client, "GET", "/api/auth")).status_code == 404


# --- scope, cross-surface, documentation -----------------------------------------------------


async def test_external_routes_without_providers(client: GraphQLClient) -> None:
    """With no provider configured, external/providers lists none, GET /external needs a
    session (401), and starting a flow is 404."""
    providers = await call(client, "GET", f"{PREFIX}/external/providers")
    assert providers.status_code == 200
    assert providers.json() == {"status": "ok", "providers": []}
    assert_error(await call(client, "GET", f"{PREFIX}/external"), 401)
    assert_error(await call(client, "GET", f"{PREFIX}/external/google/init"), 404)


async def test_graphql_account_logs_in_over_browsary(client: GraphQLClient) -> None:
    """An account registered over GraphQL signs in through the Browsary dialect."""
    await client.register(EMAIL)
    response = await login(client)
    assert response.status_code == 200 and response.json()["token"]


async def test_browsary_account_logs_in_over_graphql(client: GraphQLClient) -> None:
    """An account registered through Browsary signs in over GraphQL."""
    await register(client)
    assert (await client.login(EMAIL)).data["login"]["status"] == "OK"


async def test_session_revoked_over_graphql_is_refused(client: GraphQLClient) -> None:
    """After GraphQL logout with the Browsary token, the cookie no longer authenticates."""
    await verified_account(client)
    token = (await login(client)).json()["token"]
    assert (await status(client))["auth"] is not None
    assert (await client.gql("mutation { logout }", token=token)).data["logout"] is True
    assert await status(client) == {"status": "ok", "auth": None}
    assert (await call(client, "GET", "/api")).json()["subject"] == "public"


async def test_openapi_lists_the_endpoints(client: GraphQLClient) -> None:
    """openapi.json documents the status, register, login, logout and root routes."""
    document = (await call(client, "GET", f"{PREFIX}/openapi.json")).json()
    paths = document["paths"]
    assert "get" in paths[PREFIX]
    register_op = paths[f"{PREFIX}/register"]["post"]
    schema = register_op["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == set(REGISTER_BODY) | {"remember"}
    assert "post" in paths[f"{PREFIX}/login"]
    assert "get" in paths[f"{PREFIX}/logout"]
    assert "root" in paths["/api"]["get"]["summary"].lower()
    assert "status" in paths[PREFIX]["get"]["summary"].lower()
