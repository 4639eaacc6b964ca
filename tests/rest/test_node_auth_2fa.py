"""node-auth's two-factor routes at /auth: TOTP enrolment, the challenge every token-issuing
route answers with 2FA on, completing it with TOTP, backup, SMS and mailed codes, the
setup-required policy, and disabling with a current code."""

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
    AuthEventRecord,
    BackupCode,
    OneTimeToken,
    RefreshToken,
    Session,
    TotpCredential,
    TwoFactorChallenge,
    User,
)
from authql.services.clock import FrozenClock
from tests.smtp import extract_code, extract_token
from tests.support import PASSWORD, GraphQLClient

MakeClient = Callable[..., GraphQLClient]

PREFIX = "/auth"
EMAIL = "ada@example.com"
OTHER = "grace@example.com"
PHONE = "+14155550100"
NEW_PASSWORD = "a brand new passphrase"
BEARER = {"x-auth-strategy": "bearer"}
SUCCESS = {"success": True}
TOKEN_KEYS = {"success", "accessToken", "refreshToken"}
CHALLENGE_KEYS = {"requiresTwoFactor", "tempToken", "available2faMethods"}
NO_TOKEN = {"error": "No access token provided"}
BAD_TOKEN = {"error": "Invalid or expired access token"}
INVALID_TOTP = {"error": "Invalid TOTP code"}
INVALID_TEMP = {"error": "Invalid or expired temp token", "code": "INVALID_TEMP_TOKEN"}
TEMP_REQUIRED = {"error": "tempToken is required", "code": "TEMP_TOKEN_REQUIRED"}
MODE_TEMP_REQUIRED = {
    "error": "tempToken is required for 2FA mode",
    "code": "TEMP_TOKEN_REQUIRED",
}
INVALID_SMS = {"error": "Invalid or expired SMS code"}
INVALID_MAGIC_LINK = {"error": "Invalid magic link token", "code": "INVALID_MAGIC_LINK"}
CSRF_INVALID = {"error": "CSRF token validation failed", "code": "CSRF_INVALID"}


# --- helpers ---------------------------------------------------------------------------------


