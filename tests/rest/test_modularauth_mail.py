"""The ModularAuth-Kit dialect's password-recovery and email-verification routes: upstream's
messages and error codes, enumeration-proof forgot-password, single-use expiring tokens and
codes, CSRF on the new mutations, the shared recovery rate limit, and both flows through a
real SMTP server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from authql.models import User
from authql.services.clock import FrozenClock
from authql.services.mail import MailMessage
from tests.rest.test_modularauth import (
    EMAIL,
    NEW_PASSWORD,
    PREFIX,
    Device,
    app_client,  # noqa: F401 - the fixture, shared with the dialect's main tests
    assert_cleared,
    device,
    error,
)
from tests.smtp import extract_code, extract_link, extract_token, html_of, smtp_server
from tests.support import PASSWORD, GraphQLClient

PUBLIC = "http://127.0.0.1:8000"
FORGOT_SENT = "If an account exists with that identifier, a password reset link has been sent"
RESET_DONE = "Password has been reset successfully"
VERIFIED = "Email verified successfully"
CODE_SENT = "Verification code has been sent"
TOKEN_INVALID = error("TOKEN_INVALID", "This link is invalid or has already been used")
TOKEN_EXPIRED = error("TOKEN_EXPIRED", "This link has expired. Please request a new one")
ALREADY_VERIFIED = error("VALIDATION_ERROR", "Email is already verified")
UNAUTHORIZED = error("UNAUTHORIZED", "Authentication required")

App = Callable[..., GraphQLClient]


def ok(message: str) -> dict[str, Any]:
    """A ModularAuth-Kit success body without data."""
    return {"success": True, "message": message, "data": None}


def invalid(*fields: tuple[str, str]) -> dict[str, Any]:
    """A VALIDATION_ERROR body with upstream's per-field details."""
    details = [{"field": field, "message": message} for field, message in fields]
    return error("VALIDATION_ERROR", "Validation failed", details)


async def mails(browser: Device, to: str | None = None) -> list[MailMessage]:
    """Every mail sent so far (after the background work finished), optionally to one address."""
    sent, _ = await browser.client.delivered()
    return [mail for mail in sent if to is None or mail.to == to]


async def reset_token(browser: Device, identifier: str = EMAIL) -> str:
    response = await browser.call("POST", "/forgot-password", {"identifier": identifier})
    assert response.status_code == 200, response.text
    return extract_token((await mails(browser))[-1])


async def mailed_code(browser: Device) -> str:
    response = await browser.call("POST", "/resend-verification")
    assert response.status_code == 200, response.text
    return extract_code((await mails(browser))[-1])


def same_answer(first: httpx.Response, second: httpx.Response) -> None:
    """Status, headers and body byte for byte."""
    assert first.status_code == second.status_code
    assert first.headers.multi_items() == second.headers.multi_items()
    assert first.content == second.content


# --- forgot-password -------------------------------------------------------------------------


async def test_forgot_password_answers_the_same_for_known_and_unknown_identifiers(
    app_client: App,  # noqa: F811
) -> None:
    """forgot-password answers upstream's 200 envelope byte for byte whether the identifier
    is an account's email, its username or unknown; only the account is mailed, at its
    stored address, a link to the app's /reset-password page."""
    browser = await device(app_client)
    await browser.register(username="ada_l")
    await browser.call("POST", "/logout")
    answers = [
        await browser.call("POST", "/forgot-password", {"identifier": identifier})
        for identifier in (" Ada@Example.com ", "nobody@example.com", "ADA_L", "nobody")
    ]
    assert answers[0].status_code == 200 and answers[0].json() == ok(FORGOT_SENT)
    for other in answers[1:]:
        same_answer(answers[0], other)
    sent = await mails(browser)
    assert [mail.to for mail in sent] == [EMAIL, EMAIL]
    assert extract_link(sent[0]).startswith(f"{PUBLIC}/reset-password?token=")


async def test_forgot_password_validates_the_identifier(app_client: App) -> None:  # noqa: F811
    """A missing, empty or non-string identifier is 400 VALIDATION_ERROR with zod's
    messages."""
    browser = await device(app_client)
    missing = await browser.call("POST", "/forgot-password", {})
    assert missing.status_code == 400 and missing.json() == invalid(("identifier", "Required"))
    empty = await browser.call("POST", "/forgot-password", {"identifier": ""})
    assert empty.json() == invalid(("identifier", "Email or username is required"))
    number = await browser.call("POST", "/forgot-password", {"identifier": 5})
    assert number.json() == invalid(("identifier", "Expected string"))
    assert await mails(browser) == []


