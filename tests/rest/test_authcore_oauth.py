"""AuthCore's NextAuth-style OAuth routes at /compat/authcore/api/auth, against a real OpenID
Connect provider: the providers map, POST /signin/{provider} and GET /callback/{provider}
(sign-up, sign-in, linking while signed in), the NextAuth error page for conflicts, 2FA and
failures, and the refusals (foreign or replayed state, open callback URLs, unknown or
unreachable providers)."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from authql.models import Identity, OAuthState, RefreshToken, Session, User
from authql.services.clock import FrozenClock
from authql.settings import OAuthProviderConfig
from tests.oauth_helpers import (
    ACME,
    Browser,
    acme_provider,
    acme_settings,
    make_browser_fixture,  # noqa: F401 - registers the fixture `make_browser` here
)
from tests.oidc_provider import (
    CLIENT_ID,
    CLIENT_SECRET,
    OidcProvider,
    oidc_fixture,  # noqa: F401 - registers the session fixture `oidc` here
    oidc_provider,
)
from tests.support import PASSWORD, GraphQLClient, query, set_cookies
from tests.totp_helpers import STEP, totp_code

MakeClient = Callable[..., GraphQLClient]
MakeBrowser = Callable[..., Browser]

PREFIX = "/compat/authcore/api/auth"
PUBLIC = "http://testserver"
APP = "https://app.example.com"
CALLBACK = f"{PUBLIC}{PREFIX}/callback/acme"
SESSION_COOKIE = "authcore.session-token"
BINDING_COOKIE = "authcore.state"
SETUP_COOKIE = "authcore.2fa-setup"
SESSION_TTL = 1_209_600
EMAIL = "ada@example.com"
ERROR_PAGE = f"{PREFIX}/error?error="
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")


# --- helpers ---------------------------------------------------------------------------------


async def assert_no_secrets(response: httpx.Response, jar: httpx.Cookies) -> None:
    """No body or header holds a password hash, a stored token digest or the word totp, and
    no redirect URL holds a JWT, a session token, or any cookie value the app set."""
    text = response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
    assert "$argon2" not in text
    assert "totp" not in text.replace('"totpCode"', "").lower()
    digests = [*await RefreshToken.all().values_list("digest", flat=True)]
    digests += [d for d in await Session.all().values_list("token_digest", flat=True) if d]
    for digest in digests:
        assert digest not in text
    location = response.headers.get("location")
    if location is not None:
        assert not JWT.search(location), location
        values = [cookie["value"] for cookie in set_cookies(response).values()]
        values += [c.value or "" for c in jar.jar if c.name.startswith(("authcore", "__"))]
        for value in values:
            if value:
                assert value not in location


def assert_cookie(cookie: dict[str, str], *, path: str, max_age: int) -> None:
    assert cookie["path"] == path
    assert int(cookie["max-age"]) == max_age
    assert cookie["samesite"].lower() == "lax"
    assert "httponly" in cookie


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code
    return body  # type: ignore[no-any-return]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Person:
    """One person's browser on the AuthCore routes: the app in-process, the provider over
    the network, one cookie jar; every answer is checked for leaked secrets."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.http = browser.http

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = path if path.startswith("http") else PREFIX + path
        response = await self.http.request(method, url, **kwargs)
        await assert_no_secrets(response, self.http.cookies)
        return response

    async def csrf(self) -> str:
        return str((await self.call("GET", "/csrf")).json()["csrfToken"])

    async def start(self, provider: str = ACME, **fields: str) -> httpx.Response:
        """POST /signin/{provider} as a form post (NextAuth's sign-in button)."""
        data = {"csrfToken": await self.csrf(), **fields}
        return await self.call("POST", f"/signin/{provider}", data=data)

    async def at_provider(self, start: httpx.Response, login: str | None) -> str:
        """Sign in at the provider as ``login`` and approve: the callback URL it sends."""
        assert start.status_code == 302, start.text
        callback = await self.browser.authorize(start.headers["location"], login=login)
        assert callback.error is None and callback.code, callback
        assert callback.redirect_uri == CALLBACK
        return callback.url

    async def sign_in(
        self, login: str | None, provider: str = ACME, **fields: str
    ) -> httpx.Response:
        """The whole flow: sign-in button, provider, callback; the callback's answer."""
        url = await self.at_provider(await self.start(provider, **fields), login)
        return await self.call("GET", url)

    async def password_sign_in(self, email: str = EMAIL) -> None:
        body = {"email": email, "password": PASSWORD, "csrfToken": await self.csrf()}
        response = await self.call("POST", "/callback/credentials", json=body)
        assert response.status_code == 200, response.text

    async def session(self) -> dict[str, Any]:
        response = await self.call("GET", "/session")
        assert response.status_code == 200
        return response.json()  # type: ignore[no-any-return]

    def cookie(self, name: str) -> str | None:
        return self.http.cookies.get(name)


