"""node-auth's OAuth and account-linking routes at /auth, against a real OpenID Connect
provider: the authorization-code flow through GET /oauth/{provider} and its callback
(cookies, the 2FA page, the account-conflict page), linked accounts, link-request and
link-verify, and the refusals (foreign or replayed state, open return paths, unknown or
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
from tests.totp_helpers import STEP, enrol, totp_code

MakeClient = Callable[..., GraphQLClient]
MakeBrowser = Callable[..., Browser]

PREFIX = "/auth"
PUBLIC = "http://testserver"
APP = "https://app.example.com"
CALLBACK = f"{PUBLIC}/auth/oauth/acme/callback"
CONFLICT_PAGE = f"{PUBLIC}/auth/account-conflict"
EMAIL = "ada@example.com"
ACCESS_TTL = 900
REFRESH_TTL = 1_209_600
LINKED_KEYS = {"provider", "providerAccountId", "email", "linkedAt"}
NO_TOKEN = {"error": "No access token provided"}
BAD_TOKEN = {"error": "Invalid or expired access token"}
INVALID_STATE = {"error": "Invalid or expired OAuth state", "code": "INVALID_STATE"}
NOT_ALLOWED = {"error": "return_path: Not an allowed return path.", "code": "VALIDATION_ERROR"}
NO_PENDING = {
    "error": "Authentication required or no pending link found",
    "code": "UNAUTHORIZED",
}
JSON = {"accept": "application/json"}
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# --- helpers ---------------------------------------------------------------------------------


async def assert_no_secrets(response: httpx.Response) -> None:
    """No body or header holds a password hash, a stored token digest or a TOTP secret
    (the documented ``methods=totp`` of the 2FA redirect aside), and no redirect URL holds
    an access or refresh token, a JWT, or a cookie value set with it."""
    text = response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
    text = text.replace("methods=totp", "methods=")
    assert "$argon2" not in text
    assert "totp" not in text
    assert "otpauth" not in text.lower()
    digests = [*await RefreshToken.all().values_list("digest", flat=True)]
    digests += [d for d in await Session.all().values_list("token_digest", flat=True) if d]
    for digest in digests:
        assert digest not in text
    location = response.headers.get("location")
    if location is not None:
        assert not JWT.search(location), location
        assert "accesstoken" not in location.lower()
        assert "refreshtoken" not in location.lower()
        for cookie in set_cookies(response).values():
            if cookie["value"]:
                assert cookie["value"] not in location


def assert_cookie(cookie: dict[str, str], *, path: str, max_age: int) -> None:
    assert cookie["path"] == path
    assert int(cookie["max-age"]) == max_age
    assert cookie["samesite"].lower() == "lax"
    assert "httponly" in cookie


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Person:
    """One person's browser on the node-auth routes: the app in-process, the provider over
    the network, one cookie jar; every answer is checked for leaked secrets."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.http = browser.http

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = path if path.startswith("http") else PREFIX + path
        response = await self.http.request(method, url, **kwargs)
        await assert_no_secrets(response)
        return response

    async def start(self, provider: str = ACME, **params: str) -> httpx.Response:
        """GET /oauth/{provider}: the redirect to the provider (not followed)."""
        return await self.call("GET", f"/oauth/{provider}", params=params)

    async def at_provider(self, start: httpx.Response, login: str | None) -> str:
        """Sign in at the provider as ``login`` and approve: the callback URL it sends."""
        assert start.status_code == 302, start.text
        callback = await self.browser.authorize(start.headers["location"], login=login)
        assert callback.error is None and callback.code, callback
        assert callback.redirect_uri == CALLBACK
        return callback.url

    async def sign_in(
        self, login: str | None, provider: str = ACME, **params: str
    ) -> httpx.Response:
        """The whole flow: start, provider, callback; the callback's answer."""
        url = await self.at_provider(await self.start(provider, **params), login)
        return await self.call("GET", url)

    async def password_login(self, email: str = EMAIL) -> httpx.Response:
        response = await self.call("POST", "/login", json={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return response

    async def me(self, **kwargs: Any) -> dict[str, Any]:
        response = await self.call("GET", "/me", **kwargs)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def linked(self, **kwargs: Any) -> list[dict[str, Any]]:
        response = await self.call("GET", "/linked-accounts", **kwargs)
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"linkedAccounts"}
        return response.json()["linkedAccounts"]  # type: ignore[no-any-return]

    def cookie(self, name: str) -> str | None:
        return self.http.cookies.get(name)


@pytest.fixture
def settings(oidc: OidcProvider) -> dict[str, Any]:
    """node-auth at /auth on the public URL http://testserver with the acme provider."""
    return {
        "rest_dialects": (("node-auth", PREFIX),),
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


# --- start -----------------------------------------------------------------------------------


async def test_start_redirects_to_the_provider_and_binds_the_browser(
    oidc: OidcProvider, person: Callable[[], Person]
) -> None:
    """GET /oauth/{provider} answers 302 to the provider's authorization endpoint (code
    flow, S256 PKCE, state, nonce, our callback) and sets the HttpOnly binding cookie."""
    browser = person()
    response = await browser.start(return_path="/welcome")

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
    assert set(cookies) == {"oauthBinding"}
    assert_cookie(cookies["oauthBinding"], path="/auth/oauth", max_age=600)
    assert cookies["oauthBinding"]["value"] not in location
    assert await OAuthState.all().count() == 1


async def test_over_https_the_flow_cookies_carry_the_host_prefix(
    make_client: MakeClient, settings: dict[str, Any]
) -> None:
    """With an https public URL the binding cookie is __Host-oauthBinding, Secure, path /."""
    client = make_client(**settings | {"public_url": "https://testserver"})
    response = await client.http.get(f"{PREFIX}/oauth/acme")

    assert response.status_code == 302
    assert query(response.headers["location"])["redirect_uri"] == (
        "https://testserver/auth/oauth/acme/callback"
    )
    cookie = set_cookies(response)["__Host-oauthBinding"]
    assert_cookie(cookie, path="/", max_age=600)
    assert "secure" in cookie


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ("google", "Google OAuth not configured"),
        ("github", "GitHub OAuth not configured"),
        ("nope", "Nope OAuth not configured"),
    ],
)
async def test_an_unconfigured_provider_is_404(
    person: Callable[[], Person], provider: str, message: str
) -> None:
    """An unconfigured provider answers 404 {error:'<Provider> OAuth not configured'} on
    both routes, and sets nothing."""
    browser = person()
    start = await browser.start(provider)
    callback = await browser.call("GET", f"/oauth/{provider}/callback?code=c&state=s")
    declined = await browser.call("GET", f"/oauth/{provider}/callback?error=access_denied")

    for response in (start, callback, declined):
        assert response.status_code == 404
        assert response.json() == {"error": message}
    assert "set-cookie" not in start.headers
    assert await OAuthState.all().count() == 0


