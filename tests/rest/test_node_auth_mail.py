"""node-auth's mail and SMS routes at /auth: password reset, email verification and change,
magic links, SMS codes and /add-phone, in node-auth's bodies, status codes and cookies."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from authql.models import OneTimeToken, RefreshToken, Session, User
from authql.services.clock import FrozenClock
from tests.smtp import extract_code, extract_link, extract_token, html_of, smtp_server, text_of
from tests.support import PASSWORD, GraphQLClient

MakeClient = Callable[..., GraphQLClient]

PREFIX = "/auth"
PUBLIC_URL = "http://127.0.0.1:8000"
EMAIL = "ada@example.com"
OTHER = "grace@example.com"
PHONE = "+14155550100"
NEW_PHONE = "+14155550199"
NEW_PASSWORD = "a brand new passphrase"
BEARER = {"x-auth-strategy": "bearer"}
SUCCESS = {"success": True}
TOKEN_KEYS = {"success", "accessToken", "refreshToken"}
NO_TOKEN = {"error": "No access token provided"}
INVALID_RESET = {"error": "Invalid reset token"}
EXPIRED_RESET = {"error": "Reset token has expired"}
INVALID_VERIFICATION = {"error": "Invalid verification token"}
EXPIRED_VERIFICATION = {"error": "Verification token has expired"}
INVALID_CHANGE = {"error": "Invalid email-change token"}
EXPIRED_CHANGE = {"error": "Email-change token has expired"}
EMAIL_TAKEN = {"error": "Email address is already in use"}
INVALID_MAGIC_LINK = {"error": "Invalid magic link token", "code": "INVALID_MAGIC_LINK"}
EXPIRED_MAGIC_LINK = {"error": "Magic link token has expired", "code": "MAGIC_LINK_EXPIRED"}
INVALID_SMS = {"error": "Invalid or expired SMS code"}


# --- helpers ---------------------------------------------------------------------------------


class NodeAuth:
    """Speaks node-auth to an in-process app and checks every answer for leaked secrets."""

    def __init__(self, client: GraphQLClient) -> None:
        self.client = client
        self.http = client.http
        self.secrets: set[str] = set()

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        bearer: bool = False,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(headers or {})
        if token:
            sent["authorization"] = f"Bearer {token}"
        if bearer:
            sent.update(BEARER)
        response = await self.http.request(method, PREFIX + path, json=body, headers=sent)
        await self.assert_clean(response)
        return response

    async def post(
        self, path: str, body: dict[str, Any] | None = None, **kw: Any
    ) -> httpx.Response:
        return await self.call("POST", path, body, **kw)

    async def assert_clean(self, response: httpx.Response) -> None:
        """No password hash, stored digest (refresh, session, one-time), mailed or texted
        secret, or lower-case "totp" (``isTotpEnabled`` is a documented flag, and the
        documented field ``totpCode`` in openapi.json is removed before the check) anywhere."""
        text = response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        text = text.replace('"totpCode"', "")
        assert "$argon2" not in text
        assert "totp" not in text
        digests = [*await RefreshToken.all().values_list("digest", flat=True)]
        digests += await Session.exclude(token_digest=None).values_list("token_digest", flat=True)
        digests += await OneTimeToken.all().values_list("digest", flat=True)
        for secret in [*digests, *self.secrets]:
            assert str(secret) not in text

    async def register(self, email: str = EMAIL, **fields: Any) -> str:
        body = {"email": email, "password": PASSWORD, **fields}
        response = await self.post("/register", body)
        assert response.status_code == 201, response.text
        return str(response.json()["userId"])

    async def tokens(self, email: str = EMAIL, password: str = PASSWORD) -> dict[str, str]:
        response = await self.post("/login", {"email": email, "password": password}, bearer=True)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def me(self, token: str) -> dict[str, Any]:
        response = await self.call("GET", "/me", token=token)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def mails(self, to: str = EMAIL) -> list[Any]:
        mails, _ = await self.client.delivered()
        return [mail for mail in mails if mail.to == to]

    async def link(self, to: str = EMAIL) -> str:
        """The link of the newest mail to ``to`` (its token becomes a watched secret)."""
        mails = await self.mails(to)
        assert mails, f"no mail to {to}"
        self.secrets.add(extract_token(mails[-1]))
        return extract_link(mails[-1])

    async def token(self, to: str = EMAIL) -> str:
        return extract_token(await self.link(to))

    async def texts(self, to: str = PHONE) -> list[Any]:
        _, texts = await self.client.delivered()
        return [text for text in texts if text.to == to]

    async def code(self, to: str = PHONE) -> str:
        """The code of the newest text to ``to`` (watched as a secret)."""
        texts = await self.texts(to)
        assert texts, f"no text to {to}"
        code = extract_code(texts[-1])
        self.secrets.add(code)
        return code


def node_auth(make_client: MakeClient, **overrides: Any) -> NodeAuth:
    return NodeAuth(make_client(rest_dialects=(("node-auth", PREFIX),), **overrides))


def cookies_set(response: httpx.Response) -> set[str]:
    return {header.split("=", 1)[0] for header in response.headers.get_list("set-cookie")}


def assert_issued(response: httpx.Response, *, bearer: bool) -> None:
    """node-auth's token issue: tokens in the body (bearer) or the two HttpOnly cookies."""
    assert response.status_code == 200, response.text
    if bearer:
        assert set(response.json()) == TOKEN_KEYS
        assert "set-cookie" not in response.headers
    else:
        assert response.json() == SUCCESS
        assert cookies_set(response) == {"accessToken", "refreshToken"}
        assert all("httponly" in h.lower() for h in response.headers.get_list("set-cookie"))


