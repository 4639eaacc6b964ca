"""The AuthCore dialect's mail routes: magic links (``POST /magic-link`` + ``GET /verify``),
email verification, password recovery; their enumeration-proof answers, single-use tokens,
safe callback URLs, the authRoute rate limit, and one flow through a real SMTP server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
import pytest

from authql.models import User
from authql.services.clock import FrozenClock
from authql.services.mail import MailMessage
from tests.rest.test_authcore import (
    PREFIX,
    SESSION_COOKIE,
    TTL,
    USER_KEYS,
    AuthCore,
    assert_error,
    cookie,
)
from tests.smtp import extract_link, extract_token, html_of, smtp_server, text_of
from tests.support import PASSWORD, GraphQLClient

PUBLIC = "http://127.0.0.1:8000"
EMAIL = "ada@example.com"
NEW_PASSWORD = "a brand new passphrase"
LIMITS = {"authcore_auth": (5, 15 * 60)}
JSON = {"accept": "application/json"}

MakeClient = Callable[..., GraphQLClient]


@pytest.fixture
def make_authcore(make_client: MakeClient) -> Callable[..., AuthCore]:
    def make(**overrides: Any) -> AuthCore:
        return AuthCore(make_client(rest_dialects=(("authcore", PREFIX),), **overrides))

    return make


@pytest.fixture
def authcore(make_authcore: Callable[..., AuthCore]) -> AuthCore:
    return make_authcore()


async def mails(authcore: AuthCore, to: str | None = None) -> list[MailMessage]:
    """Every mail sent so far (after the background work finished), optionally to one address."""
    sent, _ = await authcore.client.delivered()
    return [mail for mail in sent if to is None or mail.to == to]


def local(link: str) -> str:
    """An emailed magic link as a path under the prefix (the test app is not served at the
    public URL)."""
    parts = urlsplit(link)
    assert parts.path.startswith(PREFIX + "/")
    return f"{parts.path.removeprefix(PREFIX)}?{parts.query}"


def same_answer(first: httpx.Response, second: httpx.Response) -> None:
    """Status, headers and body byte for byte."""
    assert first.status_code == second.status_code
    assert first.headers.multi_items() == second.headers.multi_items()
    assert first.content == second.content


async def post(authcore: AuthCore, path: str, body: dict[str, Any]) -> httpx.Response:
    return await authcore.request("POST", path, json=body)


async def magic_link(authcore: AuthCore, email: str = EMAIL, **extra: Any) -> str:
    """Ask for a magic link and return the one mailed to ``email``."""
    response = await post(authcore, "/magic-link", {"email": email, **extra})
    assert response.status_code == 200, response.text
    return extract_link((await mails(authcore, email))[-1])


async def reset_token(authcore: AuthCore, email: str = EMAIL) -> str:
    assert (await post(authcore, "/forgot-password", {"email": email})).status_code == 200
    return extract_token((await mails(authcore, email))[-1])


async def verification_token(authcore: AuthCore, email: str = EMAIL) -> str:
    response = await post(authcore, "/resend-verification", {"email": email})
    assert response.status_code == 200
    return extract_token((await mails(authcore, email))[-1])


def assert_verify_failed(response: httpx.Response) -> None:
    """The NextAuth-style error redirect, without a session cookie."""
    assert response.status_code == 302
    assert response.headers["location"] == f"{PREFIX}/error?error=Verification"
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


# --- magic links -----------------------------------------------------------------------------


async def test_magic_link_answers_the_same_for_known_and_unknown_emails(
    authcore: AuthCore,
) -> None:
    """POST /magic-link is 200 {success:true} byte for byte whether or not the account
    exists; only the real account gets a mail, whose link opens <prefix>/verify."""
    await authcore.register()
    known = await post(authcore, "/magic-link", {"email": EMAIL})
    unknown = await post(authcore, "/magic-link", {"email": "nobody@example.com"})
    assert known.json() == {"success": True}
    same_answer(known, unknown)
    [mail] = await mails(authcore)
    assert mail.to == EMAIL
    link = extract_link(mail)
    assert link.startswith(f"{PUBLIC}{PREFIX}/verify?token=")
    assert link in html_of(mail)


async def test_verify_signs_in_with_the_cookie_and_redirects_to_the_dashboard(
    authcore: AuthCore,
) -> None:
    """GET /verify?token= sets the HttpOnly session cookie, 302s to /demo/dashboard, marks
    the email verified, and the session is live on GET /session."""
    await authcore.register()
    link = await magic_link(authcore)
    response = await authcore.request("GET", local(link))
    assert response.status_code == 302
    assert response.headers["location"] == "/demo/dashboard"
    assert response.headers["cache-control"] == "no-store"
    flags = cookie(response, SESSION_COOKIE)
    assert flags["max-age"] == str(TTL) and flags["path"] == "/"
    assert "httponly" in flags and flags["samesite"].lower() == "lax" and "secure" not in flags
    session = (await authcore.session()).json()
    assert session["user"]["email"] == EMAIL and session["user"]["emailVerified"] is True
    assert (await User.get(email=EMAIL)).email_verified is True


async def test_a_magic_link_works_once(authcore: AuthCore) -> None:
    """A used link redirects to the error page and sets no cookie; a JSON caller gets 400."""
    await authcore.register()
    link = local(await magic_link(authcore))
    assert (await authcore.request("GET", link)).status_code == 302
    authcore.http.cookies.clear()
    assert_verify_failed(await authcore.request("GET", link))
    assert_error(await authcore.request("GET", link, headers=JSON), 400, "INVALID_TOKEN")
    assert (await authcore.session()).json() == {}


async def test_expired_unknown_missing_and_wrong_purpose_magic_tokens_fail(
    authcore: AuthCore, clock: FrozenClock
) -> None:
    """An expired link, a made-up or missing token and a reset token are all refused."""
    await authcore.register()
    expired = local(await magic_link(authcore))
    clock.advance(authcore.client.services.settings.magic_link_ttl + 1)
    assert_verify_failed(await authcore.request("GET", expired))
    assert_verify_failed(await authcore.request("GET", "/verify?token=made-up"))
    assert_verify_failed(await authcore.request("GET", "/verify"))
    reset = await reset_token(authcore)
    assert_verify_failed(await authcore.request("GET", f"/verify?token={reset}"))
    assert (await authcore.session()).json() == {}
    # The reset token was not spent by the wrong-purpose attempt.
    body = {"token": reset, "password": NEW_PASSWORD}
    assert (await post(authcore, "/reset-password", body)).status_code == 200


async def test_verify_answers_json_to_json_callers(authcore: AuthCore) -> None:
    """With Accept: application/json, a good link answers 200 {success, data:{user, url}}
    and still sets the cookie."""
    await authcore.register()
    link = local(await magic_link(authcore))
    response = await authcore.request("GET", link, headers=JSON)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"success", "data"} and body["success"] is True
    assert set(body["data"]) == {"user", "url"} and body["data"]["url"] == "/demo/dashboard"
    assert set(body["data"]["user"]) == USER_KEYS
    assert body["data"]["user"]["emailVerified"] is True
    assert cookie(response, SESSION_COOKIE)["value"]


async def enrol_totp(client: GraphQLClient, email: str = EMAIL) -> None:
    """Turn TOTP on for ``email`` through the GraphQL mutations."""
    token = (await client.login(email)).data["login"]["accessToken"]
    setup = await client.gql("mutation { beginTotpSetup { secret } }", token=token)
    secret = setup.data["beginTotpSetup"]["secret"]
    code = pyotp.TOTP(secret).at(client.services.clock.now().timestamp())
    confirm = "mutation($c: String!) { confirmTotpSetup(code: $c) }"
    assert (await client.gql(confirm, {"c": code}, token=token)).data["confirmTotpSetup"]


async def test_a_magic_link_does_not_skip_the_second_factor(authcore: AuthCore) -> None:
    """For an account with 2FA on, a good link sets no cookie: 302 to the error page with
    error=TwoFactorRequired, or 403 TWO_FACTOR_REQUIRED for a JSON caller."""
    await authcore.register()
    await enrol_totp(authcore.client)
    response = await authcore.request("GET", local(await magic_link(authcore)))
    assert response.status_code == 302
    assert response.headers["location"] == f"{PREFIX}/error?error=TwoFactorRequired"
    assert "set-cookie" not in response.headers
    as_json = await authcore.request("GET", local(await magic_link(authcore)), headers=JSON)
    assert_error(as_json, 403, "TWO_FACTOR_REQUIRED")
    assert "set-cookie" not in as_json.headers
    assert (await authcore.session()).json() == {}


async def test_magic_link_carries_a_safe_callback_url(
    make_authcore: Callable[..., AuthCore],
) -> None:
    """A relative or allowed callbackUrl rides in the link and is where /verify redirects."""
    authcore = make_authcore(allowed_redirects=("https://app.example.com",))
    await authcore.register()
    link = await magic_link(authcore, callbackUrl="/welcome?tab=1")
    assert parse_qs(urlsplit(link).query)["callbackUrl"] == ["/welcome?tab=1"]
    response = await authcore.request("GET", local(link))
    assert response.headers["location"] == "/welcome?tab=1"
    authcore.http.cookies.clear()
    link = await magic_link(authcore, callbackUrl="https://app.example.com/home")
    response = await authcore.request("GET", local(link))
    assert response.headers["location"] == "https://app.example.com/home"


@pytest.mark.parametrize(
    "target", ["https://evil.example/steal", "//evil.example", "javascript:alert(1)", "/\\evil"]
)
async def test_magic_link_refuses_foreign_callback_urls(authcore: AuthCore, target: str) -> None:
    """An unlisted callbackUrl is 400 VALIDATION_ERROR naming the field; nothing is mailed."""
    await authcore.register()
    response = await post(authcore, "/magic-link", {"email": EMAIL, "callbackUrl": target})
    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert set(body["error"]["fields"]) == {"callbackUrl"}
    assert await mails(authcore) == []


async def test_an_edited_callback_url_in_the_link_is_not_followed(authcore: AuthCore) -> None:
    """A link whose callbackUrl was changed to a foreign site still signs in but redirects
    to the default page, never off site."""
    await authcore.register()
    token = extract_token(await magic_link(authcore, callbackUrl="/home"))
    response = await authcore.request(
        "GET", "/verify", params={"token": token, "callbackUrl": "https://evil.example/"}
    )
    assert response.status_code == 302
    assert response.headers["location"] == "/demo/dashboard"


async def test_magic_link_validates_its_body(authcore: AuthCore) -> None:
    """A missing or non-string email is 400 VALIDATION_ERROR."""
    assert_error(await post(authcore, "/magic-link", {}), 400, "VALIDATION_ERROR")
    assert_error(await post(authcore, "/magic-link", {"email": 7}), 400, "VALIDATION_ERROR")


# --- email verification ----------------------------------------------------------------------


async def test_verify_email_marks_the_email_verified_without_signing_in(
    authcore: AuthCore,
) -> None:
    """The resent link's token, POSTed to /verify-email, answers {success, data:{user}} with
    emailVerified true and sets no cookie; the mail opens the app's /verify-email page."""
    await authcore.register()
    sent_answer = await post(authcore, "/resend-verification", {"email": EMAIL})
    assert sent_answer.json() == {"success": True}
    [sent] = await mails(authcore)
    assert extract_link(sent).startswith(f"{PUBLIC}/verify-email?token=")
    response = await post(authcore, "/verify-email", {"token": extract_token(sent)})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"success", "data"} and set(body["data"]) == {"user"}
    assert set(body["data"]["user"]) == USER_KEYS
    assert body["data"]["user"]["emailVerified"] is True
    assert "set-cookie" not in response.headers


