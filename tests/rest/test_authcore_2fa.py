"""The AuthCore dialect's two-factor routes (/2fa/setup, /2fa/verify, /2fa/disable,
/2fa/backup-codes), the second factor on the NextAuth credentials sign-in, and the
setup-required policy."""

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
from tests.rest.test_authcore import PREFIX, SESSION_COOKIE, assert_error, cookie
from tests.rest.test_authcore_mail import local
from tests.smtp import extract_link
from tests.support import PASSWORD, GraphQLClient

MakeClient = Callable[..., GraphQLClient]

EMAIL = "ada@example.com"
SETUP_COOKIE = "authcore.2fa-setup"
FORM = {"content-type": "application/x-www-form-urlencoded"}
REQUIRED = {"url": f"{PREFIX}/error?error=TwoFactorRequired"}
WRONG_CODE = {"url": f"{PREFIX}/error?error=InvalidTwoFactorCode"}
SETUP_REQUIRED = {"url": f"{PREFIX}/error?error=TwoFactorSetupRequired"}
HOME = {"url": "http://127.0.0.1:8000"}
GRAPHQL_LOGIN = """
mutation($identifier: String!, $password: String!) {
  login(identifier: $identifier, password: $password) { status challengeToken accessToken }
}
"""
VERIFY_TWO_FACTOR = """
mutation($t: String!, $c: String!) {
  verifyTwoFactor(challengeToken: $t, code: $c) { status accessToken }
}
"""


# --- helpers ---------------------------------------------------------------------------------