# --- forgot / reset password -----------------------------------------------------------------


async def test_forgot_password_answers_alike_for_existing_and_unknown_accounts(
    make_client: MakeClient,
) -> None:
    """Existing, unknown and missing emails all get 200 {success:true}; only the account's
    stored address receives a link to <public url>/auth/reset-password?token=."""
    api = node_auth(make_client)
    await api.register()
    answers = [
        await api.post("/forgot-password", {"email": EMAIL, "emailLang": "it"}),
        await api.post("/forgot-password", {"email": "nobody@example.com"}),
        await api.post("/forgot-password", {}),
    ]
    for response in answers:
        assert (response.status_code, response.json()) == (200, SUCCESS)
        assert response.content == answers[0].content
        assert "set-cookie" not in response.headers
    mails, _ = await api.client.delivered()
    assert [mail.to for mail in mails] == [EMAIL]
    assert (await api.link()).startswith(f"{PUBLIC_URL}/auth/reset-password?token=")


async def test_reset_password_in_cookie_mode_ends_every_session_without_signing_in(
    make_client: MakeClient,
) -> None:
    """{token, password} answers {success:true} with no cookies; old sessions die, the new
    password works and the link works once."""
    api = node_auth(make_client)
    await api.register()
    old = await api.tokens()
    await api.post("/forgot-password", {"email": EMAIL})
    token = await api.token()
    response = await api.post("/reset-password", {"token": token, "password": NEW_PASSWORD})
    assert (response.status_code, response.json()) == (200, SUCCESS)
    assert "set-cookie" not in response.headers
    assert (await api.call("GET", "/me", token=old["accessToken"])).status_code == 403
    await api.tokens(password=NEW_PASSWORD)
    again = await api.post("/reset-password", {"token": token, "password": "yet another one"})
    assert (again.status_code, again.json()) == (400, INVALID_RESET)


async def test_reset_password_in_bearer_mode_signs_in(make_client: MakeClient) -> None:
    """With X-Auth-Strategy: bearer, {token, newPassword} (the docs' field) returns tokens."""
    api = node_auth(make_client)
    await api.register()
    await api.post("/forgot-password", {"email": EMAIL})
    response = await api.post(
        "/reset-password", {"token": await api.token(), "newPassword": NEW_PASSWORD}, bearer=True
    )
    assert_issued(response, bearer=True)
    assert (await api.me(response.json()["accessToken"]))["email"] == EMAIL
    await api.tokens(password=NEW_PASSWORD)