class NodeAuth:
    """Speaks node-auth to an in-process app and checks every answer for leaked secrets."""

    def __init__(self, client: GraphQLClient, clock: FrozenClock) -> None:
        self.client = client
        self.http = client.http
        self.clock = clock
        #: Secrets that may appear only in the one answer that hands them out.
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
        # /2fa/setup hands out the secret and its otpauth:// URL by design: only its
        # headers are checked.
        await self.assert_clean(response, with_body=path != "/2fa/setup")
        return response

    async def post(
        self, path: str, body: dict[str, Any] | None = None, **kw: Any
    ) -> httpx.Response:
        return await self.call("POST", path, body, **kw)

    async def assert_clean(self, response: httpx.Response, *, with_body: bool = True) -> None:
        """No password hash, stored digest (refresh, session, one-time, challenge, backup
        code), encrypted TOTP secret, watched secret (TOTP secret, backup codes, texted or
        mailed codes) or lower-case "totp" anywhere. Documented names pass: the flag
        ``isTotpEnabled`` (case-sensitive), the field ``totpCode`` and the method name
        ``"totp"`` in ``available2faMethods``."""
        text = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        if with_body:
            text += response.text
        visible = text.replace('"totpCode"', "").replace('"totp"', "")
        assert "$argon2" not in visible
        assert "totp" not in visible
        assert "otpauth" not in visible.lower()
        stored = [*await RefreshToken.all().values_list("digest", flat=True)]
        stored += await Session.exclude(token_digest=None).values_list("token_digest", flat=True)
        stored += await OneTimeToken.all().values_list("digest", flat=True)
        stored += await TwoFactorChallenge.all().values_list("digest", flat=True)
        stored += await BackupCode.all().values_list("digest", flat=True)
        for credential in await TotpCredential.all():
            stored += [b for b in (credential.secret_encrypted, credential.pending_encrypted) if b]
        for secret in [*stored, *self.secrets]:
            assert str(secret) not in text

    # --- accounts and factors -------------------------------------------------------------

    async def register(self, email: str = EMAIL, **fields: Any) -> str:
        response = await self.post("/register", {"email": email, "password": PASSWORD, **fields})
        assert response.status_code == 201, response.text
        return str(response.json()["userId"])

    async def login(self, email: str = EMAIL, *, bearer: bool = True) -> httpx.Response:
        return await self.post("/login", {"email": email, "password": PASSWORD}, bearer=bearer)

    async def tokens(self, email: str = EMAIL) -> dict[str, str]:
        response = await self.login(email)
        assert response.status_code == 200 and "accessToken" in response.json(), response.text
        return response.json()  # type: ignore[no-any-return]

    async def temp_token(self, email: str = EMAIL) -> str:
        """Log in to an account with 2FA on and return the challenge's tempToken."""
        response = await self.login(email)
        assert response.status_code == 200, response.text
        assert set(response.json()) == CHALLENGE_KEYS, response.text
        return str(response.json()["tempToken"])

    async def me(self, token: str) -> dict[str, Any]:
        response = await self.call("GET", "/me", token=token)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def code(self, secret: str) -> str:
        """The authenticator's code for ``secret`` right now."""
        return pyotp.TOTP(secret).at(self.clock.now().timestamp())

    def next_code(self, secret: str) -> str:
        """Move to the next 30-second step and return its code (a step is used once)."""
        self.clock.advance(30)
        return self.code(secret)

    async def setup(self, *, token: str | None = None, **body: Any) -> str:
        response = await self.post("/2fa/setup", body or None, token=token)
        assert response.status_code == 200, response.text
        secret = str(response.json()["secret"])
        self.secrets.add(secret)
        return secret

    async def verify_setup(
        self, secret: str, *, token: str | None = None, **body: Any
    ) -> list[str]:
        response = await self.post(
            "/2fa/verify-setup", {"token": self.code(secret), **body}, token=token
        )
        assert response.status_code == 200, response.text
        backup_codes: list[str] = response.json()["backupCodes"]
        self.secrets.update(backup_codes)
        return backup_codes

    async def enrol(self, email: str = EMAIL) -> tuple[str, list[str]]:
        """Turn TOTP on for ``email`` over node-auth; (secret, backup codes). The clock then
        moves on a step, so the next code is fresh."""
        access = (await self.tokens(email))["accessToken"]
        secret = await self.setup(token=access)
        backup_codes = await self.verify_setup(secret, token=access)
        self.clock.advance(30)
        return secret, backup_codes

    async def verify_phone_and_email(self, email: str = EMAIL) -> None:
        """Sign in once by magic link (verifies the address) and once by SMS (verifies the
        number), as node-auth clients do."""
        await self.post("/magic-link/send", {"email": email})
        mails, _ = await self.client.delivered()
        link_token = extract_token(mails[-1])
        verified = await self.post("/magic-link/verify", {"token": link_token}, bearer=True)
        assert verified.status_code == 200, verified.text
        user = await User.get(email=email)
        await self.post("/sms/send", {"userId": str(user.id)})
        sms = await self.texted()
        signed_in = await self.post(
            "/sms/verify", {"userId": str(user.id), "code": sms}, bearer=True
        )
        assert signed_in.status_code == 200, signed_in.text

    async def texted(self) -> str:
        _, texts = await self.client.delivered()
        assert texts, "no text sent"
        code = extract_code(texts[-1])
        self.secrets.add(code)
        return code

    async def mailed_code(self, to: str = EMAIL) -> str:
        mails, _ = await self.client.delivered()
        mine = [mail for mail in mails if mail.to == to]
        assert mine, f"no mail to {to}"
        code = extract_code(mine[-1])
        self.secrets.add(code)
        return code


def node_auth(make_client: MakeClient, clock: FrozenClock, **overrides: Any) -> NodeAuth:
    return NodeAuth(make_client(rest_dialects=(("node-auth", PREFIX),), **overrides), clock)


@pytest.fixture
def api(make_client: MakeClient, clock: FrozenClock) -> NodeAuth:
    return node_auth(make_client, clock)


def cookies_set(response: httpx.Response) -> set[str]:
    return {header.split("=", 1)[0] for header in response.headers.get_list("set-cookie")}


def assert_issued(response: httpx.Response, *, bearer: bool) -> str:
    """node-auth's token issue (bearer body or the two HttpOnly cookies); the access token."""
    assert response.status_code == 200, response.text
    if bearer:
        assert set(response.json()) == TOKEN_KEYS
        assert "set-cookie" not in response.headers
        return str(response.json()["accessToken"])
    assert response.json() == SUCCESS
    assert cookies_set(response) == {"accessToken", "refreshToken"}
    assert all("httponly" in h.lower() for h in response.headers.get_list("set-cookie"))
    return str(response.cookies["accessToken"])