async def test_verify_email_tokens_are_single_use_and_purpose_bound(
    authcore: AuthCore, clock: FrozenClock
) -> None:
    """Reused, superseded, expired, made-up and magic-link tokens are 400 INVALID_TOKEN;
    a missing token is 400 VALIDATION_ERROR."""
    await authcore.register()
    await authcore.register("grace@example.com")
    first = await verification_token(authcore)
    second = await verification_token(authcore)
    assert_error(await post(authcore, "/verify-email", {"token": first}), 400, "INVALID_TOKEN")
    expiring = await verification_token(authcore, "grace@example.com")
    clock.advance(authcore.client.services.settings.email_verification_ttl + 1)
    assert_error(await post(authcore, "/verify-email", {"token": expiring}), 400, "INVALID_TOKEN")
    assert_error(await post(authcore, "/verify-email", {"token": second}), 400, "INVALID_TOKEN")
    magic = extract_token(await magic_link(authcore, "grace@example.com"))
    assert_error(await post(authcore, "/verify-email", {"token": magic}), 400, "INVALID_TOKEN")
    assert_error(await post(authcore, "/verify-email", {"token": "x"}), 400, "INVALID_TOKEN")
    assert_error(await post(authcore, "/verify-email", {}), 400, "VALIDATION_ERROR")
    fresh = await verification_token(authcore)
    assert (await post(authcore, "/verify-email", {"token": fresh})).status_code == 200
    assert_error(await post(authcore, "/verify-email", {"token": fresh}), 400, "INVALID_TOKEN")