# --- reset-password --------------------------------------------------------------------------


async def test_reset_password_sets_the_password_and_ends_every_session(
    app_client: App,  # noqa: F811
) -> None:
    """reset-password answers 'Password has been reset successfully' with data null, ends
    every session (the old sid is 401 and cleared), signs nobody in, and the new password
    works; login history records the reset."""
    browser = await device(app_client)
    await browser.register()
    token = await reset_token(browser)
    response = await browser.call(
        "POST", "/reset-password", {"token": token, "newPassword": NEW_PASSWORD}
    )
    assert response.status_code == 200 and response.json() == ok(RESET_DONE)
    assert "set-cookie" not in response.headers
    me = await browser.call("GET", "/me")
    assert me.status_code == 401 and me.json() == UNAUTHORIZED
    assert_cleared(me)
    assert (await browser.login(EMAIL, PASSWORD)).status_code == 401
    assert (await browser.login(EMAIL, NEW_PASSWORD)).status_code == 200
    history = (await browser.call("GET", "/login-history")).json()["data"]["history"]
    assert [entry["event"] for entry in history][:2] == ["login_success", "password_reset"]


async def test_reset_tokens_are_single_use_expiring_and_purpose_bound(
    app_client: App,  # noqa: F811
    clock: FrozenClock,
) -> None:
    """A used or made-up token is 400 TOKEN_INVALID, an expired one 400 TOKEN_EXPIRED, a
    superseded one TOKEN_INVALID; any string is accepted as a token."""
    browser = await device(app_client)
    await browser.register()
    token = await reset_token(browser)
    body = {"token": token, "newPassword": NEW_PASSWORD}
    assert (await browser.call("POST", "/reset-password", body)).status_code == 200
    reused = await browser.call("POST", "/reset-password", body)
    assert reused.status_code == 400 and reused.json() == TOKEN_INVALID
    for made_up in ("a" * 64, "not a token", "x" * 5000):
        body = {"token": made_up, "newPassword": NEW_PASSWORD}
        assert (await browser.call("POST", "/reset-password", body)).json() == TOKEN_INVALID
    superseded = await reset_token(browser)
    expired = await reset_token(browser)
    clock.advance(browser.client.services.settings.password_reset_ttl + 1)
    body = {"token": expired, "newPassword": NEW_PASSWORD}
    late = await browser.call("POST", "/reset-password", body)
    assert late.status_code == 400 and late.json() == TOKEN_EXPIRED
    body = {"token": superseded, "newPassword": NEW_PASSWORD}
    assert (await browser.call("POST", "/reset-password", body)).json() == TOKEN_INVALID


async def test_reset_password_validation_keeps_the_token(app_client: App) -> None:  # noqa: F811
    """Missing fields and a weak newPassword are 400 VALIDATION_ERROR with per-field
    details, and the token still works afterwards."""
    browser = await device(app_client)
    await browser.register()
    token = await reset_token(browser)
    missing = await browser.call("POST", "/reset-password", {})
    assert missing.status_code == 400
    assert missing.json() == invalid(("token", "Required"), ("newPassword", "Required"))
    empty = await browser.call("POST", "/reset-password", {"token": "", "newPassword": ""})
    assert empty.json() == invalid(
        ("token", "Reset token is required"), ("newPassword", "New password is required")
    )
    weak = await browser.call("POST", "/reset-password", {"token": token, "newPassword": "short"})
    assert weak.status_code == 400
    body = weak.json()
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert [detail["field"] for detail in body["error"]["details"]] == ["newPassword"]
    body = {"token": token, "newPassword": NEW_PASSWORD}
    assert (await browser.call("POST", "/reset-password", body)).status_code == 200


async def test_a_verification_code_is_not_a_reset_token(app_client: App) -> None:  # noqa: F811
    """A mailed verification code sent to reset-password is TOKEN_INVALID, and still
    verifies the email afterwards."""
    browser = await device(app_client)
    await browser.register()
    code = await mailed_code(browser)
    body = {"token": code, "newPassword": NEW_PASSWORD}
    assert (await browser.call("POST", "/reset-password", body)).json() == TOKEN_INVALID
    assert (await browser.call("POST", "/verify-email", {"code": code})).json() == ok(VERIFIED)


