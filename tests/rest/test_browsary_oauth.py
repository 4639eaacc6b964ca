"""Browsary's external-provider routes at /api/auth, against a real OpenID Connect provider:
external/providers, the init -> provider -> redirect flow (sign-up through the register
token and external/register/{token}, sign-in, linking while signed in, 2FA), the linked
accounts (list, one, unlink), and the refusals (conflicts, foreign or replayed state, open
return URLs, unknown providers)."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from authql.models import Identity, OAuthState, RefreshToken, Session, User
from authql.services.clock import FrozenClock
from tests.oauth_helpers import (
    ACME,
    Browser,
    acme_settings,
    make_browser_fixture,  # noqa: F401 - registers the fixture `make_browser` here
)
from tests.oidc_provider import (
    CLIENT_ID,
    OidcProvider,
    oidc_fixture,  # noqa: F401 - registers the session fixture `oidc` here
)
from tests.support import PASSWORD, GraphQLClient, query, set_cookies
from tests.totp_helpers import STEP, enrol, totp_code

MakeClient = Callable[..., GraphQLClient]
MakeBrowser = Callable[..., Browser]

PREFIX = "/api/auth"
PUBLIC = "http://testserver"
APP = "https://app.example.com"
CALLBACK = f"{PUBLIC}{PREFIX}/external/acme/redirect"
DASHBOARD = f"{PUBLIC}/dashboard"
REGISTER_PAGE = f"{PUBLIC}/register"
LOGIN_PAGE = f"{PUBLIC}/login?error="
BINDING = "openid_state"
EMAIL = "ada@example.com"
NAMES = {"firstName": "Alice", "lastName": "Liddell"}
ACCOUNT_KEYS = {"provider", "providerId", "email", "linkedAt", "supported"}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
JWT = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*")


# --- helpers ---------------------------------------------------------------------------------


def _decoded(match: re.Match[str]) -> str:
    """A JWT's header and payload as text, so secrets inside it are checked too."""
    parts = match.group(0).split(".")[:2]
    return " ".join(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)).decode() for p in parts)


async def assert_no_secrets(response: httpx.Response, jar: httpx.Cookies) -> None:
    """No body or header holds a password hash, a stored token digest or the word totp, and
    no redirect URL holds a JWT, the token cookie, or any cookie value the app set."""
    text = response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
    assert "$argon2" not in text
    assert "totp" not in JWT.sub(_decoded, text).lower()
    digests = [*await RefreshToken.all().values_list("digest", flat=True)]
    digests += [d for d in await Session.all().values_list("token_digest", flat=True) if d]
    for digest in digests:
        assert digest not in text
    location = response.headers.get("location")
    if location is not None:
        assert not JWT.search(location), location
        values = [cookie["value"] for cookie in set_cookies(response).values()]
        values += [c.value or "" for c in jar.jar if c.name in ("token", BINDING)]
        for value in values:
            if value:
                assert value not in location


def assert_error(response: httpx.Response, status: int) -> str:
    """Browsary's error shape; returns the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "message"} and body["status"] == "error"
    return str(body["message"])


class Person:
    """One person's browser on the Browsary routes: the app in-process, the provider over
    the network, one cookie jar; every answer is checked for leaked secrets."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.http = browser.http

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = path if path.startswith("http") else PREFIX + path
        response = await self.http.request(method, url, **kwargs)
        await assert_no_secrets(response, self.http.cookies)
        return response

    async def init(self, provider: str = ACME, **params: str) -> httpx.Response:
        """GET /external/{provider}/init: the redirect to the provider (not followed)."""
        return await self.call("GET", f"/external/{provider}/init", params=params)

    async def at_provider(self, start: httpx.Response, login: str | None) -> str:
        """Sign in at the provider as ``login`` and approve: the redirect URL it sends."""
        assert start.status_code == 302, start.text
        callback = await self.browser.authorize(start.headers["location"], login=login)
        assert callback.error is None and callback.code, callback
        assert callback.redirect_uri == CALLBACK
        return callback.url

    async def flow(self, login: str | None, provider: str = ACME, **params: str) -> httpx.Response:
        """init, provider, redirect; the redirect route's answer."""
        url = await self.at_provider(await self.init(provider, **params), login)
        return await self.call("GET", url)

    async def sign_up(self, login: str, **fields: Any) -> httpx.Response:
        """The flow for a new identity, then external/register/{token} with ``fields``."""
        response = await self.flow(login)
        assert response.headers["location"].startswith(f"{REGISTER_PAGE}?token=")
        token = query(response.headers["location"])["token"]
        return await self.call("POST", f"/external/register/{token}", json=NAMES | fields)

    async def status(self) -> dict[str, Any]:
        response = await self.call("GET", "")
        assert response.status_code == 200
        return response.json()  # type: ignore[no-any-return]

    async def accounts(self) -> list[dict[str, Any]]:
        response = await self.call("GET", "/external")
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"status", "accounts"} and body["status"] == "ok"
        return body["accounts"]  # type: ignore[no-any-return]

    def cookie(self, name: str) -> str | None:
        return self.http.cookies.get(name)


