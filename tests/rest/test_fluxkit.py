"""The FluxKit dialect: FluxKit's /auth contract (Bearer JWTs, `_id` ids, `{error:{code,message}}`)
served by authql's resolvers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from authql.models import RefreshToken, Session
from authql.resolvers import meta, sessions
from authql.services.clock import FrozenClock
from authql.settings import ConfigError
from tests.support import PASSWORD, GraphQLClient

MakeClient = Callable[..., GraphQLClient]
EMAIL = "alice@example.com"
NEW_PASSWORD = "new-secure-password"
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
INVALID_TOKEN = {"error": {"code": "INVALID_TOKEN", "message": "Token is expired or invalid"}}
INVALID_CREDENTIALS = {
    "error": {"code": "INVALID_CREDENTIALS", "message": "Invalid email or password"}
}
ENDPOINTS = {
    ("post", "/register"),
    ("post", "/login"),
    ("get", "/me"),
    ("post", "/logout"),
    ("post", "/refresh"),
    ("post", "/change-password"),
    ("get", "/health"),
    ("post", "/forgot-password"),
    ("post", "/reset-password"),
    ("post", "/magic-link"),
    ("post", "/verify-magic-link"),
    ("post", "/verify-2fa"),
    ("post", "/oauth/exchange"),
}


# --- helpers ---------------------------------------------------------------------------------


async def assert_no_secrets(response: httpx.Response) -> None:
    """No body or header carries a password hash, a stored token digest or the word "totp";
    and FluxKit never sets cookies."""
    assert "set-cookie" not in response.headers
    headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
    everything = f"{response.text}\n{headers}"
    assert "$argon2" not in everything
    digests = await RefreshToken.all().values_list("digest", flat=True)
    digests += [d for d in await Session.all().values_list("token_digest", flat=True) if d]
    for stored in digests:
        assert stored not in everything
    # Issued tokens are random base64; leave them out so they cannot spell the word by chance.
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("token", "refreshToken"):
            if isinstance(body.get(key), str):
                everything = everything.replace(body[key], "")
    assert "totp" not in everything.lower()


class Flux:
    """Speaks FluxKit to an in-process app at ``prefix``, checking every response."""

    def __init__(self, client: GraphQLClient, prefix: str = "/auth") -> None:
        self.client = client
        self.prefix = prefix

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["authorization"] = f"Bearer {token}"
        response = await self.client.http.request(
            method, self.prefix + path, json=body, headers=all_headers
        )
        await assert_no_secrets(response)
        return response

    async def register(self, email: str = EMAIL, password: str = PASSWORD, **extra: Any) -> Any:
        response = await self.call(
            "POST", "/register", {"email": email, "password": password, **extra}
        )
        assert response.status_code == 201, response.text
        return response.json()

    async def login(self, email: str = EMAIL, password: str = PASSWORD) -> httpx.Response:
        return await self.call("POST", "/login", {"email": email, "password": password})

    async def signed_in(self, email: str = EMAIL) -> dict[str, Any]:
        response = await self.login(email)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def me(self, token: str | None) -> httpx.Response:
        return await self.call("GET", "/me", token=token)


def flux(make_client: MakeClient, prefix: str = "/auth", **settings: Any) -> Flux:
    """A client for an app with only FluxKit mounted, at ``prefix``."""
    return Flux(make_client(rest_dialects=(("fluxkit", prefix),), **settings), prefix)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


# --- register --------------------------------------------------------------------------------


async def test_register_answers_201_with_user_token_and_refresh_token(
    make_client: MakeClient,
) -> None:
    """Registering returns 201 with the user (`_id`, email, name, createdAt) and a working
    token and refresh token."""
    api = flux(make_client)
    body = await api.register(name="Alice Johnson")
    assert set(body) == {"user", "token", "refreshToken"}
    assert set(body["user"]) == {"_id", "email", "name", "createdAt"}
    assert body["user"]["email"] == EMAIL
    assert body["user"]["name"] == "Alice Johnson"
    assert isinstance(body["user"]["_id"], str) and body["user"]["_id"]
    assert ISO_MS.match(body["user"]["createdAt"])
    me = await api.me(body["token"])
    assert me.status_code == 200
    assert me.json()["user"]["_id"] == body["user"]["_id"]
    refreshed = await api.call("POST", "/refresh", {"refreshToken": body["refreshToken"]})
    assert refreshed.status_code == 200


async def test_register_without_name_gives_null_name(make_client: MakeClient) -> None:
    """`name` is optional; an account without one shows `name: null`."""
    body = await flux(make_client).register()
    assert body["user"]["name"] is None


@pytest.mark.parametrize(
    "payload",
    [
        {"email": EMAIL},
        {"password": PASSWORD},
        {"email": "not-an-email", "password": PASSWORD},
        {"email": EMAIL, "password": "short"},
        {"email": EMAIL, "password": 12345678},
    ],
)
async def test_register_rejects_invalid_input_with_validation_error(
    make_client: MakeClient, payload: dict[str, Any]
) -> None:
    """Missing, malformed or too-short fields answer 400 VALIDATION_ERROR."""
    response = await flux(make_client).call("POST", "/register", payload)
    assert_error(response, 400, "VALIDATION_ERROR")


async def test_register_short_password_names_the_rule(make_client: MakeClient) -> None:
    """The validation message says which field broke which rule."""
    response = await flux(make_client).call("POST", "/register", {"email": EMAIL, "password": "x"})
    assert "password" in response.json()["error"]["message"]
    assert "8" in response.json()["error"]["message"]


async def test_register_malformed_json_is_a_validation_error(make_client: MakeClient) -> None:
    """A body that is not a JSON object answers 400 VALIDATION_ERROR."""
    api = flux(make_client)
    response = await api.client.http.post(
        "/auth/register", content=b"{nope", headers={"content-type": "application/json"}
    )
    await assert_no_secrets(response)
    assert_error(response, 400, "VALIDATION_ERROR")


async def test_register_taken_email_is_a_conflict(make_client: MakeClient) -> None:
    """Registering an email already in use answers 409 CONFLICT."""
    api = flux(make_client)
    await api.register()
    response = await api.call("POST", "/register", {"email": EMAIL.upper(), "password": PASSWORD})
    assert_error(response, 409, "CONFLICT")


async def test_register_with_email_verification_required_issues_no_tokens(
    make_client: MakeClient,
) -> None:
    """When email verification is required, registration returns the user without tokens and
    login answers 403 EMAIL_NOT_VERIFIED."""
    api = flux(make_client, require_email_verification=True)
    body = await api.register()
    assert set(body) == {"user"}
    assert set(body["user"]) == {"_id", "email", "name", "createdAt"}
    assert_error(await api.login(), 403, "EMAIL_NOT_VERIFIED")


# --- login -----------------------------------------------------------------------------------


async def test_login_returns_user_token_and_refresh_token(make_client: MakeClient) -> None:
    """Login answers 200 `{user:{_id,email,name}, token, refreshToken}`."""
    api = flux(make_client)
    registered = await api.register(name="Alice Johnson")
    body = await api.signed_in()
    assert set(body) == {"user", "token", "refreshToken"}
    assert body["user"] == {
        "_id": registered["user"]["_id"],
        "email": EMAIL,
        "name": "Alice Johnson",
    }
    assert (await api.me(body["token"])).status_code == 200


async def test_login_failure_is_identical_for_unknown_user_and_wrong_password(
    make_client: MakeClient,
) -> None:
    """A wrong password and an unknown email both answer 401 INVALID_CREDENTIALS, word for
    word."""
    api = flux(make_client)
    await api.register()
    wrong = await api.login(password="wrong password!")
    unknown = await api.login(email="bob@example.com")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == INVALID_CREDENTIALS


async def test_login_requires_email_and_password(make_client: MakeClient) -> None:
    """A login without email or password answers 400 VALIDATION_ERROR."""
    api = flux(make_client)
    assert_error(await api.call("POST", "/login", {"email": EMAIL}), 400, "VALIDATION_ERROR")
    assert_error(await api.call("POST", "/login", {"password": PASSWORD}), 400, "VALIDATION_ERROR")


async def test_login_locks_the_account_after_repeated_failures(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """After the lockout threshold even the right password answers 423 ACCOUNT_LOCKED with
    Retry-After, until the lock expires."""
    api = flux(make_client, lockout_threshold=3, lockout_minutes=10)
    await api.register()
    for _ in range(3):
        assert (await api.login(password="wrong password!")).status_code == 401
    locked = await api.login()
    assert_error(locked, 423, "ACCOUNT_LOCKED")
    assert 0 < int(locked.headers["retry-after"]) <= 600
    clock.advance(601)
    assert (await api.login()).status_code == 200


async def test_login_is_rate_limited_with_retry_after(make_client: MakeClient) -> None:
    """Too many logins from one address answer 429 RATE_LIMITED with Retry-After."""
    api = flux(make_client, rate_limits={"login_ip": (2, 60)})
    await api.register()
    assert (await api.login()).status_code == 200
    assert (await api.login()).status_code == 200
    limited = await api.login()
    assert_error(limited, 429, "RATE_LIMITED")
    assert int(limited.headers["retry-after"]) > 0


# --- me --------------------------------------------------------------------------------------


async def test_me_returns_the_signed_in_user(make_client: MakeClient) -> None:
    """GET /me with a Bearer token answers `{user:{_id,email,name,createdAt}}`."""
    api = flux(make_client)
    registered = await api.register(name="Alice")
    response = await api.me(registered["token"])
    assert response.status_code == 200
    assert response.json() == {"user": registered["user"]}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer not-a-jwt"},
        {"authorization": "Basic YWxpY2U6cGFzcw=="},
    ],
)
async def test_me_without_a_valid_token_is_invalid_token(
    make_client: MakeClient, headers: dict[str, str]
) -> None:
    """A missing, malformed or non-Bearer credential answers 401 INVALID_TOKEN."""
    response = await flux(make_client).call("GET", "/me", headers=headers)
    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN


async def test_me_refuses_an_expired_token(make_client: MakeClient, clock: FrozenClock) -> None:
    """An access token past its lifetime answers 401 INVALID_TOKEN."""
    api = flux(make_client)
    token = (await api.register())["token"]
    clock.advance(api.client.services.settings.access_token_ttl + 1)
    response = await api.me(token)
    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN


async def test_me_reads_no_cookie(make_client: MakeClient) -> None:
    """The token only counts in the Authorization header, never as a cookie."""
    api = flux(make_client)
    token = (await api.register())["token"]
    response = await api.call(
        "GET", "/me", headers={"cookie": f"token={token}; accessToken={token}"}
    )
    assert response.status_code == 401


# --- logout ----------------------------------------------------------------------------------


async def test_logout_revokes_the_session_at_once(make_client: MakeClient) -> None:
    """After logout the access token and its refresh token are refused on the next request."""
    api = flux(make_client)
    await api.register()
    signed_in = await api.signed_in()
    response = await api.call("POST", "/logout", token=signed_in["token"])
    assert response.status_code == 200
    assert response.json() == {"message": "Logged out successfully"}
    assert (await api.me(signed_in["token"])).json() == INVALID_TOKEN
    refreshed = await api.call("POST", "/refresh", {"refreshToken": signed_in["refreshToken"]})
    assert refreshed.status_code == 401
    assert refreshed.json() == INVALID_TOKEN


async def test_logout_leaves_other_sessions_signed_in(make_client: MakeClient) -> None:
    """Logging out ends only the session whose token was sent."""
    api = flux(make_client)
    other = (await api.register())["token"]
    current = (await api.signed_in())["token"]
    assert (await api.call("POST", "/logout", token=current)).status_code == 200
    assert (await api.me(other)).status_code == 200


@pytest.mark.parametrize("token", [None, "not-a-jwt"])
async def test_logout_without_a_valid_token_is_invalid_token(
    make_client: MakeClient, token: str | None
) -> None:
    """Logout without a valid Bearer token answers 401 INVALID_TOKEN."""
    response = await flux(make_client).call("POST", "/logout", token=token)
    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN


# --- refresh ---------------------------------------------------------------------------------


async def test_refresh_rotates_the_token_pair(make_client: MakeClient) -> None:
    """Refresh answers `{token, refreshToken}` with a new pair; the new token works."""
    api = flux(make_client)
    first = await api.register()
    response = await api.call("POST", "/refresh", {"refreshToken": first["refreshToken"]})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "refreshToken"}
    assert body["refreshToken"] != first["refreshToken"]
    assert (await api.me(body["token"])).status_code == 200


async def test_refresh_token_reuse_revokes_the_family(make_client: MakeClient) -> None:
    """Presenting a used refresh token answers 401 INVALID_TOKEN and kills the session: the
    rotated tokens stop working too."""
    api = flux(make_client)
    first = await api.register()
    rotated = (await api.call("POST", "/refresh", {"refreshToken": first["refreshToken"]})).json()
    reused = await api.call("POST", "/refresh", {"refreshToken": first["refreshToken"]})
    assert reused.status_code == 401
    assert reused.json() == INVALID_TOKEN
    assert (await api.me(rotated["token"])).json() == INVALID_TOKEN
    again = await api.call("POST", "/refresh", {"refreshToken": rotated["refreshToken"]})
    assert again.status_code == 401


@pytest.mark.parametrize(
    "payload", [{}, {"refreshToken": ""}, {"refreshToken": 42}, {"refreshToken": "made-up"}]
)
async def test_refresh_with_a_bad_or_missing_token_is_invalid_token(
    make_client: MakeClient, payload: dict[str, Any]
) -> None:
    """A missing, mistyped or unknown refresh token answers 401 INVALID_TOKEN."""
    response = await flux(make_client).call("POST", "/refresh", payload)
    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN


# --- change-password -------------------------------------------------------------------------


async def test_change_password_replaces_the_password(make_client: MakeClient) -> None:
    """Changing the password answers `{message}`; the old password stops working, the new one
    works, and the current token stays valid."""
    api = flux(make_client)
    token = (await api.register())["token"]
    response = await api.call(
        "POST",
        "/change-password",
        {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD},
        token=token,
    )
    assert response.status_code == 200
    assert response.json() == {"message": "Password changed successfully"}
    assert (await api.login()).json() == INVALID_CREDENTIALS
    assert (await api.login(password=NEW_PASSWORD)).status_code == 200
    assert (await api.me(token)).status_code == 200


async def test_change_password_revokes_the_other_sessions(make_client: MakeClient) -> None:
    """A password change signs out every other session of the account."""
    api = flux(make_client)
    other = (await api.register())["token"]
    current = (await api.signed_in())["token"]
    await api.call(
        "POST",
        "/change-password",
        {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD},
        token=current,
    )
    assert (await api.me(other)).json() == INVALID_TOKEN


async def test_change_password_with_wrong_current_password(make_client: MakeClient) -> None:
    """A wrong current password answers 401 INVALID_CREDENTIALS and changes nothing."""
    api = flux(make_client)
    token = (await api.register())["token"]
    response = await api.call(
        "POST",
        "/change-password",
        {"currentPassword": "wrong password!", "newPassword": NEW_PASSWORD},
        token=token,
    )
    assert response.status_code == 401
    assert response.json() == {
        "error": {"code": "INVALID_CREDENTIALS", "message": "Current password is incorrect"}
    }
    assert (await api.login()).status_code == 200


@pytest.mark.parametrize(
    "payload",
    [
        {"currentPassword": PASSWORD, "newPassword": "short"},
        {"currentPassword": PASSWORD},
        {"newPassword": NEW_PASSWORD},
    ],
)
async def test_change_password_rejects_invalid_input(
    make_client: MakeClient, payload: dict[str, Any]
) -> None:
    """A weak or missing password answers 400 VALIDATION_ERROR."""
    api = flux(make_client)
    token = (await api.register())["token"]
    response = await api.call("POST", "/change-password", payload, token=token)
    assert_error(response, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    "payload", [{}, {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}]
)
async def test_change_password_unauthenticated_is_invalid_token(
    make_client: MakeClient, payload: dict[str, Any]
) -> None:
    """Without a valid token change-password answers 401 INVALID_TOKEN, whatever the body."""
    response = await flux(make_client).call("POST", "/change-password", payload)
    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN


# --- health, errors, documentation, prefixes -------------------------------------------------


PROVIDERS = ["local", "magic-link"]


async def test_health_reports_healthy_and_the_local_provider(make_client: MakeClient) -> None:
    """GET /health answers `{status:'healthy', providers:[...]}` naming authql's methods in
    FluxKit's words."""
    response = await flux(make_client).call("GET", "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "providers": PROVIDERS}


async def test_health_reports_degraded_when_the_database_is_down(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the database does not answer, /health answers 503 `{status:'degraded'}`."""

    class DeadConnection:
        async def execute_query(self, query: str) -> None:
            raise ConnectionError("database down")

    api = flux(make_client)
    monkeypatch.setattr(meta, "get_connection", lambda name: DeadConnection())
    response = await api.call("GET", "/health")
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "providers": PROVIDERS}


async def test_unexpected_failure_is_a_bare_internal_error(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unplanned failure answers 500 INTERNAL_ERROR without revealing internals."""

    async def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret internals")

    api = flux(make_client)
    monkeypatch.setattr(sessions, "login", boom)
    response = await api.login()
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "INTERNAL_ERROR", "message": "Internal server error"}
    }
    assert "secret" not in response.text


