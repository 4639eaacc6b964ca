"""FluxKit's mail routes: forgot/reset password and magic links, in FluxKit's shapes, served
by authql's recovery and passwordless resolvers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from authql.models import OneTimeToken, RefreshToken, Session, User
from authql.services.clock import FrozenClock
from authql.services.mail import MailMessage
from tests.smtp import extract_link, extract_token, html_of, smtp_server, text_of
from tests.support import PASSWORD, GraphQLClient

MakeClient = Callable[..., GraphQLClient]
PREFIX = "/auth"
EMAIL = "alice@example.com"
NEW_PASSWORD = "new-secure-password"
PUBLIC_URL = "http://127.0.0.1:8000"
APP = "https://app.example.com"
FORGOT = {"message": "If that email exists, a reset link has been sent"}
RESET_DONE = {"message": "Password reset successfully"}
INVALID_TOKEN = {"error": {"code": "INVALID_TOKEN", "message": "Token is expired or invalid"}}
INVALID_MAGIC_LINK = {
    "error": {"code": "INVALID_MAGIC_LINK", "message": "Magic link is expired or already used"}
}


# --- helpers ---------------------------------------------------------------------------------


class Flux:
    """Speaks FluxKit to an in-process app, checking that no response leaks a secret."""

    def __init__(self, client: GraphQLClient) -> None:
        self.client = client
        self.mailed_tokens: set[str] = set()

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, token: str = ""
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = await self.client.http.request(method, PREFIX + path, json=body, headers=headers)
        await self.assert_clean(response)
        return response

    async def assert_clean(self, response: httpx.Response) -> None:
        """No cookie, password hash, stored digest, mailed one-time token or "totp"."""
        assert "set-cookie" not in response.headers
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        everything = f"{response.text}\n{headers}"
        assert "$argon2" not in everything
        digests = list(await RefreshToken.all().values_list("digest", flat=True))
        digests += await Session.exclude(token_digest=None).values_list("token_digest", flat=True)
        digests += await OneTimeToken.all().values_list("digest", flat=True)
        for secret in [*digests, *self.mailed_tokens]:
            assert str(secret) not in everything
        body = response.json() if response.text else None
        if isinstance(body, dict):
            for key in ("token", "refreshToken"):
                if isinstance(body.get(key), str):
                    everything = everything.replace(body[key], "")
        assert "totp" not in everything.lower()

    async def register(self, email: str = EMAIL, **extra: Any) -> dict[str, Any]:
        body = {"email": email, "password": PASSWORD, **extra}
        response = await self.call("POST", "/register", body)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    async def login(self, email: str = EMAIL, password: str = PASSWORD) -> httpx.Response:
        return await self.call("POST", "/login", {"email": email, "password": password})

    async def forgot(self, email: str = EMAIL, **extra: Any) -> httpx.Response:
        return await self.call("POST", "/forgot-password", {"email": email, **extra})

    async def reset(self, token: str, password: str = NEW_PASSWORD) -> httpx.Response:
        return await self.call("POST", "/reset-password", {"token": token, "password": password})

    async def magic_link(self, email: str = EMAIL, **extra: Any) -> httpx.Response:
        return await self.call("POST", "/magic-link", {"email": email, **extra})

    async def verify(self, token: str) -> httpx.Response:
        return await self.call("POST", "/verify-magic-link", {"token": token})

    async def mails(self, to: str = EMAIL) -> list[MailMessage]:
        """Mails delivered to ``to`` so far (after the background queue drained)."""
        mails, _ = await self.client.delivered()
        return [mail for mail in mails if mail.to == to]

    async def last_link(self, to: str = EMAIL) -> str:
        """The link of the newest mail to ``to``; its token is remembered as a secret."""
        mails = await self.mails(to)
        assert mails, f"no mail to {to}"
        self.mailed_tokens.add(extract_token(mails[-1]))
        return extract_link(mails[-1])

    async def last_token(self, to: str = EMAIL) -> str:
        return extract_token(await self.last_link(to))


def flux(make_client: MakeClient, **settings: Any) -> Flux:
    """A client for an app with only FluxKit mounted at /auth."""
    return Flux(make_client(rest_dialects=(("fluxkit", PREFIX),), **settings))


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    """FluxKit's `{error:{code,message}}` with ``status``; returns the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    return str(body["error"]["message"])


