"""Browsary's two-factor routes (2fa/enable/request, 2fa/enable/submit, 2fa/verify,
2fa/reset) and the 2fa_required / 2fa_setup states every sign-in route and GET /api/auth
show while a second factor is pending."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from authql.models import (
    BackupCode,
    OneTimeToken,
    RefreshToken,
    Session,
    TotpCredential,
    TwoFactorChallenge,
    User,
)
from authql.resolvers import accounts
from authql.services.clock import FrozenClock
from tests.smtp import extract_token
from tests.support import PASSWORD, GraphQLClient
from tests.totp_helpers import STEP, enrol, totp_code

MakeClient = Callable[..., GraphQLClient]
PREFIX = "/api/auth"
DIALECTS = (("browsary", PREFIX),)
EMAIL, BOB = "ada@example.com", "bob@example.com"
NEW_PASSWORD = "new-secure-password"
INFO = {"id", "email", "emailVerified", "twoFactorConfigured", "twoFactorPassed"}
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*")
#: Routes whose answer legitimately carries the authenticator secret and its otpauth URL.
SETUP_ROUTES = ("/2fa/enable/request", "/2fa/reset")


# --- helpers ---------------------------------------------------------------------------------


def _decoded(match: re.Match[str]) -> str:
    """A JWT's header and payload as text, so what it carries is checked too."""
    parts = match.group(0).split(".")[:2]
    return " ".join(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)).decode() for p in parts)


class Browsary:
    """Speaks Browsary to an in-process app, checking that no response leaks a secret."""

    def __init__(self, client: GraphQLClient, clock: FrozenClock) -> None:
        self.client = client
        self.clock = clock
        #: Authenticator secrets and backup codes shown so far: only setup answers carry them.
        self.shown: set[str] = set()

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        bearer: str | None = None,
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
        response = await self.client.http.request(method, PREFIX + path, json=body, headers=headers)
        await self.assert_clean(response, setup=path in SETUP_ROUTES)
        return response

    async def assert_clean(self, response: httpx.Response, *, setup: bool = False) -> None:
        """No password hash, stored digest or encrypted secret anywhere; the word "totp",
        a secret or a backup code only where a setup answer shows them (its ``url`` and
        ``secret``, or the ``backupCodes`` of enable/submit)."""
        text = response.text + " " + " ".join(f"{k}: {v}" for k, v in response.headers.items())
        assert "$argon2" not in text
        stored = list(await RefreshToken.all().values_list("digest", flat=True))
        stored += await Session.exclude(token_digest=None).values_list("token_digest", flat=True)
        stored += await OneTimeToken.all().values_list("digest", flat=True)
        stored += await TwoFactorChallenge.all().values_list("digest", flat=True)
        stored += await BackupCode.all().values_list("digest", flat=True)
        for secret, pending in await TotpCredential.all().values_list(
            "secret_encrypted", "pending_encrypted"
        ):
            stored += [value for value in (secret, pending) if value]
        for value in stored:
            assert str(value) not in text
        body = response.json() if response.text else {}
        if setup and response.status_code == 200:
            text = text.replace(body["url"], "").replace(body["secret"], "")
        codes = body.get("backupCodes") if isinstance(body, dict) else None
        for value in self.shown:
            if not (codes and value in codes):
                assert value not in text
        assert "totp" not in _JWT.sub(_decoded, text).lower()

    # --- routes ----------------------------------------------------------------------------

    async def status(self, bearer: str | None = None) -> dict[str, Any]:
        response = await self.call("GET", "", bearer=bearer)
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        assert set(body) == {"status", "auth"}
        return body

    async def login(
        self, email: str = EMAIL, password: str = PASSWORD, **extra: Any
    ) -> httpx.Response:
        return await self.call("POST", "/login", {"email": email, "password": password, **extra})

    async def challenge(self, email: str = EMAIL, **extra: Any) -> str:
        """Sign in with the password and return the challenge that answered."""
        response = await self.login(email, **extra)
        return assert_pending(response)

    async def enable_request(self, bearer: str | None = None) -> httpx.Response:
        return await self.call("POST", "/2fa/enable/request", bearer=bearer)

    async def enable_submit(self, code: str, bearer: str | None = None) -> httpx.Response:
        return await self.call("POST", "/2fa/enable/submit", {"token": code}, bearer=bearer)

    async def verify(self, code: str, bearer: str | None = None) -> httpx.Response:
        return await self.call("POST", "/2fa/verify", {"token": code}, bearer=bearer)

    async def reset(self, code: str) -> httpx.Response:
        return await self.call("POST", "/2fa/reset", {"token": code})

    async def enable(self, email: str = EMAIL) -> tuple[str, list[str]]:
        """Sign in a verified account and turn 2FA on through Browsary; (secret, backup
        codes). The current TOTP step is then used up, so the clock moves one step on."""
        if not await User.exists(email=email):
            await verified_account(self.client, email)
        assert (await self.login(email)).status_code == 200
        setup = (await self.enable_request()).json()
        self.shown.add(setup["secret"])
        submitted = await self.enable_submit(totp_code(setup["secret"], self.clock))
        assert submitted.status_code == 200, submitted.text
        codes: list[str] = submitted.json()["backupCodes"]
        self.shown.update(codes)
        self.clock.advance(STEP)
        return setup["secret"], codes

    def forget_cookies(self) -> None:
        self.client.http.cookies.clear()