async def test_resend_verification_answers_the_same_for_every_address(
    authcore: AuthCore,
) -> None:
    """Unverified, verified and unknown addresses all get 200 {success:true} byte for byte;
    only the unverified account is mailed."""
    await authcore.register()
    await authcore.register("grace@example.com")
    await User.filter(email="grace@example.com").update(email_verified=True)
    answers = [
        await post(authcore, "/resend-verification", {"email": email})
        for email in (EMAIL, "grace@example.com", "nobody@example.com")
    ]
    assert answers[0].json() == {"success": True}
    for other in answers[1:]:
        same_answer(answers[0], other)
    assert [mail.to for mail in await mails(authcore)] == [EMAIL]


async def test_required_verification_steps_then_link_then_sign_in(
    make_authcore: Callable[..., AuthCore],
) -> None:
    """With verification required, register lists ["verify_email"], sign-in is refused until
    the mailed token is POSTed to /verify-email, then it succeeds."""
    authcore = make_authcore(require_email_verification=True)
    registered = await authcore.register()
    assert registered.json()["data"]["steps"] == ["verify_email"]
    refused = await authcore.sign_in(json=True)
    assert refused.status_code == 403
    token = await verification_token(authcore)
    assert (await post(authcore, "/verify-email", {"token": token})).status_code == 200
    assert (await authcore.sign_in(json=True)).status_code == 200
    assert (await authcore.session()).json()["user"]["emailVerified"] is True