def same_answer(first: httpx.Response, second: httpx.Response) -> None:
    """Status, headers and body are byte for byte the same."""
    assert first.status_code == second.status_code
    assert first.headers.raw == second.headers.raw
    assert first.content == second.content


# --- forgot-password -------------------------------------------------------------------------


async def test_forgot_password_answers_the_documented_message_and_mails_a_reset_link(
    make_client: MakeClient,
) -> None:
    """POST /forgot-password answers 200 with FluxKit's message and mails the account a
    link to <public_url>/reset-password carrying the token."""
    api = flux(make_client)
    await api.register()
    response = await api.forgot()
    assert response.status_code == 200
    assert response.json() == FORGOT
    link = await api.last_link()
    assert link.startswith(f"{PUBLIC_URL}/reset-password?token=")
    [mail] = await api.mails()
    assert "reset" in mail.subject.lower()


async def test_forgot_password_answers_identically_for_unknown_and_existing_accounts(
    make_client: MakeClient,
) -> None:
    """Forgot-password's answer is byte-identical before and after the address has an
    account, and an unknown address gets no mail."""
    api = flux(make_client)
    unknown = await api.forgot()
    assert await api.mails() == []
    await api.register()
    existing = await api.forgot()
    same_answer(unknown, existing)
    assert len(await api.mails()) == 1


async def test_forgot_password_without_email_is_a_validation_error(
    make_client: MakeClient,
) -> None:
    """A forgot-password body without `email` answers 400 VALIDATION_ERROR."""
    api = flux(make_client)
    assert_error(await api.call("POST", "/forgot-password", {}), 400, "VALIDATION_ERROR")


async def test_forgot_password_is_rate_limited_per_address(make_client: MakeClient) -> None:
    """Past the per-address budget forgot-password answers 429 RATE_LIMITED with
    Retry-After, for unknown addresses exactly as for existing ones."""
    api = flux(make_client, rate_limits={"recovery": (1, 900)})
    await api.register()
    assert (await api.forgot()).status_code == 200
    assert (await api.forgot("nobody@example.com")).status_code == 200
    existing = await api.forgot()
    unknown = await api.forgot("nobody@example.com")
    for response in (existing, unknown):
        assert_error(response, 429, "RATE_LIMITED")
        assert int(response.headers["retry-after"]) > 0
    assert existing.content == unknown.content


# --- reset-password --------------------------------------------------------------------------


async def test_reset_password_sets_the_new_password_without_signing_in_and_ends_sessions(
    make_client: MakeClient,
) -> None:
    """The emailed token resets the password: 200 `{message}` only (no token), the old
    tokens stop working, and only the new password logs in."""
    api = flux(make_client)
    registered = await api.register()
    await api.forgot()
    response = await api.reset(await api.last_token())
    assert response.status_code == 200
    assert response.json() == RESET_DONE
    assert (await api.call("GET", "/me", token=registered["token"])).status_code == 401
    refresh = await api.call("POST", "/refresh", {"refreshToken": registered["refreshToken"]})
    assert refresh.json() == INVALID_TOKEN
    assert_error(await api.login(), 401, "INVALID_CREDENTIALS")
    assert (await api.login(password=NEW_PASSWORD)).status_code == 200


async def test_reset_token_works_once(make_client: MakeClient) -> None:
    """A reset token used once answers 401 INVALID_TOKEN the second time."""
    api = flux(make_client)
    await api.register()
    await api.forgot()
    token = await api.last_token()
    assert (await api.reset(token)).status_code == 200
    second = await api.reset(token, "another-password-1")
    assert second.status_code == 401
    assert second.json() == INVALID_TOKEN
    assert (await api.login(password=NEW_PASSWORD)).status_code == 200