@pytest.fixture
def api(make_client: MakeClient, clock: FrozenClock) -> Browsary:
    """Browsary mounted at /api/auth (with FluxKit at /auth, to try challenges there)."""
    return Browsary(make_client(rest_dialects=(*DIALECTS, ("fluxkit", "/auth"))), clock)


async def verified_account(client: GraphQLClient, email: str = EMAIL) -> str:
    """An account whose email is verified (the CLI's admin bootstrap marks it so)."""
    return await accounts.create_admin(client.services.passwords, email=email, password=PASSWORD)


def cookie_of(response: httpx.Response, name: str = "token") -> dict[str, Any] | None:
    """The attributes of the Set-Cookie for ``name`` (value under ``value``), or None."""
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if name in jar:
            morsel = jar[name]
            attrs = {key: morsel[key] for key in morsel if morsel[key] != ""}
            return {"value": morsel.value, **attrs}
    return None


def assert_error(response: httpx.Response, status: int) -> str:
    """Browsary's error shape with ``status``; returns the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "message"} and body["status"] == "error"
    assert isinstance(body["message"], str) and body["message"]
    return str(body["message"])


def assert_pending(response: httpx.Response, status: str = "2fa_required") -> str:
    """A challenge answer: ``{status, token:<challenge>}`` and the challenge in the cookie
    (HttpOnly, SameSite=Lax, Path=/, Max-Age of the challenge's five minutes); returns it."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"status", "token"} and body["status"] == status
    challenge = str(body["token"])
    assert not _JWT.fullmatch(challenge)
    cookie = cookie_of(response)
    assert cookie is not None and cookie["value"] == challenge
    assert cookie["httponly"] is True and cookie["samesite"] == "lax"
    assert cookie["path"] == "/" and cookie["max-age"] == "300"
    return challenge


def assert_session(response: httpx.Response, *, remember: bool = False) -> str:
    """A signed-in answer ``{status:'ok', token}`` with the JWT in the cookie; returns it."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"status", "token"} and body["status"] == "ok"
    assert _JWT.fullmatch(body["token"])
    cookie = cookie_of(response)
    assert cookie is not None and cookie["value"] == body["token"]
    assert cookie["httponly"] is True and cookie["samesite"] == "lax"
    assert ("max-age" in cookie) is remember
    return str(body["token"])


async def live_sessions(email: str = EMAIL) -> int:
    user = await User.get(email=email)
    return await Session.filter(user_id=user.id, revoked_at=None).count()


# --- sign-in with 2FA on reaches the challenge -----------------------------------------------


async def test_login_answers_2fa_required_with_the_challenge_and_no_session(
    api: Browsary,
) -> None:
    """Login of an account with 2FA on answers 2fa_required with an opaque challenge in the
    body and the cookie, and starts no session."""
    await api.enable()
    api.forget_cookies()
    before = await live_sessions()
    challenge = await api.challenge()
    assert await live_sessions() == before
    assert await TwoFactorChallenge.exists(used_at=None)
    assert len(challenge) >= 40


async def test_status_moves_from_ok_to_2fa_required_and_back_to_ok(
    api: Browsary, clock: FrozenClock
) -> None:
    """GET /api/auth shows ok for the session, 2fa_required with the library's info while
    the challenge is pending, and ok again once the code is in."""
    secret, _ = await api.enable()
    signed_in = await api.status()
    assert signed_in["status"] == "ok"
    assert signed_in["auth"]["info"]["twoFactorConfigured"] is True
    assert signed_in["auth"]["info"]["twoFactorPassed"] is True
    assert (await api.call("GET", "/logout")).json() == {"status": "logout"}
    await api.challenge()
    pending = await api.status()
    user = await User.get(email=EMAIL)
    assert pending["status"] == "2fa_required"
    assert set(pending["auth"]) == {"sub", "exp", "info"}
    assert pending["auth"]["sub"] == str(user.id)
    assert pending["auth"]["exp"] == int(clock.now().timestamp()) + 300
    assert pending["auth"]["info"] == {
        "id": str(user.id),
        "email": EMAIL,
        "emailVerified": True,
        "twoFactorConfigured": True,
        "twoFactorPassed": False,
    }
    assert_session(await api.verify(totp_code(secret, clock)))
    done = await api.status()
    assert done["status"] == "ok" and set(done["auth"]["info"]) == INFO
    assert done["auth"]["info"]["twoFactorPassed"] is True


async def test_challenge_is_no_session_on_any_surface(api: Browsary) -> None:
    """The challenge authenticates nothing: not Browsary's routes in the cookie or as a
    Bearer, not FluxKit, not GraphQL."""
    await api.enable()
    api.forget_cookies()
    challenge = await api.challenge()
    assert (await api.status())["status"] != "ok"
    assert (await api.status(bearer=challenge))["status"] == "2fa_required"
    assert (await api.client.http.get("/api")).json()["subject"] == "public"
    assert "Invalid" in assert_error(await api.call("POST", "/verify/request", {}), 401)
    assert_error(await api.reset(totp_code("A" * 32, api.clock)), 401)
    flux = await api.client.http.get("/auth/me", headers={"authorization": f"Bearer {challenge}"})
    assert flux.status_code == 401
    assert flux.json()["error"]["code"] == "INVALID_TOKEN"
    result = await api.client.gql("query { me { id } }", token=challenge)
    assert not result.body.get("data") or result.body["data"]["me"] is None


async def test_logout_while_pending_clears_the_challenge_cookie(api: Browsary) -> None:
    """GET /logout in the 2fa_required state answers logout and clears the cookie."""
    await api.enable()
    await api.call("GET", "/logout")
    await api.challenge()
    response = await api.call("GET", "/logout")
    assert response.json() == {"status": "logout"}
    cookie = cookie_of(response)
    assert cookie is not None and cookie["value"] == "" and cookie["max-age"] == "0"
    assert await api.status() == {"status": "ok", "auth": None}


@pytest.mark.parametrize("remember", [False, True])
async def test_verify_with_totp_sets_the_session_cookie_following_remember(
    api: Browsary, clock: FrozenClock, remember: bool
) -> None:
    """/2fa/verify with the app's code answers {status:'ok', token} and the session cookie,
    persistent when the login asked for remember."""
    secret, _ = await api.enable()
    api.forget_cookies()
    await api.challenge(remember=remember)
    token = assert_session(await api.verify(totp_code(secret, clock)), remember=remember)
    auth = (await api.status(bearer=token))["auth"]
    session = await Session.get(id=auth["sid"])
    assert session.remember is remember and session.method == "password"
    assert auth["exp"] - auth["iat"] == api.client.services.settings.refresh_token_ttl


async def test_verify_with_a_backup_code_once(api: Browsary, clock: FrozenClock) -> None:
    """A backup code completes the sign-in once; the same code is refused next time."""
    _, codes = await api.enable()
    api.forget_cookies()
    await api.challenge()
    assert_session(await api.verify(codes[0]))
    api.forget_cookies()
    await api.challenge()
    assert assert_error(await api.verify(codes[0]), 400) == "Invalid code."
    assert await BackupCode.filter(used_at=None).count() == 9
    assert_session(await api.verify(codes[1]))


async def test_replayed_totp_code_is_refused(api: Browsary, clock: FrozenClock) -> None:
    """A code that completed one sign-in is refused for the next; the next step's works."""
    secret, _ = await api.enable()
    api.forget_cookies()
    await api.challenge()
    code = totp_code(secret, clock)
    assert_session(await api.verify(code))
    api.forget_cookies()
    await api.challenge()
    assert_error(await api.verify(code), 400)
    clock.advance(STEP)
    assert_session(await api.verify(totp_code(secret, clock)))


async def test_another_accounts_code_is_a_wrong_code(api: Browsary, clock: FrozenClock) -> None:
    """Bob's valid code does not complete Ada's challenge."""
    ada_secret, _ = await api.enable()
    bob_secret, _ = await api.enable(BOB)
    api.forget_cookies()
    await api.challenge()
    assert assert_error(await api.verify(totp_code(bob_secret, clock)), 400) == "Invalid code."
    assert_session(await api.verify(totp_code(ada_secret, clock)))


async def test_used_and_expired_challenges_are_refused(api: Browsary, clock: FrozenClock) -> None:
    """A used challenge and one older than five minutes answer 401, and GET /api/auth
    shows them as no credential."""
    secret, _ = await api.enable()
    api.forget_cookies()
    used = await api.challenge()
    assert_session(await api.verify(totp_code(secret, clock)))
    clock.advance(STEP)
    assert_error(await api.verify(totp_code(secret, clock), bearer=used), 401)
    assert await api.status(bearer=used) == {"status": "ok", "auth": None}
    api.forget_cookies()
    await api.challenge()
    clock.advance(301)
    assert "Invalid or expired" in assert_error(await api.verify(totp_code(secret, clock)), 401)
    assert await api.status() == {"status": "ok", "auth": None}


async def test_challenge_dies_after_five_wrong_codes(api: Browsary, clock: FrozenClock) -> None:
    """Five wrong codes kill the challenge: even the right code is then 401."""
    secret, _ = await api.enable()
    api.forget_cookies()
    await api.challenge()
    for _ in range(5):
        assert_error(await api.verify("000000"), 400)
    assert_error(await api.verify(totp_code(secret, clock)), 401)
    assert await api.status() == {"status": "ok", "auth": None}


async def test_wrong_codes_count_toward_the_lockout(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """Wrong second-factor codes lock the account like wrong passwords (423 on login)."""
    api = Browsary(make_client(rest_dialects=DIALECTS, lockout_threshold=3), clock)
    await api.enable()
    api.forget_cookies()
    await api.challenge()
    for _ in range(3):
        assert_error(await api.verify("000000"), 400)
    locked = await api.login()
    assert_error(locked, 423)
    assert int(locked.headers["retry-after"]) > 0


async def test_wrong_codes_across_fresh_logins_still_lock(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """Wrong codes count toward the lockout even when each try starts with a fresh login
    with the right password: the third round's login is 423."""
    api = Browsary(make_client(rest_dialects=DIALECTS, lockout_threshold=3), clock)
    await api.enable()
    api.forget_cookies()
    for _ in range(3):
        await api.challenge()
        assert_error(await api.verify("000000"), 400)
    assert_error(await api.login(), 423)


async def test_a_locked_account_cannot_finish_a_live_challenge(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """Once wrong codes lock the account, the still-live challenge does not open a session
    with the right code: 423 and no session cookie."""
    api = Browsary(make_client(rest_dialects=DIALECTS, lockout_threshold=3), clock)
    secret, _ = await api.enable()
    await api.call("GET", "/logout")
    await api.challenge()
    for _ in range(3):
        assert_error(await api.verify("000000"), 400)
    response = await api.verify(totp_code(secret, clock))
    assert_error(response, 423)
    assert cookie_of(response) is None
    assert await live_sessions() == 0


async def test_parallel_submissions_of_one_code_make_one_session(
    api: Browsary, clock: FrozenClock
) -> None:
    """Twenty parallel /2fa/verify calls with one valid code yield exactly one session."""
    secret, _ = await api.enable()
    await api.call("GET", "/logout")
    challenge = await api.challenge()
    code = totp_code(secret, clock)
    responses = await asyncio.gather(*(api.verify(code, bearer=challenge) for _ in range(20)))
    assert sorted(r.status_code for r in responses).count(200) == 1
    assert all(r.status_code in (200, 400, 401) for r in responses)
    assert await live_sessions() == 1


async def test_verify_errors(api: Browsary) -> None:
    """/2fa/verify: no credential 401, a full session 400 (nothing pending), no code 400."""
    assert_error(await api.verify("123456"), 401)
    await api.enable()
    assert "waiting" in assert_error(await api.verify("123456"), 400)
    api.forget_cookies()
    await api.challenge()
    assert "token" in assert_error(await api.call("POST", "/2fa/verify", {}), 400)


# --- every sign-in route -----------------------------------------------------------------


async def test_reset_submit_with_2fa_on_answers_the_challenge(
    api: Browsary, clock: FrozenClock
) -> None:
    """A password reset of an account with 2FA on ends its sessions and answers
    2fa_required, not a session; the code then signs in with the new password's session."""
    secret, _ = await api.enable()
    api.forget_cookies()
    await api.call("POST", "/reset/request", {"email": EMAIL})
    mails, _ = await api.client.delivered()
    token = extract_token(mails[-1])
    body = {"token": token, "password": NEW_PASSWORD, "confirmPassword": NEW_PASSWORD}
    assert_pending(await api.call("POST", "/reset/submit", body))
    assert await live_sessions() == 0
    assert_session(await api.verify(totp_code(secret, clock)))
    assert (await Session.get(revoked_at=None)).method == "password_reset"


async def test_verify_submit_with_2fa_on_answers_the_challenge(
    api: Browsary, clock: FrozenClock
) -> None:
    """Email verification of an account with 2FA on answers 2fa_required, not a session."""
    registered = await api.call(
        "POST",
        "/register",
        {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "email": EMAIL,
            "password": PASSWORD,
            "confirmPassword": PASSWORD,
            "remember": True,
        },
    )
    jwt = registered.json()["token"]
    enrolment = await enrol(api.client, clock, access_token=jwt)  # over GraphQL
    api.shown.add(enrolment.secret)
    clock.advance(STEP)
    assert (await api.call("POST", "/verify/request", {})).json() == {"status": "ok"}
    mails, _ = await api.client.delivered()
    before = await live_sessions()
    assert_pending(await api.call("POST", "/verify/submit", {"token": extract_token(mails[-1])}))
    assert await live_sessions() == before
    assert (await api.status())["auth"]["info"]["emailVerified"] is True
    assert_session(await api.verify(totp_code(enrolment.secret, clock)))


async def test_graphql_enrolment_gives_browsary_the_challenge(
    api: Browsary, clock: FrozenClock
) -> None:
    """2FA turned on over GraphQL makes Browsary's login answer 2fa_required."""
    await verified_account(api.client)
    token = (await api.client.login()).data["login"]["accessToken"]
    enrolment = await enrol(api.client, clock, access_token=token)
    api.shown.add(enrolment.secret)
    clock.advance(STEP)
    await api.challenge()
    assert_session(await api.verify(totp_code(enrolment.secret, clock)))


# --- 2fa/enable/request and 2fa/enable/submit ------------------------------------------------


async def test_enable_request_answers_2fa_setup_with_url_and_secret(api: Browsary) -> None:
    """/2fa/enable/request answers {status:'2fa_setup', url, secret}; url is the otpauth URI
    of that secret; nothing is enforced until confirmed."""
    await verified_account(api.client)
    await api.login()
    response = await api.enable_request()
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "url", "secret"} and body["status"] == "2fa_setup"
    url = urlsplit(body["url"])
    assert (url.scheme, url.netloc) == ("otpauth", "totp")
    query = parse_qs(url.query)
    assert query["secret"] == [body["secret"]]
    assert EMAIL in url.path.replace("%40", "@")
    assert query["issuer"]
    assert cookie_of(response) is None
    assert (await User.get(email=EMAIL)).two_factor_enabled is False


async def test_enable_request_errors(api: Browsary) -> None:
    """Anonymous 401, an unverified account 400, 2FA already on 400."""
    assert_error(await api.enable_request(), 401)
    await api.call(
        "POST",
        "/register",
        {
            "firstName": "Bob",
            "lastName": "B",
            "email": BOB,
            "password": PASSWORD,
            "confirmPassword": PASSWORD,
            "remember": True,
        },
    )
    assert "verify" in assert_error(await api.enable_request(), 400).lower()
    await api.enable()
    assert "already" in assert_error(await api.enable_request(), 400)


async def test_enable_submit_turns_2fa_on_with_a_fresh_cookie_and_backup_codes(
    api: Browsary, clock: FrozenClock
) -> None:
    """/2fa/enable/submit answers {status:'ok', token, backupCodes} with a fresh cookie for
    the same session; the account's other sessions end."""
    await verified_account(api.client)
    other = (await api.login()).json()["token"]
    await api.login(remember=True)
    current = (await api.status())["auth"]["sid"]
    setup = (await api.enable_request()).json()
    api.shown.add(setup["secret"])
    response = await api.enable_submit(totp_code(setup["secret"], clock))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "token", "backupCodes"} and body["status"] == "ok"
    assert len(body["backupCodes"]) == 10 and len(set(body["backupCodes"])) == 10
    cookie = cookie_of(response)
    assert cookie is not None and cookie["value"] == body["token"]
    assert cookie["max-age"] == str(api.client.services.settings.refresh_token_ttl)
    auth = (await api.status())["auth"]
    assert auth["sid"] == current and auth["info"]["twoFactorConfigured"] is True
    assert await api.status(bearer=other) == {"status": "ok", "auth": None}
    assert (await User.get(email=EMAIL)).two_factor_enabled is True


async def test_enable_submit_errors(api: Browsary, clock: FrozenClock) -> None:
    """Anonymous 401, no setup pending 400, a wrong code 400 (2FA stays off)."""
    assert_error(await api.enable_submit("123456"), 401)
    await verified_account(api.client)
    await api.login()
    assert "setup" in assert_error(await api.enable_submit("123456"), 400).lower()
    setup = (await api.enable_request()).json()
    api.shown.add(setup["secret"])
    wrong = totp_code(setup["secret"], clock, steps=5)
    assert assert_error(await api.enable_submit(wrong), 400) == "Invalid code."
    assert "token" in assert_error(await api.call("POST", "/2fa/enable/submit", {}), 400)
    assert (await User.get(email=EMAIL)).two_factor_enabled is False


# --- 2fa/reset -------------------------------------------------------------------------------


async def test_reset_rotates_the_secret_once_confirmed(api: Browsary, clock: FrozenClock) -> None:
    """/2fa/reset with a current code answers {status:'2fa_setup', url, secret, token}; the
    old authenticator works until /2fa/enable/submit confirms the new one, which also
    replaces the backup codes."""
    old_secret, old_codes = await api.enable()
    response = await api.reset(totp_code(old_secret, clock))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "url", "secret", "token"} and body["status"] == "2fa_setup"
    assert body["secret"] != old_secret and body["secret"] in body["url"]
    assert cookie_of(response)["value"] == body["token"]  # type: ignore[index]
    new_secret = body["secret"]
    api.shown.add(new_secret)
    assert (await api.status())["status"] == "ok"
    clock.advance(STEP)
    confirmed = await api.enable_submit(totp_code(new_secret, clock))
    assert confirmed.status_code == 200
    new_codes = confirmed.json()["backupCodes"]
    api.shown.update(new_codes)
    assert (await api.status())["status"] == "ok"
    clock.advance(STEP)
    api.forget_cookies()
    await api.challenge()
    assert_error(await api.verify(totp_code(old_secret, clock)), 400)
    assert_error(await api.verify(old_codes[0]), 400)
    assert_session(await api.verify(totp_code(new_secret, clock)))
    api.forget_cookies()
    await api.challenge()
    assert_session(await api.verify(new_codes[0]))


async def test_reset_keeps_the_old_authenticator_until_confirmed(
    api: Browsary, clock: FrozenClock
) -> None:
    """An unconfirmed reset changes nothing: the old app still completes sign-ins."""
    old_secret, _ = await api.enable()
    pending = (await api.reset(totp_code(old_secret, clock))).json()
    api.shown.add(pending["secret"])
    clock.advance(STEP)
    api.forget_cookies()
    await api.challenge()
    assert_session(await api.verify(totp_code(old_secret, clock)))


async def test_reset_errors(api: Browsary, clock: FrozenClock) -> None:
    """Anonymous 401, a wrong code 400, a missing code 400; nothing is left pending."""
    assert_error(await api.reset("123456"), 401)
    await api.enable()
    assert assert_error(await api.reset("000000"), 400) == "Invalid code."
    assert "token" in assert_error(await api.call("POST", "/2fa/reset", {}), 400)
    assert await TotpCredential.filter(pending_encrypted__isnull=False).count() == 0


async def test_reset_needs_a_verified_email(api: Browsary, clock: FrozenClock) -> None:
    """An unverified account (2FA turned on over GraphQL) cannot reset over Browsary: 400."""
    body = {
        "firstName": "Ada",
        "lastName": "Lovelace",
        "email": EMAIL,
        "password": PASSWORD,
        "confirmPassword": PASSWORD,
        "remember": True,
    }
    jwt = (await api.call("POST", "/register", body)).json()["token"]
    enrolment = await enrol(api.client, clock, access_token=jwt)
    api.shown.add(enrolment.secret)
    clock.advance(STEP)
    message = assert_error(await api.reset(totp_code(enrolment.secret, clock)), 400)
    assert "verify" in message.lower()


# --- the "2FA required" policy ---------------------------------------------------------------


async def test_policy_login_goes_through_2fa_setup(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """Under require_two_factor a login without a factor answers 2fa_setup; the challenge
    in the cookie enrols the authenticator, then awaits the next code as 2fa_required."""
    api = Browsary(make_client(rest_dialects=DIALECTS, require_two_factor=True), clock)
    await verified_account(api.client)
    challenge = assert_pending(await api.login(remember=True), "2fa_setup")
    pending = await api.status()
    assert pending["status"] == "2fa_setup"
    assert pending["auth"]["info"]["twoFactorConfigured"] is False
    assert pending["auth"]["info"]["twoFactorPassed"] is False
    assert_error(await api.verify("123456"), 401)  # setup first
    setup = (await api.enable_request()).json()
    assert setup["status"] == "2fa_setup"
    api.shown.add(setup["secret"])
    submitted = await api.enable_submit(totp_code(setup["secret"], clock))
    assert submitted.status_code == 200
    body = submitted.json()
    assert set(body) == {"status", "token", "backupCodes"}
    assert body["status"] == "2fa_required" and body["token"] == challenge
    api.shown.update(body["backupCodes"])
    assert await live_sessions() == 0
    assert (await api.status())["auth"]["info"]["twoFactorConfigured"] is True
    assert (await api.status())["status"] == "2fa_required"
    assert_error(await api.verify(totp_code(setup["secret"], clock)), 400)  # step used
    clock.advance(STEP)
    assert_session(await api.verify(totp_code(setup["secret"], clock)), remember=True)


async def test_policy_register_answers_2fa_setup(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """Under require_two_factor, registering answers 2fa_setup with the challenge cookie."""
    api = Browsary(make_client(rest_dialects=DIALECTS, require_two_factor=True), clock)
    body = {
        "firstName": "Ada",
        "lastName": "Lovelace",
        "email": EMAIL,
        "password": PASSWORD,
        "confirmPassword": PASSWORD,
    }
    assert_pending(await api.call("POST", "/register", body), "2fa_setup")
    assert (await api.status())["status"] == "2fa_setup"
    assert (await api.enable_request()).status_code == 200


# --- documentation ---------------------------------------------------------------------------


async def test_openapi_lists_the_two_factor_routes(api: Browsary) -> None:
    """openapi.json documents the four 2FA routes with their bodies."""
    paths = (await api.call("GET", "/openapi.json")).json()["paths"]
    for path in ("/2fa/enable/request", "/2fa/enable/submit", "/2fa/verify", "/2fa/reset"):
        assert "post" in paths[f"{PREFIX}{path}"], path
    verify = paths[f"{PREFIX}/2fa/verify"]["post"]["requestBody"]["content"]["application/json"]
    assert verify["schema"]["required"] == ["token"]