# --- verify-email and resend-verification ----------------------------------------------------


async def test_resend_then_verify_email_with_the_code(app_client: App) -> None:  # noqa: F811
    """A signed-in registrant asks for a code (upstream's message), the 6-digit code from the
    mail verifies the email, and both routes then answer 400 'Email is already verified'."""
    browser = await device(app_client)
    await browser.register()
    resent = await browser.call("POST", "/resend-verification")
    assert resent.status_code == 200 and resent.json() == ok(CODE_SENT)
    [mail] = await mails(browser)
    assert mail.to == EMAIL
    code = extract_code(mail)
    verified = await browser.call("POST", "/verify-email", {"code": code})
    assert verified.status_code == 200 and verified.json() == ok(VERIFIED)
    me = (await browser.call("GET", "/me")).json()["data"]["user"]
    assert me["isEmailVerified"] is True
    again = await browser.call("POST", "/verify-email", {"code": code})
    assert again.status_code == 400 and again.json() == ALREADY_VERIFIED
    more = await browser.call("POST", "/resend-verification")
    assert more.status_code == 400 and more.json() == ALREADY_VERIFIED
    assert len(await mails(browser)) == 1


async def test_verify_email_refuses_wrong_superseded_and_foreign_codes(
    app_client: App,  # noqa: F811
) -> None:
    """A wrong code, a code superseded by a resend and another user's code are 400
    TOKEN_INVALID; the newest code still works."""
    browser = await device(app_client)
    await browser.register()
    other = await device(app_client)
    await other.register("grace@example.com")
    old = await mailed_code(browser)
    foreign = await mailed_code(other)
    new = await mailed_code(browser)
    for code in {old, foreign, "000000" if new != "000000" else "111111"} - {new}:
        response = await browser.call("POST", "/verify-email", {"code": code})
        assert response.status_code == 400 and response.json() == TOKEN_INVALID, code
    assert (await browser.call("POST", "/verify-email", {"code": new})).json() == ok(VERIFIED)


async def test_a_verification_code_dies_after_too_many_wrong_guesses(
    app_client: App,  # noqa: F811
) -> None:
    """After the configured number of wrong guesses even the right code is TOKEN_INVALID."""
    browser = await device(app_client)
    await browser.register()
    code = await mailed_code(browser)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(browser.client.services.settings.code_max_attempts):
        assert (await browser.call("POST", "/verify-email", {"code": wrong})).status_code == 400
    late = await browser.call("POST", "/verify-email", {"code": code})
    assert late.json() == TOKEN_INVALID
    assert (await User.get(email=EMAIL)).email_verified is False


async def test_an_expired_verification_code_is_token_expired(
    app_client: App,  # noqa: F811
    clock: FrozenClock,
) -> None:
    """The right code after its lifetime is 400 TOKEN_EXPIRED (upstream's code), and does not
    verify the email."""
    browser = await device(app_client)
    await browser.register()
    code = await mailed_code(browser)
    clock.advance(browser.client.services.settings.email_verification_ttl + 1)
    response = await browser.call("POST", "/verify-email", {"code": code})
    assert (await User.get(email=EMAIL)).email_verified is False
    assert response.status_code == 400 and response.json() == TOKEN_EXPIRED


async def test_verify_email_validation_and_authentication(app_client: App) -> None:  # noqa: F811
    """A missing code is 400 VALIDATION_ERROR; without a session both routes are 401."""
    browser = await device(app_client)
    assert (await browser.call("POST", "/verify-email", {"code": "123456"})).json() == UNAUTHORIZED
    resend = await browser.call("POST", "/resend-verification")
    assert resend.status_code == 401 and resend.json() == UNAUTHORIZED
    await browser.register()
    missing = await browser.call("POST", "/verify-email", {})
    assert missing.status_code == 400 and missing.json() == invalid(("code", "Required"))
    empty = await browser.call("POST", "/verify-email", {"code": ""})
    assert empty.json() == invalid(("code", "Verification code is required"))


