"""External sign-in over GraphQL against a real OpenID Connect provider (npm oidc-provider on
127.0.0.1) and a local stand-in for GitHub: sign-up, sign-in, linking, unlinking, 2FA after
OAuth, and the attacks the flow must withstand (replayed or foreign state, stolen codes and
PKCE, audience, signature and nonce of the id_token, email collisions, open redirects,
providers that are down)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from authql.models import AuthEventRecord, Identity, OAuthState, Session, User
from authql.services.clock import FrozenClock
from authql.services.oauth_clients import IdentityRejected, OAuthClient
from authql.services.tokens import digest
from authql.settings import OAuthProviderConfig
from tests.github_standin import (
    GitHubStandin,
    LocalServer,
    Reply,
    Request,
    closed_port_url,
    github_user,
    s256,
)
from tests.oauth_helpers import (
    ACME,
    AUTH_PROVIDERS,
    BINDING_COOKIE,
    START_OAUTH,
    Browser,
    acme_provider,
    acme_settings,
    make_browser_fixture,  # noqa: F401 - registers the fixture `make_browser` here
    standin_authorize,
)
from tests.oidc_provider import (
    CLIENT_ID,
    CLIENT_SECRET,
    OTHER_CLIENT_ID,
    OTHER_CLIENT_SECRET,
    REDIRECT_URI,
    OidcProvider,
    oidc_fixture,  # noqa: F401 - registers the session fixture `oidc` here
)
from tests.support import GraphQLClient
from tests.totp_helpers import enrol, totp_code

ADA = "ada@example.com"
ACME2 = "acme2"  # the same provider, registered under another client
VERIFY_TWO_FACTOR = """
mutation($t: String!, $c: String!) {
  verifyTwoFactor(challengeToken: $t, code: $c) {
    status accessToken refreshToken user { id } session { id method }
  }
}
"""

MakeClient = Callable[..., GraphQLClient]
MakeBrowser = Callable[..., Browser]


# --- helpers ---------------------------------------------------------------------------------


def acme_app(make_client: MakeClient, oidc: OidcProvider, **overrides: Any) -> GraphQLClient:
    """A client for an app with ``acme`` and ``acme2`` (the same provider, other client)."""
    acme2 = acme_provider(
        oidc, name=ACME2, client_id=OTHER_CLIENT_ID, client_secret=OTHER_CLIENT_SECRET
    )
    return make_client(**acme_settings(oidc, acme2, **overrides))


async def totals() -> tuple[int, int, int]:
    """(accounts, linked identities, sessions) in the database."""
    return await User.all().count(), await Identity.all().count(), await Session.all().count()


async def events(kind: str, user_id: str | None = None) -> list[AuthEventRecord]:
    query = AuthEventRecord.filter(type=kind)
    if user_id is not None:
        query = query.filter(user_id=user_id)
    return await query.order_by("at").all()


async def signed_up(browser: Browser, login: str, provider: str = ACME) -> dict[str, Any]:
    """Sign up through the provider as ``login`` and return finishOAuth's payload."""
    payload = (await browser.sign_in_with(provider, login=login)).payload
    assert payload["status"] == "OK", payload
    return payload


async def password_account(browser: Browser, email: str = ADA) -> dict[str, Any]:
    """Register ``email`` with a password and return the register payload."""
    payload = await browser.register(email)
    assert payload["status"] == "OK"
    return payload


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


async def state_record(state: str) -> OAuthState:
    return await OAuthState.get(digest=digest(state))


# --- sign-up and sign-in ---------------------------------------------------------------------