def assert_challenge(response: httpx.Response, methods: list[str]) -> str:
    """200 {requiresTwoFactor, tempToken, available2faMethods}, no cookie, no token."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == CHALLENGE_KEYS
    assert body["requiresTwoFactor"] is True
    assert body["available2faMethods"] == methods
    assert isinstance(body["tempToken"], str) and body["tempToken"]
    assert "set-cookie" not in response.headers
    return str(body["tempToken"])


def error(response: httpx.Response) -> tuple[int, Any]:
    return response.status_code, response.json()


# --- /2fa/setup and /2fa/verify-setup --------------------------------------------------------


async def test_setup_returns_secret_otpauth_url_and_png_qr_code(api: NodeAuth) -> None:
    """/2fa/setup answers {secret, otpauthUrl, qrCode} with a PNG data URI; nothing is
    enforced until the code is confirmed."""
    await api.register()
    access = (await api.tokens())["accessToken"]
    response = await api.post("/2fa/setup", token=access)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"secret", "otpauthUrl", "qrCode"}
    assert body["otpauthUrl"].startswith("otpauth://totp/")
    assert EMAIL in unquote(body["otpauthUrl"])
    assert f"secret={body['secret']}" in body["otpauthUrl"]
    assert body["qrCode"].startswith("data:image/png;base64,")
    png = base64.b64decode(body["qrCode"].removeprefix("data:image/png;base64,"))
    assert png.startswith(b"\x89PNG")
    assert (await api.me(access))["isTotpEnabled"] is False
    assert "accessToken" in (await api.login()).json()
    with_code = await api.post("/2fa/setup", {"code": "000000"}, token=access)
    assert with_code.status_code == 200 and with_code.json()["secret"] != body["secret"]


async def test_setup_needs_a_session(api: NodeAuth) -> None:
    """Anonymously /2fa/setup and /2fa/verify-setup are 403 like every protected route."""
    assert error(await api.post("/2fa/setup")) == (403, NO_TOKEN)
    assert error(await api.post("/2fa/verify-setup", {"token": "123456"})) == (403, NO_TOKEN)
    bad = await api.post("/2fa/setup", token="not-a-token")
    assert error(bad) == (403, BAD_TOKEN)


async def test_verify_setup_enables_2fa_and_returns_backup_codes(api: NodeAuth) -> None:
    """A code from the app enables 2FA ({success, backupCodes}); the posted secret is
    ignored, the current session stays and every other one ends."""
    await api.register()
    other = (await api.tokens())["accessToken"]
    access = (await api.tokens())["accessToken"]
    secret = await api.setup(token=access)
    response = await api.post(
        "/2fa/verify-setup",
        {"token": api.code(secret), "secret": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
        token=access,
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"success", "backupCodes"} and body["success"] is True
    assert len(body["backupCodes"]) == 10 and len(set(body["backupCodes"])) == 10
    me = await api.me(access)
    assert me["isTotpEnabled"] is True
    assert error(await api.call("GET", "/me", token=other)) == (403, BAD_TOKEN)


async def test_verify_setup_errors(api: NodeAuth) -> None:
    """Before /2fa/setup: 400; a wrong code: 400 {error:'Invalid TOTP code'}; an earlier
    setup's secret no longer confirms once a newer one is pending."""
    await api.register()
    access = (await api.tokens())["accessToken"]
    early = await api.post("/2fa/verify-setup", {"token": "123456"}, token=access)
    assert error(early) == (400, {"error": "No two-factor setup in progress"})
    first = await api.setup(token=access)
    second = await api.setup(token=access)
    wrong = await api.post("/2fa/verify-setup", {"token": "000000"}, token=access)
    assert error(wrong) == (400, INVALID_TOTP)
    stale = await api.post("/2fa/verify-setup", {"token": api.code(first)}, token=access)
    if api.code(first) != api.code(second):
        assert error(stale) == (400, INVALID_TOTP)
    missing = await api.post("/2fa/verify-setup", {}, token=access)
    assert error(missing) == (400, INVALID_TOTP)
    assert (await api.me(access))["isTotpEnabled"] is False