async def test_reset_password_errors(make_client: MakeClient, clock: FrozenClock) -> None:
    """Unknown, superseded, expired and missing tokens are 400 in node-auth's words; a weak
    password is 400 VALIDATION_ERROR and does not burn the link."""
    api = node_auth(make_client)
    await api.register()
    unknown = await api.post("/reset-password", {"token": "nope", "password": NEW_PASSWORD})
    assert (unknown.status_code, unknown.json()) == (400, INVALID_RESET)
    missing = await api.post("/reset-password", {"password": NEW_PASSWORD})
    assert (missing.status_code, missing.json()) == (400, INVALID_RESET)

    await api.post("/forgot-password", {"email": EMAIL})
    first = await api.token()
    await api.post("/forgot-password", {"email": EMAIL})
    second = await api.token()
    superseded = await api.post("/reset-password", {"token": first, "password": NEW_PASSWORD})
    assert (superseded.status_code, superseded.json()) == (400, INVALID_RESET)

    weak = await api.post("/reset-password", {"token": second, "password": "short"})
    assert weak.status_code == 400
    assert weak.json()["code"] == "VALIDATION_ERROR"

    clock.advance(3_601)
    expired = await api.post("/reset-password", {"token": second, "password": NEW_PASSWORD})
    assert (expired.status_code, expired.json()) == (400, EXPIRED_RESET)


async def test_forgot_password_is_rate_limited(make_client: MakeClient) -> None:
    """Past the recovery budget the answer is 429 RATE_LIMITED with Retry-After."""
    api = node_auth(make_client, rate_limits={"recovery": (1, 900)})
    assert (await api.post("/forgot-password", {"email": EMAIL})).status_code == 200
    limited = await api.post("/forgot-password", {"email": EMAIL})
    assert limited.status_code == 429
    assert limited.json()["code"] == "RATE_LIMITED"
    assert int(limited.headers["retry-after"]) > 0


# --- email verification ----------------------------------------------------------------------


async def test_verification_link_verifies_over_get(make_client: MakeClient) -> None:
    """POST /send-verification-email mails a GET /auth/verify-email?token= link that answers
    {success:true} and marks the address verified; a second send is 400."""
    api = node_auth(make_client)
    await api.register()
    access = (await api.tokens())["accessToken"]
    sent = await api.post("/send-verification-email", {"emailLang": "en"}, token=access)
    assert (sent.status_code, sent.json()) == (200, SUCCESS)
    link = await api.link()
    assert link.startswith(f"{PUBLIC_URL}/auth/verify-email?token=")
    parts = urlsplit(link)
    verified = await api.http.get(f"{parts.path}?{parts.query}")
    await api.assert_clean(verified)
    assert (verified.status_code, verified.json()) == (200, SUCCESS)
    assert (await api.me(access))["isEmailVerified"] is True
    reused = await api.http.get(f"{parts.path}?{parts.query}")
    assert (reused.status_code, reused.json()) == (400, INVALID_VERIFICATION)
    again = await api.post("/send-verification-email", token=access)
    assert (again.status_code, again.json()) == (400, {"error": "Email is already verified"})


async def test_send_verification_email_needs_a_signed_in_user(make_client: MakeClient) -> None:
    """Without an access token the route is 403, node-auth's auth failure."""
    api = node_auth(make_client)
    response = await api.post("/send-verification-email")
    assert (response.status_code, response.json()) == (403, NO_TOKEN)