async def test_openapi_lists_every_endpoint(make_client: MakeClient) -> None:
    """<prefix>/openapi.json documents every FluxKit route with its body and security."""
    api = flux(make_client)
    response = await api.call("GET", "/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    served = {(method, path.removeprefix("/auth")) for path, ops in paths.items() for method in ops}
    assert served == ENDPOINTS
    register = paths["/auth/register"]["post"]
    schema = register["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"email", "password", "name"}
    assert schema["required"] == ["email", "password"]
    assert "201" in register["responses"]
    for path in ("/auth/me", "/auth/logout", "/auth/change-password"):
        assert "security" in next(iter(paths[path].values()))
    assert "security" not in paths["/auth/login"]["post"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/google"),
        ("GET", "/github/callback"),
    ],
)
async def test_unconfigured_oauth_providers_are_not_found(
    make_client: MakeClient, method: str, path: str
) -> None:
    """Without configured OAuth providers, /google and /github answer 404."""
    response = await flux(make_client).call(
        method, path, {"email": EMAIL} if method == "POST" else None
    )
    assert response.status_code == 404


async def test_dialect_works_under_another_prefix(make_client: MakeClient) -> None:
    """Mounted at /compat/fluxkit/auth the same contract answers there, and not at /auth."""
    api = flux(make_client, "/compat/fluxkit/auth")
    registered = await api.register()
    assert (await api.me(registered["token"])).status_code == 200
    assert (await api.signed_in())["user"]["email"] == EMAIL
    spec = (await api.call("GET", "/openapi.json")).json()
    assert "/compat/fluxkit/auth/login" in spec["paths"]
    assert (await Flux(api.client).login()).status_code == 404


# --- one account, every surface --------------------------------------------------------------


async def test_account_registered_over_graphql_logs_in_over_fluxkit(
    make_client: MakeClient,
) -> None:
    """An account created over GraphQL signs in through FluxKit with the same `_id`."""
    api = flux(make_client)
    registered = await api.client.register(EMAIL, PASSWORD)
    body = await api.signed_in()
    assert body["user"]["_id"] == registered["user"]["id"]


async def test_account_registered_over_fluxkit_logs_in_over_graphql(
    make_client: MakeClient,
) -> None:
    """An account created through FluxKit signs in over GraphQL, and the FluxKit token works
    for GraphQL too."""
    api = flux(make_client)
    registered = await api.register()
    result = await api.client.login(EMAIL, PASSWORD)
    assert result.data["login"]["user"]["id"] == registered["user"]["_id"]
    assert (await api.client.me(registered["token"]))["email"] == EMAIL  # type: ignore[index]


async def test_session_revoked_over_graphql_is_refused_by_fluxkit(
    make_client: MakeClient,
) -> None:
    """A GraphQL logout kills the FluxKit token on its next request."""
    api = flux(make_client)
    token = (await api.register())["token"]
    assert (await api.me(token)).status_code == 200
    assert (await api.client.gql("mutation { logout }", token=token)).data["logout"] is True
    assert (await api.me(token)).json() == INVALID_TOKEN


async def test_fluxkit_logout_is_honoured_by_graphql(make_client: MakeClient) -> None:
    """A FluxKit logout kills the session for GraphQL too."""
    api = flux(make_client)
    token = (await api.register())["token"]
    await api.call("POST", "/logout", token=token)
    assert await api.client.me(token) is None


# --- mounting beside other dialects ----------------------------------------------------------


def test_two_dialects_on_the_same_paths_refuse_to_start(
    make_app: Callable[..., Starlette],
) -> None:
    """FluxKit and node-auth both at /auth: start-up fails naming both and a clashing route."""
    with pytest.raises(ConfigError) as raised:
        make_app(rest_dialects=(("node-auth", "/auth"), ("fluxkit", "/auth")))
    message = str(raised.value)
    assert "fluxkit" in message and "node-auth" in message
    assert re.search(r"\b(GET|POST) /auth/\S+", message)


def test_fluxkit_twice_at_one_prefix_refuses_to_start(make_app: Callable[..., Starlette]) -> None:
    """Mounting FluxKit twice at /auth fails at start-up, naming the clashing route."""
    with pytest.raises(ConfigError, match=r"POST /auth/register"):
        make_app(rest_dialects=(("fluxkit", "/auth"), ("fluxkit", "/auth")))


async def test_fluxkit_and_node_auth_at_different_prefixes(make_client: MakeClient) -> None:
    """node-auth at /auth and FluxKit at /compat/fluxkit/auth serve side by side, each in its
    own shape, over one account."""
    client = make_client(
        rest_dialects=(("node-auth", "/auth"), ("fluxkit", "/compat/fluxkit/auth"))
    )
    api = Flux(client, "/compat/fluxkit/auth")
    await api.register()
    assert set(await api.signed_in()) == {"user", "token", "refreshToken"}
    node = await client.http.post("/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert node.status_code == 200
    assert "token" not in node.json()