@pytest.fixture
def settings(oidc: OidcProvider) -> dict[str, Any]:
    """AuthCore at /compat/authcore/api/auth on http://testserver with the acme provider."""
    return {
        "rest_dialects": (("authcore", PREFIX),),
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


async def register(client: GraphQLClient, email: str = EMAIL) -> None:
    response = await client.http.post(
        f"{PREFIX}/register", json={"email": email, "password": PASSWORD}
    )
    assert response.status_code == 201, response.text


# --- providers and the sign-in button ------------------------------------------------------------


async def test_providers_lists_the_configured_provider(person: Callable[[], Person]) -> None:
    """GET /providers lists acme (NextAuth's oauth entry) beside credentials."""
    response = await person().call("GET", "/providers")

    assert response.status_code == 200
    assert response.json() == {
        "credentials": {
            "id": "credentials",
            "name": "Credentials",
            "type": "credentials",
            "signinUrl": f"{PREFIX}/signin/credentials",
            "callbackUrl": f"{PREFIX}/callback/credentials",
        },
        "acme": {
            "id": "acme",
            "name": "Acme",
            "type": "oauth",
            "signinUrl": f"{PREFIX}/signin/acme",
            "callbackUrl": f"{PREFIX}/callback/acme",
        },
    }


async def test_signin_redirects_to_the_provider_and_binds_the_browser(
    oidc: OidcProvider, person: Callable[[], Person]
) -> None:
    """POST /signin/{provider} (a form post) answers 302 to the provider (code flow, S256
    PKCE, state, nonce, our callback) and sets the HttpOnly binding cookie."""
    response = await person().start(callbackUrl="/welcome")

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
    assert set(cookies) == {BINDING_COOKIE}
    assert_cookie(cookies[BINDING_COOKIE], path=f"{PREFIX}/callback", max_age=600)
    assert await OAuthState.all().count() == 1


async def test_signin_answers_json_callers_with_the_url(person: Callable[[], Person]) -> None:
    """A JSON caller (NextAuth's signIn() with json) gets 200 {url} and the same cookie."""
    browser = person()
    body = {"csrfToken": await browser.csrf(), "callbackUrl": f"{APP}/after"}
    response = await browser.call("POST", "/signin/acme", json=body)

    assert response.status_code == 200
    assert set(response.json()) == {"url"}
    assert query(response.json()["url"])["redirect_uri"] == CALLBACK
    assert BINDING_COOKIE in set_cookies(response)


async def test_signin_needs_the_csrf_token(person: Callable[[], Person]) -> None:
    """Without the CSRF token (or with a wrong one) the sign-in button is 403 FORBIDDEN."""
    browser = person()
    await browser.csrf()
    missing = await browser.call("POST", "/signin/acme", data={})
    wrong = await browser.call("POST", "/signin/acme", data={"csrfToken": "nope"})

    for response in (missing, wrong):
        assert_envelope(response, 403, "FORBIDDEN")
        assert "set-cookie" not in response.headers
    assert await OAuthState.all().count() == 0


async def test_an_unconfigured_provider_is_404(person: Callable[[], Person]) -> None:
    """An unknown provider answers 404 NOT_FOUND on the sign-in button and the callback."""
    browser = person()
    start = await browser.start("nope")
    callback = await browser.call("GET", "/callback/nope?code=c&state=s")
    declined = await browser.call("GET", "/callback/nope?error=access_denied")
    credentials = await browser.call("GET", "/callback/credentials?code=c&state=s")

    for response in (start, callback, declined, credentials):
        assert_envelope(response, 404, "NOT_FOUND")
    assert await OAuthState.all().count() == 0


@pytest.mark.parametrize(
    "callback_url",
    [
        "//evil.example/x",
        "https://evil.example/",
        "http://testserver.evil.example/",
        "javascript:alert(1)",
        "/\\evil.example",
        "evil.example",
    ],
)
async def test_an_open_callback_url_is_refused(
    person: Callable[[], Person], callback_url: str
) -> None:
    """A callbackUrl off the site and off the allow-list is 400 VALIDATION_ERROR naming
    callbackUrl: no redirect, no cookie, no flow."""
    response = await person().start(callbackUrl=callback_url)

    body = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert body["error"]["fields"] == {"callbackUrl": "Not an allowed URL."}
    assert "location" not in response.headers
    assert "set-cookie" not in response.headers
    assert await OAuthState.all().count() == 0


async def test_a_path_needs_the_public_origin_on_the_allow_list(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """With AUTHQL_ALLOWED_REDIRECTS naming only the app, a relative callbackUrl is refused
    (the resolver's allow-list holds too), while the app's URL is taken."""
    client = make_client(**settings | {"allowed_redirects": (APP,)})
    browser = Person(make_browser(client.app))

    refused = await browser.start(callbackUrl="/welcome")
    allowed = await browser.start(callbackUrl=f"{APP}/after")

    assert_envelope(refused, 400, "VALIDATION_ERROR")
    assert allowed.status_code == 302


async def test_an_unreachable_provider_goes_to_the_oauth_signin_error(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """A provider whose discovery document cannot be fetched sends the browser to
    error=OAuthSignin (JSON: {url} with 500) and starts nothing."""
    down = OAuthProviderConfig(
        name="down",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        discovery_url=f"http://127.0.0.1:{free_port()}/.well-known/openid-configuration",
    )
    client = make_client(**settings | {"oauth_providers": (down,)})
    browser = Person(make_browser(client.app))

    redirected = await browser.start("down")
    token = await browser.csrf()
    as_json = await browser.call("POST", "/signin/down", json={"csrfToken": token})

    assert redirected.status_code == 302
    assert redirected.headers["location"] == f"{ERROR_PAGE}OAuthSignin"
    assert (as_json.status_code, as_json.json()) == (500, {"url": f"{ERROR_PAGE}OAuthSignin"})
    assert "set-cookie" not in redirected.headers
    assert await OAuthState.all().count() == 0


async def test_signin_shares_the_auth_route_rate_limit(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """The sign-in button spends authcore_auth (5 / 15 min / ip): the 6th is 429 with
    Retry-After, and starts no flow."""
    limits = {"authcore_auth": (5, 15 * 60), "authcore_public": (20, 60)}
    client = make_client(**settings | {"rate_limits": limits})
    browser = Person(make_browser(client.app))
    for _ in range(5):
        assert (await browser.start()).status_code == 302

    limited = await browser.start()

    assert_envelope(limited, 429, "RATE_LIMITED")
    assert int(limited.headers["retry-after"]) > 0
    assert limited.headers["ratelimit-limit"] == "5"
    assert await OAuthState.all().count() == 5


async def test_over_https_the_cookies_carry_their_prefixes(
    make_client: MakeClient, settings: dict[str, Any]
) -> None:
    """With an https public URL the binding cookie is __Host-authcore.state (Secure, path
    /) and the redirect URI is on https."""
    client = make_client(**settings | {"public_url": "https://testserver"})
    csrf = await client.http.get(f"{PREFIX}/csrf")
    token = csrf.json()["csrfToken"]
    cookie = set_cookies(csrf)["__Host-authcore.csrf-token"]["value"]
    response = await client.http.post(
        f"{PREFIX}/signin/acme",
        data={"csrfToken": token},
        headers={"cookie": f"__Host-authcore.csrf-token={cookie}"},
    )

    assert response.status_code == 302, response.text
    assert query(response.headers["location"])["redirect_uri"] == (
        f"https://testserver{PREFIX}/callback/acme"
    )
    binding = set_cookies(response)[f"__Host-{BINDING_COOKIE}"]
    assert_cookie(binding, path="/", max_age=600)
    assert "secure" in binding


# --- the callback: sign-up, sign-in, linking -----------------------------------------------------


async def test_sign_up_sets_the_session_cookie_and_redirects_to_the_callback_url(
    person: Callable[[], Person],
) -> None:
    """A new identity creates the account (email verified as the provider says), sets
    authcore.session-token, clears the binding and 302s to the callbackUrl."""
    browser = person()
    response = await browser.sign_in("alice", callbackUrl="/welcome?tab=1")

    assert response.status_code == 302
    assert response.headers["location"] == f"{PUBLIC}/welcome?tab=1"
    cookies = set_cookies(response)
    assert set(cookies) == {SESSION_COOKIE, BINDING_COOKIE}
    assert_cookie(cookies[SESSION_COOKIE], path="/", max_age=SESSION_TTL)
    assert int(cookies[BINDING_COOKIE]["max-age"]) == 0
    assert browser.cookie(BINDING_COOKIE) is None

    session = await browser.session()
    assert session["user"]["email"] == "alice@example.com"
    assert session["user"]["emailVerified"] is True
    [identity] = await Identity.all()
    assert (identity.provider, identity.subject) == ("acme", "alice")
    assert (await Session.get()).method == "oauth:acme"


async def test_an_unverified_provider_address_makes_an_unverified_account(
    person: Callable[[], Person],
) -> None:
    """An address the provider did not verify signs up unverified."""
    browser = person()
    response = await browser.sign_in("dave")

    assert response.status_code == 302
    assert (await browser.session())["user"]["emailVerified"] is False


async def test_a_known_identity_signs_in_to_its_account(person: Callable[[], Person]) -> None:
    """The same identity from another browser signs in to the same account (302 to the
    public URL by default)."""
    first = person()
    await first.sign_in("alice")
    user_id = (await first.session())["user"]["id"]

    second = person()
    response = await second.sign_in("alice")

    assert response.status_code == 302
    assert response.headers["location"] == PUBLIC
    assert SESSION_COOKIE in set_cookies(response)
    assert (await second.session())["user"]["id"] == user_id
    assert await User.all().count() == 1
    assert await Session.all().count() == 2


async def test_an_allowed_absolute_callback_url_is_honoured(person: Callable[[], Person]) -> None:
    """An absolute callbackUrl on an allowed origin is where the callback sends the browser."""
    response = await person().sign_in("alice", callbackUrl=f"{APP}/after")

    assert response.headers["location"] == f"{APP}/after"


async def test_a_signed_in_user_links_an_identity(
    person: Callable[[], Person], client: GraphQLClient
) -> None:
    """Signed in, the sign-in button links the identity to the account (NextAuth's
    behaviour): 302 to the callbackUrl, the session unchanged; the identity then signs in to
    that account."""
    await register(client)
    browser = person()
    await browser.password_sign_in()
    session_token = browser.cookie(SESSION_COOKIE)

    response = await browser.sign_in("bob", callbackUrl="/settings")

    assert response.status_code == 302
    assert response.headers["location"] == f"{PUBLIC}/settings"
    assert set(set_cookies(response)) == {BINDING_COOKIE}
    assert browser.cookie(SESSION_COOKIE) == session_token
    [identity] = await Identity.all()
    owner = await User.get(id=identity.user_id)
    assert (identity.subject, owner.email) == ("bob", EMAIL)

    other = person()
    await other.sign_in("bob")
    assert (await other.session())["user"]["email"] == EMAIL


async def test_an_identity_linked_elsewhere_is_not_moved(
    person: Callable[[], Person], client: GraphQLClient
) -> None:
    """Linking an identity that belongs to another account ends on
    error=OAuthAccountNotLinked and moves nothing."""
    await person().sign_in("bob")
    await register(client)
    browser = person()
    await browser.password_sign_in()

    response = await browser.sign_in("bob")

    assert response.headers["location"] == f"{ERROR_PAGE}OAuthAccountNotLinked"
    [identity] = await Identity.all()
    assert (await User.get(id=identity.user_id)).email == "bob@example.com"


# --- the callback: conflicts, 2FA, policies ------------------------------------------------------


@pytest.mark.parametrize("login", ["alice", "carol"])
async def test_an_email_matching_an_account_is_not_linked(
    person: Callable[[], Person], client: GraphQLClient, login: str
) -> None:
    """An unknown identity whose email (verified by the provider or not) belongs to an
    account ends on error=OAuthAccountNotLinked: no session, nothing linked."""
    await register(client, f"{login}@example.com")
    response = await person().sign_in(login)

    assert response.status_code == 302
    assert response.headers["location"] == f"{ERROR_PAGE}OAuthAccountNotLinked"
    assert SESSION_COOKIE not in set_cookies(response)
    assert await Identity.all().count() == 0
    assert await Session.all().count() == 0


async def test_with_2fa_the_callback_ends_on_two_factor_required(
    person: Callable[[], Person], clock: FrozenClock
) -> None:
    """An account with 2FA on cannot complete an OAuth sign-in here (AuthCore takes the code
    with the password): error=TwoFactorRequired, no session cookie."""
    first = person()
    await first.sign_in("alice")
    setup = await first.http.post(f"{PREFIX}/2fa/setup", json={})  # hands out the secret
    secret = setup.json()["data"]["secret"]
    enabled = await first.http.post(
        f"{PREFIX}/2fa/verify", json={"token": totp_code(secret, clock)}
    )
    assert enabled.status_code == 200, enabled.text
    clock.advance(STEP)

    second = person()
    response = await second.sign_in("alice")

    assert response.status_code == 302
    assert response.headers["location"] == f"{ERROR_PAGE}TwoFactorRequired"
    assert set(set_cookies(response)) == {BINDING_COOKIE}
    assert await second.session() == {}


async def test_a_two_factor_policy_ends_on_setup_required(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """Under AUTHQL_REQUIRE_TWO_FACTOR an account without a factor ends on
    error=TwoFactorSetupRequired with the setup cookie, and no session."""
    client = make_client(**settings | {"require_two_factor": True})
    browser = Person(make_browser(client.app))
    response = await browser.sign_in("alice")

    assert response.headers["location"] == f"{ERROR_PAGE}TwoFactorSetupRequired"
    cookies = set_cookies(response)
    assert SESSION_COOKIE not in cookies
    assert_cookie(cookies[SETUP_COOKIE], path=f"{PREFIX}/2fa", max_age=300)
    setup = await browser.http.post(f"{PREFIX}/2fa/setup", json={})  # hands out the secret
    assert setup.status_code == 200 and setup.json()["data"]["secret"]


async def test_an_unverified_address_under_a_verification_policy_gets_no_session(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """With verification required, an address the provider did not verify ends on
    error=EmailNotVerified and no session cookie."""
    client = make_client(**settings | {"require_email_verification": True})
    response = await Person(make_browser(client.app)).sign_in("dave")

    assert response.headers["location"] == f"{ERROR_PAGE}EmailNotVerified"
    assert SESSION_COOKIE not in set_cookies(response)
    assert await Session.all().count() == 0


# --- the callback: refusals ---------------------------------------------------------------------


async def test_a_replayed_state_is_refused(person: Callable[[], Person]) -> None:
    """A callback delivered twice (binding cookie and all) works once; the replay ends on
    error=OAuthCallback with no session."""
    browser = person()
    start = await browser.start()
    binding = set_cookies(start)[BINDING_COOKIE]["value"]
    url = await browser.at_provider(start, "alice")
    cookie = {"cookie": f"{BINDING_COOKIE}={binding}"}

    first = await browser.call("GET", url, headers=cookie)
    assert first.status_code == 302 and first.headers["location"] == PUBLIC
    sessions = await Session.all().count()

    replay = await browser.call("GET", url, headers=cookie)
    assert replay.status_code == 302
    assert replay.headers["location"] == f"{ERROR_PAGE}OAuthCallback"
    assert SESSION_COOKIE not in set_cookies(replay)
    assert int(set_cookies(replay)[BINDING_COOKIE]["max-age"]) == 0
    assert await Session.all().count() == sessions


async def test_a_foreign_state_is_refused(person: Callable[[], Person]) -> None:
    """A callback URL from another browser's flow is refused in this one (whether or not it
    has a flow of its own) and creates nothing; it still works where it started."""
    attacker = person()
    url = await attacker.at_provider(await attacker.start(), "mallory")

    victim = person()
    bare = await victim.call("GET", url)
    await victim.start()
    bound = await victim.call("GET", url)

    for response in (bare, bound):
        assert response.headers["location"] == f"{ERROR_PAGE}OAuthCallback"
        assert SESSION_COOKIE not in set_cookies(response)
    assert await User.all().count() == 0
    assert await victim.session() == {}

    own = await attacker.call("GET", url)
    assert own.headers["location"] == PUBLIC


async def test_a_tampered_code_or_a_declined_authorization_is_an_oauth_callback_error(
    person: Callable[[], Person],
) -> None:
    """A code the provider refuses, and the provider coming back with error=, both end on
    error=OAuthCallback and create nothing."""
    browser = person()
    start = await browser.start()
    url = await browser.at_provider(start, "alice")
    tampered = await browser.call("GET", re.sub(r"code=[^&]+", "code=forged", url))
    await browser.start()
    declined = await browser.call("GET", "/callback/acme?error=access_denied&state=x")

    for response in (tampered, declined):
        assert response.headers["location"] == f"{ERROR_PAGE}OAuthCallback"
    assert await User.all().count() == 0


async def test_a_provider_down_at_the_callback_creates_nothing(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """A provider that stops answering before the code exchange ends on
    error=OAuthCallback, and no account exists."""
    async with oidc_provider() as own:
        client = make_client(**settings | {"oauth_providers": (acme_provider(own),)})
        browser = Person(make_browser(client.app))
        start = await browser.start()
        url = await browser.at_provider(start, "alice")

    response = await browser.call("GET", url)

    assert response.headers["location"] == f"{ERROR_PAGE}OAuthCallback"
    assert await User.all().count() == 0
    assert await Identity.all().count() == 0


# --- documentation -------------------------------------------------------------------------------


async def test_openapi_documents_the_oauth_routes(person: Callable[[], Person]) -> None:
    """openapi.json lists POST /signin/{provider} (body with csrfToken required) and GET
    /callback/{provider} (code and state)."""
    paths = (await person().call("GET", "/openapi.json")).json()["paths"]

    sign_in = paths[f"{PREFIX}/signin/{{provider}}"]["post"]
    schema = sign_in["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["csrfToken"]
    assert set(schema["properties"]) == {"csrfToken", "callbackUrl", "json"}
    callback = paths[f"{PREFIX}/callback/{{provider}}"]["get"]
    assert {p["name"] for p in callback["parameters"]} == {"provider", "code", "state"}
    assert "302" in callback["responses"]