class AuthCore2fa:
    """Speaks AuthCore to an in-process app and checks every answer for leaked secrets."""

    def __init__(self, client: GraphQLClient, clock: FrozenClock, make_client: MakeClient) -> None:
        self.client = client
        self.http = client.http
        self.clock = clock
        self.make_client = make_client
        #: Secrets handed out once (TOTP secrets, backup codes): no later answer repeats them.
        self.secrets: set[str] = set()

    def another_browser(self) -> AuthCore2fa:
        """A second cookie jar on the same app."""
        return AuthCore2fa(self.make_client(app=self.client.app), self.clock, self.make_client)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, PREFIX + path, **kwargs)
        await self.assert_clean(response, path=path, method=method)
        if path == "/2fa/setup" and method == "POST" and response.status_code == 200:
            self.secrets.add(response.json()["data"]["secret"])
        if response.status_code == 200 and path in ("/2fa/verify", "/2fa/backup-codes"):
            self.secrets.update(response.json()["data"]["backupCodes"])
        return response

    async def assert_clean(self, response: httpx.Response, *, path: str, method: str) -> None:
        """No password hash, stored digest (refresh, session, one-time, challenge, backup
        code), encrypted TOTP secret or earlier-issued secret anywhere; no "totp" except in
        the setup answer's otpauth URL (which carries the secret by design)."""
        text = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        text += "\n" + response.text
        assert "$argon2" not in text
        if not (path == "/2fa/setup" and method == "POST"):
            assert "totp" not in text.lower()
        stored = [*await RefreshToken.all().values_list("digest", flat=True)]
        stored += await Session.exclude(token_digest=None).values_list("token_digest", flat=True)
        stored += await OneTimeToken.all().values_list("digest", flat=True)
        stored += await TwoFactorChallenge.all().values_list("digest", flat=True)
        stored += await BackupCode.all().values_list("digest", flat=True)
        for credential in await TotpCredential.all():
            stored += [b for b in (credential.secret_encrypted, credential.pending_encrypted) if b]
        for secret in [*stored, *self.secrets]:
            assert str(secret) not in text

    async def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return await self.request("POST", path, json=body or {})

    async def register(self, email: str = EMAIL) -> None:
        response = await self.post("/register", {"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text

    async def csrf(self) -> str:
        return str((await self.request("GET", "/csrf")).json()["csrfToken"])

    async def sign_in(
        self, email: str = EMAIL, password: str = PASSWORD, *, form: bool = False, **extra: Any
    ) -> httpx.Response:
        body = {"email": email, "password": password, "csrfToken": await self.csrf(), **extra}
        if form:
            return await self.request("POST", "/callback/credentials", data=body, headers=FORM)
        return await self.request("POST", "/callback/credentials", json=body)

    async def signed_in_as(self) -> str | None:
        body = (await self.request("GET", "/session")).json()
        return body["user"]["email"] if body else None

    async def status(self) -> dict[str, Any]:
        response = await self.request("GET", "/2fa/setup")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def code(self, secret: str) -> str:
        return pyotp.TOTP(secret).at(self.clock.now().timestamp())

    def next_code(self, secret: str) -> str:
        """Move to the next 30-second step and return its code (a step is used once)."""
        self.clock.advance(30)
        return self.code(secret)

    async def setup(self) -> str:
        response = await self.post("/2fa/setup")
        assert response.status_code == 200, response.text
        return str(response.json()["data"]["secret"])

    async def enrol(self, email: str = EMAIL) -> tuple[str, list[str]]:
        """Sign in (2FA off), turn TOTP on over AuthCore; (secret, backup codes). The clock
        then moves a step, so the next code is fresh."""
        assert (await self.sign_in(email)).status_code == 200
        secret = await self.setup()
        verified = await self.post("/2fa/verify", {"token": self.code(secret)})
        assert verified.status_code == 200, verified.text
        self.clock.advance(30)
        return secret, list(verified.json()["data"]["backupCodes"])

    async def sign_out(self) -> None:
        response = await self.post("/signout", {"csrfToken": await self.csrf()})
        assert response.status_code == 200


@pytest.fixture
def make_authcore(make_client: MakeClient, clock: FrozenClock) -> Callable[..., AuthCore2fa]:
    def make(**overrides: Any) -> AuthCore2fa:
        client = make_client(rest_dialects=(("authcore", PREFIX),), **overrides)
        return AuthCore2fa(client, clock, make_client)

    return make


@pytest.fixture
def authcore(make_authcore: Callable[..., AuthCore2fa]) -> AuthCore2fa:
    return make_authcore()


def assert_no_session_cookie(response: httpx.Response) -> None:
    assert not any(
        header.startswith(f"{SESSION_COOKIE}=")
        for header in response.headers.get_list("set-cookie")
    )


# --- GET /2fa/setup --------------------------------------------------------------------------


async def test_status_reports_enabled_and_backup_code_count(authcore: AuthCore2fa) -> None:
    """GET /2fa/setup answers {success, data:{enabled, backupCodesCount}}; using a backup
    code lowers the count."""
    await authcore.register()
    await authcore.sign_in()
    assert await authcore.status() == {
        "success": True,
        "data": {"enabled": False, "backupCodesCount": 0},
    }
    _, backup_codes = await authcore.enrol()
    assert await authcore.status() == {
        "success": True,
        "data": {"enabled": True, "backupCodesCount": 10},
    }
    await authcore.sign_out()
    assert (await authcore.sign_in(totpCode=backup_codes[0])).status_code == 200
    assert (await authcore.status())["data"] == {"enabled": True, "backupCodesCount": 9}


async def test_two_factor_routes_need_a_session(authcore: AuthCore2fa) -> None:
    """Anonymously every /2fa route is 401 UNAUTHORIZED in the envelope."""
    assert_error(await authcore.request("GET", "/2fa/setup"), 401, "UNAUTHORIZED")
    for path in ("/2fa/setup", "/2fa/verify", "/2fa/disable", "/2fa/backup-codes"):
        assert_error(await authcore.post(path, {"token": "123456"}), 401, "UNAUTHORIZED")


# --- POST /2fa/setup and /2fa/verify ---------------------------------------------------------


async def test_setup_returns_secret_png_qr_code_and_otpauth_url(authcore: AuthCore2fa) -> None:
    """POST /2fa/setup answers {secret, qrCode (PNG data URI), otpauthUrl} and no backup
    codes; nothing is enforced until /2fa/verify."""
    await authcore.register()
    await authcore.sign_in()
    response = await authcore.post("/2fa/setup")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"success", "data"} and body["success"] is True
    data = body["data"]
    assert set(data) == {"secret", "qrCode", "otpauthUrl"}
    assert data["otpauthUrl"].startswith("otpauth://totp/")
    assert EMAIL in unquote(data["otpauthUrl"]) and "issuer=" in data["otpauthUrl"]
    assert f"secret={data['secret']}" in data["otpauthUrl"]
    png = base64.b64decode(data["qrCode"].removeprefix("data:image/png;base64,"))
    assert data["qrCode"].startswith("data:image/png;base64,") and png.startswith(b"\x89PNG")
    assert (await authcore.status())["data"]["enabled"] is False
    await authcore.sign_out()
    assert (await authcore.sign_in()).json() == HOME


async def test_verify_enables_2fa_returns_backup_codes_and_ends_other_sessions(
    authcore: AuthCore2fa,
) -> None:
    """/2fa/verify {token} enables 2FA and answers {success, data:{backupCodes}} (ten); the
    current session stays, every other one ends."""
    await authcore.register()
    laptop = authcore.another_browser()
    await laptop.sign_in()
    assert await laptop.signed_in_as() == EMAIL
    await authcore.sign_in()
    secret = await authcore.setup()
    response = await authcore.post("/2fa/verify", {"token": authcore.code(secret)})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"success", "data"} and set(body["data"]) == {"backupCodes"}
    codes = body["data"]["backupCodes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    assert await authcore.signed_in_as() == EMAIL
    assert await laptop.signed_in_as() is None


async def test_verify_errors(authcore: AuthCore2fa) -> None:
    """Before any setup 400 VALIDATION_ERROR; a wrong code 400 INVALID_TOKEN; no token 400
    VALIDATION_ERROR on token; 2FA stays off."""
    await authcore.register()
    await authcore.sign_in()
    assert_error(await authcore.post("/2fa/verify", {"token": "123456"}), 400, "VALIDATION_ERROR")
    secret = await authcore.setup()
    wrong = "000000" if authcore.code(secret) != "000000" else "111111"
    assert_error(await authcore.post("/2fa/verify", {"token": wrong}), 400, "INVALID_TOKEN")
    missing = assert_error(await authcore.post("/2fa/verify", {}), 400, "VALIDATION_ERROR")
    assert missing["error"]["fields"] == {"token": "Required."}
    assert (await authcore.status())["data"]["enabled"] is False


async def test_setup_with_2fa_on_needs_a_current_code_to_replace_the_authenticator(
    authcore: AuthCore2fa,
) -> None:
    """With 2FA on, POST /2fa/setup without a code is 400 (fields.token), with a wrong one
    400 INVALID_TOKEN; with a current one it starts a replacement that /2fa/verify
    confirms, after which only the new authenticator signs in."""
    await authcore.register()
    old, _ = await authcore.enrol()
    refused = assert_error(await authcore.post("/2fa/setup"), 400, "VALIDATION_ERROR")
    assert refused["error"]["fields"] == {"token": "Required."}
    assert_error(await authcore.post("/2fa/setup", {"token": "000000"}), 400, "INVALID_TOKEN")
    replaced = await authcore.post("/2fa/setup", {"token": authcore.next_code(old)})
    assert replaced.status_code == 200, replaced.text
    new = replaced.json()["data"]["secret"]
    assert new != old
    confirmed = await authcore.post("/2fa/verify", {"token": authcore.next_code(new)})
    assert confirmed.status_code == 200
    await authcore.sign_out()
    clock_code = authcore.next_code(old)
    if clock_code != authcore.code(new):
        assert (await authcore.sign_in(totpCode=clock_code)).json() == WRONG_CODE
    assert (await authcore.sign_in(totpCode=authcore.next_code(new))).json() == HOME


# --- sign-in with 2FA on ---------------------------------------------------------------------


async def test_sign_in_without_a_code_answers_two_factor_required(authcore: AuthCore2fa) -> None:
    """The right password alone answers 401 {url: error=TwoFactorRequired} (302 there for
    a form post) and sets no session cookie."""
    await authcore.register()
    await authcore.enrol()
    await authcore.sign_out()
    response = await authcore.sign_in()
    assert response.status_code == 401
    assert response.json() == REQUIRED
    assert_no_session_cookie(response)
    form = await authcore.sign_in(form=True)
    assert form.status_code == 302
    assert form.headers["location"] == REQUIRED["url"]
    assert_no_session_cookie(form)
    assert await authcore.signed_in_as() is None
    wrong_password = await authcore.sign_in(password="not the password")
    assert wrong_password.status_code == 401
    assert wrong_password.json() == {"url": f"{PREFIX}/error?error=CredentialsSignin"}


@pytest.mark.parametrize("field", ["totpCode", "code", "token"])
async def test_sign_in_with_a_totp_code_sets_the_session(authcore: AuthCore2fa, field: str) -> None:
    """Email + password + the authenticator's code (totpCode, code or token) signs in."""
    await authcore.register()
    secret, _ = await authcore.enrol()
    await authcore.sign_out()
    response = await authcore.sign_in(**{field: authcore.code(secret)})
    assert response.status_code == 200
    assert response.json() == HOME
    session_cookie = cookie(response, SESSION_COOKIE)
    assert "httponly" in session_cookie and session_cookie["samesite"].lower() == "lax"
    assert await authcore.signed_in_as() == EMAIL


async def test_form_sign_in_with_a_code_redirects_with_the_cookie(authcore: AuthCore2fa) -> None:
    """A form post with the code 302s to the callback URL and sets the session cookie; a
    wrong code 302s to error=InvalidTwoFactorCode without it."""
    await authcore.register()
    secret, _ = await authcore.enrol()
    await authcore.sign_out()
    wrong = await authcore.sign_in(form=True, totpCode="000000")
    if authcore.code(secret) != "000000":
        assert wrong.status_code == 302 and wrong.headers["location"] == WRONG_CODE["url"]
        assert_no_session_cookie(wrong)
    response = await authcore.sign_in(form=True, totpCode=authcore.next_code(secret))
    assert response.status_code == 302
    assert response.headers["location"] == HOME["url"]
    assert cookie(response, SESSION_COOKIE)["value"]


async def test_a_replayed_totp_code_is_refused(authcore: AuthCore2fa) -> None:
    """A code works once: the same code again is 401 error=InvalidTwoFactorCode, the next
    step's code works."""
    await authcore.register()
    secret, _ = await authcore.enrol()
    await authcore.sign_out()
    code = authcore.code(secret)
    assert (await authcore.sign_in(totpCode=code)).status_code == 200
    await authcore.sign_out()
    replay = await authcore.sign_in(totpCode=code)
    assert replay.status_code == 401 and replay.json() == WRONG_CODE
    assert_no_session_cookie(replay)
    assert (await authcore.sign_in(totpCode=authcore.next_code(secret))).json() == HOME


async def test_a_backup_code_signs_in_once(authcore: AuthCore2fa) -> None:
    """A backup code in totpCode signs in; the same code again is refused."""
    await authcore.register()
    _, backup_codes = await authcore.enrol()
    await authcore.sign_out()
    assert (await authcore.sign_in(totpCode=backup_codes[3])).json() == HOME
    await authcore.sign_out()
    again = await authcore.sign_in(totpCode=backup_codes[3])
    assert again.status_code == 401 and again.json() == WRONG_CODE
    assert await authcore.signed_in_as() is None


async def test_parallel_sign_ins_with_one_code_open_one_session(authcore: AuthCore2fa) -> None:
    """Twenty simultaneous sign-ins with one valid code produce exactly one session."""
    await authcore.register()
    secret, _ = await authcore.enrol()
    await authcore.sign_out()
    before = await Session.all().count()
    body = {
        "email": EMAIL,
        "password": PASSWORD,
        "csrfToken": await authcore.csrf(),
        "totpCode": authcore.code(secret),
    }
    responses = await asyncio.gather(
        *(authcore.request("POST", "/callback/credentials", json=body) for _ in range(20))
    )
    assert sorted(r.status_code for r in responses) == [200] + [401] * 19
    assert await Session.all().count() == before + 1


async def test_wrong_codes_with_the_right_password_lock_the_account(
    make_authcore: Callable[..., AuthCore2fa],
) -> None:
    """Wrong second-factor codes count toward the lockout even though each sign-in carries
    the right password: after the threshold, sign-in is 423 ACCOUNT_LOCKED, even with a
    good code."""
    authcore = make_authcore(lockout_threshold=3)
    await authcore.register()
    secret, _ = await authcore.enrol()
    await authcore.sign_out()
    for _ in range(3):
        wrong = "000000" if authcore.next_code(secret) != "000000" else "111111"
        assert (await authcore.sign_in(totpCode=wrong)).json() == WRONG_CODE
    locked = await authcore.sign_in(totpCode=authcore.next_code(secret))
    assert_error(locked, 423, "ACCOUNT_LOCKED")
    assert int(locked.headers["retry-after"]) > 0


# --- /2fa/disable and /2fa/backup-codes --------------------------------------------------------


async def test_disable_needs_a_current_code(authcore: AuthCore2fa) -> None:
    """/2fa/disable without a token is 400, with a wrong or replayed one 400 INVALID_TOKEN;
    a current code turns 2FA off ({success:true}) and the password alone signs in again."""
    await authcore.register()
    secret, _ = await authcore.enrol()
    missing = assert_error(await authcore.post("/2fa/disable", {}), 400, "VALIDATION_ERROR")
    assert missing["error"]["fields"] == {"token": "Required."}
    assert_error(await authcore.post("/2fa/disable", {"token": "000000"}), 400, "INVALID_TOKEN")
    code = authcore.next_code(secret)
    response = await authcore.post("/2fa/disable", {"token": code})
    assert response.status_code == 200 and response.json() == {"success": True}
    assert (await authcore.status())["data"] == {"enabled": False, "backupCodesCount": 0}
    assert_error(await authcore.post("/2fa/disable", {"token": code}), 400, "VALIDATION_ERROR")
    await authcore.sign_out()
    assert (await authcore.sign_in()).json() == HOME


async def test_disable_takes_a_backup_code_but_not_a_replayed_totp(authcore: AuthCore2fa) -> None:
    """The code that just signed in cannot disable 2FA (replay); a backup code can."""
    await authcore.register()
    secret, backup_codes = await authcore.enrol()
    await authcore.sign_out()
    code = authcore.code(secret)
    assert (await authcore.sign_in(totpCode=code)).status_code == 200
    assert_error(await authcore.post("/2fa/disable", {"token": code}), 400, "INVALID_TOKEN")
    response = await authcore.post("/2fa/disable", {"token": backup_codes[0]})
    assert response.json() == {"success": True}


async def test_disable_is_forbidden_while_the_policy_requires_2fa(
    make_authcore: Callable[..., AuthCore2fa],
) -> None:
    """With require_two_factor on, /2fa/disable is 403 FORBIDDEN even with a good code."""
    authcore = make_authcore(require_two_factor=True)
    await authcore.register()
    secret = await enrol_through_setup_cookie(authcore)
    assert (await authcore.sign_in(totpCode=authcore.next_code(secret))).json() == HOME
    response = await authcore.post("/2fa/disable", {"token": authcore.next_code(secret)})
    assert_error(response, 403, "FORBIDDEN")


async def test_backup_codes_need_a_current_code_and_replace_the_old_ones(
    authcore: AuthCore2fa,
) -> None:
    """/2fa/backup-codes {token} answers ten new codes; it needs a current code, and every
    earlier code stops working."""
    await authcore.register()
    secret, old_codes = await authcore.enrol()
    missing = assert_error(await authcore.post("/2fa/backup-codes", {}), 400, "VALIDATION_ERROR")
    assert missing["error"]["fields"] == {"token": "Required."}
    wrong = await authcore.post("/2fa/backup-codes", {"token": "000000"})
    assert_error(wrong, 400, "INVALID_TOKEN")
    response = await authcore.post("/2fa/backup-codes", {"token": authcore.code(secret)})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"success", "data"} and set(body["data"]) == {"backupCodes"}
    new_codes = body["data"]["backupCodes"]
    assert len(new_codes) == 10 and not set(new_codes) & set(old_codes)
    await authcore.sign_out()
    assert (await authcore.sign_in(totpCode=old_codes[1])).json() == WRONG_CODE
    assert (await authcore.sign_in(totpCode=new_codes[1])).json() == HOME