# --- CSRF, rate limits, documentation --------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/forgot-password", {"identifier": EMAIL}),
        ("/reset-password", {"token": "x", "newPassword": NEW_PASSWORD}),
        ("/verify-email", {"code": "123456"}),
        ("/resend-verification", None),
    ],
)
async def test_the_new_mutations_need_the_csrf_header(
    app_client: App,  # noqa: F811
    path: str,
    body: dict[str, str] | None,
) -> None:
    """Without x-csrf-token (or with a wrong one) every new route is 403 FORBIDDEN and does
    nothing."""
    browser = await device(app_client)
    await browser.register()
    forbidden = error("FORBIDDEN", "You are not authorized to perform this action")
    response = await browser.call("POST", path, body, csrf=False)
    assert response.status_code == 403 and response.json() == forbidden
    response = await browser.call("POST", path, body, headers={"x-csrf-token": "nope"})
    assert response.status_code == 403 and response.json() == forbidden
    assert await mails(browser) == []


async def test_recovery_routes_share_3_per_15_minutes(
    app_client: App,  # noqa: F811
    clock: FrozenClock,
) -> None:
    """forgot-password, reset-password and resend-verification share 3 requests per 15
    minutes per ip; the 4th is 429 RATE_LIMITED with Retry-After and RateLimit-* headers."""
    browser = await device(app_client, rate_limits={"modularauth_recovery": (3, 15 * 60)})
    await browser.register()
    calls: list[tuple[str, dict[str, str] | None]] = [
        ("/forgot-password", {"identifier": EMAIL}),
        ("/reset-password", {"token": "x", "newPassword": NEW_PASSWORD}),
        ("/resend-verification", None),
    ]
    for index, (path, body) in enumerate(calls):
        response = await browser.call("POST", path, body)
        assert response.status_code in (200, 400), response.text
        assert response.headers["ratelimit-limit"] == "3"
        assert response.headers["ratelimit-remaining"] == str(2 - index)
    retry_after = 0
    for path, body in calls:
        limited = await browser.call("POST", path, body)
        assert limited.status_code == 429
        assert limited.json() == error("RATE_LIMITED", "Too many requests. Please try again later")
        retry_after = int(limited.headers["retry-after"])
        # A sliding window: the wait is at most two windows, never zero.
        assert 0 < retry_after <= 2 * 15 * 60
        assert limited.headers["ratelimit-remaining"] == "0"
    assert (await browser.call("POST", "/verify-email", {"code": "123456"})).status_code == 400
    clock.advance(retry_after)
    forgot = await browser.call("POST", "/forgot-password", {"identifier": EMAIL})
    assert forgot.status_code == 200


async def test_openapi_lists_the_recovery_and_verification_routes(
    app_client: App,  # noqa: F811
) -> None:
    """<prefix>/openapi.json documents the four routes and their bodies."""
    client = app_client()
    paths = (await client.http.get(f"{PREFIX}/openapi.json")).json()["paths"]
    for path in ("/forgot-password", "/reset-password", "/verify-email", "/resend-verification"):
        assert "post" in paths[PREFIX + path], path
    reset = paths[f"{PREFIX}/reset-password"]["post"]["requestBody"]
    assert reset["content"]["application/json"]["schema"]["required"] == ["token", "newPassword"]
    assert paths[f"{PREFIX}/verify-email"]["post"]["security"] == [{"credential": []}]


# --- through a real SMTP server --------------------------------------------------------------


async def test_verification_and_recovery_through_smtp(app_client: App) -> None:  # noqa: F811
    """Over a real SMTP server the code mail verifies the email and the reset mail's token
    sets a new password; both mails have text and HTML parts."""
    async with smtp_server() as smtp:
        browser = await device(app_client, mailer=smtp.mailer())
        await browser.register()
        assert (await browser.call("POST", "/resend-verification")).status_code == 200
        await browser.client.delivered()
        [code_mail] = await smtp.wait_for(1)
        code = extract_code(code_mail)
        assert code in html_of(code_mail)
        verified = await browser.call("POST", "/verify-email", {"code": code})
        assert verified.json() == ok(VERIFIED)

        forgot = await browser.call("POST", "/forgot-password", {"identifier": EMAIL})
        assert forgot.json() == ok(FORGOT_SENT)
        await browser.client.delivered()
        _, reset_mail = await smtp.wait_for(2)
        assert smtp.to(EMAIL) == [code_mail, reset_mail]
        assert extract_link(reset_mail) in html_of(reset_mail)
        body = {"token": extract_token(reset_mail), "newPassword": NEW_PASSWORD}
        assert (await browser.call("POST", "/reset-password", body)).json() == ok(RESET_DONE)
        assert (await browser.login(EMAIL, NEW_PASSWORD)).status_code == 200