# --- password recovery -----------------------------------------------------------------------


async def test_forgot_password_answers_the_same_for_known_and_unknown_emails(
    authcore: AuthCore,
) -> None:
    """POST /forgot-password is 200 {success:true} byte for byte either way; the account's
    mail opens the app's /reset-password page."""
    await authcore.register()
    known = await post(authcore, "/forgot-password", {"email": EMAIL})
    unknown = await post(authcore, "/forgot-password", {"email": "nobody@example.com"})
    assert known.json() == {"success": True}
    same_answer(known, unknown)
    [mail] = await mails(authcore)
    assert mail.to == EMAIL
    assert extract_link(mail).startswith(f"{PUBLIC}/reset-password?token=")


async def test_reset_password_sets_the_password_and_ends_every_session(
    authcore: AuthCore,
) -> None:
    """reset-password answers {success:true}, signs nobody in, clears the caller's session
    cookie, ends the old sessions, and the new password signs in."""
    await authcore.register()
    assert (await authcore.sign_in(json=True)).status_code == 200
    old_cookie = authcore.http.cookies[SESSION_COOKIE]
    token = await reset_token(authcore)
    response = await post(authcore, "/reset-password", {"token": token, "password": NEW_PASSWORD})
    assert response.status_code == 200 and response.json() == {"success": True}
    cleared = cookie(response, SESSION_COOKIE)
    assert cleared["max-age"] == "0"
    assert (
        await authcore.session(headers={"cookie": f"{SESSION_COOKIE}={old_cookie}"})
    ).json() == {}
    assert (await authcore.sign_in(json=True)).status_code == 401
    assert (await authcore.sign_in(password=NEW_PASSWORD, json=True)).status_code == 200


async def test_reset_tokens_are_single_use_expiring_and_purpose_bound(
    authcore: AuthCore, clock: FrozenClock
) -> None:
    """Reused, expired, made-up and magic-link tokens are 400 INVALID_TOKEN; newPassword is
    accepted for password."""
    await authcore.register()
    token = await reset_token(authcore)
    body = {"token": token, "newPassword": NEW_PASSWORD}
    assert (await post(authcore, "/reset-password", body)).status_code == 200
    assert_error(await post(authcore, "/reset-password", body), 400, "INVALID_TOKEN")
    expired = await reset_token(authcore)
    clock.advance(authcore.client.services.settings.password_reset_ttl + 1)
    body = {"token": expired, "password": NEW_PASSWORD}
    assert_error(await post(authcore, "/reset-password", body), 400, "INVALID_TOKEN")
    magic = extract_token(await magic_link(authcore))
    body = {"token": magic, "password": NEW_PASSWORD}
    assert_error(await post(authcore, "/reset-password", body), 400, "INVALID_TOKEN")
    body = {"token": "made-up", "password": NEW_PASSWORD}
    assert_error(await post(authcore, "/reset-password", body), 400, "INVALID_TOKEN")
    # The magic link survived the wrong-purpose attempt.
    assert (await authcore.request("GET", f"/verify?token={magic}")).status_code == 302
    assert (await authcore.session()).json()["user"]["email"] == EMAIL