async def test_setup_with_2fa_on_needs_a_current_code_and_replaces_the_authenticator(
    api: NodeAuth,
) -> None:
    """With 2FA on, /2fa/setup without a code is 400 and with a wrong one 401; with a
    current code it starts a new secret that verify-setup swaps in."""
    await api.register()
    old, _ = await api.enrol()
    temp = await api.temp_token()
    access = assert_issued(
        await api.post("/2fa/verify", {"tempToken": temp, "totpCode": api.code(old)}, bearer=True),
        bearer=True,
    )
    refused = await api.post("/2fa/setup", token=access)
    assert error(refused) == (
        400,
        {
            "error": "Two-factor authentication is already enabled: send a current code to "
            "replace the authenticator"
        },
    )
    api.clock.advance(30)
    wrong = await api.post("/2fa/setup", {"code": "000000"}, token=access)
    assert error(wrong) == (401, INVALID_TOTP)
    new = await api.setup(token=access, code=api.code(old))
    assert new != old
    await api.verify_setup(new, token=access)
    temp = await api.temp_token()
    stale = await api.post(
        "/2fa/verify", {"tempToken": temp, "totpCode": api.next_code(old)}, bearer=True
    )
    if api.code(old) != api.code(new):
        assert error(stale) == (401, INVALID_TOTP)
    done = await api.post("/2fa/verify", {"tempToken": temp, "totpCode": api.code(new)})
    assert_issued(done, bearer=False)


# --- the challenge ---------------------------------------------------------------------------


@pytest.mark.parametrize("bearer", [False, True])
async def test_login_with_2fa_answers_the_challenge(api: NodeAuth, bearer: bool) -> None:
    """Password login of an account with TOTP on answers {requiresTwoFactor, tempToken,
    available2faMethods:['totp']} in both modes, and opens no session."""
    await api.register()
    await api.enrol()
    sessions = await Session.all().count()
    response = await api.login(bearer=bearer)
    assert_challenge(response, ["totp"])
    assert await Session.all().count() == sessions


async def test_available_methods_name_sms_and_magic_link(api: NodeAuth) -> None:
    """A verified number adds 'sms' and a verified address 'magic-link' (backup codes go
    under 'totp')."""
    await api.register(phone=PHONE)
    await api.verify_phone_and_email()
    await api.enrol()
    assert_challenge(await api.login(), ["totp", "sms", "magic-link"])


@pytest.mark.parametrize("route", ["login", "magic-link", "sms", "reset-password"])
async def test_every_token_issuing_route_reaches_the_challenge(api: NodeAuth, route: str) -> None:
    """/login, /magic-link/verify, /sms/verify and bearer-mode /reset-password all answer
    the challenge instead of tokens when the account has 2FA on."""
    user_id = await api.register(phone=PHONE)
    await api.verify_phone_and_email()
    await api.enrol()
    sessions = await Session.all().count()
    if route == "login":
        response = await api.login()
    elif route == "magic-link":
        await api.post("/magic-link/send", {"email": EMAIL})
        mails, _ = await api.client.delivered()
        response = await api.post(
            "/magic-link/verify", {"token": extract_token(mails[-1])}, bearer=True
        )
    elif route == "sms":
        await api.post("/sms/send", {"userId": user_id})
        response = await api.post(
            "/sms/verify", {"userId": user_id, "code": await api.texted()}, bearer=True
        )
    else:
        await api.post("/forgot-password", {"email": EMAIL})
        mails, _ = await api.client.delivered()
        response = await api.post(
            "/reset-password",
            {"token": extract_token(mails[-1]), "password": NEW_PASSWORD},
            bearer=True,
        )
    assert_challenge(response, ["totp", "sms", "magic-link"])
    assert await Session.all().count() == sessions


@pytest.mark.parametrize("bearer", [False, True])
async def test_totp_completes_the_challenge(api: NodeAuth, bearer: bool) -> None:
    """/2fa/verify {tempToken, totpCode} issues cookies, or tokens with
    X-Auth-Strategy: bearer; the challenge is then spent."""
    await api.register()
    secret, _ = await api.enrol()
    temp = await api.temp_token()
    response = await api.post(
        "/2fa/verify", {"tempToken": temp, "totpCode": api.code(secret)}, bearer=bearer
    )
    access = assert_issued(response, bearer=bearer)
    me = await api.me(access)
    assert me["email"] == EMAIL and me["isTotpEnabled"] is True
    again = await api.post("/2fa/verify", {"tempToken": temp, "totpCode": api.next_code(secret)})
    assert error(again) == (401, INVALID_TEMP)


