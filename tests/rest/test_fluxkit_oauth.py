"""FluxKit's OAuth routes at /compat/fluxkit/auth against a real OpenID Connect provider (and
the GitHub stand-in): GET /{provider} and its callback, which hands the sign-in to the
frontend as a one-time code (never the token itself) that POST /oauth/exchange redeems once;
the 2FA, conflict and error redirects; replayed and foreign state."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from authql.models import Identity, OAuthState, RefreshToken, Session, User
from authql.services.clock import FrozenClock
from authql.settings import OAuthProviderConfig
from tests.github_standin import GitHubStandin, github_user
from tests.oauth_helpers import (
    ACME,
    Browser,
    acme_provider,
    acme_settings,
    make_browser_fixture,  # noqa: F401 - registers the fixture `make_browser` here
    standin_authorize,
)
from tests.oidc_provider import (
    CLIENT_ID,
    CLIENT_SECRET,
    OidcProvider,
    oidc_fixture,  # noqa: F401 - registers the session fixture `oidc` here
    oidc_provider,
)
from tests.support import PASSWORD, GraphQLClient, query, set_cookies
from tests.totp_helpers import STEP, enrol, totp_code

MakeClient = Callable[..., GraphQLClient]
MakeBrowser = Callable[..., Browser]

PREFIX = "/compat/fluxkit/auth"
PUBLIC = "http://testserver"
APP = "https://app.example.com"
CALLBACK = f"{PUBLIC}{PREFIX}/acme/callback"
FRONTEND = f"{PUBLIC}/auth/callback"
BINDING = "oauth_binding"
INVALID_CODE = {
    "error": {"code": "INVALID_OAUTH_CODE", "message": "OAuth code is expired or already used"}
}
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")


# --- helpers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def assert_no_secrets(response: httpx.Response, issued: set[str]) -> None:
    """No body or header holds a password hash, a stored token digest, or the word "totp"
    (outside the documented ``methods=TOTP`` of a 2FA redirect and the tokens the exchange
    returns); no redirect holds a JWT, a ``token=`` parameter or any token issued so far."""
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
    text = f"{response.text}\n{headers}"
    assert "$argon2" not in text
    digests = [*await RefreshToken.all().values_list("digest", flat=True)]
    digests += [d for d in await Session.all().values_list("token_digest", flat=True) if d]
    for stored in digests:
        assert stored not in text
    scrubbed = re.sub(r"methods=[\w,%]*", "methods=", text)
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("token", "refreshToken", "challengeToken"):
            if isinstance(body.get(key), str):
                scrubbed = scrubbed.replace(body[key], "")
    assert "totp" not in scrubbed.lower()
    location = response.headers.get("location")
    if location is not None:
        assert not JWT.search(location), location
        assert "token=" not in location.lower()
        for token in issued:
            assert token not in location


class Person:
    """One person's browser on the FluxKit routes: the app in-process, the provider over the
    network, one cookie jar; every answer is checked for leaked secrets, and every redirect
    against every token handed out so far (earlier redirects again once tokens exist)."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.http = browser.http
        self.issued: set[str] = set()
        self.locations: list[str] = []

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = path if path.startswith("http") else PREFIX + path
        response = await self.http.request(method, url, **kwargs)
        await assert_no_secrets(response, self.issued)
        if "location" in response.headers:
            self.locations.append(response.headers["location"])
        return response

    async def start(self, provider: str = ACME, **params: str) -> httpx.Response:
        """GET /{provider}: the redirect to the provider (not followed)."""
        return await self.call("GET", f"/{provider}", params=params)

    async def at_provider(
        self, start: httpx.Response, login: str | None, callback: str = CALLBACK
    ) -> str:
        """Sign in at the provider as ``login`` and approve: the callback URL it sends."""
        assert start.status_code == 302, start.text
        answer = await self.browser.authorize(start.headers["location"], login=login)
        assert answer.error is None and answer.code, answer
        assert answer.redirect_uri == callback
        return answer.url

    async def sign_in(
        self, login: str | None, provider: str = ACME, **params: str
    ) -> httpx.Response:
        """The whole flow: start, provider, callback; the callback's answer."""
        url = await self.at_provider(await self.start(provider, **params), login)
        return await self.call("GET", url)

    async def exchange(self, code: str | None) -> httpx.Response:
        response = await self.call("POST", "/oauth/exchange", json={"code": code})
        if response.status_code == 200:
            body = response.json()
            self.issued.update([body["token"], body["refreshToken"]])
            for location in self.locations:
                assert body["token"] not in location and body["refreshToken"] not in location
        return response

    async def tokens(self, login: str | None, **params: str) -> dict[str, Any]:
        """Sign in with the provider and exchange the code: the tokens body."""
        response = await self.sign_in(login, **params)
        assert response.status_code == 302
        code = query(response.headers["location"])["code"]
        exchanged = await self.exchange(code)
        assert exchanged.status_code == 200, exchanged.text
        return exchanged.json()  # type: ignore[no-any-return]

    async def me(self, token: str) -> httpx.Response:
        return await self.call("GET", "/me", headers={"authorization": f"Bearer {token}"})