async def test_verify_email_errors(make_client: MakeClient, clock: FrozenClock) -> None:
    """Missing, unknown, superseded, wrong-purpose and expired tokens: 400 in node-auth's
    words."""
    api = node_auth(make_client)
    await api.register()
    access = (await api.tokens())["accessToken"]
    missing = await api.call("GET", "/verify-email")
    assert (missing.status_code, missing.json()) == (400, {"error": "Token is required"})
    unknown = await api.call("GET", "/verify-email?token=nope")
    assert (unknown.status_code, unknown.json()) == (400, INVALID_VERIFICATION)

    await api.post("/send-verification-email", token=access)
    first = await api.token()
    await api.post("/send-verification-email", token=access)
    second = await api.token()
    superseded = await api.call("GET", f"/verify-email?token={first}")
    assert (superseded.status_code, superseded.json()) == (400, INVALID_VERIFICATION)
    await api.post("/forgot-password", {"email": EMAIL})
    reset_token = await api.token()
    wrong = await api.call("GET", f"/verify-email?token={reset_token}")
    assert (wrong.status_code, wrong.json()) == (400, INVALID_VERIFICATION)

    clock.advance(86_401)
    expired = await api.call("GET", f"/verify-email?token={second}")
    assert (expired.status_code, expired.json()) == (400, EXPIRED_VERIFICATION)
    assert (await User.get(email=EMAIL)).email_verified is False


# --- email change ----------------------------------------------------------------------------


async def test_change_email_request_and_confirm(make_client: MakeClient) -> None:
    """The new address gets a link to /auth/change-email/confirm, the old one a notice; the
    confirmed address signs in and the session is kept."""
    api = node_auth(make_client)
    await api.register()
    access = (await api.tokens())["accessToken"]
    response = await api.post(
        "/change-email/request", {"newEmail": OTHER, "password": PASSWORD}, token=access
    )
    assert (response.status_code, response.json()) == (200, SUCCESS)
    assert len(await api.mails(EMAIL)) == 1
    link = await api.link(OTHER)
    assert link.startswith(f"{PUBLIC_URL}/auth/change-email/confirm?token=")
    confirmed = await api.post("/change-email/confirm", {"token": extract_token(link)})
    assert (confirmed.status_code, confirmed.json()) == (200, SUCCESS)
    me = await api.me(access)
    assert (me["email"], me["isEmailVerified"]) == (OTHER, True)
    assert len(await api.mails(EMAIL)) == 2
    await api.tokens(OTHER)
    reused = await api.post("/change-email/confirm", {"token": extract_token(link)})
    assert (reused.status_code, reused.json()) == (400, INVALID_CHANGE)


async def test_change_email_request_errors(make_client: MakeClient) -> None:
    """403 signed out, 401 without or with a wrong password, 409 for a taken address, 400
    for a malformed one."""
    api = node_auth(make_client)
    await api.register()
    await api.register(OTHER)
    access = (await api.tokens())["accessToken"]
    signed_out = await api.post("/change-email/request", {"newEmail": "new@example.com"})
    assert (signed_out.status_code, signed_out.json()) == (403, NO_TOKEN)
    wrong_password = {"error": "Password is incorrect", "code": "INVALID_CREDENTIALS"}
    for body in ({"newEmail": "new@example.com"}, {"newEmail": OTHER, "password": "wrong!!!"}):
        refused = await api.post("/change-email/request", body, token=access)
        assert (refused.status_code, refused.json()) == (401, wrong_password)
    taken = await api.post(
        "/change-email/request", {"newEmail": OTHER, "currentPassword": PASSWORD}, token=access
    )
    assert (taken.status_code, taken.json()) == (409, EMAIL_TAKEN)
    malformed = await api.post(
        "/change-email/request", {"newEmail": "not-an-email", "password": PASSWORD}, token=access
    )
    assert malformed.status_code == 400
    assert malformed.json()["code"] == "VALIDATION_ERROR"
    assert await api.mails(EMAIL) == []