async def test_a_replayed_totp_code_is_refused(api: NodeAuth) -> None:
    """A TOTP code works once: the same code on a fresh challenge is 401, the next step's
    code works."""
    await api.register()
    secret, _ = await api.enrol()
    code = api.code(secret)
    first = await api.post("/2fa/verify", {"tempToken": await api.temp_token(), "totpCode": code})
    assert_issued(first, bearer=False)
    temp = await api.temp_token()
    replay = await api.post("/2fa/verify", {"tempToken": temp, "totpCode": code}, bearer=True)
    assert error(replay) == (401, INVALID_TOTP)
    fresh = await api.post(
        "/2fa/verify", {"tempToken": temp, "totpCode": api.next_code(secret)}, bearer=True
    )
    assert_issued(fresh, bearer=True)


async def test_parallel_submissions_of_one_code_open_one_session(api: NodeAuth) -> None:
    """Twenty simultaneous /2fa/verify calls with one valid code produce exactly one
    session; the others are refused."""
    await api.register()
    secret, _ = await api.enrol()
    temp = await api.temp_token()
    sessions = await Session.all().count()
    body = {"tempToken": temp, "totpCode": api.code(secret)}
    responses = await asyncio.gather(
        *(api.post("/2fa/verify", body, bearer=True) for _ in range(20))
    )
    assert sorted(r.status_code for r in responses) == [200] + [401] * 19
    assert await Session.all().count() == sessions + 1


async def test_verify_errors(api: NodeAuth) -> None:
    """Missing tempToken 400 TEMP_TOKEN_REQUIRED; unknown or expired 401
    INVALID_TEMP_TOKEN; a wrong code 401 {error:'Invalid TOTP code'}."""
    await api.register()
    secret, _ = await api.enrol()
    missing = await api.post("/2fa/verify", {"totpCode": api.code(secret)})
    assert error(missing) == (400, TEMP_REQUIRED)
    unknown = await api.post("/2fa/verify", {"tempToken": "nope", "totpCode": api.code(secret)})
    assert error(unknown) == (401, INVALID_TEMP)
    temp = await api.temp_token()
    wrong = await api.post("/2fa/verify", {"tempToken": temp, "totpCode": "000000"})
    assert error(wrong) == (401, INVALID_TOTP)
    api.clock.advance(301)
    expired = await api.post("/2fa/verify", {"tempToken": temp, "totpCode": api.code(secret)})
    assert error(expired) == (401, INVALID_TEMP)


async def test_a_challenge_dies_after_five_wrong_codes(api: NodeAuth) -> None:
    """Five wrong codes kill the tempToken (then even the right code is INVALID_TEMP_TOKEN)
    and count toward the account lockout."""
    await api.register()
    secret, _ = await api.enrol()
    temp = await api.temp_token()
    for _ in range(5):
        wrong = await api.post("/2fa/verify", {"tempToken": temp, "totpCode": "000000"})
        assert error(wrong) == (401, INVALID_TOTP)
    right = await api.post("/2fa/verify", {"tempToken": temp, "totpCode": api.code(secret)})
    assert error(right) == (401, INVALID_TEMP)
    locked = await api.login()
    assert locked.status_code == 423 and locked.json()["code"] == "ACCOUNT_LOCKED"


async def test_a_foreign_challenge_does_not_take_my_code(api: NodeAuth) -> None:
    """Another account's tempToken with my valid code is refused."""
    await api.register()
    await api.register(OTHER)
    mine, _ = await api.enrol()
    await api.enrol(OTHER)
    foreign = await api.temp_token(OTHER)
    response = await api.post("/2fa/verify", {"tempToken": foreign, "totpCode": api.code(mine)})
    assert error(response) == (401, INVALID_TOTP)


async def test_a_backup_code_completes_the_challenge_once(api: NodeAuth) -> None:
    """A backup code in totpCode completes the challenge once (BACKUP_CODE_USED reports
    nine left); reused it is 401."""
    user_id = await api.register()
    _, backup_codes = await api.enrol()
    response = await api.post(
        "/2fa/verify", {"tempToken": await api.temp_token(), "totpCode": backup_codes[0]}
    )
    assert_issued(response, bearer=False)
    event = await AuthEventRecord.get(type="BACKUP_CODE_USED", user_id=user_id)
    assert event.detail["remaining"] == 9
    reused = await api.post(
        "/2fa/verify", {"tempToken": await api.temp_token(), "totpCode": backup_codes[0]}
    )
    assert error(reused) == (401, INVALID_TOTP)