@pytest.mark.parametrize(
    "return_path",
    [
        "//evil.example/x",
        "https://evil.example/",
        "http://testserver.evil.example/",
        "javascript:alert(1)",
        "/\\evil.example",
        "/ok\n/x",
        "evil.example",
    ],
)
async def test_an_open_return_path_is_refused(
    person: Callable[[], Person], return_path: str
) -> None:
    """A return_path that is neither a path on the public URL nor an allowed redirect is
    400 VALIDATION_ERROR: no redirect, no cookie, no flow."""
    response = await person().start(return_path=return_path)

    assert response.status_code == 400
    assert response.json() == NOT_ALLOWED
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
    response = await client.http.get(f"{PREFIX}/oauth/down")

    assert response.status_code == 502
    assert response.json() == {"error": "An external provider failed", "code": "PROVIDER_ERROR"}
    assert "set-cookie" not in response.headers
    assert await OAuthState.all().count() == 0


# --- callback: sign-up, sign-in, 2FA -----------------------------------------------------------


async def test_sign_up_sets_the_session_cookies_and_redirects_to_the_return_path(
    person: Callable[[], Person],
) -> None:
    """A new identity creates an account (email verified as the provider says), sets the
    accessToken/refreshToken cookies as /login does, clears the binding and 302s to the
    return path on the public URL."""
    browser = person()
    response = await browser.sign_in("alice", return_path="/welcome?tab=1")

    assert response.status_code == 302
    assert response.headers["location"] == f"{PUBLIC}/welcome?tab=1"
    cookies = set_cookies(response)
    assert set(cookies) == {"accessToken", "refreshToken", "oauthBinding"}
    assert_cookie(cookies["accessToken"], path="/", max_age=ACCESS_TTL)
    assert_cookie(cookies["refreshToken"], path="/auth/refresh", max_age=REFRESH_TTL)
    assert cookies["oauthBinding"]["path"] == "/auth/oauth"
    assert int(cookies["oauthBinding"]["max-age"]) == 0
    assert browser.cookie("oauthBinding") is None

    me = await browser.me()
    assert me["email"] == "alice@example.com"
    assert me["isEmailVerified"] is True
    assert me["loginProvider"] == "oauth:acme"
    [linked] = await browser.linked()
    assert set(linked) == LINKED_KEYS
    assert (linked["provider"], linked["providerAccountId"]) == ("acme", "alice")
    assert linked["email"] == "alice@example.com"
    assert ISO.match(linked["linkedAt"])