@pytest.fixture
def settings(oidc: OidcProvider) -> dict[str, Any]:
    """Browsary at /api/auth on the public URL http://testserver with the acme provider."""
    return {
        "rest_dialects": (("browsary", PREFIX),),
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


async def password_account(browser: Person, email: str = EMAIL) -> None:
    """Register ``email`` with a password through Browsary and sign this browser in."""
    body = {**NAMES, "email": email, "password": PASSWORD, "confirmPassword": PASSWORD}
    assert (await browser.call("POST", "/register", json=body)).status_code == 200
    login = await browser.call("POST", "/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text


# --- providers and init ------------------------------------------------------------------------


async def test_providers_lists_the_configured_providers(person: Callable[[], Person]) -> None:
    """GET /external/providers lists each configured provider's name and display name."""
    response = await person().call("GET", "/external/providers")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "providers": [{"name": "acme", "displayName": "Acme"}],
    }


async def test_init_redirects_to_the_provider_and_binds_the_browser(
    oidc: OidcProvider, person: Callable[[], Person]
) -> None:
    """GET /external/{provider}/init answers 302 to the provider (code flow, S256 PKCE,
    state, nonce, our redirect route) and sets the HttpOnly openid_state cookie."""
    response = await person().init(returnUrl="/welcome")

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
    binding = cookies[BINDING]
    assert binding["path"] == f"{PREFIX}/external" and int(binding["max-age"]) == 600
    assert binding["samesite"].lower() == "lax" and "httponly" in binding
    assert await OAuthState.all().count() == 1


async def test_over_https_the_binding_cookie_carries_the_host_prefix(
    make_client: MakeClient, settings: dict[str, Any]
) -> None:
    """With an https public URL the binding cookie is __Host-openid_state, Secure, path /."""
    client = make_client(**settings | {"public_url": "https://testserver"})
    response = await client.http.get(f"{PREFIX}/external/acme/init")

    assert query(response.headers["location"])["redirect_uri"] == (
        f"https://testserver{PREFIX}/external/acme/redirect"
    )
    binding = set_cookies(response)[f"__Host-{BINDING}"]
    assert binding["path"] == "/" and "secure" in binding and "httponly" in binding


async def test_an_unconfigured_provider_is_404(person: Callable[[], Person]) -> None:
    """An unknown provider answers 404 on init, on the redirect route, and (signed in) on
    the account routes; nothing is started."""
    browser = person()
    answers = [
        await browser.init("nope"),
        await browser.call("GET", "/external/nope/redirect?code=c&state=s"),
        await browser.call("GET", "/external/nope/redirect?error=access_denied"),
    ]
    await password_account(browser)
    answers += [
        await browser.call("GET", "/external/nope"),
        await browser.call("DELETE", "/external/nope"),
    ]
    for response in answers:
        assert_error(response, 404)
    assert await OAuthState.all().count() == 0


@pytest.mark.parametrize(
    "return_url",
    [
        "//evil.example/x",
        "https://evil.example/",
        "http://testserver.evil.example/",
        "javascript:alert(1)",
        "/\\evil.example",
        "evil.example",
    ],
)
async def test_an_open_return_url_is_refused(person: Callable[[], Person], return_url: str) -> None:
    """A returnUrl that is neither a path on the public URL nor an allowed redirect is 400:
    no redirect, no cookie, no flow."""
    response = await person().init(returnUrl=return_url)

    assert "returnUrl" in assert_error(response, 400)
    assert "location" not in response.headers
    assert "set-cookie" not in response.headers
    assert await OAuthState.all().count() == 0


# --- sign-up through the register token, sign-in -------------------------------------------------


async def test_sign_up_goes_through_the_register_token(person: Callable[[], Person]) -> None:
    """An unknown identity is sent to <public url>/register?token=<register token> (no
    session, binding cleared); external/register/{token} creates the account with the
    provider's verified address, links the identity and signs in ({status, token} + the
    token cookie)."""
    browser = person()
    response = await browser.flow("alice")

    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(f"{REGISTER_PAGE}?token=")
    assert set(query(location)) == {"token"}
    cookies = set_cookies(response)
    assert set(cookies) == {BINDING} and int(cookies[BINDING]["max-age"]) == 0
    assert await User.all().count() == 0

    token = query(location)["token"]
    registered = await browser.call("POST", f"/external/register/{token}", json=NAMES)
    assert registered.status_code == 200, registered.text
    body = registered.json()
    assert set(body) == {"status", "token"} and body["status"] == "ok"
    cookie = set_cookies(registered)["token"]
    assert cookie["value"] == body["token"] and "max-age" not in cookie
    status = await browser.status()
    assert status["status"] == "ok"
    assert status["auth"]["info"]["email"] == "alice@example.com"
    assert status["auth"]["info"]["emailVerified"] is True
    user = await User.get()
    assert (user.first_name, user.last_name, user.password_hash) == ("Alice", "Liddell", None)

    [account] = await browser.accounts()
    assert set(account) == ACCOUNT_KEYS
    assert account["provider"] == "acme" and account["providerId"] == "alice"
    assert account["email"] == "alice@example.com" and account["supported"] is True
    assert ISO.match(account["linkedAt"])

    again = await browser.call("POST", f"/external/register/{token}", json=NAMES)
    assert_error(again, 400)


async def test_another_address_at_sign_up_is_unverified(person: Callable[[], Person]) -> None:
    """Choosing another address than the provider's makes it unverified; a password set at
    sign-up then signs in too."""
    browser = person()
    fields = {"email": "other@example.com", "password": PASSWORD, "confirmPassword": PASSWORD}
    response = await browser.sign_up("alice", **fields)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "email_not_verified"
    login = await browser.call(
        "POST", "/login", json={"email": "other@example.com", "password": PASSWORD}
    )
    assert login.status_code == 200 and login.json()["status"] == "email_not_verified"


async def test_sign_up_checks_its_body(person: Callable[[], Person], client: GraphQLClient) -> None:
    """external/register needs firstName and lastName, a matching confirmPassword, a free
    email and a live token; a refusal leaves the token usable."""
    await client.register("taken@example.com")
    browser = person()
    location = (await browser.flow("alice")).headers["location"]
    path = f"/external/register/{query(location)['token']}"

    missing = await browser.call("POST", path, json={"firstName": "A"})
    mismatch = await browser.call(
        "POST", path, json=NAMES | {"password": PASSWORD, "confirmPassword": "other"}
    )
    taken = await browser.call("POST", path, json=NAMES | {"email": "taken@example.com"})
    unknown = await browser.call("POST", "/external/register/not-a-token", json=NAMES)

    assert "lastName" in assert_error(missing, 400)
    assert "confirmPassword" in assert_error(mismatch, 400)
    assert_error(taken, 409)
    assert_error(unknown, 400)
    assert (await browser.call("POST", path, json=NAMES)).status_code == 200


async def test_the_register_token_goes_to_the_return_url(person: Callable[[], Person]) -> None:
    """With returnUrl, the register token is appended to it."""
    response = await person().flow("alice", returnUrl=f"{APP}/signup?step=2")

    location = response.headers["location"]
    assert location.startswith(f"{APP}/signup?step=2&token=")


async def test_a_known_identity_signs_in(person: Callable[[], Person]) -> None:
    """A linked identity signs in from another browser: the token cookie (a browser-session
    cookie) and 302 to /dashboard, or to the returnUrl."""
    first = person()
    await first.sign_up("alice")
    user_id = (await first.status())["auth"]["sub"]

    second = person()
    response = await second.flow("alice")

    assert response.status_code == 302
    assert response.headers["location"] == DASHBOARD
    cookie = set_cookies(response)["token"]
    assert "max-age" not in cookie and "httponly" in cookie and cookie["path"] == "/"
    status = await second.status()
    assert status["status"] == "ok" and status["auth"]["sub"] == user_id
    assert await User.all().count() == 1

    third = person()
    elsewhere = await third.flow("alice", returnUrl="/projects")
    assert elsewhere.headers["location"] == f"{PUBLIC}/projects"


async def test_with_2fa_the_redirect_leaves_a_challenge(
    person: Callable[[], Person], client: GraphQLClient, clock: FrozenClock
) -> None:
    """With 2FA on, the redirect puts the challenge in the token cookie (Max-Age 300): the
    status route says 2fa_required, and POST /2fa/verify completes the sign-in."""
    first = person()
    signed_up = await first.sign_up("alice")
    enrolment = await enrol(client, clock, access_token=signed_up.json()["token"])
    clock.advance(STEP)

    second = person()
    response = await second.flow("alice")

    assert response.headers["location"] == DASHBOARD
    assert int(set_cookies(response)["token"]["max-age"]) == 300
    assert (await second.status())["status"] == "2fa_required"
    assert_error(await second.call("GET", "/external"), 401)
    verified = await second.call(
        "POST", "/2fa/verify", json={"token": totp_code(enrolment.secret, clock)}
    )
    assert verified.status_code == 200, verified.text
    assert (await second.status())["status"] == "ok"


async def test_an_unverified_account_under_a_verification_policy_gets_no_session(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """With verification required, an unverified account signing in with its identity is
    sent to /login?error=email_not_verified without a cookie."""
    client = make_client(**settings | {"require_email_verification": True})
    first = Person(make_browser(client.app))
    signed_up = await first.sign_up("dave")
    assert signed_up.json() == {"status": "email_not_verified"}

    response = await Person(make_browser(client.app)).flow("dave")

    assert response.headers["location"] == f"{LOGIN_PAGE}email_not_verified"
    assert "token" not in set_cookies(response)


# --- linking, the account routes, unlinking -----------------------------------------------------


async def test_linking_reading_and_unlinking(person: Callable[[], Person]) -> None:
    """Signed in, init links the identity (302 to /dashboard, the session unchanged); GET
    /external and /external/{provider} show it, it signs in to the account, and DELETE
    unlinks it."""
    browser = person()
    await password_account(browser)
    token = browser.cookie("token")

    response = await browser.flow("bob")

    assert response.headers["location"] == DASHBOARD
    assert set(set_cookies(response)) == {BINDING}
    assert browser.cookie("token") == token
    [account] = await browser.accounts()
    assert (account["provider"], account["providerId"]) == ("acme", "bob")
    one = await browser.call("GET", "/external/acme")
    assert one.json() == {"status": "ok", "account": account}

    other = person()
    await other.flow("bob")
    assert (await other.status())["auth"]["info"]["email"] == EMAIL

    unlinked = await browser.call("DELETE", "/external/acme")
    assert (unlinked.status_code, unlinked.json()) == (200, {"status": "ok"})
    assert await browser.accounts() == []
    assert_error(await browser.call("GET", "/external/acme"), 404)
    assert_error(await browser.call("DELETE", "/external/acme"), 404)


async def test_the_account_routes_need_a_session(person: Callable[[], Person]) -> None:
    """GET /external, GET and DELETE /external/{provider} are 401 when signed out."""
    browser = person()
    for method, path in (("GET", "/external"), ("GET", "/external/acme")):
        assert_error(await browser.call(method, path), 401)
    assert_error(await browser.call("DELETE", "/external/acme"), 401)


async def test_the_last_way_to_sign_in_cannot_be_unlinked(person: Callable[[], Person]) -> None:
    """An account made from an identity, without a password, cannot unlink it (400)."""
    browser = person()
    await browser.sign_up("alice")

    refused = await browser.call("DELETE", "/external/acme")

    assert "password" in assert_error(refused, 400).lower()
    assert await Identity.all().count() == 1


async def test_an_identity_of_a_provider_no_longer_configured_is_unsupported(
    make_client: MakeClient, make_browser: MakeBrowser, settings: dict[str, Any]
) -> None:
    """A linked identity whose provider was removed from the configuration is still listed,
    with supported: false, and can be unlinked."""
    client = make_client(**settings)
    browser = Person(make_browser(client.app))
    await password_account(browser)
    await browser.flow("bob")
    token = browser.cookie("token")

    later = make_client(**settings | {"oauth_providers": ()})
    headers = {"cookie": f"token={token}"}
    listed = await later.http.get(f"{PREFIX}/external", headers=headers)
    assert [a["supported"] for a in listed.json()["accounts"]] == [False]
    unlinked = await later.http.delete(f"{PREFIX}/external/acme", headers=headers)
    assert unlinked.json() == {"status": "ok"}


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("login", ["alice", "carol"])
async def test_an_email_matching_an_account_is_not_linked(
    person: Callable[[], Person], login: str
) -> None:
    """An unknown identity whose email (verified by the provider or not) belongs to an
    account is sent to /login?error=account_exists: no cookie, nothing linked."""
    await password_account(person(), f"{login}@example.com")
    response = await person().flow(login)

    assert response.headers["location"] == f"{LOGIN_PAGE}account_exists"
    assert "token" not in set_cookies(response)
    assert await Identity.all().count() == 0


async def test_an_identity_linked_elsewhere_is_not_moved(person: Callable[[], Person]) -> None:
    """Linking an identity that belongs to another account ends on error=already_linked."""
    await person().sign_up("bob")
    browser = person()
    await password_account(browser)

    response = await browser.flow("bob")

    assert response.headers["location"] == f"{LOGIN_PAGE}already_linked"
    [identity] = await Identity.all()
    assert (await User.get(id=identity.user_id)).email == "bob@example.com"


async def test_a_replayed_state_is_refused(person: Callable[[], Person]) -> None:
    """A redirect delivered twice (binding cookie and all) works once; the replay ends on
    error=invalid_state and signs nobody in."""
    first = person()
    await first.sign_up("alice")
    browser = person()
    start = await browser.init()
    binding = set_cookies(start)[BINDING]["value"]
    url = await browser.at_provider(start, "alice")
    cookie = {"cookie": f"{BINDING}={binding}"}

    once = await browser.call("GET", url, headers=cookie)
    assert once.headers["location"] == DASHBOARD
    sessions = await Session.all().count()
    replay = await browser.call("GET", url, headers=cookie)

    assert replay.headers["location"] == f"{LOGIN_PAGE}invalid_state"
    assert "token" not in set_cookies(replay)
    assert await Session.all().count() == sessions


async def test_a_foreign_state_is_refused(person: Callable[[], Person]) -> None:
    """A redirect URL from another browser's flow is refused in this one (with or without a
    flow of its own); it still works where it started."""
    attacker = person()
    url = await attacker.at_provider(await attacker.init(), "mallory")

    victim = person()
    bare = await victim.call("GET", url)
    await victim.init()
    bound = await victim.call("GET", url)

    for response in (bare, bound):
        assert response.headers["location"] == f"{LOGIN_PAGE}invalid_state"
    assert (await victim.status())["auth"] is None
    own = await attacker.call("GET", url)
    assert own.headers["location"].startswith(f"{REGISTER_PAGE}?token=")


async def test_a_tampered_code_or_a_declined_authorization_is_refused(
    person: Callable[[], Person],
) -> None:
    """A code the provider refuses ends on error=external_auth_failed, the provider's
    error= on error=access_denied; nothing is created."""
    browser = person()
    url = await browser.at_provider(await browser.init(), "alice")
    tampered = await browser.call("GET", re.sub(r"code=[^&]+", "code=forged", url))
    declined = await browser.call("GET", "/external/acme/redirect?error=access_denied&state=x")

    assert tampered.headers["location"] == f"{LOGIN_PAGE}external_auth_failed"
    assert declined.headers["location"] == f"{LOGIN_PAGE}access_denied"
    assert int(set_cookies(declined)[BINDING]["max-age"]) == 0
    assert await User.all().count() == 0


# --- documentation -------------------------------------------------------------------------------


async def test_openapi_documents_the_external_routes(person: Callable[[], Person]) -> None:
    """openapi.json lists every external route, with the register body."""
    paths = (await person().call("GET", "/openapi.json")).json()["paths"]
    served = {
        (method, path)
        for path, operations in paths.items()
        for method in operations
        if "/external" in path
    }

    assert served == {
        ("get", f"{PREFIX}/external/providers"),
        ("get", f"{PREFIX}/external"),
        ("get", f"{PREFIX}/external/{{provider}}"),
        ("delete", f"{PREFIX}/external/{{provider}}"),
        ("get", f"{PREFIX}/external/{{provider}}/init"),
        ("get", f"{PREFIX}/external/{{provider}}/redirect"),
        ("post", f"{PREFIX}/external/register/{{token}}"),
    }
    register = paths[f"{PREFIX}/external/register/{{token}}"]["post"]
    schema = register["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["firstName", "lastName"]
    assert set(schema["properties"]) == {
        "firstName",
        "lastName",
        "email",
        "password",
        "confirmPassword",
    }