async def test_backup_codes_with_2fa_off_is_a_validation_error(authcore: AuthCore2fa) -> None:
    """Without 2FA there are no backup codes to regenerate: 400 VALIDATION_ERROR."""
    await authcore.register()
    await authcore.sign_in()
    response = await authcore.post("/2fa/backup-codes", {"token": "123456"})
    assert_error(response, 400, "VALIDATION_ERROR")


# --- the setup-required policy ---------------------------------------------------------------


async def enrol_through_setup_cookie(authcore: AuthCore2fa) -> str:
    """Sign in under the policy, enrol TOTP with the setup cookie; the secret."""
    refused = await authcore.sign_in()
    assert refused.json() == SETUP_REQUIRED
    secret = await authcore.setup()
    confirmed = await authcore.post("/2fa/verify", {"token": authcore.code(secret)})
    assert confirmed.status_code == 200, confirmed.text
    return secret


async def test_setup_required_sets_the_setup_cookie_and_no_session(
    make_authcore: Callable[..., AuthCore2fa],
) -> None:
    """Under require_two_factor, an account without a factor gets 403 {url:
    error=TwoFactorSetupRequired} (302 for forms) and an HttpOnly setup cookie scoped to
    <prefix>/2fa for five minutes, never a session."""
    authcore = make_authcore(require_two_factor=True)
    await authcore.register()
    response = await authcore.sign_in()
    assert response.status_code == 403 and response.json() == SETUP_REQUIRED
    assert_no_session_cookie(response)
    setup_cookie = cookie(response, SETUP_COOKIE)
    assert setup_cookie["path"] == f"{PREFIX}/2fa" and setup_cookie["max-age"] == "300"
    assert "httponly" in setup_cookie and setup_cookie["samesite"].lower() == "lax"
    form = await authcore.sign_in(form=True)
    assert form.status_code == 302 and form.headers["location"] == SETUP_REQUIRED["url"]
    assert_no_session_cookie(form)
    assert await authcore.signed_in_as() is None


