"""Browsary's mail routes: verify/request + verify/submit and reset/request + reset/submit,
in Browsary's shapes (``{status, token}`` + the ``token`` cookie), served by authql's
verification and recovery resolvers."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest

from authql.models import OneTimeToken, RefreshToken, Session, User
from authql.services.clock import FrozenClock
from authql.services.mail import MailMessage
from tests.smtp import extract_link, extract_token, html_of, smtp_server, text_of
from tests.support import PASSWORD, GraphQLClient

MakeClient = Callable[..., GraphQLClient]
PREFIX = "/api/auth"
DIALECTS = (("browsary", PREFIX),)
EMAIL = "ada@example.com"
NEW_PASSWORD = "new-secure-password"
PUBLIC_URL = "http://127.0.0.1:8000"
APP = "https://app.example.com"
OK = {"status": "ok"}
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*")


# --- helpers ---------------------------------------------------------------------------------


def _decoded(match: re.Match[str]) -> str:
    """A JWT's header and payload as text, so what it carries is checked too."""
    parts = match.group(0).split(".")[:2]
    return " ".join(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)).decode() for p in parts)


class Browsary:
    """Speaks Browsary to an in-process app, checking that no response leaks a secret."""

    def __init__(self, client: GraphQLClient) -> None:
        self.client = client
        self.mailed_tokens: set[str] = set()

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
    ) -> httpx.Response:
        response = await self.client.http.request(method, PREFIX + path, json=body, **kwargs)
        await self.assert_clean(response)
        return response

    async def assert_clean(self, response: httpx.Response) -> None:
        """No password hash, stored digest, mailed one-time token or "totp" anywhere."""
        text = response.text + " " + " ".join(f"{k}: {v}" for k, v in response.headers.items())
        assert "$argon2" not in text
        assert "totp" not in _JWT.sub(_decoded, text).lower()
        digests = list(await RefreshToken.all().values_list("digest", flat=True))
        digests += await Session.exclude(token_digest=None).values_list("token_digest", flat=True)
        digests += await OneTimeToken.all().values_list("digest", flat=True)
        for secret in [*digests, *self.mailed_tokens]:
            assert str(secret) not in text

    async def register(self, email: str = EMAIL) -> str:
        """A signed-in (cookie) but unverified account; returns its JWT."""
        body = {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "email": email,
            "password": PASSWORD,
            "confirmPassword": PASSWORD,
            "remember": True,
        }
        response = await self.call("POST", "/register", body)
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    async def login(self, email: str = EMAIL, password: str = PASSWORD) -> httpx.Response:
        return await self.call("POST", "/login", {"email": email, "password": password})

    async def status(self, token: str | None = None) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = await self.call("GET", "", headers=headers)
        assert response.status_code == 200
        return response.json()  # type: ignore[no-any-return]

    async def verify_request(self, **body: Any) -> httpx.Response:
        return await self.call("POST", "/verify/request", body)

    async def verify_submit(self, token: str) -> httpx.Response:
        return await self.call("POST", "/verify/submit", {"token": token})

    async def reset_request(self, email: str = EMAIL, **extra: Any) -> httpx.Response:
        return await self.call("POST", "/reset/request", {"email": email, **extra})

    async def reset_submit(
        self, token: str, password: str = NEW_PASSWORD, confirm: str | None = None
    ) -> httpx.Response:
        body = {"token": token, "password": password, "confirmPassword": confirm or password}
        return await self.call("POST", "/reset/submit", body)

    async def mails(self, to: str = EMAIL) -> list[MailMessage]:
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

    def anonymous(self) -> None:
        """Forget the cookie jar (the next requests carry no credential)."""
        self.client.http.cookies.clear()


def browsary(make_client: MakeClient, **settings: Any) -> Browsary:
    """A client for an app with only Browsary mounted at /api/auth."""
    return Browsary(make_client(rest_dialects=DIALECTS, **settings))


def cookie_of(response: httpx.Response, name: str = "token") -> dict[str, Any] | None:
    """The attributes of the Set-Cookie for ``name`` (value under ``value``), or None."""
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if name in jar:
            morsel = jar[name]
            return {"value": morsel.value, **{k: morsel[k] for k in morsel if morsel[k] != ""}}
    return None