async def test_the_temp_token_is_never_an_access_or_refresh_token(api: NodeAuth) -> None:
    """Bearer tempToken is 403 on /me and every protected 2FA route, and 401 on /refresh."""
    await api.register()
    await api.enrol()
    temp = await api.temp_token()
    assert error(await api.call("GET", "/me", token=temp)) == (403, BAD_TOKEN)
    assert error(await api.call("GET", "/sessions", token=temp)) == (403, BAD_TOKEN)
    disable = await api.post("/2fa/disable", {"code": "123456"}, token=temp)
    assert error(disable) == (403, BAD_TOKEN)
    assert error(await api.post("/2fa/setup", token=temp)) == (403, BAD_TOKEN)
    refresh = await api.post("/refresh", {"refreshToken": temp}, bearer=True)
    assert refresh.status_code == 401


# --- SMS and email as second factors (mode: '2fa') -------------------------------------------


@pytest.mark.parametrize("bearer", [False, True])
async def test_sms_completes_the_challenge(api: NodeAuth, bearer: bool) -> None:
    """/sms/send {mode:'2fa', tempToken} texts a code; /sms/verify {mode:'2fa', tempToken,
    code} issues tokens once."""
    await api.register(phone=PHONE)
    await api.verify_phone_and_email()
    await api.enrol()
    temp = await api.temp_token()
    sent = await api.post("/sms/send", {"mode": "2fa", "tempToken": temp})
    assert error(sent) == (200, SUCCESS)
    code = await api.texted()
    body = {"mode": "2fa", "tempToken": temp, "code": code}
    response = await api.post("/sms/verify", body, bearer=bearer)
    access = assert_issued(response, bearer=bearer)
    assert (await api.me(access))["loginProvider"] == "local"
    assert error(await api.post("/sms/verify", body)) == (401, INVALID_TEMP)


async def test_sms_second_factor_errors(api: NodeAuth) -> None:
    """Without tempToken 400 TEMP_TOKEN_REQUIRED, a dead one 401 INVALID_TEMP_TOKEN, a
    wrong or another challenge's code 401, no code 400, no verified number PHONE_NOT_SET."""
    await api.register(phone=PHONE)
    await api.verify_phone_and_email()
    await api.register(OTHER)
    await api.enrol()
    await api.enrol(OTHER)
    for path in ("/sms/send", "/sms/verify"):
        missing = await api.post(path, {"mode": "2fa", "code": "123456"})
        assert error(missing) == (400, MODE_TEMP_REQUIRED)
        dead = await api.post(path, {"mode": "2fa", "tempToken": "nope", "code": "123456"})
        assert error(dead) == (401, INVALID_TEMP)
    first = await api.temp_token()
    await api.post("/sms/send", {"mode": "2fa", "tempToken": first})
    old_code = await api.texted()
    second = await api.temp_token()
    await api.post("/sms/send", {"mode": "2fa", "tempToken": first})
    foreign = await api.post(
        "/sms/verify", {"mode": "2fa", "tempToken": second, "code": await api.texted()}
    )
    assert error(foreign) == (401, INVALID_SMS)
    wrong = await api.post("/sms/verify", {"mode": "2fa", "tempToken": second, "code": old_code})
    assert error(wrong) == (401, INVALID_SMS)
    no_code = await api.post("/sms/verify", {"mode": "2fa", "tempToken": second})
    assert error(no_code) == (400, {"error": "code is required"})
    no_phone = await api.post(
        "/sms/send", {"mode": "2fa", "tempToken": await api.temp_token(OTHER)}
    )
    assert error(no_phone) == (
        400,
        {"error": "User does not have a phone number configured", "code": "PHONE_NOT_SET"},
    )


@pytest.mark.parametrize("bearer", [False, True])
async def test_a_mailed_code_completes_the_challenge_through_magic_link_routes(
    api: NodeAuth, bearer: bool
) -> None:
    """/magic-link/send {mode:'2fa', tempToken} mails a code; /magic-link/verify
    {mode:'2fa', tempToken, token: code} issues tokens once."""
    await api.register(phone=PHONE)
    await api.verify_phone_and_email()
    await api.enrol()
    temp = await api.temp_token()
    sent = await api.post("/magic-link/send", {"mode": "2fa", "tempToken": temp})
    assert error(sent) == (200, SUCCESS)
    body = {"mode": "2fa", "tempToken": temp, "token": await api.mailed_code()}
    response = await api.post("/magic-link/verify", body, bearer=bearer)
    assert_issued(response, bearer=bearer)
    assert error(await api.post("/magic-link/verify", body)) == (401, INVALID_TEMP)