async def test_setup_cookie_enrols_then_password_and_code_sign_in(
    make_authcore: Callable[..., AuthCore2fa],
) -> None:
    """With the setup cookie, POST /2fa/setup and /2fa/verify enrol TOTP (the cookie is then
    cleared); the password and the next code sign in."""
    authcore = make_authcore(require_two_factor=True)
    await authcore.register()
    await authcore.sign_in()
    secret = await authcore.setup()
    response = await authcore.post("/2fa/verify", {"token": authcore.code(secret)})
    assert response.status_code == 200
    assert len(response.json()["data"]["backupCodes"]) == 10
    cleared = cookie(response, SETUP_COOKIE)
    assert cleared["max-age"] == "0" and cleared["path"] == f"{PREFIX}/2fa"
    assert await authcore.signed_in_as() is None
    assert (await authcore.sign_in()).json() == REQUIRED
    assert (await authcore.sign_in(totpCode=authcore.next_code(secret))).json() == HOME
    assert await authcore.signed_in_as() == EMAIL


async def test_setup_cookie_is_only_for_enrolment(
    make_authcore: Callable[..., AuthCore2fa],
) -> None:
    """The setup challenge opens only POST /2fa/setup and /2fa/verify: it is not a session
    cookie, not a Bearer token, and the other 2FA routes stay 401."""
    authcore = make_authcore(require_two_factor=True)
    await authcore.register()
    response = await authcore.sign_in()
    challenge = cookie(response, SETUP_COOKIE)["value"]
    assert_error(await authcore.request("GET", "/2fa/setup"), 401, "UNAUTHORIZED")
    assert_error(await authcore.post("/2fa/disable", {"token": "1"}), 401, "UNAUTHORIZED")
    assert_error(await authcore.post("/2fa/backup-codes", {"token": "1"}), 401, "UNAUTHORIZED")
    stranger = authcore.another_browser()
    stranger.http.cookies.set(SESSION_COOKIE, challenge)
    assert (await stranger.request("GET", "/session")).json() == {}
    bearer = {"authorization": f"Bearer {challenge}"}
    assert_error(await stranger.request("GET", "/2fa/setup", headers=bearer), 401, "UNAUTHORIZED")
    assert await stranger.client.me(challenge) is None