def assert_error(response: httpx.Response, status: int) -> str:
    """Browsary's `{status:'error', message}` with ``status``; returns the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "message"} and body["status"] == "error"
    assert isinstance(body["message"], str) and body["message"]
    return str(body["message"])


def assert_signed_in(response: httpx.Response, status: str = "ok") -> str:
    """The login answer `{status, token}` with a browser-session `token` cookie holding
    the same JWT; returns it. ``status`` follows the email: a reset does not verify it."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"status", "token"} and body["status"] == status
    cookie = cookie_of(response)
    assert cookie is not None and cookie["value"] == body["token"]
    assert "max-age" not in cookie and "expires" not in cookie
    assert cookie["httponly"] is True and cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/" and "secure" not in cookie
    return str(body["token"])


def same_answer(first: httpx.Response, second: httpx.Response) -> None:
    """Status, headers and body are byte for byte the same."""
    assert first.status_code == second.status_code
    assert first.headers.raw == second.headers.raw
    assert first.content == second.content


# --- verify/request --------------------------------------------------------------------------


async def test_verify_request_mails_a_link_to_the_verify_page(make_client: MakeClient) -> None:
    """A signed-in, unverified user asking for verification gets `{status:'ok'}` and a mail
    linking to <public_url>/verify with the token."""
    api = browsary(make_client)
    await api.register()
    response = await api.verify_request()
    assert response.status_code == 200
    assert response.json() == OK
    assert (await api.last_link()).startswith(f"{PUBLIC_URL}/verify?token=")


async def test_verify_request_needs_a_signed_in_user(make_client: MakeClient) -> None:
    """Without a session, verify/request answers 401 in Browsary's error shape and mails
    nothing."""
    api = browsary(make_client)
    await api.register()
    api.anonymous()
    assert_error(await api.verify_request(), 401)
    assert await api.mails() == []


async def test_verify_request_refuses_an_already_verified_user(make_client: MakeClient) -> None:
    """Once the email is verified, verify/request answers 400 and mails nothing more."""
    api = browsary(make_client)
    await api.register()
    await api.verify_request()
    assert_signed_in(await api.verify_submit(await api.last_token()))
    assert_error(await api.verify_request(), 400)
    assert len(await api.mails()) == 1


async def test_verify_request_uses_an_allowed_return_url(make_client: MakeClient) -> None:
    """An allowed `returnUrl` is where the mailed link points (`<returnUrl>?token=`)."""
    api = browsary(make_client, allowed_redirects=(APP,))
    await api.register()
    assert (await api.verify_request(returnUrl=f"{APP}/welcome")).json() == OK
    assert (await api.last_link()).startswith(f"{APP}/welcome?token=")
    assert_signed_in(await api.verify_submit(await api.last_token()))


@pytest.mark.parametrize(
    "url", ["https://evil.example/x", "javascript:alert(1)", "//evil.example/x"]
)
async def test_verify_request_refuses_an_unlisted_return_url(
    make_client: MakeClient, url: str
) -> None:
    """A `returnUrl` not in the allowed list answers 400 and sends no mail."""
    api = browsary(make_client, allowed_redirects=(APP,))
    await api.register()
    assert "Return URL not allowed" in assert_error(await api.verify_request(returnUrl=url), 400)
    assert await api.mails() == []


# --- verify/submit ---------------------------------------------------------------------------


async def test_verify_submit_verifies_and_signs_in_with_a_fresh_cookie(
    make_client: MakeClient,
) -> None:
    """The emailed token answers `{status:'ok', token}` with a new token cookie, and the
    status route then shows the email verified."""
    api = browsary(make_client)
    old = await api.register()
    await api.verify_request()
    api.anonymous()  # the link may be opened in another browser
    token = assert_signed_in(await api.verify_submit(await api.last_token()))
    assert token != old
    auth = (await api.status())["auth"]
    assert auth["info"]["email"] == EMAIL and auth["info"]["emailVerified"] is True
    assert (await User.get(email=EMAIL)).email_verified is True


async def test_verify_token_works_once(make_client: MakeClient) -> None:
    """A used verification token answers 400 and sets no cookie."""
    api = browsary(make_client)
    await api.register()
    await api.verify_request()
    token = await api.last_token()
    assert_signed_in(await api.verify_submit(token))
    second = await api.verify_submit(token)
    assert_error(second, 400)
    assert cookie_of(second) is None