@pytest.fixture
def settings(oidc: OidcProvider) -> dict[str, Any]:
    """FluxKit at /compat/fluxkit/auth on http://testserver with the acme provider."""
    return {
        "rest_dialects": (("fluxkit", PREFIX),),
        "public_url": PUBLIC,
        **acme_settings(oidc, allowed_redirects=(PUBLIC, APP)),
    }


@pytest.fixture
def client(make_client: MakeClient, settings: dict[str, Any]) -> GraphQLClient:
    return make_client(**settings)


@pytest.fixture
def person(client: GraphQLClient, make_browser: MakeBrowser) -> Callable[[], Person]:
    """A new person (a fresh browser) on the app."""
    return lambda: Person(make_browser(client.app))


# --- start -----------------------------------------------------------------------------------


async def test_start_redirects_to_the_provider_and_binds_the_browser(
    oidc: OidcProvider, person: Callable[[], Person]
) -> None:
    """GET /{provider} answers 302 to the provider's authorization endpoint (code flow, S256
    PKCE, state, nonce, our callback) and sets the HttpOnly, SameSite=Lax binding cookie on
    the provider's routes for ten minutes."""
    browser = person()
    response = await browser.start()

    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(oidc.authorization_endpoint + "?")
    params = query(location)
    assert params["response_type"] == "code"
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == CALLBACK
    assert params["code_challenge_method"] == "S256"
    assert params["code_challenge"] and params["state"] and params["nonce"]
    cookies = set_cookies(response)
    assert set(cookies) == {BINDING}
    cookie = cookies[BINDING]
    assert cookie["path"] == f"{PREFIX}/acme"
    assert int(cookie["max-age"]) == 600
    assert cookie["samesite"].lower() == "lax"
    assert "httponly" in cookie and "secure" not in cookie
    assert cookie["value"] not in location
    assert await OAuthState.all().count() == 1


async def test_over_https_the_binding_cookie_carries_the_host_prefix(
    make_client: MakeClient, settings: dict[str, Any]
) -> None:
    """With an https public URL the binding cookie is __Host-oauth_binding, Secure, path /."""
    client = make_client(**settings | {"public_url": "https://testserver"})
    response = await client.http.get(f"{PREFIX}/acme")

    assert response.status_code == 302
    assert query(response.headers["location"])["redirect_uri"] == (
        f"https://testserver{PREFIX}/acme/callback"
    )
    cookie = set_cookies(response)[f"__Host-{BINDING}"]
    assert cookie["path"] == "/"
    assert "secure" in cookie and "httponly" in cookie