async def test_a_weak_new_password_is_refused_without_spending_the_token(
    authcore: AuthCore,
) -> None:
    """A too-short password is 400 VALIDATION_ERROR with fields; the token still works."""
    await authcore.register()
    token = await reset_token(authcore)
    weak = await post(authcore, "/reset-password", {"token": token, "password": "short"})
    body = assert_error(weak, 400, "VALIDATION_ERROR")
    assert set(body["error"]["fields"]) == {"password"}
    assert_error(await post(authcore, "/reset-password", {"token": token}), 400, "VALIDATION_ERROR")
    good = await post(authcore, "/reset-password", {"token": token, "password": NEW_PASSWORD})
    assert good.status_code == 200


# --- rate limits, documentation --------------------------------------------------------------


async def test_mail_routes_share_the_auth_route_limit(
    make_authcore: Callable[..., AuthCore], clock: FrozenClock
) -> None:
    """magic-link, verify-email, resend-verification, forgot-password and reset-password
    spend authRoute's 5 / 15 min; the 6th is 429 with Retry-After; GET /verify is not
    counted."""
    authcore = make_authcore(rate_limits=LIMITS)
    calls = [
        ("/magic-link", {"email": EMAIL}),
        ("/verify-email", {"token": "x"}),
        ("/resend-verification", {"email": EMAIL}),
        ("/forgot-password", {"email": EMAIL}),
        ("/reset-password", {"token": "x", "password": NEW_PASSWORD}),
    ]
    for index, (path, body) in enumerate(calls):
        response = await post(authcore, path, body)
        assert response.status_code != 429
        assert response.headers["ratelimit-remaining"] == str(4 - index)
    assert (await authcore.request("GET", "/verify?token=x")).status_code == 302
    retry_after = 0
    for path, body in calls:
        limited = await post(authcore, path, body)
        assert_error(limited, 429, "RATE_LIMITED")
        retry_after = int(limited.headers["retry-after"])
        assert 0 < retry_after <= 2 * 15 * 60
        assert limited.headers["ratelimit-limit"] == "5"
    clock.advance(retry_after)
    assert (await post(authcore, "/magic-link", {"email": EMAIL})).status_code == 200


async def test_openapi_lists_the_mail_routes(authcore: AuthCore) -> None:
    """<prefix>/openapi.json documents the six mail routes with their bodies."""
    paths = (await authcore.http.get(f"{PREFIX}/openapi.json")).json()["paths"]
    for method, path in (
        ("post", "/magic-link"),
        ("get", "/verify"),
        ("post", "/verify-email"),
        ("post", "/resend-verification"),
        ("post", "/forgot-password"),
        ("post", "/reset-password"),
    ):
        assert method in paths[PREFIX + path], path
    verify = paths[f"{PREFIX}/verify"]["get"]
    assert {p["name"] for p in verify["parameters"]} == {"token", "callbackUrl"}
    reset = paths[f"{PREFIX}/reset-password"]["post"]["requestBody"]
    assert reset["content"]["application/json"]["schema"]["required"] == ["token", "password"]


# --- through a real SMTP server --------------------------------------------------------------


async def test_magic_link_through_smtp_signs_in(make_authcore: Callable[..., AuthCore]) -> None:
    """Over a real SMTP server the magic-link mail arrives with text and HTML parts, and its
    link signs the browser in."""
    async with smtp_server() as smtp:
        authcore = make_authcore(mailer=smtp.mailer())
        await authcore.register()
        response = await post(authcore, "/magic-link", {"email": EMAIL, "callbackUrl": "/home"})
        assert response.json() == {"success": True}
        await authcore.client.delivered()
        [message] = await smtp.wait_for(1)
        assert smtp.to(EMAIL) == [message]
        link = extract_link(message)
        assert link in html_of(message).replace("&amp;", "&")
        assert "minutes" in text_of(message)
        followed = await authcore.request("GET", local(link))
        assert followed.status_code == 302 and followed.headers["location"] == "/home"
        assert (await authcore.session()).json()["user"]["email"] == EMAIL


async def test_password_reset_through_smtp(make_authcore: Callable[..., AuthCore]) -> None:
    """Over a real SMTP server the reset mail's token sets a new password."""
    async with smtp_server() as smtp:
        authcore = make_authcore(mailer=smtp.mailer())
        await authcore.register()
        await post(authcore, "/forgot-password", {"email": EMAIL})
        await authcore.client.delivered()
        [message] = await smtp.wait_for(1)
        body = {"token": extract_token(message), "password": NEW_PASSWORD}
        assert (await post(authcore, "/reset-password", body)).status_code == 200
        assert (await authcore.sign_in(password=NEW_PASSWORD, json=True)).status_code == 200
        assert (await authcore.sign_in(password=PASSWORD, json=True)).status_code == 401