async def test_change_email_confirm_errors(make_client: MakeClient, clock: FrozenClock) -> None:
    """Unknown, wrong-purpose and expired tokens are 400; an address taken meanwhile is 409."""
    api = node_auth(make_client)
    await api.register()
    access = (await api.tokens())["accessToken"]
    unknown = await api.post("/change-email/confirm", {"token": "nope"})
    assert (unknown.status_code, unknown.json()) == (400, INVALID_CHANGE)
    await api.post("/magic-link/send", {"email": EMAIL})
    wrong = await api.post("/change-email/confirm", {"token": await api.token()})
    assert (wrong.status_code, wrong.json()) == (400, INVALID_CHANGE)

    await api.post("/change-email/request", {"newEmail": OTHER, "password": PASSWORD}, token=access)
    taken_later = await api.token(OTHER)
    await api.register(OTHER)
    conflict = await api.post("/change-email/confirm", {"token": taken_later})
    assert (conflict.status_code, conflict.json()) == (409, EMAIL_TAKEN)

    third = "third@example.com"
    await api.post("/change-email/request", {"newEmail": third, "password": PASSWORD}, token=access)
    clock.advance(3_601)
    expired = await api.post("/change-email/confirm", {"token": await api.token(third)})
    assert (expired.status_code, expired.json()) == (400, EXPIRED_CHANGE)
    assert await User.exists(email=EMAIL)


# --- magic links -----------------------------------------------------------------------------


async def test_magic_link_send_answers_alike_for_existing_and_unknown_accounts(
    make_client: MakeClient,
) -> None:
    """Known and unknown emails get the same 200 {success:true}; only the account gets a link
    to /auth/magic-link/verify; a missing email is 400."""
    api = node_auth(make_client)
    await api.register()
    known = await api.post("/magic-link/send", {"email": EMAIL, "emailLang": "en"})
    unknown = await api.post("/magic-link/send", {"email": "nobody@example.com"})
    for response in (known, unknown):
        assert (response.status_code, response.json()) == (200, SUCCESS)
    assert known.content == unknown.content
    mails, _ = await api.client.delivered()
    assert [mail.to for mail in mails] == [EMAIL]
    assert (await api.link()).startswith(f"{PUBLIC_URL}/auth/magic-link/verify?token=")
    missing = await api.post("/magic-link/send", {})
    assert (missing.status_code, missing.json()) == (400, {"error": "email is required"})


@pytest.mark.parametrize("bearer", [False, True])
async def test_magic_link_verify_issues_tokens_once(make_client: MakeClient, bearer: bool) -> None:
    """The link signs in (cookies, or the body with X-Auth-Strategy: bearer), verifies the
    address, and is refused the second time."""
    api = node_auth(make_client)
    await api.register()
    await api.post("/magic-link/send", {"email": EMAIL})
    token = await api.token()
    response = await api.post("/magic-link/verify", {"token": token}, bearer=bearer)
    assert_issued(response, bearer=bearer)
    access = response.json()["accessToken"] if bearer else response.cookies["accessToken"]
    me = await api.me(access)
    assert (me["email"], me["isEmailVerified"], me["loginProvider"]) == (
        EMAIL,
        True,
        "magic_link",
    )
    reused = await api.post("/magic-link/verify", {"token": token}, bearer=bearer)
    assert (reused.status_code, reused.json()) == (401, INVALID_MAGIC_LINK)


async def test_magic_link_verify_errors(make_client: MakeClient, clock: FrozenClock) -> None:
    """Missing, unknown and wrong-purpose tokens are INVALID_MAGIC_LINK, an expired one
    MAGIC_LINK_EXPIRED, both 401."""
    api = node_auth(make_client)
    await api.register()
    for body in ({}, {"token": "nope"}):
        response = await api.post("/magic-link/verify", body)
        assert (response.status_code, response.json()) == (401, INVALID_MAGIC_LINK)
    await api.post("/forgot-password", {"email": EMAIL})
    wrong = await api.post("/magic-link/verify", {"token": await api.token()})
    assert (wrong.status_code, wrong.json()) == (401, INVALID_MAGIC_LINK)
    await api.post("/magic-link/send", {"email": EMAIL})
    token = await api.token()
    clock.advance(901)
    expired = await api.post("/magic-link/verify", {"token": token})
    assert (expired.status_code, expired.json()) == (401, EXPIRED_MAGIC_LINK)
    assert "set-cookie" not in expired.headers