@pytest.mark.parametrize("path", ["/google", "/github/callback?code=c&state=s", "/nope"])
async def test_an_unconfigured_provider_is_404(person: Callable[[], Person], path: str) -> None:
    """A provider that is not configured has no routes: 404, no cookie, no flow."""
    response = await person().call("GET", path)

    assert response.status_code == 404
    assert "set-cookie" not in response.headers
    assert await OAuthState.all().count() == 0


async def test_providers_never_shadow_fluxkit_routes(
    make_client: MakeClient, settings: dict[str, Any], oidc: OidcProvider
) -> None:
    """A provider named like a FluxKit path (me, health, oauth) is not served here: /me,
    /health and /openapi.json answer as always, and its callback is 404."""
    providers = tuple(acme_provider(oidc, name=name) for name in ("me", "health", "oauth"))
    client = make_client(**settings | {"oauth_providers": (*providers, acme_provider(oidc))})
    http = client.http

    me = await http.get(f"{PREFIX}/me")
    health = await http.get(f"{PREFIX}/health")
    spec = await http.get(f"{PREFIX}/openapi.json")
    callback = await http.get(f"{PREFIX}/me/callback?code=c&state=s")

    assert me.status_code == 401
    assert me.json()["error"]["code"] == "INVALID_TOKEN"
    assert health.status_code == 200
    assert {"me", "health", "oauth", "acme"} <= set(health.json()["providers"])
    assert spec.status_code == 200
    assert f"{PREFIX}/me/callback" not in spec.json()["paths"]
    assert callback.status_code == 404
    assert await OAuthState.all().count() == 0


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/x",
        "http://testserver.evil.example/",
        "javascript:alert(1)",
        "https://user@app.example.com/",
    ],
)
async def test_an_open_redirect_target_is_refused(
    person: Callable[[], Person], target: str
) -> None:
    """A redirect target that AUTHQL_ALLOWED_REDIRECTS does not list is 400
    VALIDATION_ERROR: no redirect, no cookie, no flow."""
    response = await person().start(redirect=target)

    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "VALIDATION_ERROR", "message": "redirect: Not an allowed URL."}
    }
    assert "location" not in response.headers
    assert "set-cookie" not in response.headers
    assert await OAuthState.all().count() == 0


async def test_an_unreachable_provider_is_502_and_starts_nothing(
    make_client: MakeClient, settings: dict[str, Any]
) -> None:
    """A provider whose discovery document cannot be fetched answers 502 PROVIDER_ERROR."""
    down = OAuthProviderConfig(
        name="down",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        discovery_url=f"http://127.0.0.1:{free_port()}/.well-known/openid-configuration",
    )
    client = make_client(**settings | {"oauth_providers": (down,)})
    response = await client.http.get(f"{PREFIX}/down")

    assert response.status_code == 502
    assert response.json() == {
        "error": {"code": "PROVIDER_ERROR", "message": "An external provider failed"}
    }
    assert "set-cookie" not in response.headers
    assert await OAuthState.all().count() == 0


# --- callback and exchange -------------------------------------------------------------------


async def test_sign_up_hands_a_one_time_code_to_the_frontend(
    person: Callable[[], Person],
) -> None:
    """A new identity creates an account and the callback 302s to
    <public url>/auth/callback?code=<one-time code> (no token), clearing the binding;
    POST /oauth/exchange turns the code into FluxKit's {user, token, refreshToken}."""
    browser = person()
    response = await browser.sign_in("alice")

    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(f"{FRONTEND}?code=")
    assert set(query(location)) == {"code"}
    cookies = set_cookies(response)
    assert set(cookies) == {BINDING}
    assert int(cookies[BINDING]["max-age"]) == 0
    assert cookies[BINDING]["path"] == f"{PREFIX}/acme"

    exchanged = await browser.exchange(query(location)["code"])

    assert exchanged.status_code == 200
    body = exchanged.json()
    assert set(body) == {"user", "token", "refreshToken"}
    assert set(body["user"]) == {"_id", "email", "name"}
    assert body["user"]["email"] == "alice@example.com"
    assert body["user"]["name"] == "Alice"
    assert JWT.fullmatch(body["token"])
    assert "set-cookie" not in exchanged.headers
    me = await browser.me(body["token"])
    assert me.status_code == 200 and me.json()["user"]["_id"] == body["user"]["_id"]
    user = await User.get(email="alice@example.com")
    assert user.email_verified is True and user.password_hash is None
    identity = await Identity.get(user_id=user.id)
    assert (identity.provider, identity.subject) == ("acme", "alice")