async def test_reset_token_expires_after_an_hour(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """A reset token older than an hour answers 401 INVALID_TOKEN and changes nothing."""
    api = flux(make_client)
    await api.register()
    await api.forgot()
    token = await api.last_token()
    clock.advance(3601)
    response = await api.reset(token)
    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN
    assert (await api.login()).status_code == 200


async def test_a_newer_reset_request_invalidates_the_earlier_link(make_client: MakeClient) -> None:
    """Asking twice leaves only the newest emailed link working."""
    api = flux(make_client)
    await api.register()
    await api.forgot()
    first = await api.last_token()
    await api.forgot()
    second = await api.last_token()
    assert first != second
    assert (await api.reset(first)).json() == INVALID_TOKEN
    assert (await api.reset(second)).status_code == 200


async def test_a_weak_new_password_is_refused_without_spending_the_token(
    make_client: MakeClient,
) -> None:
    """A too-short password answers 400 VALIDATION_ERROR and the token still works."""
    api = flux(make_client)
    await api.register()
    await api.forgot()
    token = await api.last_token()
    message = assert_error(await api.reset(token, "short"), 400, "VALIDATION_ERROR")
    assert "password" in message
    assert (await api.reset(token)).status_code == 200


async def test_reset_password_refuses_unknown_and_other_purpose_tokens(
    make_client: MakeClient,
) -> None:
    """A made-up token or a magic-link token answers 401 INVALID_TOKEN at
    /reset-password, and the magic link stays usable for its own purpose."""
    api = flux(make_client)
    await api.register()
    assert (await api.reset("not-a-real-token")).json() == INVALID_TOKEN
    await api.magic_link()
    magic = await api.last_token()
    response = await api.reset(magic)
    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN
    assert (await api.login()).status_code == 200
    assert (await api.verify(magic)).status_code == 200


async def test_reset_password_without_fields_is_a_validation_error(
    make_client: MakeClient,
) -> None:
    """A reset body without `token` or `password` answers 400 VALIDATION_ERROR."""
    api = flux(make_client)
    for body in ({"password": NEW_PASSWORD}, {"token": "abc"}):
        assert_error(await api.call("POST", "/reset-password", body), 400, "VALIDATION_ERROR")


async def test_reset_link_requested_over_graphql_completes_over_fluxkit(
    make_client: MakeClient,
) -> None:
    """A reset link mailed for a GraphQL request resets the password through FluxKit."""
    api = flux(make_client)
    await api.client.register(EMAIL)
    result = await api.client.gql(
        "mutation($e: String!) { requestPasswordReset(email: $e) }", {"e": EMAIL}
    )
    assert result.data == {"requestPasswordReset": True}
    assert (await api.reset(await api.last_token())).json() == RESET_DONE
    assert (await api.login(password=NEW_PASSWORD)).status_code == 200


# --- magic links -----------------------------------------------------------------------------


async def test_magic_link_echoes_the_address_and_mails_a_link_to_the_frontend_page(
    make_client: MakeClient,
) -> None:
    """POST /magic-link answers `Magic link sent to <email>` and mails a link to
    <public_url>/magic-link carrying the token."""
    api = flux(make_client)
    await api.register()
    response = await api.magic_link()
    assert response.status_code == 200
    assert response.json() == {"message": f"Magic link sent to {EMAIL}"}
    link = await api.last_link()
    assert link.startswith(f"{PUBLIC_URL}/magic-link?token=")
    [mail] = await api.mails()
    assert "sign in" in mail.subject.lower()


async def test_magic_link_answers_identically_for_unknown_and_existing_accounts(
    make_client: MakeClient,
) -> None:
    """The magic-link answer is byte-identical before and after the address has an
    account (it echoes the address as sent), and an unknown address gets no mail."""
    api = flux(make_client)
    typed = "Alice@Example.com"
    unknown = await api.magic_link(typed)
    assert unknown.json() == {"message": f"Magic link sent to {typed}"}
    assert await api.mails() == []
    await api.register()
    existing = await api.magic_link(typed)
    same_answer(unknown, existing)
    assert len(await api.mails()) == 1


async def test_verify_magic_link_signs_in_and_marks_the_email_verified(
    make_client: MakeClient,
) -> None:
    """The emailed token answers `{user:{_id,email,name}, token, refreshToken}`; the token
    opens /me, the refresh token rotates, and the address counts as verified."""
    api = flux(make_client)
    registered = await api.register(name="Alice Johnson")
    assert (await User.get(email=EMAIL)).email_verified is False
    await api.magic_link()
    response = await api.verify(await api.last_token())
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"user", "token", "refreshToken"}
    assert body["user"] == {
        "_id": registered["user"]["_id"],
        "email": EMAIL,
        "name": "Alice Johnson",
    }
    me = await api.call("GET", "/me", token=body["token"])
    assert me.status_code == 200 and me.json()["user"]["email"] == EMAIL
    refreshed = await api.call("POST", "/refresh", {"refreshToken": body["refreshToken"]})
    assert refreshed.status_code == 200 and set(refreshed.json()) == {"token", "refreshToken"}
    assert (await User.get(email=EMAIL)).email_verified is True