async def test_a_known_identity_signs_in_to_its_account(person: Callable[[], Person]) -> None:
    """The same identity from another browser signs in to the same account (302 to the
    public URL's root by default, with the session cookies)."""
    first = person()
    await first.sign_in("alice")
    user_id = (await first.me())["sub"]

    second = person()
    response = await second.sign_in("alice")

    assert response.status_code == 302
    assert response.headers["location"] == f"{PUBLIC}/"
    assert {"accessToken", "refreshToken"} <= set(set_cookies(response))
    assert (await second.me())["sub"] == user_id
    assert await User.all().count() == 1
    assert await Session.all().count() == 2


async def test_an_allowed_absolute_return_url_is_honoured(person: Callable[[], Person]) -> None:
    """An absolute return URL on an allowed origin is where the callback sends the browser."""
    response = await person().sign_in("alice", return_path=f"{APP}/after")

    assert response.status_code == 302
    assert response.headers["location"] == f"{APP}/after"


async def test_refresh_works_after_an_oauth_sign_in(person: Callable[[], Person]) -> None:
    """The refresh cookie the callback sets is a working node-auth refresh token."""
    browser = person()
    await browser.sign_in("alice")

    refreshed = await browser.call("POST", "/refresh")

    assert refreshed.status_code == 200
    assert refreshed.json() == {"success": True}


async def test_with_2fa_the_callback_redirects_to_the_2fa_page(
    person: Callable[[], Person], client: GraphQLClient, clock: FrozenClock
) -> None:
    """With 2FA on, the callback sets no session cookie and 302s to
    <public url>/auth/2fa?tempToken=&methods=; /2fa/verify then completes the sign-in."""
    first = person()
    await first.sign_in("alice")
    access = first.cookie("accessToken")
    assert access
    enrolment = await enrol(client, clock, access_token=access)
    clock.advance(STEP)

    second = person()
    response = await second.sign_in("alice")

    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(f"{PUBLIC}/auth/2fa?")
    params = query(location)
    assert set(params) == {"tempToken", "methods"}
    assert params["methods"] == "totp,magic-link"  # the address is verified
    assert set(set_cookies(response)) == {"oauthBinding"}  # cleared; no session
    assert second.cookie("accessToken") is None
    me = await second.call("GET", "/me", headers={"authorization": f"Bearer {params['tempToken']}"})
    assert me.status_code == 403

    verified = await second.call(
        "POST",
        "/2fa/verify",
        json={"tempToken": params["tempToken"], "totpCode": totp_code(enrolment.secret, clock)},
    )
    assert verified.status_code == 200, verified.text
    assert verified.json() == {"success": True}
    assert (await second.me())["email"] == "alice@example.com"