async def test_verify_token_expires_after_a_day(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """A verification token older than its 24 h lifetime answers 400 and verifies
    nothing."""
    api = browsary(make_client)
    await api.register()
    await api.verify_request()
    token = await api.last_token()
    clock.advance(24 * 3600 + 1)
    assert "expired" in assert_error(await api.verify_submit(token), 400)
    assert (await User.get(email=EMAIL)).email_verified is False


async def test_a_newer_verification_mail_invalidates_the_earlier_link(
    make_client: MakeClient,
) -> None:
    """Asking twice leaves only the newest verification link working."""
    api = browsary(make_client)
    await api.register()
    await api.verify_request()
    first = await api.last_token()
    await api.verify_request()
    second = await api.last_token()
    assert_error(await api.verify_submit(first), 400)
    assert_signed_in(await api.verify_submit(second))


async def test_verify_submit_refuses_unknown_and_reset_tokens(make_client: MakeClient) -> None:
    """A made-up token or a password-reset token answers 400 at verify/submit; the reset
    token still resets the password afterwards."""
    api = browsary(make_client)
    await api.register()
    assert_error(await api.verify_submit("not-a-real-token"), 400)
    assert_error(await api.call("POST", "/verify/submit", {}), 400)
    await api.reset_request()
    reset = await api.last_token()
    assert_error(await api.verify_submit(reset), 400)
    assert (await User.get(email=EMAIL)).email_verified is False
    assert_signed_in(await api.reset_submit(reset), "ok")


# --- reset/request ---------------------------------------------------------------------------


async def test_reset_request_mails_a_link_to_the_reset_page(make_client: MakeClient) -> None:
    """reset/request answers `{status:'ok'}` and mails a link to <public_url>/reset."""
    api = browsary(make_client)
    await api.register()
    api.anonymous()
    response = await api.reset_request()
    assert response.status_code == 200
    assert response.json() == OK
    assert (await api.last_link()).startswith(f"{PUBLIC_URL}/reset?token=")


async def test_reset_request_answers_identically_for_unknown_and_existing_accounts(
    make_client: MakeClient,
) -> None:
    """reset/request's answer is byte-identical before and after the address has an
    account, and an unknown address gets no mail."""
    api = browsary(make_client)
    unknown = await api.reset_request()
    assert await api.mails() == []
    await api.register()
    api.anonymous()
    existing = await api.reset_request()
    same_answer(unknown, existing)
    assert len(await api.mails()) == 1


async def test_reset_request_with_an_unlisted_return_url_is_refused_alike(
    make_client: MakeClient,
) -> None:
    """An unlisted `returnUrl` answers the same 400 for unknown and existing addresses and
    mails nothing; an allowed one is where the link points."""
    api = browsary(make_client, allowed_redirects=(APP,))
    unknown = await api.reset_request(returnUrl="https://evil.example/reset")
    await api.register()
    api.anonymous()
    existing = await api.reset_request(returnUrl="https://evil.example/reset")
    assert_error(existing, 400)
    same_answer(unknown, existing)
    assert await api.mails() == []
    assert (await api.reset_request(returnUrl=f"{APP}/reset")).json() == OK
    assert (await api.last_link()).startswith(f"{APP}/reset?token=")


async def test_reset_request_without_email_is_refused(make_client: MakeClient) -> None:
    """A reset/request body without `email` answers 400."""
    api = browsary(make_client)
    assert_error(await api.call("POST", "/reset/request", {}), 400)


# --- reset/submit ----------------------------------------------------------------------------


async def test_reset_submit_sets_the_password_signs_in_and_ends_other_sessions(
    make_client: MakeClient,
) -> None:
    """The emailed token sets the new password and answers like login (`{status, token}` +
    cookie); the sessions from before stop working and only the new password logs in."""
    api = browsary(make_client)
    old = await api.register()
    await api.verify_request()
    assert_signed_in(await api.verify_submit(await api.last_token()))
    verified = (await api.login()).json()["token"]
    api.anonymous()
    await api.reset_request()
    token = assert_signed_in(await api.reset_submit(await api.last_token()))
    assert (await api.status())["auth"]["info"]["email"] == EMAIL
    assert (await api.status(token))["status"] == "ok"
    for before in (old, verified):
        assert (await api.status(before))["auth"] is None
    api.anonymous()
    assert_error(await api.login(), 401)
    assert_signed_in(await api.login(password=NEW_PASSWORD))


async def test_reset_submit_refuses_a_mismatched_confirmation_without_spending_the_token(
    make_client: MakeClient,
) -> None:
    """confirmPassword differing from password answers 400 and the token still works."""
    api = browsary(make_client)
    await api.register()
    api.anonymous()
    await api.reset_request()
    token = await api.last_token()
    message = assert_error(await api.reset_submit(token, NEW_PASSWORD, "something-else"), 400)
    assert "confirmPassword" in message
    assert "password" in assert_error(await api.reset_submit(token, "short"), 400)
    assert_signed_in(await api.reset_submit(token), "ok")


async def test_reset_token_works_once(make_client: MakeClient) -> None:
    """A used reset token answers 400 and sets no cookie."""
    api = browsary(make_client)
    await api.register()
    api.anonymous()
    await api.reset_request()
    token = await api.last_token()
    assert_signed_in(await api.reset_submit(token), "ok")
    second = await api.reset_submit(token, "another-password-1")
    assert_error(second, 400)
    assert cookie_of(second) is None


async def test_reset_token_expires_after_an_hour(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """A reset token older than an hour answers 400 and the old password still works."""
    api = browsary(make_client)
    await api.register()
    api.anonymous()
    await api.reset_request()
    token = await api.last_token()
    clock.advance(3601)
    assert "expired" in assert_error(await api.reset_submit(token), 400)
    assert (await api.login()).status_code == 200


async def test_reset_submit_refuses_verification_tokens(make_client: MakeClient) -> None:
    """A verification token answers 400 at reset/submit and still verifies afterwards."""
    api = browsary(make_client)
    await api.register()
    await api.verify_request()
    verify = await api.last_token()
    assert_error(await api.reset_submit(verify), 400)
    assert_error(await api.reset_submit("not-a-real-token"), 400)
    assert_signed_in(await api.verify_submit(verify))
    assert (await api.login()).status_code == 200


async def test_reset_link_requested_over_browsary_completes_over_graphql(
    make_client: MakeClient,
) -> None:
    """A reset link mailed for a Browsary request resets the password over GraphQL too."""
    api = browsary(make_client)
    await api.register()
    api.anonymous()
    await api.reset_request()
    result = await api.client.gql(
        "mutation($t: String!, $p: String!) { resetPassword(token: $t, password: $p) "
        "{ status accessToken } }",
        {"t": await api.last_token(), "p": NEW_PASSWORD},
    )
    assert result.data["resetPassword"]["status"] == "OK"
    assert_signed_in(await api.login(password=NEW_PASSWORD), "ok")


# --- documentation ---------------------------------------------------------------------------


async def test_openapi_documents_the_mail_routes(make_client: MakeClient) -> None:
    """<prefix>/openapi.json lists the four routes, their bodies and which needs a session."""
    api = browsary(make_client)
    paths = (await api.call("GET", "/openapi.json")).json()["paths"]
    expected = {
        "/verify/request": ({"returnUrl"}, None, True),
        "/verify/submit": ({"token"}, ["token"], False),
        "/reset/request": ({"email", "returnUrl"}, ["email"], False),
        "/reset/submit": (
            {"token", "password", "confirmPassword"},
            ["token", "password", "confirmPassword"],
            False,
        ),
    }
    for path, (fields, required, authenticated) in expected.items():
        operation = paths[PREFIX + path]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert set(schema["properties"]) == fields
        assert schema.get("required") == required
        assert ("security" in operation) is authenticated


# --- through a real SMTP server --------------------------------------------------------------


async def test_mailed_links_complete_both_flows_through_a_real_smtp_server(
    make_client: MakeClient,
) -> None:
    """Through aiosmtpd on 127.0.0.1, the verification and reset mails arrive with text and
    HTML parts, and the tokens in their links verify the email and reset the password."""
    async with smtp_server() as smtp:
        api = Browsary(make_client(rest_dialects=DIALECTS, mailer=smtp.mailer()))
        await api.register()

        assert (await api.verify_request()).json() == OK
        await api.client.delivered()
        [verify_mail] = await smtp.wait_for(1)
        assert verify_mail["To"] == EMAIL
        assert extract_link(verify_mail).startswith(f"{PUBLIC_URL}/verify?token=")
        verify = extract_token(verify_mail)
        assert verify in html_of(verify_mail) and verify in text_of(verify_mail)
        api.mailed_tokens.add(verify)
        api.anonymous()
        assert_signed_in(await api.verify_submit(verify))
        assert (await api.status())["auth"]["info"]["emailVerified"] is True

        api.anonymous()
        assert (await api.reset_request()).json() == OK
        await api.client.delivered()
        reset_mail = (await smtp.wait_for(2))[1]
        assert reset_mail.get_body(("plain",)) is not None
        assert reset_mail.get_body(("html",)) is not None
        assert extract_link(reset_mail).startswith(f"{PUBLIC_URL}/reset?token=")
        reset = extract_token(reset_mail)
        api.mailed_tokens.add(reset)
        assert_signed_in(await api.reset_submit(reset))
        api.anonymous()
        assert_signed_in(await api.login(password=NEW_PASSWORD))