async def test_a_dead_setup_cookie_is_refused(
    make_authcore: Callable[..., AuthCore2fa], clock: FrozenClock
) -> None:
    """After five minutes the setup challenge no longer enrols: 400 INVALID_TOKEN."""
    authcore = make_authcore(require_two_factor=True)
    await authcore.register()
    await authcore.sign_in()
    clock.advance(301)
    assert_error(await authcore.post("/2fa/setup"), 400, "INVALID_TOKEN")


# --- one account, every surface --------------------------------------------------------------


async def test_graphql_enrolment_meets_authcore_sign_in(authcore: AuthCore2fa) -> None:
    """TOTP enrolled over GraphQL asks AuthCore's sign-in for a code; an AuthCore
    enrolment makes GraphQL's login answer the challenge, which the next code completes."""
    await authcore.register()
    await authcore.register("grace@example.com")
    client = authcore.client
    token = (await client.login()).data["login"]["accessToken"]
    setup = await client.gql("mutation { beginTotpSetup { secret } }", token=token)
    secret = setup.data["beginTotpSetup"]["secret"]
    confirm = "mutation($c: String!) { confirmTotpSetup(code: $c) }"
    await client.gql(confirm, {"c": authcore.code(secret)}, token=token)
    assert (await authcore.sign_in()).json() == REQUIRED
    assert (await authcore.sign_in(totpCode=authcore.next_code(secret))).json() == HOME
    await authcore.sign_out()
    grace, _ = await authcore.enrol("grace@example.com")
    login = await client.gql(
        GRAPHQL_LOGIN, {"identifier": "grace@example.com", "password": PASSWORD}
    )
    payload = login.data["login"]
    assert payload["status"] == "TWO_FACTOR_REQUIRED" and payload["accessToken"] is None
    done = await client.gql(
        VERIFY_TWO_FACTOR, {"t": payload["challengeToken"], "c": authcore.next_code(grace)}
    )
    assert done.data["verifyTwoFactor"]["status"] == "OK"