# --- SMS -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bearer", [False, True])
async def test_sms_send_and_verify_by_user_id(make_client: MakeClient, bearer: bool) -> None:
    """{userId} texts a code to the account's number; {userId, code} signs in once."""
    api = node_auth(make_client)
    user_id = await api.register(phone=PHONE)
    sent = await api.post("/sms/send", {"userId": user_id})
    assert (sent.status_code, sent.json()) == (200, SUCCESS)
    code = await api.code()
    response = await api.post("/sms/verify", {"userId": user_id, "code": code}, bearer=bearer)
    assert_issued(response, bearer=bearer)
    access = response.json()["accessToken"] if bearer else response.cookies["accessToken"]
    assert (await api.me(access))["loginProvider"] == "sms"
    reused = await api.post("/sms/verify", {"userId": user_id, "code": code})
    assert (reused.status_code, reused.json()) == (401, INVALID_SMS)


async def test_sms_send_by_email_or_phone_answers_alike(make_client: MakeClient) -> None:
    """By email (with a number, without one, unknown) or by phone the answer is the same
    200; only the account with a number gets a text, and {phone, code} signs in."""
    api = node_auth(make_client)
    await api.register(phone=PHONE)
    await api.register(OTHER)
    answers = [
        await api.post("/sms/send", {"email": EMAIL}),
        await api.post("/sms/send", {"email": OTHER}),
        await api.post("/sms/send", {"email": "nobody@example.com"}),
        await api.post("/sms/send", {"phone": "+14155550123"}),
    ]
    for response in answers:
        assert (response.status_code, response.content) == (200, answers[0].content)
    _, texts = await api.client.delivered()
    assert [text.to for text in texts] == [PHONE]
    response = await api.post(
        "/sms/verify", {"phone": PHONE, "code": await api.code()}, bearer=True
    )
    assert_issued(response, bearer=True)


async def test_sms_send_errors(make_client: MakeClient) -> None:
    """400 without userId or email, 404 for an unknown userId, 400 PHONE_NOT_SET for an
    account without a number."""
    api = node_auth(make_client)
    user_id = await api.register()
    missing = await api.post("/sms/send", {})
    assert (missing.status_code, missing.json()) == (400, {"error": "userId or email is required"})
    for unknown_id in (str(uuid.uuid4()), "not-a-uuid"):
        unknown = await api.post("/sms/send", {"userId": unknown_id})
        assert (unknown.status_code, unknown.json()) == (404, {"error": "User not found"})
    no_phone = await api.post("/sms/send", {"userId": user_id})
    assert (no_phone.status_code, no_phone.json()) == (
        400,
        {"error": "User does not have a phone number configured", "code": "PHONE_NOT_SET"},
    )
    assert await api.texts() == []


async def test_sms_verify_errors(make_client: MakeClient, clock: FrozenClock) -> None:
    """400 without userId or code; wrong, other-user, unknown-user, exhausted and expired
    codes are all 401 Invalid or expired SMS code."""
    api = node_auth(make_client, code_max_attempts=3)
    user_id = await api.register(phone=PHONE)
    other_id = await api.register(OTHER, phone=NEW_PHONE)
    no_user = await api.post("/sms/verify", {"code": "123456"})
    assert (no_user.status_code, no_user.json()) == (400, {"error": "userId is required"})
    no_code = await api.post("/sms/verify", {"userId": user_id})
    assert (no_code.status_code, no_code.json()) == (400, {"error": "code is required"})

    await api.post("/sms/send", {"userId": user_id})
    code = await api.code()
    for body in (
        {"userId": other_id, "code": code},
        {"userId": str(uuid.uuid4()), "code": code},
    ):
        refused = await api.post("/sms/verify", body)
        assert (refused.status_code, refused.json()) == (401, INVALID_SMS)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(3):
        refused = await api.post("/sms/verify", {"userId": user_id, "code": wrong})
        assert (refused.status_code, refused.json()) == (401, INVALID_SMS)
    exhausted = await api.post("/sms/verify", {"userId": user_id, "code": code})
    assert (exhausted.status_code, exhausted.json()) == (401, INVALID_SMS)

    await api.post("/sms/send", {"userId": user_id})
    fresh = await api.code()
    clock.advance(601)
    expired = await api.post("/sms/verify", {"userId": user_id, "code": fresh})
    assert (expired.status_code, expired.json()) == (401, INVALID_SMS)


