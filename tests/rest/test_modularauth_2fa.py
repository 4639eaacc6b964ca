"""The ModularAuth-Kit dialect with two-factor authentication on (authql's extension:
upstream has none): login and register answer a challenge instead of ``sid``, and
/login/2fa, /login/2fa/send, /login/2fa/setup and /login/2fa/setup/verify finish it."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httpx
import pyotp
import pytest

from authql.models import (
    BackupCode,
    OneTimeToken,
    RefreshToken,
    Session,
    TotpCredential,
    TwoFactorChallenge,
)
from authql.services.clock import FrozenClock
from tests.smtp import extract_code
from tests.support import PASSWORD, GraphQLClient

MakeClient = Callable[..., GraphQLClient]

PREFIX = "/auth"
EMAIL = "ada@example.com"
USER_KEYS = {"_id", "email", "isEmailVerified", "failedLoginAttempts", "createdAt", "updatedAt"}
REQUIRED_MESSAGE = "Two-factor authentication required"
SETUP_MESSAGE = "Two-factor authentication setup required"
WRONG_CODE = "The two-factor code you entered is incorrect"
DEAD_CHALLENGE = "This sign-in attempt has expired. Please log in again"
GRAPHQL_LOGIN = """
mutation($identifier: String!, $password: String!) {
  login(identifier: $identifier, password: $password) { status challengeToken }
}
"""


def error(code: str, message: str, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A ModularAuth-Kit error body."""
    return {"success": False, "error": {"code": code, "message": message, "details": details or []}}


def sid_header(response: httpx.Response) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith("sid="):
            return header
    return None


class Browser:
    """One browser: a cookie jar, the ``_csrf`` cookie from a first GET, the CSRF header on
    every mutation, and the secrets check on every answer."""

    def __init__(self, client: GraphQLClient, clock: FrozenClock) -> None:
        self.client = client
        self.http = client.http
        self.clock = clock
        #: Secrets handed out once (TOTP secret, backup codes, mailed codes).
        self.secrets: set[str] = set()

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        csrf: bool = True,
    ) -> httpx.Response:
        headers = {}
        token = self.http.cookies.get("_csrf")
        if csrf and method != "GET" and token:
            headers["x-csrf-token"] = token
        response = await self.http.request(method, PREFIX + path, json=body, headers=headers)
        await self.assert_clean(response, setup=path == "/login/2fa/setup")
        if path == "/login/2fa/setup" and response.status_code == 200:
            self.secrets.add(response.json()["data"]["secret"])
        if path == "/login/2fa/setup/verify" and response.status_code == 200:
            self.secrets.update(response.json()["data"]["backupCodes"])
        return response

    async def assert_clean(self, response: httpx.Response, *, setup: bool) -> None:
        """No password hash, stored digest (refresh, session, one-time, challenge, backup
        code), encrypted TOTP secret or earlier-issued secret anywhere; "totp" only as the
        method name (and in the setup answer's otpauth URL, which carries the secret)."""
        text = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        text += "\n" + response.text
        assert "$argon2" not in text and "passwordHash" not in text
        if not setup:
            assert "totp" not in text.replace('"totp"', "").lower()
        stored = [*await RefreshToken.all().values_list("digest", flat=True)]
        stored += await Session.exclude(token_digest=None).values_list("token_digest", flat=True)
        stored += await OneTimeToken.all().values_list("digest", flat=True)
        stored += await TwoFactorChallenge.all().values_list("digest", flat=True)
        stored += await BackupCode.all().values_list("digest", flat=True)
        for credential in await TotpCredential.all():
            stored += [b for b in (credential.secret_encrypted, credential.pending_encrypted) if b]
        for secret in [*stored, *self.secrets]:
            assert str(secret) not in text

    async def prime(self) -> None:
        await self.call("GET", "/me")

    async def register(self, email: str = EMAIL) -> httpx.Response:
        return await self.call("POST", "/register", {"email": email, "password": PASSWORD})

    async def login(self, email: str = EMAIL) -> httpx.Response:
        return await self.call("POST", "/login", {"identifier": email, "password": PASSWORD})

    async def challenge(self, email: str = EMAIL) -> str:
        response = await self.login(email)
        return assert_challenge(response, 200, ["totp", "backup_code"])

    async def complete(self, challenge: str, code: str, **extra: Any) -> httpx.Response:
        return await self.call(
            "POST", "/login/2fa", {"challengeToken": challenge, "code": code, **extra}
        )

    async def me(self) -> int:
        return (await self.call("GET", "/me")).status_code

    def code(self, secret: str) -> str:
        return pyotp.TOTP(secret).at(self.clock.now().timestamp())

    def next_code(self, secret: str) -> str:
        """Move to the next 30-second step and return its code (a step is used once)."""
        self.clock.advance(30)
        return self.code(secret)

    def wrong_code(self, secret: str) -> str:
        return "000000" if self.code(secret) != "000000" else "111111"

    async def enrol(self, email: str = EMAIL) -> tuple[str, list[str]]:
        """Turn TOTP on over GraphQL (ModularAuth-Kit has no enrolment while signed in);
        (secret, backup codes). The clock then moves a step."""
        token = (await self.client.login(email)).data["login"]["accessToken"]
        setup = await self.client.gql("mutation { beginTotpSetup { secret } }", token=token)
        secret = setup.data["beginTotpSetup"]["secret"]
        confirm = "mutation($c: String!) { confirmTotpSetup(code: $c) }"
        confirmed = await self.client.gql(confirm, {"c": self.code(secret)}, token=token)
        codes: list[str] = confirmed.data["confirmTotpSetup"]
        self.secrets.update([secret, *codes])
        self.clock.advance(30)
        return secret, codes