async def test_magic_link_for_a_2fa_account_still_signs_nobody_in(authcore: AuthCore2fa) -> None:
    """The magic link cannot carry the second factor: 302 to error=TwoFactorRequired, no
    cookie."""
    await authcore.register()
    await authcore.enrol()
    await authcore.sign_out()
    assert (await authcore.post("/magic-link", {"email": EMAIL})).status_code == 200
    mails, _ = await authcore.client.delivered()
    response = await authcore.request("GET", local(extract_link(mails[-1])))
    assert response.status_code == 302
    assert response.headers["location"] == REQUIRED["url"]
    assert_no_session_cookie(response)


async def test_openapi_lists_the_2fa_routes(authcore: AuthCore2fa) -> None:
    """<prefix>/openapi.json documents the five 2FA operations and sign-in's totpCode."""
    paths = (await authcore.http.get(f"{PREFIX}/openapi.json")).json()["paths"]
    assert set(paths[f"{PREFIX}/2fa/setup"]) == {"get", "post"}
    for path in ("/2fa/verify", "/2fa/disable", "/2fa/backup-codes"):
        operation = paths[PREFIX + path]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema["required"] == ["token"] and operation["security"] == [{"credential": []}]
    sign_in = paths[f"{PREFIX}/callback/credentials"]["post"]["requestBody"]
    assert "totpCode" in sign_in["content"]["application/json"]["schema"]["properties"]