async def test_add_phone_then_sms_verify_sets_and_verifies_the_number(
    make_client: MakeClient,
) -> None:
    """/add-phone texts a code to the new number; {phone, code} while signed in answers
    {success:true} without new tokens, and the number then signs in by SMS."""
    api = node_auth(make_client)
    await api.register()
    access = (await api.tokens())["accessToken"]
    sent = await api.post("/add-phone", {"phoneNumber": NEW_PHONE}, token=access)
    assert (sent.status_code, sent.json()) == (200, SUCCESS)
    user = await User.get(email=EMAIL)
    assert user.phone is None
    code = await api.code(NEW_PHONE)
    verified = await api.post(
        "/sms/verify", {"phone": NEW_PHONE, "code": code}, token=access, bearer=True
    )
    assert (verified.status_code, verified.json()) == (200, SUCCESS)
    assert "set-cookie" not in verified.headers
    user = await User.get(email=EMAIL)
    assert (user.phone, user.phone_verified) == (NEW_PHONE, True)
    assert await Session.filter(user_id=user.id).count() == 1

    await api.post("/sms/send", {"phone": NEW_PHONE})
    response = await api.post(
        "/sms/verify", {"userId": str(user.id), "code": await api.code(NEW_PHONE)}, bearer=True
    )
    assert_issued(response, bearer=True)


async def test_add_phone_errors(make_client: MakeClient) -> None:
    """403 signed out; 400 VALIDATION_ERROR for a missing or malformed number or one that
    belongs to another account."""
    api = node_auth(make_client)
    await api.register()
    await api.register(OTHER, phone=PHONE)
    access = (await api.tokens())["accessToken"]
    signed_out = await api.post("/add-phone", {"phoneNumber": NEW_PHONE})
    assert (signed_out.status_code, signed_out.json()) == (403, NO_TOKEN)
    for body in ({}, {"phoneNumber": "call me"}, {"phoneNumber": PHONE}):
        refused = await api.post("/add-phone", body, token=access)
        assert refused.status_code == 400, body
        assert refused.json()["code"] == "VALIDATION_ERROR"
    _, texts = await api.client.delivered()
    assert texts == []


async def test_signed_in_sms_routes_need_the_csrf_header_with_cookies(
    make_client: MakeClient,
) -> None:
    """With CSRF on, /sms/send and /sms/verify sent with a live access cookie need
    X-CSRF-Token (they change the account's number)."""
    api = node_auth(make_client, node_auth_csrf=True)
    await api.register()
    login = await api.post("/login", {"email": EMAIL, "password": PASSWORD})
    assert login.status_code == 200
    csrf = {"x-csrf-token": login.cookies["csrf-token"]}
    refused = await api.post("/sms/send", {"phone": NEW_PHONE})
    assert (refused.status_code, refused.json()["code"]) == (403, "CSRF_INVALID")
    assert await api.texts(NEW_PHONE) == []
    assert (await api.post("/sms/send", {"phone": NEW_PHONE}, headers=csrf)).status_code == 200
    code = await api.code(NEW_PHONE)
    refused = await api.post("/sms/verify", {"phone": NEW_PHONE, "code": code})
    assert (refused.status_code, refused.json()["code"]) == (403, "CSRF_INVALID")
    verified = await api.post("/sms/verify", {"phone": NEW_PHONE, "code": code}, headers=csrf)
    assert (verified.status_code, verified.json()) == (200, SUCCESS)