def assert_challenge(response: httpx.Response, status: int, methods: list[str]) -> str:
    """The challenge answer: success envelope, twoFactorRequired, no ``sid``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body == {
        "success": True,
        "message": REQUIRED_MESSAGE,
        "data": {
            "twoFactorRequired": True,
            "challengeToken": body["data"]["challengeToken"],
            "methods": methods,
        },
    }
    assert isinstance(body["data"]["challengeToken"], str) and body["data"]["challengeToken"]
    assert sid_header(response) is None
    return str(body["data"]["challengeToken"])


def assert_signed_in(response: httpx.Response) -> dict[str, Any]:
    """200 'Login successful' with the user and an HttpOnly ``sid``."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["message"] == "Login successful"
    assert set(body["data"]) == {"user"} and set(body["data"]["user"]) == USER_KEYS
    header = sid_header(response)
    assert header is not None
    flags = [part.strip().lower() for part in header.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
    return body["data"]["user"]  # type: ignore[no-any-return]


def assert_code_refused(response: httpx.Response, message: str = WRONG_CODE) -> None:
    assert response.status_code == 400, response.text
    assert response.json() == error("TOKEN_INVALID", message)
    assert sid_header(response) is None


@pytest.fixture
def make_browser(make_client: MakeClient, clock: FrozenClock) -> Callable[..., Browser]:
    """Browsers on one app (settings from the first call)."""
    app = None

    def make(**overrides: Any) -> Browser:
        nonlocal app
        if app is None:
            client = make_client(rest_dialects=(("modularauth", PREFIX),), **overrides)
            app = client.app
        else:
            client = make_client(app=app)
        return Browser(client, clock)

    return make


@pytest.fixture
async def browser(make_browser: Callable[..., Browser]) -> Browser:
    browser = make_browser()
    await browser.prime()
    return browser


async def enrolled(browser: Browser) -> tuple[str, list[str]]:
    assert (await browser.register()).status_code == 201
    await browser.call("POST", "/logout")
    return await browser.enrol()


# --- login answers the challenge -------------------------------------------------------------


async def test_login_with_2fa_answers_a_challenge_and_no_session(browser: Browser) -> None:
    """With 2FA on, /login answers 200 {success, message, data:{twoFactorRequired,
    challengeToken, methods}} without ``sid``; /me stays 401."""
    await enrolled(browser)
    await browser.challenge()
    assert await browser.me() == 401


async def test_a_totp_code_completes_the_sign_in(browser: Browser) -> None:
    """/login/2fa {challengeToken, code} with the authenticator's code answers 'Login
    successful' with the user and sets ``sid``."""
    secret, _ = await enrolled(browser)
    challenge = await browser.challenge()
    user = assert_signed_in(await browser.complete(challenge, browser.code(secret)))
    assert user["email"] == EMAIL
    assert await browser.me() == 200


@pytest.mark.parametrize("method", ["totp", "TOTP"])
async def test_the_method_can_be_named(browser: Browser, method: str) -> None:
    """``method`` names the factor, case-insensitively."""
    secret, _ = await enrolled(browser)
    challenge = await browser.challenge()
    assert_signed_in(await browser.complete(challenge, browser.code(secret), method=method))


async def test_a_backup_code_completes_the_sign_in_once(browser: Browser) -> None:
    """A backup code completes a challenge (method omitted or ``backup_code``); the same
    code on a later challenge is 400 TOKEN_INVALID."""
    _, backup_codes = await enrolled(browser)
    assert_signed_in(await browser.complete(await browser.challenge(), backup_codes[0]))
    assert_signed_in(
        await browser.complete(await browser.challenge(), backup_codes[1], method="backup_code")
    )
    assert_code_refused(await browser.complete(await browser.challenge(), backup_codes[0]))


async def test_a_replayed_totp_code_is_refused(browser: Browser) -> None:
    """A code (its time step) works once: again on a new challenge it is 400 TOKEN_INVALID;
    the next step's code works."""
    secret, _ = await enrolled(browser)
    code = browser.code(secret)
    assert_signed_in(await browser.complete(await browser.challenge(), code))
    challenge = await browser.challenge()
    assert_code_refused(await browser.complete(challenge, code))
    assert_signed_in(await browser.complete(challenge, browser.next_code(secret)))


async def test_a_challenge_is_single_use_and_expires(browser: Browser, clock: FrozenClock) -> None:
    """A completed challenge, or one older than five minutes, is 400 TOKEN_INVALID with the
    expired-attempt message."""
    secret, _ = await enrolled(browser)
    used = await browser.challenge()
    assert_signed_in(await browser.complete(used, browser.code(secret)))
    assert_code_refused(await browser.complete(used, browser.next_code(secret)), DEAD_CHALLENGE)
    old = await browser.challenge()
    clock.advance(301)
    assert_code_refused(await browser.complete(old, browser.code(secret)), DEAD_CHALLENGE)
    assert_code_refused(await browser.complete("not-a-challenge", "123456"), DEAD_CHALLENGE)


async def test_a_challenge_dies_after_five_wrong_codes(
    make_browser: Callable[..., Browser],
) -> None:
    """Five wrong codes kill the challenge: then even the right code is refused."""
    browser = make_browser(lockout_threshold=50)
    await browser.prime()
    secret, _ = await enrolled(browser)
    challenge = await browser.challenge()
    for _ in range(5):
        assert_code_refused(await browser.complete(challenge, browser.wrong_code(secret)))
    assert_code_refused(await browser.complete(challenge, browser.code(secret)), DEAD_CHALLENGE)


async def test_wrong_codes_lock_the_account(make_browser: Callable[..., Browser]) -> None:
    """Wrong codes count toward the lockout: at the threshold /login is 423 ACCOUNT_LOCKED."""
    browser = make_browser(lockout_threshold=3)
    await browser.prime()
    secret, _ = await enrolled(browser)
    challenge = await browser.challenge()
    for _ in range(3):
        assert_code_refused(await browser.complete(challenge, browser.wrong_code(secret)))
    locked = await browser.login()
    assert locked.status_code == 423
    assert locked.json()["error"]["code"] == "ACCOUNT_LOCKED"


async def test_a_locked_account_cannot_finish_a_live_challenge(
    make_browser: Callable[..., Browser],
) -> None:
    """Once wrong codes lock the account, the still-live challenge does not open a session
    with the right code: 423 ACCOUNT_LOCKED, no ``sid``."""
    browser = make_browser(lockout_threshold=3)
    await browser.prime()
    secret, _ = await enrolled(browser)
    challenge = await browser.challenge()
    for _ in range(3):
        assert_code_refused(await browser.complete(challenge, browser.wrong_code(secret)))
    response = await browser.complete(challenge, browser.code(secret))
    assert response.status_code == 423, response.text
    assert sid_header(response) is None


async def test_parallel_submissions_of_one_code_open_one_session(browser: Browser) -> None:
    """Twenty simultaneous /login/2fa calls with one valid code produce exactly one session."""
    secret, _ = await enrolled(browser)
    challenge = await browser.challenge()
    before = await Session.all().count()
    code = browser.code(secret)
    responses = await asyncio.gather(*(browser.complete(challenge, code) for _ in range(20)))
    assert sorted(r.status_code for r in responses) == [200] + [400] * 19
    assert await Session.all().count() == before + 1


async def test_completion_input_errors(browser: Browser) -> None:
    """Missing fields are 400 VALIDATION_ERROR with details; an unknown method too."""
    secret, _ = await enrolled(browser)
    missing = await browser.call("POST", "/login/2fa", {})
    assert missing.status_code == 400
    assert missing.json() == error(
        "VALIDATION_ERROR",
        "Validation failed",
        [
            {"field": "challengeToken", "message": "Required"},
            {"field": "code", "message": "Required"},
        ],
    )
    challenge = await browser.challenge()
    unknown = await browser.complete(challenge, browser.code(secret), method="carrier-pigeon")
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "VALIDATION_ERROR"
    assert unknown.json()["error"]["details"] == [{"field": "method", "message": "Unknown."}]


async def test_csrf_guards_the_two_factor_routes(browser: Browser) -> None:
    """Without the x-csrf-token header every new route is 403 FORBIDDEN."""
    secret, _ = await enrolled(browser)
    challenge = await browser.challenge()
    forbidden = error("FORBIDDEN", "You are not authorized to perform this action")
    for path, body in (
        ("/login/2fa", {"challengeToken": challenge, "code": browser.code(secret)}),
        ("/login/2fa/send", {"challengeToken": challenge, "method": "email"}),
        ("/login/2fa/setup", {"challengeToken": challenge}),
        ("/login/2fa/setup/verify", {"challengeToken": challenge, "code": "123456"}),
    ):
        response = await browser.call("POST", path, body, csrf=False)
        assert response.status_code == 403 and response.json() == forbidden, path
    assert_signed_in(await browser.complete(challenge, browser.code(secret)))


async def test_the_challenge_token_is_never_a_session(browser: Browser) -> None:
    """As the ``sid`` cookie the challenge token is 401 (and cleared); as a Bearer access
    token on GraphQL it is refused; it still completes afterwards."""
    secret, _ = await enrolled(browser)
    challenge = await browser.challenge()
    browser.http.cookies.set("sid", challenge)
    response = await browser.call("GET", "/me")
    assert response.status_code == 401
    cleared = sid_header(response)
    assert cleared is not None and "max-age=0" in cleared.lower()
    assert await browser.client.me(challenge) is None
    assert_signed_in(await browser.complete(challenge, browser.code(secret)))


# --- texted and mailed codes -----------------------------------------------------------------


async def test_a_mailed_code_completes_the_sign_in(browser: Browser) -> None:
    """With a verified address, ``email`` is offered: /login/2fa/send mails a code that
    /login/2fa {method:'email'} takes."""
    assert (await browser.register()).status_code == 201
    await browser.call("POST", "/resend-verification")
    mails, _ = await browser.client.delivered()
    verified = await browser.call("POST", "/verify-email", {"code": extract_code(mails[-1])})
    assert verified.status_code == 200, verified.text
    await browser.enrol()
    response = await browser.login()
    challenge = assert_challenge(response, 200, ["totp", "backup_code", "email"])
    sent = await browser.call(
        "POST", "/login/2fa/send", {"challengeToken": challenge, "method": "email"}
    )
    assert sent.status_code == 200
    assert sent.json() == {
        "success": True,
        "message": "Two-factor code has been sent",
        "data": None,
    }
    mails, _ = await browser.client.delivered()
    code = extract_code(mails[-1])
    assert_code_refused(await browser.complete(challenge, "999999", method="email"))
    assert_signed_in(await browser.complete(challenge, code, method="email"))
    again = await browser.login()
    reused = assert_challenge(again, 200, ["totp", "backup_code", "email"])
    assert_code_refused(await browser.complete(reused, code, method="email"))


async def test_send_refuses_a_method_the_account_lacks(browser: Browser) -> None:
    """``sms`` without a verified phone (or ``email`` without a verified address) is 400
    VALIDATION_ERROR on ``method``; a dead challenge is 400 TOKEN_INVALID."""
    await enrolled(browser)
    challenge = await browser.challenge()
    for method in ("sms", "email"):
        response = await browser.call(
            "POST", "/login/2fa/send", {"challengeToken": challenge, "method": method}
        )
        assert response.status_code == 400
        assert response.json()["error"]["details"] == [
            {"field": "method", "message": "Unavailable."}
        ]
    dead = await browser.call(
        "POST", "/login/2fa/send", {"challengeToken": "nope", "method": "email"}
    )
    assert_code_refused(dead, DEAD_CHALLENGE)


# --- the setup-required policy ---------------------------------------------------------------


def assert_setup_challenge(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    challenge = body["data"]["challengeToken"]
    assert body == {
        "success": True,
        "message": SETUP_MESSAGE,
        "data": {"twoFactorSetupRequired": True, "challengeToken": challenge, "methods": ["totp"]},
    }
    assert sid_header(response) is None
    return str(challenge)


async def test_register_under_the_policy_answers_the_setup_challenge(
    make_browser: Callable[..., Browser],
) -> None:
    """With require_two_factor, register answers 201 with the setup challenge and no ``sid``;
    /login/2fa/setup and /setup/verify enrol TOTP, then /login/2fa with the next code signs
    in."""
    browser = make_browser(require_two_factor=True)
    await browser.prime()
    challenge = assert_setup_challenge(await browser.register(), 201)
    assert await browser.me() == 401
    early = await browser.complete(challenge, "123456")
    assert_code_refused(early, DEAD_CHALLENGE)
    setup = await browser.call("POST", "/login/2fa/setup", {"challengeToken": challenge})
    assert setup.status_code == 200
    body = setup.json()
    assert body["success"] is True and body["message"] == "Two-factor setup started"
    data = body["data"]
    assert set(data) == {"secret", "qrCode", "otpauthUrl"}
    assert data["otpauthUrl"].startswith("otpauth://totp/") and EMAIL in unquote(data["otpauthUrl"])
    png = base64.b64decode(data["qrCode"].removeprefix("data:image/png;base64,"))
    assert png.startswith(b"\x89PNG")
    secret = data["secret"]
    wrong = await browser.call(
        "POST",
        "/login/2fa/setup/verify",
        {"challengeToken": challenge, "code": browser.wrong_code(secret)},
    )
    assert_code_refused(wrong)
    confirmed = await browser.call(
        "POST",
        "/login/2fa/setup/verify",
        {"challengeToken": challenge, "code": browser.code(secret)},
    )
    assert confirmed.status_code == 200
    assert confirmed.json()["message"] == "Two-factor authentication enabled"
    assert len(confirmed.json()["data"]["backupCodes"]) == 10
    assert sid_header(confirmed) is None
    assert_signed_in(await browser.complete(challenge, browser.next_code(secret)))
    assert await browser.me() == 200


async def test_login_under_the_policy_answers_the_setup_challenge(
    make_browser: Callable[..., Browser],
) -> None:
    """An account without a factor that logs in under the policy gets the setup challenge
    with 200 and no ``sid``; a sign-in challenge is not a setup challenge."""
    browser = make_browser(require_two_factor=True)
    await browser.prime()
    assert_setup_challenge(await browser.register(), 201)
    challenge = assert_setup_challenge(await browser.login(), 200)
    assert await browser.me() == 401
    assert_code_refused(await browser.complete(challenge, "123456"), DEAD_CHALLENGE)


async def test_setup_routes_take_only_a_live_setup_challenge(
    make_browser: Callable[..., Browser],
) -> None:
    """/login/2fa/setup and /setup/verify refuse an unknown token and a sign-in challenge
    (400 TOKEN_INVALID), and need the body fields."""
    browser = make_browser()
    await browser.prime()
    await enrolled(browser)
    sign_in = await browser.challenge()
    for token in ("nope", sign_in):
        setup = await browser.call("POST", "/login/2fa/setup", {"challengeToken": token})
        assert_code_refused(setup, DEAD_CHALLENGE)
        confirm = await browser.call(
            "POST", "/login/2fa/setup/verify", {"challengeToken": token, "code": "123456"}
        )
        assert_code_refused(confirm, DEAD_CHALLENGE)
    missing = await browser.call("POST", "/login/2fa/setup", {})
    assert missing.status_code == 400
    assert missing.json()["error"]["details"] == [
        {"field": "challengeToken", "message": "Required"}
    ]


# --- one account, every surface --------------------------------------------------------------


async def test_a_graphql_challenge_completes_here(browser: Browser) -> None:
    """A challenge from GraphQL's login is authql's one challenge: /login/2fa completes it
    and sets ``sid``."""
    secret, _ = await enrolled(browser)
    login = await browser.client.gql(GRAPHQL_LOGIN, {"identifier": EMAIL, "password": PASSWORD})
    assert login.data["login"]["status"] == "TWO_FACTOR_REQUIRED"
    challenge = login.data["login"]["challengeToken"]
    assert_signed_in(await browser.complete(challenge, browser.code(secret)))