async def test_a_two_factor_policy_redirects_to_setup(
    make_client: MakeClient,
    make_browser: MakeBrowser,
    settings: dict[str, Any],
    clock: FrozenClock,
) -> None:
    """Under AUTHQL_REQUIRE_TWO_FACTOR an account without a factor gets the 2FA redirect
    with code=2FA_SETUP_REQUIRED (methods: what it can enrol) and no session."""
    client = make_client(**settings | {"require_two_factor": True})
    browser = Person(make_browser(client.app))
    response = await browser.sign_in("alice")

    assert response.status_code == 302
    location = response.headers["location"]
    params = query(location)
    assert location.startswith(f"{PUBLIC}/auth/2fa?")
    assert set(params) == {"tempToken", "methods", "code"}
    assert params["code"] == "2FA_SETUP_REQUIRED"
    assert params["methods"] == "totp"
    assert "accessToken" not in set_cookies(response)

    # The tempToken enrols an authenticator, then completes the sign-in.
    temp = {"tempToken": params["tempToken"]}
    setup = await browser.http.post(f"{PREFIX}/2fa/setup", json=temp)
    secret = setup.json()["secret"]
    confirmed = await browser.call(
        "POST", "/2fa/verify-setup", json=temp | {"token": totp_code(secret, clock)}
    )
    assert confirmed.status_code == 200, confirmed.text
    clock.advance(STEP)
    verified = await browser.call(
        "POST", "/2fa/verify", json=temp | {"totpCode": totp_code(secret, clock)}
    )
    assert verified.status_code == 200, verified.text
    assert (await browser.me())["email"] == "alice@example.com"