async def test_the_one_time_code_works_once(person: Callable[[], Person]) -> None:
    """A code is single use: the second exchange, an unknown code and an empty one are 401
    INVALID_OAUTH_CODE; a missing one is 400 VALIDATION_ERROR."""
    browser = person()
    response = await browser.sign_in("alice")
    code = query(response.headers["location"])["code"]

    first = await browser.exchange(code)
    again = await browser.exchange(code)
    unknown = await browser.exchange("not-a-code")
    empty = await browser.exchange("")
    missing = await browser.call("POST", "/oauth/exchange", json={})

    assert first.status_code == 200
    for refused in (again, unknown):
        assert (refused.status_code, refused.json()) == (401, INVALID_CODE)
    assert (empty.status_code, empty.json()) == (401, INVALID_CODE)
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_the_one_time_code_expires_after_a_minute(
    person: Callable[[], Person], clock: FrozenClock
) -> None:
    """A code not exchanged within 60 seconds is 401 INVALID_OAUTH_CODE."""
    browser = person()
    response = await browser.sign_in("alice")
    code = query(response.headers["location"])["code"]

    clock.advance(61)
    late = await browser.exchange(code)

    assert (late.status_code, late.json()) == (401, INVALID_CODE)


async def test_a_known_identity_signs_in_to_its_account(person: Callable[[], Person]) -> None:
    """The same identity from another browser signs in to the same account, and the
    refresh token it gets works with POST /refresh."""
    first = await person().tokens("alice")
    second_browser = person()
    second = await second_browser.tokens("alice")

    assert second["user"]["_id"] == first["user"]["_id"]
    assert second["token"] != first["token"]
    assert await User.all().count() == 1
    assert await Session.all().count() == 2
    refreshed = await second_browser.call(
        "POST", "/refresh", json={"refreshToken": second["refreshToken"]}
    )
    assert refreshed.status_code == 200
    assert set(refreshed.json()) == {"token", "refreshToken"}


async def test_an_allowed_frontend_receives_the_code(person: Callable[[], Person]) -> None:
    """With ?redirect=<allowed frontend> the callback sends the browser to that frontend's
    /auth/callback page (its query dropped)."""
    browser = person()
    response = await browser.sign_in("alice", redirect=f"{APP}/?from=login")

    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(f"{APP}/auth/callback?code=")
    assert set(query(location)) == {"code"}
    assert (await browser.exchange(query(location)["code"])).status_code == 200


async def test_with_2fa_the_callback_redirects_with_a_challenge(
    person: Callable[[], Person], client: GraphQLClient, clock: FrozenClock
) -> None:
    """With 2FA on, the callback hands out no code: it 302s to
    /auth/callback?challenge=&methods=TOTP,BACKUP_CODE&status=TWO_FACTOR_REQUIRED, and
    POST /verify-2fa with the challenge completes the sign-in."""
    tokens = await person().tokens("alice")
    enrolment = await enrol(client, clock, access_token=tokens["token"])
    clock.advance(STEP)
    sessions = await Session.filter(revoked_at=None).count()

    browser = person()
    response = await browser.sign_in("alice")

    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(f"{FRONTEND}?")
    params = query(location)
    assert set(params) == {"challenge", "methods", "status"}
    assert params["methods"] == "TOTP,BACKUP_CODE"
    assert params["status"] == "TWO_FACTOR_REQUIRED"
    assert await Session.filter(revoked_at=None).count() == sessions
    as_bearer = await browser.me(params["challenge"])
    assert as_bearer.status_code == 401

    verified = await browser.call(
        "POST",
        "/verify-2fa",
        json={"challengeToken": params["challenge"], "code": totp_code(enrolment.secret, clock)},
    )
    assert verified.status_code == 200, verified.text
    assert set(verified.json()) == {"user", "token", "refreshToken"}
    assert verified.json()["user"]["_id"] == tokens["user"]["_id"]