# --- across surfaces, SMTP, OpenAPI ----------------------------------------------------------


async def test_graphql_reset_link_completes_over_node_auth(make_client: MakeClient) -> None:
    """A reset link requested over GraphQL resets the password through /auth/reset-password,
    and the account then logs in over both surfaces."""
    api = node_auth(make_client)
    await api.client.register(EMAIL)
    result = await api.client.gql(
        "mutation($e: String!) { requestPasswordReset(email: $e) }", {"e": EMAIL}
    )
    assert result.data == {"requestPasswordReset": True}
    response = await api.post(
        "/reset-password", {"token": await api.token(), "password": NEW_PASSWORD}
    )
    assert (response.status_code, response.json()) == (200, SUCCESS)
    await api.tokens(password=NEW_PASSWORD)
    assert (await api.client.login(EMAIL, NEW_PASSWORD)).data["login"]["status"] == "OK"


async def test_mail_through_a_real_smtp_server_completes_the_flows(
    make_client: MakeClient,
) -> None:
    """Over a real SMTP server the verification and reset mails arrive with text and HTML
    parts, and their links complete the flows (the verification link by itself)."""
    async with smtp_server() as smtp:
        api = node_auth(make_client, mailer=smtp.mailer())
        await api.register()
        access = (await api.tokens())["accessToken"]
        await api.post("/send-verification-email", token=access)
        await api.client.delivered()
        [verify_mail] = await smtp.wait_for(1)
        api.secrets.add(extract_token(verify_mail))
        parts = urlsplit(extract_link(verify_mail))
        assert f"{parts.scheme}://{parts.netloc}" == PUBLIC_URL
        verified = await api.http.get(f"{parts.path}?{parts.query}")
        await api.assert_clean(verified)
        assert (verified.status_code, verified.json()) == (200, SUCCESS)
        assert (await api.me(access))["isEmailVerified"] is True

        await api.post("/forgot-password", {"email": EMAIL})
        await api.client.delivered()
        reset_mail = (await smtp.wait_for(2))[1]
        assert reset_mail["To"] == EMAIL
        link = extract_link(reset_mail)
        assert link.startswith(f"{PUBLIC_URL}/auth/reset-password?token=")
        assert link in text_of(reset_mail)
        assert extract_token(reset_mail) in html_of(reset_mail)
        api.secrets.add(extract_token(reset_mail))
        reset = await api.post(
            "/reset-password", {"token": extract_token(reset_mail), "password": NEW_PASSWORD}
        )
        assert (reset.status_code, reset.json()) == (200, SUCCESS)
        assert (await api.tokens(password=NEW_PASSWORD))["accessToken"]


async def test_openapi_lists_the_mail_and_sms_routes(make_client: MakeClient) -> None:
    """<prefix>/openapi.json documents every mail and SMS route."""
    api = node_auth(make_client)
    paths = (await api.call("GET", "/openapi.json")).json()["paths"]
    served = {(method, path) for path, operations in paths.items() for method in operations}
    assert {
        ("post", "/auth/forgot-password"),
        ("post", "/auth/reset-password"),
        ("post", "/auth/send-verification-email"),
        ("get", "/auth/verify-email"),
        ("post", "/auth/change-email/request"),
        ("post", "/auth/change-email/confirm"),
        ("post", "/auth/magic-link/send"),
        ("post", "/auth/magic-link/verify"),
        ("post", "/auth/sms/send"),
        ("post", "/auth/sms/verify"),
        ("post", "/auth/add-phone"),
    } <= served
    assert paths["/auth/verify-email"]["get"]["parameters"][0]["name"] == "token"
    assert "security" in paths["/auth/add-phone"]["post"]
