"""ModularAuth-Kit's Google sign-in routes at /auth for any configured provider, against a
real OpenID Connect provider (and the GitHub stand-in): GET /{provider} and its callback,
which sets ``sid`` and 302s to /?oauth=success, or to /?oauth=2fa, or to /?error= with
upstream's codes; replayed and foreign state; no route shadowed."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from authql.models import Identity, OAuthState, RefreshToken, Session, User
from authql.services.clock import FrozenClock
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
    OidcProvider,
    oidc_fixture,  # noqa: F401 - registers the session fixture `oidc` here
    oidc_provider,
)
from tests.support import PASSWORD, GraphQLClient, query, set_cookies
from tests.totp_helpers import STEP, enrol, totp_code

MakeClient = Callable[..., GraphQLClient]
MakeBrowser = Callable[..., Browser]

PREFIX = "/auth"
PUBLIC = "http://testserver"
CALLBACK = f"{PUBLIC}/auth/acme/callback"
HOME = f"{PUBLIC}/"
BINDING = "oauth_state"
SUCCESS = f"{HOME}?oauth=success"
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")


# --- helpers ---------------------------------------------------------------------------------


async def assert_no_secrets(response: httpx.Response) -> None:
    """No body or header holds a password hash, a stored token digest or the word "totp"
    (outside the documented ``methods=`` of a 2FA redirect); no redirect holds a JWT, a
    token parameter or the session id set beside it."""
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
    text = f"{response.text}\n{headers}"
    assert "$argon2" not in text
    digests = [*await RefreshToken.all().values_list("digest", flat=True)]
    digests += [d for d in await Session.all().values_list("token_digest", flat=True) if d]
    for stored in digests:
        assert stored not in text
    assert "totp" not in re.sub(r"methods=[\w,%]*", "methods=", text).lower()
    location = response.headers.get("location")
    if location is not None:
        assert not JWT.search(location), location
        assert "token=" not in location.lower()
        for cookie in set_cookies(response).values():
            if cookie["value"]:
                assert cookie["value"] not in location


class Person:
    """One person's browser on the ModularAuth-Kit routes: the app in-process, the provider
    over the network, one cookie jar (``_csrf`` included); every answer is checked."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.http = browser.http

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = path if path.startswith("http") else PREFIX + path
        headers = dict(kwargs.pop("headers", None) or {})
        csrf = self.http.cookies.get("_csrf")
        if method != "GET" and csrf:
            headers.setdefault("x-csrf-token", csrf)
        response = await self.http.request(method, url, headers=headers, **kwargs)
        await assert_no_secrets(response)
        return response

    async def prime(self) -> None:
        """A first GET, as a browser app does, for the ``_csrf`` cookie."""
        await self.call("GET", "/me")

    async def start(self, provider: str = ACME) -> httpx.Response:
        """GET /{provider}: the redirect to the provider (not followed)."""
        return await self.call("GET", f"/{provider}")

    async def at_provider(
        self, start: httpx.Response, login: str | None, callback: str = CALLBACK
    ) -> str:
        """Sign in at the provider as ``login`` and approve: the callback URL it sends."""
        assert start.status_code == 302, start.text
        answer = await self.browser.authorize(start.headers["location"], login=login)
        assert answer.error is None and answer.code, answer
        assert answer.redirect_uri == callback
        return answer.url

    async def sign_in(self, login: str | None, provider: str = ACME) -> httpx.Response:
        """The whole flow: start, provider, callback; the callback's answer."""
        url = await self.at_provider(await self.start(provider), login)
        return await self.call("GET", url)

    async def me(self) -> httpx.Response:
        return await self.call("GET", "/me")