async def test_mailed_second_factor_errors(api: NodeAuth) -> None:
    """Without tempToken 400 TEMP_TOKEN_REQUIRED, a dead one 401 INVALID_TEMP_TOKEN, a
    wrong code 401 INVALID_MAGIC_LINK, an unverified address 400 EMAIL_NOT_VERIFIED."""
    await api.register(phone=PHONE)
    await api.verify_phone_and_email()
    await api.register(OTHER)
    await api.enrol()
    await api.enrol(OTHER)
    for path in ("/magic-link/send", "/magic-link/verify"):
        missing = await api.post(path, {"mode": "2fa", "token": "123456"})
        assert error(missing) == (400, MODE_TEMP_REQUIRED)
        dead = await api.post(path, {"mode": "2fa", "tempToken": "nope", "token": "123456"})
        assert error(dead) == (401, INVALID_TEMP)
    temp = await api.temp_token()
    await api.post("/magic-link/send", {"mode": "2fa", "tempToken": temp})
    code = await api.mailed_code()
    wrong = "000000" if code != "000000" else "111111"
    response = await api.post(
        "/magic-link/verify", {"mode": "2fa", "tempToken": temp, "token": wrong}
    )
    assert error(response) == (401, INVALID_MAGIC_LINK)
    unverified = await api.post(
        "/magic-link/send", {"mode": "2fa", "tempToken": await api.temp_token(OTHER)}
    )
    assert error(unverified) == (
        400,
        {"error": "Email address is not verified", "code": "EMAIL_NOT_VERIFIED"},
    )


# --- the setup-required policy ---------------------------------------------------------------


