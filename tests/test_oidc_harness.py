"""The OAuth test harness against the real provider: discovery, code + PKCE, refusals."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.oidc_provider import (
    ACCOUNTS,
    CLIENT_ID,
    LIVE_CLIENT_ID,
    LIVE_CLIENT_SECRET,
    OTHER_CLIENT_ID,
    OTHER_CLIENT_SECRET,
    REDIRECT_URI,
    REDIRECT_URIS,
    OidcHarnessError,
    OidcProvider,
    authorize,
    callback_params,
    decode_id_token,
    exchange_code,
    oidc_fixture,  # noqa: F401 - registers the session fixture `oidc` here
    oidc_provider,
    pkce_pair,
)


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """A fresh cookie jar: one user at the provider."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def _sign_in(
    browser: httpx.AsyncClient,
    oidc: OidcProvider,
    login: str,
    *,
    client_id: str = CLIENT_ID,
    redirect_uri: str = REDIRECT_URI,
    **exchange: str,
) -> dict[str, object]:
    """Run the whole flow as ``login`` and return the verified id_token claims."""
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(), secrets.token_urlsafe()
    url = oidc.authorize_url(
        client_id=client_id,
        redirect_uri=redirect_uri,
        code_challenge=challenge,
        state=state,
        nonce=nonce,
    )
    callback = callback_params(await authorize(browser, url, login=login))
    assert callback.error is None, callback
    assert callback.code is not None
    assert callback.redirect_uri == redirect_uri
    token = await exchange_code(
        browser,
        oidc,
        callback.code,
        code_verifier=verifier,
        redirect_uri=redirect_uri,
        client_id=client_id,
        **exchange,
    )
    assert token.status_code == 200, token.text
    claims = await decode_id_token(browser, oidc, token.json()["id_token"], audience=client_id)
    assert claims["nonce"] == nonce
    return claims


async def test_discovery_document(oidc: OidcProvider, browser: httpx.AsyncClient) -> None:
    """The discovery document names the issuer, S256 PKCE, the scopes and RS256."""
    response = await browser.get(oidc.discovery_url)

    assert response.status_code == 200
    document = response.json()
    assert oidc.issuer == f"http://127.0.0.1:{oidc.port}"
    assert document["issuer"] == oidc.issuer
    assert document["authorization_endpoint"] == oidc.authorization_endpoint
    assert document["token_endpoint"] == oidc.token_endpoint
    assert document["jwks_uri"] == oidc.jwks_uri
    assert document["userinfo_endpoint"] == oidc.userinfo_endpoint
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert {"openid", "email", "profile"} <= set(document["scopes_supported"])
    assert "RS256" in document["id_token_signing_alg_values_supported"]