@pytest.fixture
def settings(oidc: OidcProvider) -> dict[str, Any]:
    """ModularAuth-Kit at /auth on http://testserver with the acme provider (GraphQL's SPA
    callback allowed, for enrolling 2FA over GraphQL)."""
    return {
        "rest_dialects": (("modularauth", PREFIX),),
        "public_url": PUBLIC,
        **acme_settings(oidc),
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
    """GET /{provider} answers 302 to the provider (code flow, S256 PKCE, state, nonce, our
    callback) and sets only the HttpOnly, SameSite=Lax ``oauth_state`` binding cookie on the
    provider's routes for ten minutes; the state itself stays server-side."""
    browser = person()
    await browser.prime()
    response = await browser.start()

    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(oidc.authorization_endpoint + "?")
    params = query(location)
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == CALLBACK
    assert params["code_challenge_method"] == "S256"
    assert params["code_challenge"] and params["state"] and params["nonce"]
    cookies = set_cookies(response)
    assert set(cookies) == {BINDING}
    cookie = cookies[BINDING]
    assert cookie["path"] == "/auth/acme"
    assert int(cookie["max-age"]) == 600
    assert cookie["samesite"].lower() == "lax"
    assert "httponly" in cookie and "secure" not in cookie
    assert cookie["value"] not in location and params["state"] not in cookie["value"]
    assert await OAuthState.all().count() == 1


async def test_over_https_the_binding_cookie_carries_the_host_prefix(
    make_client: MakeClient, settings: dict[str, Any]
) -> None:
    """With an https public URL the binding cookie is __Host-oauth_state, Secure, path /."""
    client = make_client(**settings | {"public_url": "https://testserver"})
    response = await client.http.get(f"{PREFIX}/acme")

    assert response.status_code == 302
    assert query(response.headers["location"])["redirect_uri"] == (
        "https://testserver/auth/acme/callback"
    )
    cookie = set_cookies(response)[f"__Host-{BINDING}"]
    assert cookie["path"] == "/"
    assert "secure" in cookie and "httponly" in cookie


@pytest.mark.parametrize(
    "path", ["/google", "/google/callback?code=c&state=s", "/github/callback", "/nope"]
)
async def test_an_unconfigured_provider_is_404(person: Callable[[], Person], path: str) -> None:
    """A provider that is not configured has no routes: 404 and no flow."""
    response = await person().call("GET", path)

    assert response.status_code == 404
    assert BINDING not in set_cookies(response)
    assert await OAuthState.all().count() == 0


async def test_providers_never_shadow_modularauth_routes(
    make_client: MakeClient, settings: dict[str, Any], oidc: OidcProvider
) -> None:
    """A provider named like a ModularAuth-Kit path (me, sessions, login) is not served
    here: /me, /sessions and /openapi.json answer as always; its callback path is no
    route (404; 405 beside DELETE /sessions/{id})."""
    providers = tuple(acme_provider(oidc, name=name) for name in ("me", "sessions", "login"))
    client = make_client(**settings | {"oauth_providers": (*providers, acme_provider(oidc))})
    http = client.http

    me = await http.get(f"{PREFIX}/me")
    listed = await http.get(f"{PREFIX}/sessions")
    spec = await http.get(f"{PREFIX}/openapi.json")
    callbacks = [
        await http.get(f"{PREFIX}/{name}/callback?code=c&state=s")
        for name in ("me", "sessions", "login")
    ]

    for response in (me, listed):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert "/auth/acme" in paths and "/auth/me/callback" not in paths
    assert [response.status_code for response in callbacks] == [404, 405, 404]
    assert await OAuthState.all().count() == 0


async def test_an_unreachable_provider_is_internal_error(
    make_client: MakeClient, settings: dict[str, Any]
) -> None:
    """A provider that does not answer makes GET /{provider} a 500 INTERNAL_ERROR envelope
    (as upstream's error handler), with no cookie and no flow."""
    async with oidc_provider() as own:
        provider = acme_provider(own)
    client = make_client(**settings | {"oauth_providers": (provider,)})

    response = await client.http.get(f"{PREFIX}/acme")

    assert response.status_code == 500
    assert response.json() == {
        "success": False,
        "error": {
            "code": "INTERNAL_ERROR",
            "message": "An unexpected error occurred. Please try again later",
            "details": [],
        },
    }
    assert BINDING not in set_cookies(response)
    assert await OAuthState.all().count() == 0


# --- callback --------------------------------------------------------------------------------


async def test_sign_up_sets_sid_and_redirects_to_oauth_success(
    person: Callable[[], Person], client: GraphQLClient
) -> None:
    """A new identity creates an account without a password (email verified as the provider
    says), sets ``sid`` as /login does, clears the binding and 302s to /?oauth=success."""
    browser = person()
    response = await browser.sign_in("alice")

    assert response.status_code == 302
    assert response.headers["location"] == SUCCESS
    cookies = set_cookies(response)
    assert {"sid", BINDING} <= set(cookies)
    sid = cookies["sid"]
    assert sid["path"] == "/" and sid["samesite"].lower() == "lax" and "httponly" in sid
    assert int(sid["max-age"]) == client.services.settings.refresh_token_ttl
    assert int(cookies[BINDING]["max-age"]) == 0
    assert cookies[BINDING]["path"] == "/auth/acme"

    me = await browser.me()
    assert me.status_code == 200
    user = me.json()["data"]["user"]
    assert user["email"] == "alice@example.com"
    assert user["isEmailVerified"] is True
    assert user["fullName"] == "Alice"
    stored = await User.get(email="alice@example.com")
    assert stored.password_hash is None
    identity = await Identity.get(user_id=stored.id)
    assert (identity.provider, identity.subject) == ("acme", "alice")


async def test_a_known_identity_signs_in_to_its_account(person: Callable[[], Person]) -> None:
    """The same identity from another browser signs in to the same account; the new
    ``sid`` is a working session (listed, and logout ends it)."""
    first = person()
    await first.sign_in("alice")
    user_id = (await first.me()).json()["data"]["user"]["_id"]

    second = person()
    response = await second.sign_in("alice")

    assert response.headers["location"] == SUCCESS
    assert (await second.me()).json()["data"]["user"]["_id"] == user_id
    assert await User.all().count() == 1
    sessions = (await second.call("GET", "/sessions")).json()["data"]["sessions"]
    assert len(sessions) == 2
    logout = await second.call("POST", "/logout")
    assert logout.status_code == 200
    assert (await second.me()).status_code == 401
    assert (await first.me()).status_code == 200


async def test_with_2fa_the_callback_redirects_with_a_challenge(
    person: Callable[[], Person],
    client: GraphQLClient,
    make_browser: MakeBrowser,
    clock: FrozenClock,
) -> None:
    """With 2FA on, the callback sets no ``sid`` and 302s to
    /?oauth=2fa&challenge=&methods=; POST /login/2fa with the challenge then signs in."""
    spa = make_browser(client.app)
    flow = await spa.sign_in_with(ACME, login="alice")  # the account, over GraphQL
    enrolment = await enrol(client, clock, access_token=flow.payload["accessToken"])
    clock.advance(STEP)

    browser = person()
    await browser.prime()
    response = await browser.sign_in("alice")

    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(f"{HOME}?oauth=2fa&challenge=")
    params = query(location)
    assert set(params) == {"oauth", "challenge", "methods"}
    assert {"totp", "backup_code"} <= set(params["methods"].split(","))
    assert "sid" not in set_cookies(response)
    assert (await browser.me()).status_code == 401

    verified = await browser.call(
        "POST",
        "/login/2fa",
        json={"challengeToken": params["challenge"], "code": totp_code(enrolment.secret, clock)},
    )
    assert verified.status_code == 200, verified.text
    assert "sid" in set_cookies(verified)
    assert (await browser.me()).json()["data"]["user"]["email"] == "alice@example.com"


async def test_a_two_factor_policy_redirects_to_setup(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """Under AUTHQL_REQUIRE_TWO_FACTOR an account without a factor gets
    /?oauth=2fa_setup&challenge=&methods=totp and no ``sid``."""
    client = make_client(**settings | {"require_two_factor": True})
    response = await Person(make_browser(client.app)).sign_in("alice")

    params = query(response.headers["location"])
    assert (params["oauth"], params["methods"]) == ("2fa_setup", "totp")
    assert params["challenge"]
    assert "sid" not in set_cookies(response)


async def test_an_unverified_address_under_a_verification_policy_gets_no_session(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """With verification required, an address the provider did not verify gets
    /?error=email_not_verified and no ``sid``."""
    client = make_client(**settings | {"require_email_verification": True})
    response = await Person(make_browser(client.app)).sign_in("dave")

    assert response.headers["location"] == f"{HOME}?error=email_not_verified"
    assert "sid" not in set_cookies(response)
    assert await Session.all().count() == 0


async def test_an_account_with_the_same_email_is_not_linked(
    person: Callable[[], Person],
) -> None:
    """Unlike upstream, an unknown identity whose email has an account is not linked to
    it: /?error=account_exists, no ``sid``, no identity."""
    owner = person()
    await owner.prime()
    registered = await owner.call(
        "POST", "/register", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert registered.status_code == 201
    sessions = await Session.all().count()

    browser = person()
    response = await browser.sign_in("alice")

    assert response.headers["location"] == f"{HOME}?error=account_exists"
    assert "sid" not in set_cookies(response)
    assert await Identity.all().count() == 0
    assert await Session.all().count() == sessions


# --- refusals --------------------------------------------------------------------------------


async def test_a_replayed_state_is_refused(person: Callable[[], Person]) -> None:
    """A callback delivered twice (binding cookie and all) works once; the replay gets
    /?error=oauth_state_expired and no ``sid``."""
    browser = person()
    start = await browser.start()
    binding = set_cookies(start)[BINDING]["value"]
    url = await browser.at_provider(start, "alice")
    cookie = {"cookie": f"{BINDING}={binding}"}

    first = await browser.call("GET", url, headers=cookie)
    assert first.headers["location"] == SUCCESS
    sessions = await Session.all().count()

    replay = await browser.call("GET", url, headers=cookie)
    assert replay.headers["location"] == f"{HOME}?error=oauth_state_expired"
    assert "sid" not in set_cookies(replay)
    assert await Session.all().count() == sessions


async def test_a_foreign_state_is_refused(person: Callable[[], Person]) -> None:
    """A callback URL from another browser's flow is refused in this one (with or without
    a flow of its own) and creates nothing; it still works where it started."""
    attacker = person()
    url = await attacker.at_provider(await attacker.start(), "mallory")

    victim = person()
    bare = await victim.call("GET", url)
    await victim.start()
    bound = await victim.call("GET", url)

    for response in (bare, bound):
        assert response.headers["location"] == f"{HOME}?error=oauth_state_expired"
        assert "sid" not in set_cookies(response)
    assert await User.all().count() == 0

    own = await attacker.call("GET", url)
    assert own.headers["location"] == SUCCESS


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/acme/callback?error=access_denied&state=s", "access_denied"),
        ("/acme/callback?error=server_error", "access_denied"),
        ("/acme/callback?state=s", "missing_oauth_params"),
        ("/acme/callback?code=c", "missing_oauth_params"),
        ("/acme/callback", "missing_oauth_params"),
        ("/acme/callback?code=c&state=unknown", "oauth_state_expired"),
    ],
)
async def test_callback_errors_redirect_with_upstreams_codes(
    person: Callable[[], Person], path: str, error: str
) -> None:
    """A declined authorization, missing parameters and an unknown state 302 to
    /?error=<upstream's code> and clear the binding."""
    browser = person()
    await browser.start()

    response = await browser.call("GET", path)

    assert response.status_code == 302
    assert response.headers["location"] == f"{HOME}?error={error}"
    assert int(set_cookies(response)[BINDING]["max-age"]) == 0
    assert await User.all().count() == 0


async def test_a_code_the_provider_refuses_is_oauth_failed(person: Callable[[], Person]) -> None:
    """A tampered code with a genuine state gives /?error=oauth_failed and nothing."""
    browser = person()
    url = await browser.at_provider(await browser.start(), "alice")
    tampered = re.sub(r"code=[^&]+", "code=forged", url)

    response = await browser.call("GET", tampered)

    assert response.headers["location"] == f"{HOME}?error=oauth_failed"
    assert await User.all().count() == 0


async def test_a_provider_down_at_the_callback_is_oauth_failed(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """A provider that stops answering before the code exchange gives /?error=oauth_failed
    and no account."""
    async with oidc_provider() as own:
        client = make_client(**settings | {"oauth_providers": (acme_provider(own),)})
        browser = Person(make_browser(client.app))
        url = await browser.at_provider(await browser.start(), "alice")

    response = await browser.call("GET", url)

    assert response.headers["location"] == f"{HOME}?error=oauth_failed"
    assert await User.all().count() == 0
    assert await Identity.all().count() == 0


# --- GitHub, another prefix, OpenAPI ---------------------------------------------------------


@pytest.fixture
def github() -> Iterator[GitHubStandin]:
    with GitHubStandin(users=[github_user(4242, "octo", "octo@example.com")]) as standin:
        yield standin


async def test_github_at_another_prefix(
    make_client: MakeClient,
    make_browser: MakeBrowser,
    settings: dict[str, Any],
    github: GitHubStandin,
) -> None:
    """Mounted at /compat/modularauth/auth, a provider named github signs in through
    /github and /github/callback there, and the redirects stay on the public URL's root."""
    prefix = "/compat/modularauth/auth"
    client = make_client(
        **settings
        | {"rest_dialects": (("modularauth", prefix),), "oauth_providers": (github.provider(),)}
    )
    browser = Person(make_browser(client.app, authorizer=standin_authorize))
    start = await browser.call("GET", f"{PUBLIC}{prefix}/github")
    assert set_cookies(start)[BINDING]["path"] == f"{prefix}/github"
    url = await browser.at_provider(start, "octo", callback=f"{PUBLIC}{prefix}/github/callback")

    response = await browser.call("GET", url)

    assert response.headers["location"] == SUCCESS
    me = await browser.call("GET", f"{PUBLIC}{prefix}/me")
    assert me.json()["data"]["user"]["email"] == "octo@example.com"
    identity = await Identity.get()
    assert (identity.provider, identity.subject) == ("github", "4242")


async def test_openapi_lists_the_provider_routes(client: GraphQLClient) -> None:
    """openapi.json documents GET /acme and GET /acme/callback (302)."""
    paths = (await client.http.get(f"{PREFIX}/openapi.json")).json()["paths"]

    assert set(paths["/auth/acme"]) == {"get"}
    assert set(paths["/auth/acme/callback"]) == {"get"}
    assert "302" in paths["/auth/acme/callback"]["get"]["responses"]
    parameters = {p["name"] for p in paths["/auth/acme/callback"]["get"]["parameters"]}
    assert parameters == {"code", "state"}