async def test_setup_required_policy_enrols_then_completes(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """With 2FA required, login of an account without a factor is 403 {requires2FASetup,
    tempToken, code:'2FA_SETUP_REQUIRED'}; that tempToken only enrols TOTP, after which
    /2fa/verify completes the sign-in."""
    api = node_auth(make_client, clock, require_two_factor=True)
    await api.register()
    response = await api.login()
    assert response.status_code == 403
    body = response.json()
    assert set(body) == {"requires2FASetup", "tempToken", "code"}
    assert body["requires2FASetup"] is True and body["code"] == "2FA_SETUP_REQUIRED"
    assert "set-cookie" not in response.headers
    temp = body["tempToken"]
    assert error(await api.call("GET", "/me", token=temp)) == (403, BAD_TOKEN)
    early = await api.post("/2fa/verify", {"tempToken": temp, "totpCode": "123456"})
    assert error(early) == (401, INVALID_TEMP)
    secret = await api.setup(tempToken=temp)
    backup_codes = await api.verify_setup(secret, tempToken=temp)
    assert len(backup_codes) == 10
    done = await api.post(
        "/2fa/verify", {"tempToken": temp, "totpCode": api.next_code(secret)}, bearer=True
    )
    access = assert_issued(done, bearer=True)
    assert (await api.me(access))["isTotpEnabled"] is True
    assert_challenge(await api.login(), ["totp"])


async def test_setup_routes_refuse_a_dead_or_sign_in_temp_token(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """/2fa/setup and /2fa/verify-setup take only a live setup tempToken: unknown ones and
    sign-in challenges are 401 INVALID_TEMP_TOKEN."""
    api = node_auth(make_client, clock)
    await api.register()
    await api.enrol()
    sign_in = await api.temp_token()
    for temp in ("nope", sign_in):
        setup = await api.post("/2fa/setup", {"tempToken": temp})
        assert error(setup) == (401, INVALID_TEMP)
        confirm = await api.post("/2fa/verify-setup", {"tempToken": temp, "token": "123456"})
        assert error(confirm) == (401, INVALID_TEMP)


# --- /2fa/disable ----------------------------------------------------------------------------


async def test_disable_requires_a_current_code(api: NodeAuth) -> None:
    """/2fa/disable without a code is 400, with a wrong one 401; a current TOTP (or backup)
    code turns 2FA off, after which login issues tokens again."""
    await api.register()
    secret, _ = await api.enrol()
    temp = await api.temp_token()
    access = assert_issued(
        await api.post(
            "/2fa/verify", {"tempToken": temp, "totpCode": api.code(secret)}, bearer=True
        ),
        bearer=True,
    )
    missing = await api.post("/2fa/disable", token=access)
    assert error(missing) == (400, {"error": "code is required"})
    wrong = await api.post("/2fa/disable", {"code": "000000"}, token=access)
    assert error(wrong) == (401, INVALID_TOTP)
    done = await api.post("/2fa/disable", {"totpCode": api.next_code(secret)}, token=access)
    assert error(done) == (200, SUCCESS)
    assert (await api.me(access))["isTotpEnabled"] is False
    assert "accessToken" in (await api.login()).json()
    off = await api.post("/2fa/disable", {"code": api.next_code(secret)}, token=access)
    assert error(off) == (400, {"error": "Two-factor authentication is not enabled"})


async def test_disable_takes_a_backup_code_and_needs_a_session(api: NodeAuth) -> None:
    """A backup code also disables 2FA; anonymously /2fa/disable is 403."""
    await api.register()
    _, backup_codes = await api.enrol()
    assert error(await api.post("/2fa/disable", {"code": "123456"})) == (403, NO_TOKEN)
    temp = await api.temp_token()
    access = assert_issued(
        await api.post(
            "/2fa/verify", {"tempToken": temp, "totpCode": backup_codes[0]}, bearer=True
        ),
        bearer=True,
    )
    done = await api.post("/2fa/disable", {"token": backup_codes[1]}, token=access)
    assert error(done) == (200, SUCCESS)


async def test_cookie_sessions_need_the_csrf_header_on_2fa_routes(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """With CSRF on, cookie-authenticated /2fa/setup, verify-setup and disable need
    X-CSRF-Token; with it they work."""
    api = node_auth(make_client, clock, node_auth_csrf=True)
    await api.register()
    signed_in = await api.login(bearer=False)
    assert signed_in.status_code == 200
    for path in ("/2fa/setup", "/2fa/verify-setup", "/2fa/disable"):
        assert error(await api.post(path, {"code": "123456"})) == (403, CSRF_INVALID)
    csrf = {"x-csrf-token": api.http.cookies["csrf-token"]}
    response = await api.post("/2fa/setup", headers=csrf)
    assert response.status_code == 200
    secret = response.json()["secret"]
    api.secrets.add(secret)
    confirmed = await api.post("/2fa/verify-setup", {"token": api.code(secret)}, headers=csrf)
    assert confirmed.status_code == 200
    api.secrets.update(confirmed.json()["backupCodes"])
    disabled = await api.post("/2fa/disable", {"code": api.next_code(secret)}, headers=csrf)
    assert error(disabled) == (200, SUCCESS)


# --- across surfaces, OpenAPI ----------------------------------------------------------------


async def test_graphql_enrolment_and_completion_meet_node_auth(api: NodeAuth) -> None:
    """TOTP enabled over GraphQL gives a node-auth challenge, and a node-auth tempToken
    completes over GraphQL verifyTwoFactor."""
    client = api.client
    await client.register()
    token = (await client.login()).data["login"]["accessToken"]
    secret = (await client.gql("mutation { beginTotpSetup { secret } }", token=token)).data[
        "beginTotpSetup"
    ]["secret"]
    api.secrets.add(secret)
    confirmed = await client.gql(
        "mutation($c: String!) { confirmTotpSetup(code: $c) }", {"c": api.code(secret)}, token=token
    )
    api.secrets.update(confirmed.data["confirmTotpSetup"])
    temp = await api.temp_token()
    result = await client.gql(
        "mutation($t: String!, $c: String!) { verifyTwoFactor(challengeToken: $t, code: $c)"
        " { status accessToken } }",
        {"t": temp, "c": api.next_code(secret)},
    )
    payload = result.data["verifyTwoFactor"]
    assert payload["status"] == "OK"
    assert (await api.me(payload["accessToken"]))["isTotpEnabled"] is True


async def test_openapi_lists_the_2fa_routes(api: NodeAuth) -> None:
    """<prefix>/openapi.json documents the four 2FA routes and the mode/tempToken fields."""
    paths = (await api.call("GET", "/openapi.json")).json()["paths"]
    for path in ("setup", "verify-setup", "verify", "disable"):
        assert "post" in paths[f"/auth/2fa/{path}"]
    assert "security" in paths["/auth/2fa/setup"]["post"]
    assert "security" in paths["/auth/2fa/disable"]["post"]
    assert "security" not in paths["/auth/2fa/verify"]["post"]
    for path in ("magic-link/send", "magic-link/verify", "sms/send", "sms/verify"):
        schema = paths[f"/auth/{path}"]["post"]["requestBody"]["content"]["application/json"]
        assert {"mode", "tempToken"} <= set(schema["schema"]["properties"])