async def test_magic_link_works_once(make_client: MakeClient) -> None:
    """A used magic link answers 401 INVALID_MAGIC_LINK."""
    api = flux(make_client)
    await api.register()
    await api.magic_link()
    token = await api.last_token()
    assert (await api.verify(token)).status_code == 200
    second = await api.verify(token)
    assert second.status_code == 401
    assert second.json() == INVALID_MAGIC_LINK


async def test_magic_link_expires_after_fifteen_minutes(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """A magic link works at 14 minutes; one older than 15 answers 401 INVALID_MAGIC_LINK."""
    api = flux(make_client)
    await api.register()
    await api.magic_link()
    clock.advance(14 * 60)
    assert (await api.verify(await api.last_token())).status_code == 200
    await api.magic_link()
    token = await api.last_token()
    clock.advance(15 * 60 + 1)
    response = await api.verify(token)
    assert response.status_code == 401
    assert response.json() == INVALID_MAGIC_LINK


async def test_verify_magic_link_refuses_unknown_and_reset_tokens(make_client: MakeClient) -> None:
    """A made-up token or a password-reset token answers 401 INVALID_MAGIC_LINK, and the
    reset token still resets the password afterwards."""
    api = flux(make_client)
    await api.register()
    assert (await api.verify("not-a-real-token")).json() == INVALID_MAGIC_LINK
    await api.forgot()
    reset = await api.last_token()
    response = await api.verify(reset)
    assert response.status_code == 401
    assert response.json() == INVALID_MAGIC_LINK
    assert (await api.reset(reset)).status_code == 200


async def test_magic_link_routes_without_fields_are_validation_errors(
    make_client: MakeClient,
) -> None:
    """/magic-link without `email` and /verify-magic-link without `token` answer 400."""
    api = flux(make_client)
    assert_error(await api.call("POST", "/magic-link", {}), 400, "VALIDATION_ERROR")
    assert_error(await api.call("POST", "/verify-magic-link", {}), 400, "VALIDATION_ERROR")


# --- redirectUrl (no open redirects) ---------------------------------------------------------


async def test_an_allowed_redirect_url_is_where_the_mailed_links_point(
    make_client: MakeClient,
) -> None:
    """With `redirectUrl` on an allowed origin, magic-link and reset mails link to
    `<redirectUrl>?token=`, and those tokens complete their flows."""
    api = flux(make_client, allowed_redirects=(APP,))
    await api.register()
    await api.magic_link(redirectUrl=f"{APP}/auth/callback")
    assert (await api.last_link()).startswith(f"{APP}/auth/callback?token=")
    assert (await api.verify(await api.last_token())).status_code == 200
    await api.forgot(redirectUrl=f"{APP}/reset")
    assert (await api.last_link()).startswith(f"{APP}/reset?token=")
    assert (await api.reset(await api.last_token())).status_code == 200


@pytest.mark.parametrize(
    "url",
    ["https://evil.example/steal", "javascript:alert(1)", "https://app.example.com@evil.example/"],
)
@pytest.mark.parametrize("path", ["/magic-link", "/forgot-password"])
async def test_an_unlisted_redirect_url_is_refused_and_nothing_is_mailed(
    make_client: MakeClient, path: str, url: str
) -> None:
    """A `redirectUrl` not in the allowed list answers 400 VALIDATION_ERROR naming
    `redirectUrl`, the same for unknown and existing addresses, and sends no mail."""
    api = flux(make_client, allowed_redirects=(APP,))
    unknown = await api.call("POST", path, {"email": EMAIL, "redirectUrl": url})
    await api.register()
    existing = await api.call("POST", path, {"email": EMAIL, "redirectUrl": url})
    message = assert_error(existing, 400, "VALIDATION_ERROR")
    assert "redirectUrl" in message
    same_answer(unknown, existing)
    assert await api.mails() == []


# --- health and documentation ----------------------------------------------------------------


async def test_health_lists_the_magic_link_provider(make_client: MakeClient) -> None:
    """GET /health names `local` and `magic-link` (SMS codes have no FluxKit route)."""
    response = await flux(make_client).call("GET", "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "providers": ["local", "magic-link"]}


async def test_openapi_documents_the_mail_routes(make_client: MakeClient) -> None:
    """<prefix>/openapi.json lists the four mail routes with their request bodies."""
    paths = (await flux(make_client).call("GET", "/openapi.json")).json()["paths"]
    expected = {
        "/forgot-password": ({"email", "redirectUrl"}, ["email"]),
        "/reset-password": ({"token", "password"}, ["token", "password"]),
        "/magic-link": ({"email", "redirectUrl"}, ["email"]),
        "/verify-magic-link": ({"token"}, ["token"]),
    }
    for path, (fields, required) in expected.items():
        operation = paths[PREFIX + path]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert set(schema["properties"]) == fields
        assert schema["required"] == required
        assert "security" not in operation


# --- through a real SMTP server --------------------------------------------------------------


async def test_mailed_links_complete_both_flows_through_a_real_smtp_server(
    make_client: MakeClient,
) -> None:
    """Through aiosmtpd on 127.0.0.1, the magic-link and reset mails arrive with text and
    HTML parts, and the tokens in their links sign in and reset the password."""
    async with smtp_server() as smtp:
        api = Flux(make_client(rest_dialects=(("fluxkit", PREFIX),), mailer=smtp.mailer()))
        await api.register()

        assert (await api.magic_link()).status_code == 200
        await api.client.delivered()
        [magic_mail] = await smtp.wait_for(1)
        assert magic_mail["To"] == EMAIL
        assert magic_mail.get_body(("html",)) is not None
        link = extract_link(magic_mail)
        assert link.startswith(f"{PUBLIC_URL}/magic-link?token=")
        magic = extract_token(magic_mail)
        assert magic in html_of(magic_mail) and magic in text_of(magic_mail)
        api.mailed_tokens.add(magic)
        signed_in = await api.verify(magic)
        assert signed_in.status_code == 200
        assert (await api.call("GET", "/me", token=signed_in.json()["token"])).status_code == 200

        assert (await api.forgot()).status_code == 200
        await api.client.delivered()
        reset_mail = (await smtp.wait_for(2))[1]
        assert reset_mail.get_body(("plain",)) is not None
        assert reset_mail.get_body(("html",)) is not None
        reset = extract_token(reset_mail)
        api.mailed_tokens.add(reset)
        assert (await api.reset(reset)).json() == RESET_DONE
        assert (await api.login(password=NEW_PASSWORD)).status_code == 200