async def test_sign_up_creates_an_account_with_the_providers_verified_email(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """An unknown identity signs up: a new account, its email verified because the provider
    says so, no password, the identity listed as (acme, sub, email), and a session."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)

    payload = await signed_up(browser, "alice")

    user = payload["user"]
    assert user["email"] == "alice@example.com"
    assert user["emailVerified"] is True
    assert user["name"] == "Alice"
    assert user["hasPassword"] is False
    assert [(a["provider"], a["accountId"], a["email"]) for a in user["linkedAccounts"]] == [
        (ACME, "alice", "alice@example.com")
    ]
    assert payload["session"]["method"] == "oauth:acme"
    assert payload["accessToken"] and payload["refreshToken"]
    assert await browser.me(payload["accessToken"]) == {
        "id": user["id"],
        "email": "alice@example.com",
        "username": None,
        "name": "Alice",
        "roles": [],
    }
    [registered] = await events("REGISTERED", user["id"])
    assert registered.detail.get("method") == "oauth:acme"
    assert len(await events("OAUTH_LOGIN", user["id"])) == 1


async def test_sign_up_leaves_the_email_unverified_when_the_provider_does_not_vouch(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """An identity whose email the provider marks unverified signs up with emailVerified
    false."""
    client = acme_app(make_client, oidc)

    payload = await signed_up(make_browser(client.app), "carol")

    assert payload["user"]["email"] == "carol@example.com"
    assert payload["user"]["emailVerified"] is False


async def test_sign_up_with_an_unverified_email_gets_no_session_when_verification_is_required(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """With AUTHQL_REQUIRE_EMAIL_VERIFICATION on, an unverified provider email answers
    EMAIL_NOT_VERIFIED without tokens, while a verified one signs in."""
    client = acme_app(make_client, oidc, require_email_verification=True)

    unverified = (await make_browser(client.app).sign_in_with(login="carol")).payload
    verified = (await make_browser(client.app).sign_in_with(login="alice")).payload

    assert unverified["status"] == "EMAIL_NOT_VERIFIED"
    assert unverified["accessToken"] is None and unverified["session"] is None
    assert verified["status"] == "OK" and verified["accessToken"]


async def test_a_known_identity_signs_in_to_the_same_account(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """Signing in again with the same provider identity (here from another device) lands on
    the same account with a new oauth:acme session, and creates nothing."""
    client = acme_app(make_client, oidc)
    first = await signed_up(make_browser(client.app), "alice")

    again = (await make_browser(client.app).sign_in_with(login="alice")).payload

    assert again["status"] == "OK"
    assert again["user"]["id"] == first["user"]["id"]
    assert again["session"]["method"] == "oauth:acme"
    assert again["session"]["id"] != first["session"]["id"]
    assert await totals() == (1, 1, 2)
    assert len(await events("REGISTERED")) == 1
    assert len(await events("OAUTH_LOGIN", first["user"]["id"])) == 2


async def test_the_same_browser_signs_in_again_on_its_provider_session(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """A browser still signed in at the provider completes a second flow without a login
    form and reaches the same account."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)
    first = await signed_up(browser, "alice")

    again = (await browser.sign_in_with(login=None)).payload

    assert again["status"] == "OK"
    assert again["user"]["id"] == first["user"]["id"]


async def test_start_oauth_asks_for_code_with_pkce_s256_state_and_nonce(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """startOAuth sends the browser to the provider's authorization endpoint with the code
    flow, an S256 PKCE challenge, a state and a nonce, and binds the flow to the browser with
    an HttpOnly cookie; the server keeps only the state's digest."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)

    response = await browser.http.post(
        "/graphql",
        json={"query": START_OAUTH, "variables": {"provider": ACME, "redirectUri": REDIRECT_URI}},
    )

    url = response.json()["data"]["startOAuth"]
    assert url.startswith(oidc.authorization_endpoint + "?")
    params = query_of(url)
    assert params["response_type"] == "code"
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == REDIRECT_URI
    assert params["scope"].split() == ["openid", "email", "profile"]
    assert params["code_challenge_method"] == "S256"
    assert len(params["state"]) >= 32 and len(params["nonce"]) >= 32
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{BINDING_COOKIE}=")
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    record = await state_record(params["state"])
    assert s256(record.code_verifier) == params["code_challenge"]
    assert record.nonce == params["nonce"]
    assert not await OAuthState.filter(digest=params["state"]).exists()


async def test_without_a_redirect_uri_the_provider_returns_to_the_servers_callback_page(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """startOAuth without redirectUri uses the server's own /oauth/callback page under
    AUTHQL_PUBLIC_URL, and the flow completes through it."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)

    flow = await browser.sign_in_with(login="alice", redirect_uri=None)

    assert (
        query_of(flow.authorization_url)["redirect_uri"] == "http://127.0.0.1:8000/oauth/callback"
    )
    assert flow.callback.redirect_uri == "http://127.0.0.1:8000/oauth/callback"
    assert flow.payload["status"] == "OK"


async def test_an_unknown_provider_is_not_found(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """startOAuth and finishOAuth name only configured providers: anything else is
    NOT_FOUND."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)

    started = await browser.start_oauth("nope")
    finished = await browser.finish_oauth("nope", code="c", state="s")

    assert started.error_code == "NOT_FOUND"
    assert finished.error_code == "NOT_FOUND"


async def test_auth_providers_lists_the_configured_provider(
    oidc: OidcProvider, make_client: MakeClient
) -> None:
    """authProviders lists each configured provider as kind oauth with its display name."""
    client = acme_app(make_client, oidc)

    providers = (await client.gql(AUTH_PROVIDERS)).data["authProviders"]

    by_id = {provider["id"]: provider for provider in providers}
    assert by_id[ACME]["kind"] == "oauth"
    assert by_id[ACME]["name"] == "Acme"
    assert by_id[ACME2]["kind"] == "oauth"
    assert by_id["local"]["kind"] == "password"
    assert by_id[ACME]["authorizeUrl"] is None  # no dialect mounted: SPAs use startOAuth


async def test_auth_providers_name_where_a_browser_starts_the_flow(
    oidc: OidcProvider, make_client: MakeClient
) -> None:
    """With a dialect mounted, authorizeUrl is its route that redirects to the provider."""
    client = acme_app(
        make_client,
        oidc,
        rest_dialects=(("fluxkit", "/compat/fluxkit/auth"), ("node-auth", "/auth")),
    )
    providers = (await client.gql(AUTH_PROVIDERS)).data["authProviders"]
    by_id = {provider["id"]: provider for provider in providers}
    assert by_id[ACME]["authorizeUrl"] == "http://127.0.0.1:8000/compat/fluxkit/auth/acme"
    response = await client.http.get("/compat/fluxkit/auth/acme")
    assert response.status_code == 302
    assert response.headers["location"].startswith(oidc.authorization_endpoint)


# --- linking ---------------------------------------------------------------------------------


async def test_a_signed_in_user_links_an_identity_and_then_signs_in_with_it(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """A signed-in user starting the flow with link gains the identity (OAUTH_LINKED, listed
    in linkedAccounts, no new session), and a later provider sign-in lands on that account."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)
    ada = await password_account(browser)
    token = ada["accessToken"]

    linked = (await browser.sign_in_with(login="bob", link=True, token=token)).payload

    assert linked["status"] == "OK"
    assert linked["user"]["id"] == ada["user"]["id"]
    assert linked["accessToken"] is None and linked["session"] is None
    accounts = await browser.linked_accounts(token)
    assert [(a["provider"], a["accountId"], a["email"]) for a in accounts] == [
        (ACME, "bob", "bob@example.com")
    ]
    [event] = await events("OAUTH_LINKED", ada["user"]["id"])
    assert event.detail.get("provider") == ACME
    assert await totals() == (1, 1, 1)

    later = (await make_browser(client.app).sign_in_with(login="bob")).payload

    assert later["status"] == "OK"
    assert later["user"]["id"] == ada["user"]["id"]
    assert later["user"]["email"] == ADA
    assert later["session"]["method"] == "oauth:acme"
    assert await User.all().count() == 1


async def test_linking_needs_a_signed_in_user(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """startOAuth with link and no session is UNAUTHORIZED and starts no flow."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)

    started = await browser.start_oauth(link=True)

    assert started.error_code == "UNAUTHORIZED"
    assert await OAuthState.all().count() == 0
    assert browser.binding is None


async def test_linking_an_identity_that_belongs_to_another_user_is_a_conflict(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """An identity already linked to one account cannot be linked to another: CONFLICT, and
    it stays where it was."""
    client = acme_app(make_client, oidc)
    alice = await signed_up(make_browser(client.app), "alice")
    browser = make_browser(client.app)
    ada = await password_account(browser)

    flow = await browser.sign_in_with(login="alice", link=True, token=ada["accessToken"])

    assert flow.error_code == "CONFLICT"
    assert await browser.linked_accounts(ada["accessToken"]) == []
    identity = await Identity.get(provider=ACME, subject="alice")
    assert str(identity.user_id) == alice["user"]["id"]
    assert await events("OAUTH_LINKED") == []


async def test_a_matching_verified_email_is_never_linked_silently(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """An unknown identity whose verified email belongs to a password account gets CONFLICT
    (no identity, no session); the owner signs in and links it deliberately, after which
    the provider sign-in reaches that account."""
    client = acme_app(make_client, oidc)
    owner = make_browser(client.app)
    account = await password_account(owner, "alice@example.com")

    flow = await make_browser(client.app).sign_in_with(login="alice")

    assert flow.error_code == "CONFLICT"
    assert flow.result.errors[0]["extensions"].get("fields", {}).get("email") == (
        "alice@example.com"
    )
    assert await totals() == (1, 0, 1)

    linked = await owner.sign_in_with(login="alice", link=True, token=account["accessToken"])
    later = (await make_browser(client.app).sign_in_with(login="alice")).payload

    assert linked.payload["status"] == "OK"
    assert later["status"] == "OK" and later["user"]["id"] == account["user"]["id"]


async def test_an_unverified_email_matching_an_account_does_not_link(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """Someone signing in at the provider with an unverified email that belongs to an
    account gets CONFLICT: no identity is linked and no session starts."""
    client = acme_app(make_client, oidc)
    await password_account(make_browser(client.app), ADA)

    flow = await make_browser(client.app).sign_in_with(login="ada")  # ada@example.com, unverified

    assert flow.error_code == "CONFLICT"
    assert await totals() == (1, 0, 1)
    assert await events("OAUTH_LOGIN") == []


# --- unlinking -------------------------------------------------------------------------------


async def test_unlinking_the_only_way_into_an_oauth_account_is_forbidden(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """An account created by the provider, with no password and no other identity, cannot
    unlink it (FORBIDDEN); the identity stays and still signs in."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)
    alice = await signed_up(browser, "alice")
    token = alice["accessToken"]

    result = await browser.unlink(ACME, "alice", token=token)

    assert result.error_code == "FORBIDDEN"
    assert len(await browser.linked_accounts(token)) == 1
    assert await events("OAUTH_UNLINKED") == []
    again = (await make_browser(client.app).sign_in_with(login="alice")).payload
    assert again["user"]["id"] == alice["user"]["id"]


async def test_unlinking_is_allowed_when_a_password_remains(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """A password account unlinks its identity (OAUTH_UNLINKED); the identity then no longer
    reaches the account."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)
    ada = await password_account(browser)
    token = ada["accessToken"]
    await browser.sign_in_with(login="bob", link=True, token=token)

    result = await browser.unlink(ACME, "bob", token=token)

    assert result.data["unlinkAccount"] is True
    assert await browser.linked_accounts(token) == []
    [event] = await events("OAUTH_UNLINKED", ada["user"]["id"])
    assert event.detail.get("provider") == ACME
    later = (await make_browser(client.app).sign_in_with(login="bob")).payload
    assert later["user"]["id"] != ada["user"]["id"]
    assert later["user"]["email"] == "bob@example.com"


async def test_unlinking_is_allowed_while_another_identity_remains(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """An OAuth-only account with two identities may unlink one, but not the last; the
    remaining one still signs in."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)
    alice = await signed_up(browser, "alice")
    token = alice["accessToken"]
    linked = await browser.sign_in_with(ACME2, login=None, link=True, token=token)
    assert linked.payload["status"] == "OK"
    assert {a["provider"] for a in await browser.linked_accounts(token)} == {ACME, ACME2}

    first = await browser.unlink(ACME, "alice", token=token)
    last = await browser.unlink(ACME2, "alice", token=token)

    assert first.data["unlinkAccount"] is True
    assert last.error_code == "FORBIDDEN"
    assert [a["provider"] for a in await browser.linked_accounts(token)] == [ACME2]
    again = (await make_browser(client.app).sign_in_with(ACME2, login="alice")).payload
    assert again["user"]["id"] == alice["user"]["id"]


async def test_nobody_unlinks_someone_elses_identity(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """Unlinking another account's identity is NOT_FOUND, and without a session
    UNAUTHORIZED; the identity stays linked."""
    client = acme_app(make_client, oidc)
    alice = await signed_up(make_browser(client.app), "alice")
    browser = make_browser(client.app)
    ada = await password_account(browser)

    theirs = await browser.unlink(ACME, "alice", token=ada["accessToken"])
    anonymous = await browser.unlink(ACME, "alice", token=None)

    assert theirs.error_code == "NOT_FOUND"
    assert anonymous.error_code == "UNAUTHORIZED"
    identity = await Identity.get(provider=ACME, subject="alice")
    assert str(identity.user_id) == alice["user"]["id"]


# --- two-factor after OAuth ------------------------------------------------------------------


async def test_two_factor_holds_for_provider_sign_ins(
    oidc: OidcProvider,
    make_client: MakeClient,
    make_browser: MakeBrowser,
    clock: FrozenClock,
) -> None:
    """An account created through the provider (no password) turns TOTP on from its
    session; its next provider sign-in answers TWO_FACTOR_REQUIRED with a challenge and no
    session, and verifyTwoFactor completes it as an oauth:acme session."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)
    alice = await signed_up(browser, "alice")
    enrolment = await enrol(browser, clock, access_token=alice["accessToken"])
    sessions_before = await Session.all().count()

    pending = (await make_browser(client.app).sign_in_with(login="alice")).payload

    assert pending["status"] == "TWO_FACTOR_REQUIRED"
    assert pending["challengeToken"]
    assert "TOTP" in pending["twoFactorMethods"]
    assert pending["accessToken"] is None and pending["refreshToken"] is None
    assert pending["session"] is None
    assert await Session.all().count() == sessions_before

    clock.advance(30)
    code = totp_code(enrolment.secret, clock)
    done = await browser.gql(VERIFY_TWO_FACTOR, {"t": pending["challengeToken"], "c": code})

    completed = done.data["verifyTwoFactor"]
    assert completed["status"] == "OK"
    assert completed["accessToken"] and completed["refreshToken"]
    assert completed["user"]["id"] == alice["user"]["id"]
    assert completed["session"]["method"] == "oauth:acme"


# --- attacks: state --------------------------------------------------------------------------


async def test_a_replayed_state_is_refused(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """The state is single use: finishing the same callback twice answers INVALID_TOKEN the
    second time and starts no second session."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)
    flow = await browser.sign_in_with(login="alice")
    assert flow.payload["status"] == "OK"

    replay = await browser.finish_oauth(ACME, flow.callback)

    assert replay.error_code == "INVALID_TOKEN"
    assert await totals() == (1, 1, 1)
    assert len(await events("OAUTH_LOGIN")) == 1


async def test_a_state_started_by_another_browser_is_refused(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """A callback finished by a browser that did not start the flow (no binding cookie, or
    its own flow's cookie) answers INVALID_TOKEN and does not use the flow up: the browser
    that started it still finishes."""
    client = acme_app(make_client, oidc)
    starter = make_browser(client.app)
    _, callback = await starter.begin(login="alice")
    stranger = make_browser(client.app)
    other = make_browser(client.app)
    assert (await other.start_oauth()).errors == []  # holds a binding cookie of its own

    without_cookie = await stranger.finish_oauth(ACME, callback)
    with_other_cookie = await other.finish_oauth(ACME, callback)

    assert without_cookie.error_code == "INVALID_TOKEN"
    assert with_other_cookie.error_code == "INVALID_TOKEN"
    assert await totals() == (0, 0, 0)
    finished = await starter.finish_oauth(ACME, callback)
    assert finished.data["finishOAuth"]["status"] == "OK"


async def test_an_unknown_state_is_refused(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """A provider code with a state the server never issued answers INVALID_TOKEN."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)
    _, callback = await browser.begin(login="alice")

    result = await browser.finish_oauth(ACME, code=callback.code, state="made-up-state")

    assert result.error_code == "INVALID_TOKEN"
    assert await totals() == (0, 0, 0)


async def test_a_state_for_another_provider_is_refused(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """A flow started for acme cannot be finished as acme2: INVALID_TOKEN, nothing created."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)
    _, callback = await browser.begin(ACME, login="alice")

    result = await browser.finish_oauth(ACME2, callback)

    assert result.error_code == "INVALID_TOKEN"
    assert await totals() == (0, 0, 0)


@pytest.mark.parametrize(("seconds", "alive"), [(599, True), (601, False)])
async def test_a_state_lives_ten_minutes(
    oidc: OidcProvider,
    make_client: MakeClient,
    make_browser: MakeBrowser,
    clock: FrozenClock,
    seconds: int,
    alive: bool,
) -> None:
    """A flow finished within ten minutes of its start signs in; after that its state is
    INVALID_TOKEN and nothing is created."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)
    _, callback = await browser.begin(login="alice")

    clock.advance(seconds)
    result = await browser.finish_oauth(ACME, callback)

    if alive:
        assert result.data["finishOAuth"]["status"] == "OK"
    else:
        assert result.error_code == "INVALID_TOKEN"
        assert await totals() == (0, 0, 0)


# --- attacks: code and PKCE ------------------------------------------------------------------


async def test_a_stolen_code_injected_into_another_flow_fails_pkce(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """An attacker who obtains a victim's code and finishes it in a flow of their own (their
    state and cookie) gets INVALID_TOKEN: the provider refuses the attacker's PKCE verifier
    for the victim's challenge, and no account or session appears."""
    client = acme_app(make_client, oidc)
    victim = make_browser(client.app)
    _, stolen = await victim.begin(login="alice")
    attacker = make_browser(client.app)
    own_url = (await attacker.start_oauth()).data["startOAuth"]

    result = await attacker.finish_oauth(ACME, code=stolen.code, state=query_of(own_url)["state"])

    assert result.error_code == "INVALID_TOKEN"
    assert await totals() == (0, 0, 0)


@pytest.mark.parametrize("verifier", ["", "x" * 43], ids=["missing", "another"])
async def test_the_provider_refuses_a_code_without_its_pkce_verifier(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser, verifier: str
) -> None:
    """When the verifier the server sends is missing or not the one the challenge was made
    from, the provider refuses the exchange: INVALID_TOKEN, nothing created."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)
    _, callback = await browser.begin(login="alice")
    await OAuthState.filter(digest=digest(callback.state or "")).update(code_verifier=verifier)

    result = await browser.finish_oauth(ACME, callback)

    assert result.error_code == "INVALID_TOKEN"
    assert await totals() == (0, 0, 0)


# --- attacks: the id_token -------------------------------------------------------------------


async def test_a_wrong_nonce_is_refused(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """An id_token whose nonce is not the flow's answers INVALID_TOKEN and creates
    nothing."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)
    _, callback = await browser.begin(login="alice")
    await OAuthState.filter(digest=digest(callback.state or "")).update(nonce="another-nonce")

    result = await browser.finish_oauth(ACME, callback)

    assert result.error_code == "INVALID_TOKEN"
    assert await totals() == (0, 0, 0)


class TokenProxy(LocalServer):
    """A token endpoint in the middle: it redeems the code at the real provider as
    ``client_id`` and hands the answer (``rewrite``-n) back; ``upstream`` keeps each of the
    provider's answers (status and the id_token's claims, unverified)."""

    def __init__(
        self,
        oidc: OidcProvider,
        *,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        rewrite: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.oidc = oidc
        self.client = (client_id, client_secret)
        self.rewrite = rewrite
        self.upstream: list[tuple[int, dict[str, Any]]] = []

    def __enter__(self) -> TokenProxy:
        self.start()
        return self

    def handle(self, request: Request) -> Reply:
        if (request.method, request.path) != ("POST", "/token"):
            return Reply.json({"error": "not_found"}, 404)
        answer = httpx.post(
            self.oidc.token_endpoint,
            data=request.form,
            auth=self.client,
            headers={"accept": "application/json"},
            timeout=10,
        )
        body = answer.json()
        claims = {}
        if isinstance(body.get("id_token"), str):
            claims = jwt.decode(body["id_token"], options={"verify_signature": False})
        self.upstream.append((answer.status_code, claims))
        if self.rewrite is not None and answer.status_code == 200:
            body = self.rewrite(body)
        return Reply.json(body, answer.status_code)


def proxied_acme(oidc: OidcProvider, proxy: LocalServer) -> OAuthProviderConfig:
    """acme with explicit endpoints: the real provider's, except the token endpoint."""
    return OAuthProviderConfig(
        name=ACME,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        issuer=oidc.issuer,
        authorize_url=oidc.authorization_endpoint,
        token_url=f"{proxy.url}/token",
        jwks_url=oidc.jwks_uri,
        userinfo_url=oidc.userinfo_endpoint,
    )


@pytest.mark.parametrize("audience", [CLIENT_ID, OTHER_CLIENT_ID], ids=["ours", "another"])
async def test_an_id_token_for_another_audience_is_refused(
    oidc: OidcProvider,
    make_client: MakeClient,
    make_browser: MakeBrowser,
    audience: str,
) -> None:
    """A genuine id_token the provider issued to another client (right issuer, signature
    and nonce) answers INVALID_TOKEN; the same route with our own client signs in."""
    secret = CLIENT_SECRET if audience == CLIENT_ID else OTHER_CLIENT_SECRET
    with TokenProxy(oidc, client_id=audience, client_secret=secret) as proxy:
        client = make_client(
            oauth_providers=(proxied_acme(oidc, proxy),), allowed_redirects=(REDIRECT_URI,)
        )
        browser = make_browser(client.app)
        url = (await browser.start_oauth()).data["startOAuth"]
        # The code is issued to `audience` (same redirect URI, PKCE challenge and nonce).
        url = str(httpx.URL(url).copy_set_param("client_id", audience))
        callback = await browser.authorize(url, login="alice")

        result = await browser.finish_oauth(ACME, callback)

    [(status, claims)] = proxy.upstream
    assert status == 200
    assert (claims["aud"], claims["iss"]) == (audience, oidc.issuer)
    assert claims["nonce"] == query_of(url)["nonce"]
    if audience == CLIENT_ID:
        assert result.data["finishOAuth"]["status"] == "OK"
    else:
        assert result.error_code == "INVALID_TOKEN"
        assert await totals() == (0, 0, 0)


async def test_an_id_token_signed_by_someone_else_is_refused(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """An id_token re-signed with another key (claiming the provider's key id) to become
    someone else answers INVALID_TOKEN and creates nothing."""
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def impersonate(answer: dict[str, Any]) -> dict[str, Any]:
        token = answer["id_token"]
        claims = jwt.decode(token, options={"verify_signature": False})
        claims |= {"sub": "bob", "email": "bob@example.com", "name": "Bob"}
        kid = jwt.get_unverified_header(token)["kid"]
        forged = jwt.encode(claims, forger, algorithm="RS256", headers={"kid": kid})
        return answer | {"id_token": forged}

    with TokenProxy(oidc, rewrite=impersonate) as proxy:
        client = make_client(
            oauth_providers=(proxied_acme(oidc, proxy),), allowed_redirects=(REDIRECT_URI,)
        )
        result = (await make_browser(client.app).sign_in_with(login="alice")).result

    [(status, claims)] = proxy.upstream
    assert status == 200 and claims["sub"] == "alice"
    assert result.error_code == "INVALID_TOKEN"
    assert await totals() == (0, 0, 0)


# --- id_token verification in isolation ------------------------------------------------------

ISSUER = "https://idp.example"
NONCE = "the-flows-nonce"


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


_KEYS: dict[str, rsa.RSAPrivateKey] = {}


def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """A key per name, generated once per run."""
    if name not in _KEYS:
        _KEYS[name] = _rsa_key()
    return _KEYS[name]


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return jwk | {"kid": kid, "use": "sig", "alg": "RS256"}


def id_claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "sub": "user-1",
        "iat": now,
        "exp": now + 300,
        "nonce": NONCE,
        "email": "user1@example.com",
        "email_verified": True,
    }
    claims |= changes
    return {key: value for key, value in claims.items() if value is not None}


def signed(claims: dict[str, Any], *, key: str = "provider", kid: str = "k1") -> str:
    return jwt.encode(claims, rsa_key(key), algorithm="RS256", headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "k1"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def hmac_with_public_key(claims: dict[str, Any]) -> str:
    """The key-confusion forgery: HS256 keyed with the provider's public key."""
    public = (
        rsa_key("provider")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = f"{header}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(public, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(signature)}"


@pytest.fixture
def jwks_server() -> Iterator[tuple[LocalServer, dict[str, Any]]]:
    """A provider JWKS (mutable: tests rotate keys) on a local server."""
    jwks: dict[str, Any] = {"keys": [public_jwk(rsa_key("provider"), "k1")]}
    with LocalServer(lambda request: Reply.json(jwks)) as server:
        yield server, jwks


def verifier_client() -> OAuthClient:
    return OAuthClient(
        OAuthProviderConfig(name=ACME, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    )


REFUSED_ID_TOKENS: dict[str, Callable[[], str]] = {
    "another audience": lambda: signed(id_claims(aud=OTHER_CLIENT_ID)),
    "audiences with another authorized party": lambda: signed(
        id_claims(aud=[OTHER_CLIENT_ID, CLIENT_ID], azp=OTHER_CLIENT_ID)
    ),
    "another issuer": lambda: signed(id_claims(iss="https://evil.example")),
    "wrong nonce": lambda: signed(id_claims(nonce="another-nonce")),
    "no nonce": lambda: signed(id_claims(nonce=None)),
    "expired": lambda: signed(id_claims(exp=int(time.time()) - 120)),
    "no subject": lambda: signed(id_claims(sub=None)),
    "alg none": lambda: unsigned(id_claims()),
    "HS256 keyed with the public key": lambda: hmac_with_public_key(id_claims()),
    "another key under the provider's kid": lambda: signed(id_claims(), key="forger"),
    "a key the provider never published": lambda: signed(id_claims(), key="forger", kid="k9"),
    "garbage": lambda: "not.a.jwt",
}


@pytest.mark.parametrize("forge", REFUSED_ID_TOKENS.values(), ids=REFUSED_ID_TOKENS.keys())
async def test_id_token_verification_refuses(
    jwks_server: tuple[LocalServer, dict[str, Any]], forge: Callable[[], str]
) -> None:
    """The id_token check refuses other audiences and authorized parties, other issuers,
    wrong or missing nonces, expired or subject-less tokens, unsigned and HMAC tokens, and
    signatures from keys the provider did not publish."""
    server, _ = jwks_server
    metadata = {"issuer": ISSUER, "jwks_uri": f"{server.url}/jwks"}

    with pytest.raises(IdentityRejected):
        await verifier_client()._verify_id_token(forge(), metadata, NONCE)


async def test_id_token_verification_accepts_the_provider_and_follows_key_rotation(
    jwks_server: tuple[LocalServer, dict[str, Any]],
) -> None:
    """A proper id_token is accepted, and one signed with a key the provider published
    after the JWKS was cached is accepted once the JWKS is fetched again."""
    server, jwks = jwks_server
    metadata = {"issuer": ISSUER, "jwks_uri": f"{server.url}/jwks"}
    client = verifier_client()

    claims = await client._verify_id_token(signed(id_claims()), metadata, NONCE)
    jwks["keys"].append(public_jwk(rsa_key("rotated"), "k2"))
    rotated = await client._verify_id_token(
        signed(id_claims(sub="user-2"), key="rotated", kid="k2"), metadata, NONCE
    )

    assert claims["sub"] == "user-1"
    assert rotated["sub"] == "user-2"
    assert len(server.requests_to("/jwks")) == 2


# --- attacks: redirects ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/cb",
        "http://testserver/oauth/callback.evil.example",
        "http://testserver/oauth/callback?next=https://evil.example",
        "http://testserver@evil.example/oauth/callback",
        "http://testserver/oauth/other",
        "//evil.example/oauth/callback",
    ],
)
async def test_an_open_redirect_is_refused(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser, redirect_uri: str
) -> None:
    """startOAuth accepts only redirect URIs listed exactly in AUTHQL_ALLOWED_REDIRECTS:
    anything else is VALIDATION_ERROR, and no flow starts."""
    client = acme_app(make_client, oidc)
    browser = make_browser(client.app)

    result = await browser.start_oauth(redirect_uri=redirect_uri)

    assert result.error_code == "VALIDATION_ERROR"
    assert "redirectUri" in result.errors[0]["extensions"].get("fields", {})
    assert await OAuthState.all().count() == 0
    assert browser.binding is None


# --- a provider that is down or failing ------------------------------------------------------


async def test_a_provider_that_is_down_is_a_provider_error(
    make_client: MakeClient, make_browser: MakeBrowser
) -> None:
    """With the provider's discovery URL unreachable, startOAuth answers PROVIDER_ERROR and
    nothing is created."""
    down = closed_port_url()
    provider = OAuthProviderConfig(
        name=ACME,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        discovery_url=f"{down}/.well-known/openid-configuration",
    )
    client = make_client(oauth_providers=(provider,), allowed_redirects=(REDIRECT_URI,))
    browser = make_browser(client.app)

    result = await browser.start_oauth()

    assert result.error_code == "PROVIDER_ERROR"
    assert await OAuthState.all().count() == 0
    assert browser.binding is None
    assert await totals() == (0, 0, 0)


def failing_token_endpoint(request: Request) -> Reply:
    return Reply.text("<h1>502 Bad Gateway</h1>", 502)


@pytest.mark.parametrize("failure", ["down", "502"])
async def test_a_failing_token_endpoint_is_a_provider_error(
    oidc: OidcProvider, make_client: MakeClient, make_browser: MakeBrowser, failure: str
) -> None:
    """When the provider's token endpoint is unreachable or fails after the user approved,
    finishOAuth answers PROVIDER_ERROR and no account, identity or session is created."""
    with LocalServer(failing_token_endpoint) as server:
        token_url = f"{server.url}/token" if failure == "502" else f"{closed_port_url()}/token"
        provider = OAuthProviderConfig(
            name=ACME,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            issuer=oidc.issuer,
            authorize_url=oidc.authorization_endpoint,
            token_url=token_url,
            jwks_url=oidc.jwks_uri,
        )
        client = make_client(oauth_providers=(provider,), allowed_redirects=(REDIRECT_URI,))

        result = (await make_browser(client.app).sign_in_with(login="alice")).result

    assert result.error_code == "PROVIDER_ERROR"
    assert await totals() == (0, 0, 0)


# --- GitHub (plain OAuth 2 and its API) through the stand-in ---------------------------------


@pytest.fixture
def github() -> Iterator[GitHubStandin]:
    with GitHubStandin(
        users=[github_user(4242, "octo", "octo@example.com", name="Octo Cat")]
    ) as standin:
        yield standin


def github_client(make_client: MakeClient, github: GitHubStandin) -> GraphQLClient:
    return make_client(oauth_providers=(github.provider(),), allowed_redirects=(REDIRECT_URI,))


def github_browser(make_browser: MakeBrowser, client: GraphQLClient) -> Browser:
    return make_browser(client.app, authorizer=standin_authorize)


async def test_github_sign_up_uses_pkce_and_the_user_and_emails_api(
    make_client: MakeClient, make_browser: MakeBrowser, github: GitHubStandin
) -> None:
    """Signing up with GitHub sends a PKCE challenge, redeems the code with its verifier,
    and builds the account from /user (the id as the subject) and the primary verified
    email of /user/emails."""
    client = github_client(make_client, github)
    browser = github_browser(make_browser, client)

    flow = await browser.sign_in_with("github", login="octo")

    payload = flow.payload
    assert payload["status"] == "OK"
    assert payload["user"]["email"] == "octo@example.com"
    assert payload["user"]["emailVerified"] is True
    assert payload["user"]["name"] == "Octo Cat"
    assert [
        (a["provider"], a["accountId"], a["email"]) for a in payload["user"]["linkedAccounts"]
    ] == [("github", "4242", "octo@example.com")]
    assert payload["session"]["method"] == "oauth:github"
    [authorize] = github.requests_to("/login/oauth/authorize")
    assert authorize.query["code_challenge_method"] == "S256"
    assert set(authorize.query["scope"].split()) == {"read:user", "user:email"}
    assert "nonce" not in authorize.query
    [exchange] = github.requests_to("/login/oauth/access_token")
    assert s256(exchange.form["code_verifier"]) == authorize.query["code_challenge"]
    assert exchange.form["redirect_uri"] == REDIRECT_URI
    assert exchange.basic_auth == (github.client_id, github.client_secret)
    for path in ("/user", "/user/emails"):
        [api] = github.requests_to(path)
        assert api.headers["authorization"].startswith("Bearer gho_")


async def test_github_identities_are_keyed_by_id_not_email(
    make_client: MakeClient, make_browser: MakeBrowser, github: GitHubStandin
) -> None:
    """A GitHub user who changed their email still reaches their account, and another
    GitHub user presenting that account's verified email gets CONFLICT instead of it."""
    client = github_client(make_client, github)
    first = (
        await github_browser(make_browser, client).sign_in_with("github", login="octo")
    ).payload
    github.users["octo"] = github_user(4242, "octo", "octo@new.example", name="Octo Cat")
    github.add_user(github_user(777, "mallory", "octo@example.com"))

    again = await github_browser(make_browser, client).sign_in_with("github", login="octo")
    other = await github_browser(make_browser, client).sign_in_with("github", login="mallory")

    assert again.payload["user"]["id"] == first["user"]["id"]
    assert other.error_code == "CONFLICT"
    assert await totals() == (1, 1, 2)


async def test_github_without_a_verified_primary_email_shares_no_email(
    make_client: MakeClient, make_browser: MakeBrowser, github: GitHubStandin
) -> None:
    """A GitHub user whose primary email is unverified (even with another verified address)
    cannot sign up: VALIDATION_ERROR on email, and nothing is created."""
    github.add_user(
        github_user(
            99,
            "newbie",
            "newbie@example.com",
            verified=False,
            others=[("newbie@work.example", True)],
        )
    )
    client = github_client(make_client, github)

    flow = await github_browser(make_browser, client).sign_in_with("github", login="newbie")

    assert flow.error_code == "VALIDATION_ERROR"
    assert "email" in flow.result.errors[0]["extensions"].get("fields", {})
    assert await totals() == (0, 0, 0)


async def test_github_refusing_a_stolen_code_is_an_invalid_token(
    make_client: MakeClient, make_browser: MakeBrowser, github: GitHubStandin
) -> None:
    """A victim's GitHub code finished in an attacker's own flow fails PKCE at GitHub
    (``bad_verification_code``): INVALID_TOKEN, as for an OIDC provider, and nothing is
    created."""
    client = github_client(make_client, github)
    _, stolen = await github_browser(make_browser, client).begin("github", login="octo")
    attacker = github_browser(make_browser, client)
    own_url = (await attacker.start_oauth("github")).data["startOAuth"]

    result = await attacker.finish_oauth(
        "github",
        code=stolen.code,
        state=query_of(own_url)["state"],
    )

    [exchange] = github.requests_to("/login/oauth/access_token")
    assert exchange.form["code"] == stolen.code
    assert await totals() == (0, 0, 0)
    assert result.error_code == "INVALID_TOKEN"


@pytest.mark.parametrize("path", ["/login/oauth/access_token", "/user", "/user/emails"])
async def test_github_failing_is_a_provider_error(
    make_client: MakeClient, make_browser: MakeBrowser, github: GitHubStandin, path: str
) -> None:
    """When GitHub's token endpoint or user API fails, finishOAuth answers PROVIDER_ERROR and
    nothing is created."""
    client = github_client(make_client, github)
    browser = github_browser(make_browser, client)
    _, callback = await browser.begin("github", login="octo")
    github.fail[path] = 502

    result = await browser.finish_oauth("github", callback)

    assert result.error_code == "PROVIDER_ERROR"
    assert await totals() == (0, 0, 0)


async def test_auth_providers_lists_github(make_client: MakeClient, github: GitHubStandin) -> None:
    """authProviders lists the GitHub provider as kind oauth named GitHub."""
    client = github_client(make_client, github)

    providers = (await client.gql(AUTH_PROVIDERS)).data["authProviders"]

    [listed] = [provider for provider in providers if provider["id"] == "github"]
    assert (listed["kind"], listed["name"]) == ("oauth", "GitHub")