async def test_an_unverified_address_under_a_verification_policy_gets_no_session(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """With verification required, an address the provider did not verify gets the error
    redirect ?error=EMAIL_NOT_VERIFIED and no session cookie."""
    client = make_client(**settings | {"require_email_verification": True})
    response = await Person(make_browser(client.app)).sign_in("dave")

    assert response.status_code == 302
    assert response.headers["location"] == f"{PUBLIC}/?error=EMAIL_NOT_VERIFIED"
    assert "accessToken" not in set_cookies(response)
    assert await Session.all().count() == 0


async def test_csrf_mode_sets_the_csrf_cookie_on_oauth_sign_in(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """With CSRF on, the callback sets csrf-token too, and unlinking with the access cookie
    needs X-CSRF-Token."""
    client = make_client(**settings | {"node_auth_csrf": True})
    browser = Person(make_browser(client.app))
    response = await browser.sign_in("alice")

    cookies = set_cookies(response)
    assert "httponly" not in cookies["csrf-token"]
    refused = await browser.call("DELETE", "/linked-accounts/acme/alice")
    assert refused.status_code == 403
    assert refused.json() == {"error": "CSRF token validation failed", "code": "CSRF_INVALID"}


# --- callback: conflicts -----------------------------------------------------------------------


async def test_a_password_account_with_the_same_email_gets_the_conflict_redirect(
    person: Callable[[], Person], client: GraphQLClient
) -> None:
    """An unknown identity whose verified email belongs to an account is not linked: 302
    <public url>/auth/account-conflict?provider=&code=OAUTH_ACCOUNT_CONFLICT&email=, no
    session, and the HttpOnly pending-link cookie for /link-request."""
    await register(client, "alice@example.com")
    browser = person()
    response = await browser.sign_in("alice")

    assert response.status_code == 302
    location = response.headers["location"]
    assert location == (
        f"{CONFLICT_PAGE}?provider=acme&code=OAUTH_ACCOUNT_CONFLICT&email=alice%40example.com"
    )
    cookies = set_cookies(response)
    assert set(cookies) == {"oauthPendingLink", "oauthBinding"}
    assert_cookie(cookies["oauthPendingLink"], path="/auth/link-request", max_age=900)
    assert await Identity.all().count() == 0
    assert await User.all().count() == 1
    assert await Session.all().count() == 0


async def test_an_unverified_email_matching_an_account_is_not_linked(
    person: Callable[[], Person], client: GraphQLClient
) -> None:
    """An identity whose unverified email matches an account gets the conflict answer."""
    await register(client, "carol@example.com")
    response = await person().sign_in("carol")

    assert response.status_code == 302
    assert query(response.headers["location"]) == {
        "provider": "acme",
        "code": "OAUTH_ACCOUNT_CONFLICT",
        "email": "carol@example.com",
    }
    assert await Identity.all().count() == 0


# --- linking while signed in -----------------------------------------------------------------


@pytest.mark.parametrize("transport", ["cookie", "bearer"])
async def test_linking_listing_and_unlinking(
    person: Callable[[], Person], client: GraphQLClient, transport: str
) -> None:
    """A signed-in user links an identity with ?link=true (302 back to the return path, no
    new session), lists it, signs in with it, and unlinks it."""
    await register(client)
    browser = person()
    headers: dict[str, str] = {}
    if transport == "cookie":
        await browser.password_login()
    else:
        tokens = await browser.call(
            "POST",
            "/login",
            json={"email": EMAIL, "password": PASSWORD},
            headers={"x-auth-strategy": "bearer"},
        )
        headers = {"authorization": f"Bearer {tokens.json()['accessToken']}"}
    sessions = await Session.all().count()

    start = await browser.call(
        "GET", "/oauth/acme", params={"link": "true", "return_path": "/settings"}, headers=headers
    )
    response = await browser.call("GET", await browser.at_provider(start, "bob"))

    assert response.status_code == 302
    assert response.headers["location"] == f"{PUBLIC}/settings"
    assert set(set_cookies(response)) == {"oauthBinding"}
    assert await Session.all().count() == sessions
    [linked] = await browser.linked(headers=headers)
    assert linked["providerAccountId"] == "bob"
    assert linked["email"] == "bob@example.com"

    elsewhere = person()
    await elsewhere.sign_in("bob")
    assert (await elsewhere.me())["email"] == EMAIL

    unlinked = await browser.call("DELETE", "/linked-accounts/acme/bob", headers=headers)
    assert unlinked.status_code == 200
    assert unlinked.json() == {"success": True}
    assert await browser.linked(headers=headers) == []
    again = await browser.call("DELETE", "/linked-accounts/acme/bob", headers=headers)
    assert again.status_code == 404
    assert again.json() == {"error": "Linked account not found"}


async def test_linking_needs_a_signed_in_caller(person: Callable[[], Person]) -> None:
    """?link=true without a credential is 403 No access token provided; with a dead one 403
    Invalid or expired access token; neither starts a flow."""
    browser = person()
    anonymous = await browser.start(link="true")
    dead = await browser.call(
        "GET", "/oauth/acme?link=true", headers={"authorization": "Bearer not-a-token"}
    )

    assert (anonymous.status_code, anonymous.json()) == (403, NO_TOKEN)
    assert (dead.status_code, dead.json()) == (403, BAD_TOKEN)
    assert await OAuthState.all().count() == 0


async def test_an_identity_linked_elsewhere_is_not_moved(
    person: Callable[[], Person], client: GraphQLClient
) -> None:
    """Linking an identity that belongs to another account gets the conflict redirect
    without an email, and the identity stays where it was."""
    owner = person()
    await owner.sign_in("alice")
    await register(client)
    other = person()
    await other.password_login()

    response = await other.sign_in("alice", link="true")

    assert response.status_code == 302
    assert response.headers["location"] == (
        f"{CONFLICT_PAGE}?provider=acme&code=OAUTH_ACCOUNT_CONFLICT"
    )
    assert "oauthPendingLink" not in set_cookies(response)
    assert await other.linked() == []
    assert len(await owner.linked()) == 1


async def test_the_last_way_to_sign_in_cannot_be_unlinked(person: Callable[[], Person]) -> None:
    """An account with no password and one identity cannot unlink it: 403 PASSWORD_REQUIRED."""
    browser = person()
    await browser.sign_in("alice")

    response = await browser.call("DELETE", "/linked-accounts/acme/alice")

    assert response.status_code == 403
    assert response.json() == {
        "error": "Set a password or link another account before unlinking this one",
        "code": "PASSWORD_REQUIRED",
    }
    assert len(await browser.linked()) == 1


async def test_linked_accounts_need_a_session(person: Callable[[], Person]) -> None:
    """Both linked-accounts routes answer 403 No access token provided anonymously."""
    browser = person()
    listed = await browser.call("GET", "/linked-accounts")
    deleted = await browser.call("DELETE", "/linked-accounts/acme/alice")

    assert (listed.status_code, listed.json()) == (403, NO_TOKEN)
    assert (deleted.status_code, deleted.json()) == (403, NO_TOKEN)


# --- refusals ------------------------------------------------------------------------------------


async def test_a_replayed_state_is_refused(person: Callable[[], Person]) -> None:
    """A callback delivered twice (binding cookie and all) works once; the replay gets
    ?error=INVALID_STATE (or the JSON 400 when asked) and no session."""
    browser = person()
    start = await browser.start()
    binding = set_cookies(start)["oauthBinding"]["value"]
    url = await browser.at_provider(start, "alice")
    cookie = {"cookie": f"oauthBinding={binding}"}

    first = await browser.call("GET", url, headers=cookie)
    assert first.status_code == 302 and first.headers["location"] == f"{PUBLIC}/"
    sessions = await Session.all().count()

    replay = await browser.call("GET", url, headers=cookie)
    assert replay.status_code == 302
    assert replay.headers["location"] == f"{PUBLIC}/?error=INVALID_STATE"
    assert "accessToken" not in set_cookies(replay)
    replay_json = await browser.call("GET", url, headers=cookie | JSON)
    assert (replay_json.status_code, replay_json.json()) == (400, INVALID_STATE)
    assert int(set_cookies(replay_json)["oauthBinding"]["max-age"]) == 0
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
        assert response.headers["location"] == f"{PUBLIC}/?error=INVALID_STATE"
        assert "accessToken" not in set_cookies(response)
    assert await User.all().count() == 0
    assert victim.cookie("accessToken") is None

    own = await attacker.call("GET", url)
    assert own.status_code == 302 and own.headers["location"] == f"{PUBLIC}/"


async def test_a_code_the_provider_refuses_is_a_token_exchange_failure(
    person: Callable[[], Person],
) -> None:
    """A tampered code with a genuine state is OAUTH_TOKEN_EXCHANGE_FAILED (401 as JSON), and
    the state is spent."""
    browser = person()
    start = await browser.start()
    binding = set_cookies(start)["oauthBinding"]["value"]
    url = await browser.at_provider(start, "alice")
    tampered = re.sub(r"code=[^&]+", "code=forged", url)

    response = await browser.call(
        "GET", tampered, headers={"cookie": f"oauthBinding={binding}"} | JSON
    )

    assert response.status_code == 401
    assert response.json()["code"] == "OAUTH_TOKEN_EXCHANGE_FAILED"
    assert await User.all().count() == 0
    spent = await browser.call("GET", url, headers={"cookie": f"oauthBinding={binding}"})
    assert spent.headers["location"] == f"{PUBLIC}/?error=INVALID_STATE"


async def test_a_declined_authorization_is_a_provider_error(person: Callable[[], Person]) -> None:
    """The provider coming back with error= (the user declined) redirects to
    ?error=OAUTH_PROVIDER_ERROR (400 as JSON) and clears the binding."""
    browser = person()
    await browser.start()
    path = "/oauth/acme/callback?error=access_denied&state=whatever"

    redirected = await browser.call("GET", path)
    as_json = await browser.call("GET", path, headers=JSON)

    assert redirected.status_code == 302
    assert redirected.headers["location"] == f"{PUBLIC}/?error=OAUTH_PROVIDER_ERROR"
    assert int(set_cookies(redirected)["oauthBinding"]["max-age"]) == 0
    assert as_json.status_code == 400
    assert as_json.json() == {
        "error": "The provider did not grant access",
        "code": "OAUTH_PROVIDER_ERROR",
    }


async def test_a_provider_down_at_the_callback_creates_nothing(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """A provider that stops answering before the code exchange gives ?error=PROVIDER_ERROR
    (502 as JSON) and no account."""
    async with oidc_provider() as own:
        client = make_client(**settings | {"oauth_providers": (acme_provider(own),)})
        browser = Person(make_browser(client.app))
        start = await browser.start()
        binding = set_cookies(start)["oauthBinding"]["value"]
        url = await browser.at_provider(start, "alice")
    cookie = {"cookie": f"oauthBinding={binding}"}

    response = await browser.call("GET", url, headers=cookie)

    assert response.status_code == 302
    assert response.headers["location"] == f"{PUBLIC}/?error=PROVIDER_ERROR"
    assert await User.all().count() == 0
    assert await Identity.all().count() == 0


# --- link-request / link-verify ----------------------------------------------------------------


async def conflict(browser: Person, client: GraphQLClient, login: str = "alice") -> None:
    """An account with the identity's email exists; the browser meets the conflict."""
    await register(client, f"{login}@example.com")
    response = await browser.sign_in(login)
    assert response.headers["location"].startswith(CONFLICT_PAGE)


async def mailed_token(client: GraphQLClient, to: str) -> str:
    mails, _ = await client.delivered()
    mine = [mail for mail in mails if mail.to == to]
    assert mine, f"no mail to {to}"
    link = re.search(r"https?://\S+", mine[-1].text)
    assert link is not None
    assert link.group(0).startswith(f"{PUBLIC}/auth/link-verify?token=")
    return query(link.group(0))["token"]


@pytest.mark.parametrize("login_after", [False, True])
async def test_link_request_and_verify_link_the_conflicting_identity(
    person: Callable[[], Person], client: GraphQLClient, login_after: bool
) -> None:
    """After a conflict, /link-request mails the account's owner a /link-verify link;
    verifying it links the identity ({success:true}, or a sign-in with loginAfterLinking),
    and the identity then signs in to that account."""
    browser = person()
    await conflict(browser, client)

    requested = await browser.call("POST", "/link-request", json={"email": "alice@example.com"})
    assert requested.status_code == 200
    assert requested.json() == {"success": True}
    token = await mailed_token(client, "alice@example.com")

    verified = await browser.call(
        "POST", "/link-verify", json={"token": token, "loginAfterLinking": login_after}
    )
    assert verified.status_code == 200, verified.text
    assert verified.json() == {"success": True}
    cookies = set_cookies(verified)
    assert ({"accessToken", "refreshToken"} <= set(cookies)) is login_after
    if login_after:
        assert (await browser.me())["email"] == "alice@example.com"
    [identity] = await Identity.all()
    assert identity.subject == "alice"

    later = person()
    await later.sign_in("alice")
    assert (await later.me())["email"] == "alice@example.com"

    spent = await browser.call("POST", "/link-verify", json={"token": token})
    assert spent.status_code == 400
    assert spent.json() == {"error": "Invalid account-link token", "code": "INVALID_LINK_TOKEN"}


async def test_link_verify_in_bearer_mode_returns_tokens(
    person: Callable[[], Person], client: GraphQLClient
) -> None:
    """loginAfterLinking with X-Auth-Strategy: bearer returns the tokens in the body."""
    browser = person()
    await conflict(browser, client)
    await browser.call("POST", "/link-request", json={"email": "alice@example.com"})
    token = await mailed_token(client, "alice@example.com")

    verified = await browser.call(
        "POST",
        "/link-verify",
        json={"token": token, "loginAfterLinking": True},
        headers={"x-auth-strategy": "bearer"},
    )

    assert verified.status_code == 200
    assert set(verified.json()) == {"success", "accessToken", "refreshToken"}
    assert "set-cookie" not in verified.headers


async def test_link_request_errors(person: Callable[[], Person], client: GraphQLClient) -> None:
    """/link-request: 400 EMAIL_REQUIRED without email; 401 UNAUTHORIZED without the
    pending-link cookie (also when signed in) or with a dead one; an unknown address is
    a silent success."""
    browser = person()
    missing = await browser.call("POST", "/link-request", json={})
    assert (missing.status_code, missing.json()) == (
        400,
        {"error": "email is required", "code": "EMAIL_REQUIRED"},
    )
    no_pending = await browser.call("POST", "/link-request", json={"email": EMAIL})
    assert (no_pending.status_code, no_pending.json()) == (401, NO_PENDING)
    await register(client)
    await browser.password_login()
    signed_in = await browser.call("POST", "/link-request", json={"email": EMAIL})
    assert (signed_in.status_code, signed_in.json()) == (401, NO_PENDING)
    dead = await browser.call(
        "POST",
        "/link-request",
        json={"email": EMAIL},
        headers={"cookie": "oauthPendingLink=made-up"},
    )
    assert (dead.status_code, dead.json()) == (401, NO_PENDING)

    other = person()
    await conflict(other, client)
    unknown = await other.call("POST", "/link-request", json={"email": "nobody@example.com"})
    assert (unknown.status_code, unknown.json()) == (200, {"success": True})
    mails, _ = await client.delivered()
    assert [mail for mail in mails if mail.to == "nobody@example.com"] == []


async def test_a_pending_identity_is_offered_only_to_its_own_address(
    person: Callable[[], Person], client: GraphQLClient
) -> None:
    """The identity parked by a conflict over alice@example.com cannot be offered to the
    owner of another account: no link mail goes to that account (otherwise whoever holds
    any conflicting identity could ask anyone to link it to their account)."""
    await register(client)  # ada: the intended victim
    browser = person()
    await conflict(browser, client)

    response = await browser.call("POST", "/link-request", json={"email": EMAIL})

    assert response.status_code == 200  # no enumeration either way
    mails, _ = await client.delivered()
    assert [mail for mail in mails if mail.to == EMAIL] == []


async def test_the_mailed_link_works_as_long_as_the_mail_says(
    person: Callable[[], Person], client: GraphQLClient, clock: FrozenClock
) -> None:
    """A link opened a minute before the lifetime its mail states still links the identity."""
    browser = person()
    await conflict(browser, client)
    await browser.call("POST", "/link-request", json={"email": "alice@example.com"})
    token = await mailed_token(client, "alice@example.com")
    mails, _ = await client.delivered()
    stated = re.search(r"expires in (\d+) minutes", mails[-1].text)
    assert stated is not None
    clock.advance(int(stated.group(1)) * 60 - 60)

    response = await browser.call("POST", "/link-verify", json={"token": token})

    assert response.status_code == 200, response.text
    assert await Identity.all().count() == 1


async def test_link_verify_errors(person: Callable[[], Person]) -> None:
    """/link-verify: 400 TOKEN_REQUIRED without a token, 400 INVALID_LINK_TOKEN for an
    unknown one."""
    browser = person()
    missing = await browser.call("POST", "/link-verify", json={})
    unknown = await browser.call("POST", "/link-verify", json={"token": "made-up"})

    assert (missing.status_code, missing.json()) == (
        400,
        {"error": "token is required", "code": "TOKEN_REQUIRED"},
    )
    assert (unknown.status_code, unknown.json()) == (
        400,
        {"error": "Invalid account-link token", "code": "INVALID_LINK_TOKEN"},
    )


async def test_an_expired_link_token_is_refused(
    person: Callable[[], Person], client: GraphQLClient, clock: FrozenClock
) -> None:
    """A link token past its hour is 400 LINK_TOKEN_EXPIRED and links nothing."""
    browser = person()
    await conflict(browser, client)
    await browser.call("POST", "/link-request", json={"email": "alice@example.com"})
    token = await mailed_token(client, "alice@example.com")
    clock.advance(3_601)

    response = await browser.call("POST", "/link-verify", json={"token": token})

    assert response.status_code == 400
    assert response.json() == {
        "error": "Account-link token has expired",
        "code": "LINK_TOKEN_EXPIRED",
    }
    assert await Identity.all().count() == 0