async def test_a_two_factor_policy_redirects_to_setup(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """Under AUTHQL_REQUIRE_TWO_FACTOR an account without a factor gets the challenge with
    status=TWO_FACTOR_SETUP_REQUIRED and methods=TOTP, and no code."""
    client = make_client(**settings | {"require_two_factor": True})
    response = await Person(make_browser(client.app)).sign_in("alice")

    params = query(response.headers["location"])
    assert set(params) == {"challenge", "methods", "status"}
    assert (params["status"], params["methods"]) == ("TWO_FACTOR_SETUP_REQUIRED", "TOTP")


async def test_an_unverified_address_under_a_verification_policy_gets_no_code(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """With verification required, an address the provider did not verify gets
    ?error=EMAIL_NOT_VERIFIED and no session."""
    client = make_client(**settings | {"require_email_verification": True})
    response = await Person(make_browser(client.app)).sign_in("dave")

    assert response.headers["location"] == f"{FRONTEND}?error=EMAIL_NOT_VERIFIED"
    assert await Session.all().count() == 0


async def test_an_account_with_the_same_email_gets_the_conflict_redirect(
    person: Callable[[], Person], client: GraphQLClient
) -> None:
    """An unknown identity whose email belongs to an account is not linked: 302
    /auth/callback?error=OAUTH_ACCOUNT_CONFLICT&email=, no session, no identity."""
    registered = await client.http.post(
        f"{PREFIX}/register", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert registered.status_code == 201
    sessions = await Session.all().count()

    response = await person().sign_in("alice")

    assert response.status_code == 302
    assert response.headers["location"] == (
        f"{FRONTEND}?error=OAUTH_ACCOUNT_CONFLICT&email=alice%40example.com"
    )
    assert await Identity.all().count() == 0
    assert await User.all().count() == 1
    assert await Session.all().count() == sessions


# --- refusals --------------------------------------------------------------------------------


async def test_a_replayed_state_is_refused(person: Callable[[], Person]) -> None:
    """A callback delivered twice (binding cookie and all) works once; the replay gets
    ?error=INVALID_STATE and no code."""
    browser = person()
    start = await browser.start()
    binding = set_cookies(start)[BINDING]["value"]
    url = await browser.at_provider(start, "alice")
    cookie = {"cookie": f"{BINDING}={binding}"}

    first = await browser.call("GET", url, headers=cookie)
    assert "code" in query(first.headers["location"])
    sessions = await Session.all().count()

    replay = await browser.call("GET", url, headers=cookie)
    assert replay.status_code == 302
    assert replay.headers["location"] == f"{FRONTEND}?error=INVALID_STATE"
    assert await Session.all().count() == sessions


async def test_a_foreign_state_is_refused(person: Callable[[], Person]) -> None:
    """A callback URL from another browser's flow is refused in this one (whether or not
    it has a flow of its own) and creates nothing; it still works where it started."""
    attacker = person()
    url = await attacker.at_provider(await attacker.start(), "mallory")

    victim = person()
    bare = await victim.call("GET", url)
    await victim.start()
    bound = await victim.call("GET", url)

    for response in (bare, bound):
        assert response.status_code == 302
        assert response.headers["location"] == f"{FRONTEND}?error=INVALID_STATE"
    assert await User.all().count() == 0

    own = await attacker.call("GET", url)
    assert "code" in query(own.headers["location"])


async def test_a_declined_authorization_is_a_provider_error(person: Callable[[], Person]) -> None:
    """The provider coming back with error= (the user declined), or without a code,
    redirects to ?error=OAUTH_PROVIDER_ERROR and clears the binding."""
    browser = person()
    await browser.start()

    declined = await browser.call("GET", "/acme/callback?error=access_denied&state=whatever")
    codeless = await browser.call("GET", "/acme/callback?state=whatever")

    for response in (declined, codeless):
        assert response.status_code == 302
        assert response.headers["location"] == f"{FRONTEND}?error=OAUTH_PROVIDER_ERROR"
        assert int(set_cookies(response)[BINDING]["max-age"]) == 0


async def test_a_code_the_provider_refuses_is_a_token_exchange_failure(
    person: Callable[[], Person],
) -> None:
    """A tampered code with a genuine state gives ?error=OAUTH_TOKEN_EXCHANGE_FAILED."""
    browser = person()
    url = await browser.at_provider(await browser.start(), "alice")
    tampered = re.sub(r"code=[^&]+", "code=forged", url)

    response = await browser.call("GET", tampered)

    assert response.headers["location"] == f"{FRONTEND}?error=OAUTH_TOKEN_EXCHANGE_FAILED"
    assert await User.all().count() == 0


async def test_a_provider_down_at_the_callback_creates_nothing(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """A provider that stops answering before the code exchange gives
    ?error=PROVIDER_ERROR and no account."""
    async with oidc_provider() as own:
        client = make_client(**settings | {"oauth_providers": (acme_provider(own),)})
        browser = Person(make_browser(client.app))
        url = await browser.at_provider(await browser.start(), "alice")

    response = await browser.call("GET", url)

    assert response.headers["location"] == f"{FRONTEND}?error=PROVIDER_ERROR"
    assert await User.all().count() == 0
    assert await Identity.all().count() == 0


# --- GitHub, health, OpenAPI -----------------------------------------------------------------


@pytest.fixture
def github() -> Iterator[GitHubStandin]:
    with GitHubStandin(users=[github_user(4242, "octo", "octo@example.com")]) as standin:
        yield standin


async def test_github_signs_in_at_upstreams_path(
    make_client: MakeClient,
    make_browser: MakeBrowser,
    settings: dict[str, Any],
    github: GitHubStandin,
) -> None:
    """A provider named github is served at upstream's /github and /github/callback."""
    client = make_client(**settings | {"oauth_providers": (github.provider(),)})
    browser = Person(make_browser(client.app, authorizer=standin_authorize))
    start = await browser.start("github")
    url = await browser.at_provider(start, "octo", callback=f"{PUBLIC}{PREFIX}/github/callback")

    response = await browser.call("GET", url)
    body = (await browser.exchange(query(response.headers["location"])["code"])).json()

    assert body["user"]["email"] == "octo@example.com"
    identity = await Identity.get()
    assert (identity.provider, identity.subject) == ("github", "4242")


async def test_health_and_openapi_list_the_provider_routes(client: GraphQLClient) -> None:
    """/health names the provider; openapi.json documents GET /acme, GET /acme/callback and
    POST /oauth/exchange with its body."""
    health = await client.http.get(f"{PREFIX}/health")
    paths = (await client.http.get(f"{PREFIX}/openapi.json")).json()["paths"]

    assert "acme" in health.json()["providers"]
    assert set(paths[f"{PREFIX}/acme"]) == {"get"}
    assert "302" in paths[f"{PREFIX}/acme"]["get"]["responses"]
    assert set(paths[f"{PREFIX}/acme/callback"]) == {"get"}
    exchange = paths[f"{PREFIX}/oauth/exchange"]["post"]
    schema = exchange["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {
        "type": "object",
        "properties": {"code": {"type": "string"}},
        "required": ["code"],
    }