async def test_code_flow_with_pkce(oidc: OidcProvider, browser: httpx.AsyncClient) -> None:
    """Code + S256 PKCE ends in an RS256 id_token for the account with its email claims."""
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(), secrets.token_urlsafe()
    url = oidc.authorize_url(code_challenge=challenge, state=state, nonce=nonce)

    answer = await authorize(browser, url, login="alice")

    assert answer.status_code in {302, 303}
    assert answer.headers["location"].startswith(REDIRECT_URI + "?")
    callback = callback_params(answer)
    assert (callback.state, callback.iss, callback.error) == (state, oidc.issuer, None)
    assert callback.code

    token = await exchange_code(browser, oidc, callback.code, code_verifier=verifier)
    assert token.status_code == 200, token.text
    body = token.json()
    assert body["token_type"] == "Bearer"
    id_token = body["id_token"]
    assert jwt.get_unverified_header(id_token)["alg"] == "RS256"
    claims = await decode_id_token(browser, oidc, id_token, audience=CLIENT_ID)
    assert claims["iss"] == oidc.issuer
    assert claims["aud"] == CLIENT_ID
    assert claims["nonce"] == nonce
    assert claims["sub"] == "alice"
    assert claims["email"] == "alice@example.com"
    assert claims["email_verified"] is True
    assert claims["name"] == "Alice"

    userinfo = await browser.get(
        oidc.userinfo_endpoint, headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert userinfo.json()["email"] == "alice@example.com"

    spent = await exchange_code(browser, oidc, callback.code, code_verifier=verifier)
    assert spent.json()["error"] == "invalid_grant"


async def test_request_without_code_challenge_is_refused(
    oidc: OidcProvider, browser: httpx.AsyncClient
) -> None:
    """Without a code_challenge the provider redirects back with invalid_request, no code."""
    url = oidc.authorize_url(code_challenge=None, state="s1", nonce="n1")

    callback = callback_params(await authorize(browser, url, login="alice"))

    assert callback.error == "invalid_request"
    assert "PKCE" in (callback.error_description or "")
    assert (callback.code, callback.state) == (None, "s1")


async def test_wrong_code_verifier_is_refused(
    oidc: OidcProvider, browser: httpx.AsyncClient
) -> None:
    """The token endpoint refuses a code whose verifier does not match the challenge."""
    _, challenge = pkce_pair()
    url = oidc.authorize_url(code_challenge=challenge, state="s2", nonce="n2")
    callback = callback_params(await authorize(browser, url, login="alice"))
    assert callback.code is not None

    other_verifier, _ = pkce_pair()
    token = await exchange_code(browser, oidc, callback.code, code_verifier=other_verifier)

    assert token.status_code == 400
    assert token.json()["error"] == "invalid_grant"


async def test_accounts_have_distinct_subjects(oidc: OidcProvider) -> None:
    """Two accounts get their own sub and email; an unknown id gets an unverified default."""
    claims = {}
    for login in ("alice", "bob", "zed"):
        async with httpx.AsyncClient(timeout=10) as browser:
            claims[login] = await _sign_in(browser, oidc, login)

    assert claims["alice"]["sub"] != claims["bob"]["sub"]
    assert claims["bob"]["sub"] == "bob"
    assert claims["bob"]["email"] == ACCOUNTS["bob"]["email"]
    assert claims["zed"]["email"] == "zed@example.com"
    assert claims["zed"]["email_verified"] is False


async def test_other_client_gets_its_own_audience(
    oidc: OidcProvider, browser: httpx.AsyncClient
) -> None:
    """The second client's id_token names it as audience, so CLIENT_ID must reject it."""
    claims = await _sign_in(
        browser, oidc, "alice", client_id=OTHER_CLIENT_ID, client_secret=OTHER_CLIENT_SECRET
    )
    assert claims["aud"] == OTHER_CLIENT_ID


async def test_every_registered_redirect_uri_is_accepted(
    oidc: OidcProvider, browser: httpx.AsyncClient
) -> None:
    """Each documented redirect URI reaches the client; the session is reused after login."""
    for index, redirect_uri in enumerate(REDIRECT_URIS):
        _, challenge = pkce_pair()
        url = oidc.authorize_url(
            code_challenge=challenge, state=f"s{index}", redirect_uri=redirect_uri
        )
        callback = callback_params(
            await authorize(browser, url, login="alice" if index == 0 else None)
        )
        assert callback.redirect_uri == redirect_uri
        assert callback.code is not None


async def test_live_client_accepts_any_loopback_port(
    oidc: OidcProvider, browser: httpx.AsyncClient
) -> None:
    """The native client takes its paths on http://127.0.0.1 at whatever port a server got."""
    claims = await _sign_in(
        browser,
        oidc,
        "bob",
        client_id=LIVE_CLIENT_ID,
        client_secret=LIVE_CLIENT_SECRET,
        redirect_uri="http://127.0.0.1:54321/auth/oauth/acme/callback",
    )
    assert claims["sub"] == "bob"


async def test_unregistered_redirect_uri_stops_at_the_provider(
    oidc: OidcProvider, browser: httpx.AsyncClient
) -> None:
    """An unregistered redirect_uri gets the provider's error page, never a redirect."""
    _, challenge = pkce_pair()
    url = oidc.authorize_url(
        code_challenge=challenge, state="s3", redirect_uri="http://testserver/elsewhere"
    )
    with pytest.raises(OidcHarnessError, match="redirect_uri"):
        await authorize(browser, url, login="alice")


async def test_stale_session_cannot_sign_in_someone_else(
    oidc: OidcProvider, browser: httpx.AsyncClient
) -> None:
    """``login=`` demands a login form, so a browser already signed in as alice fails loudly."""
    await _sign_in(browser, oidc, "alice")
    _, challenge = pkce_pair()
    url = oidc.authorize_url(code_challenge=challenge, state="s4")

    with pytest.raises(OidcHarnessError, match="skipped the login form"):
        await authorize(browser, url, login="bob")


async def test_callback_is_delivered_to_an_in_process_app(oidc: OidcProvider) -> None:
    """One browser reaches the provider over the network and the app through ASGI."""

    async def callback(request: Request) -> JSONResponse:
        return JSONResponse(dict(request.query_params))

    app = Starlette(routes=[Route("/oauth/callback", callback)])
    mounts = {"http://testserver": httpx.ASGITransport(app=app)}
    async with httpx.AsyncClient(mounts=mounts, follow_redirects=True, timeout=10) as browser:
        _, challenge = pkce_pair()
        url = oidc.authorize_url(code_challenge=challenge, state="s5")
        answer = await authorize(browser, url, login="bob")

        delivered = await browser.get(answer.headers["location"])

    assert delivered.json()["state"] == "s5"
    assert delivered.json()["code"] == callback_params(answer).code


async def test_provider_of_ones_own() -> None:
    """``oidc_provider`` starts a provider with other clients and accounts, and stops it."""
    clients = [
        {
            "client_id": "solo",
            "client_secret": "solo-secret",
            "redirect_uris": ["http://testserver/solo/callback"],
        }
    ]
    accounts = {"dora": {"email": "dora@example.org", "email_verified": True, "name": "Dora"}}
    async with oidc_provider(clients=clients, accounts=accounts) as provider:
        assert provider.running
        async with httpx.AsyncClient(timeout=10) as browser:
            claims = await _sign_in(
                browser,
                provider,
                "dora",
                client_id="solo",
                client_secret="solo-secret",
                redirect_uri="http://testserver/solo/callback",
            )
    assert claims["email"] == "dora@example.org"
    assert not provider.running
