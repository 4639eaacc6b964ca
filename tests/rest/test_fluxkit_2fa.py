"""FluxKit and two-factor authentication (an authql extension: FluxKit has none): login and
verify-magic-link answer 403 TWO_FACTOR_REQUIRED with a challenge instead of tokens, and
POST /verify-2fa completes the sign-in with a TOTP, backup or emailed code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

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
from tests.smtp import extract_code, extract_token
from tests.support import PASSWORD, GraphQLClient
from tests.totp_helpers import STEP, Enrolment, enrol, totp_code

MakeClient = Callable[..., GraphQLClient]
PREFIX = "/auth"
EMAIL, BOB = "alice@example.com", "bob@example.com"
REQUIRED = {"code": "TWO_FACTOR_REQUIRED", "message": "Two-factor authentication required"}
SETUP_REQUIRED = {
    "code": "TWO_FACTOR_SETUP_REQUIRED",
    "message": "Two-factor authentication setup required",
}
INVALID_CODE = {"error": {"code": "INVALID_2FA_CODE", "message": "Invalid two-factor code"}}
INVALID_CHALLENGE = {
    "error": {"code": "INVALID_CHALLENGE", "message": "Challenge is expired or invalid"}
}
SEND_CODE = """
mutation($t: String!, $m: TwoFactorMethod!) { sendTwoFactorCode(challengeToken: $t, method: $m) }
"""


# --- helpers ---------------------------------------------------------------------------------


class Flux:
    """Speaks FluxKit to an in-process app, checking that no response leaks a secret."""

    def __init__(self, client: GraphQLClient, clock: FrozenClock) -> None:
        self.client = client
        self.clock = clock
        #: Authenticator secrets and backup codes shown at enrolment (over GraphQL).
        self.shown: set[str] = set()

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, token: str = ""
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = await self.client.http.request(method, PREFIX + path, json=body, headers=headers)
        await self.assert_clean(response)
        return response

    async def assert_clean(self, response: httpx.Response) -> None:
        """No cookie, password hash, stored digest, encrypted or shown secret, backup code,
        or the word "totp" outside the ``methods`` names of a challenge answer."""
        assert "set-cookie" not in response.headers
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        everything = f"{response.text}\n{headers}"
        assert "$argon2" not in everything
        stored = list(await RefreshToken.all().values_list("digest", flat=True))
        stored += await Session.exclude(token_digest=None).values_list("token_digest", flat=True)
        stored += await OneTimeToken.all().values_list("digest", flat=True)
        stored += await TwoFactorChallenge.all().values_list("digest", flat=True)
        stored += await BackupCode.all().values_list("digest", flat=True)
        for secret, pending in await TotpCredential.all().values_list(
            "secret_encrypted", "pending_encrypted"
        ):
            stored += [value for value in (secret, pending) if value]
        for value in [*stored, *self.shown]:
            assert str(value) not in everything
        body = response.json() if response.text else None
        if isinstance(body, dict):
            # Random tokens could spell the word by chance; method names are not secrets.
            for key in ("token", "refreshToken", "challengeToken"):
                if isinstance(body.get(key), str):
                    everything = everything.replace(body[key], "")
            for name in body.get("methods") or ():
                everything = everything.replace(f'"{name}"', "")
        assert "totp" not in everything.lower()

    async def login(self, email: str = EMAIL, password: str = PASSWORD) -> httpx.Response:
        return await self.call("POST", "/login", {"email": email, "password": password})

    async def challenge(self, email: str = EMAIL) -> str:
        """Sign in with the password; the challenge of the 403 that answered."""
        return assert_challenge(await self.login(email))

    async def verify(self, challenge: str, code: str, **extra: Any) -> httpx.Response:
        body = {"challengeToken": challenge, "code": code, **extra}
        return await self.call("POST", "/verify-2fa", body)

    async def me(self, token: str) -> httpx.Response:
        return await self.call("GET", "/me", token=token)

    async def enable(self, email: str = EMAIL) -> Enrolment:
        """A verified account with TOTP on (enrolled over GraphQL); the clock then moves one
        step on, since enrolment used the current step's code."""
        await accounts.create_admin(self.client.services.passwords, email=email, password=PASSWORD)
        token = (await self.client.login(email)).data["login"]["accessToken"]
        enrolment = await enrol(self.client, self.clock, access_token=token)
        self.shown.update([enrolment.secret, *enrolment.backup_codes])
        self.clock.advance(STEP)
        return enrolment


@pytest.fixture
def api(make_client: MakeClient, clock: FrozenClock) -> Flux:
    """FluxKit mounted at /auth."""
    return Flux(make_client(rest_dialects=(("fluxkit", PREFIX),)), clock)


def assert_challenge(response: httpx.Response, error: dict[str, str] = REQUIRED) -> str:
    """The 403 challenge answer: ``{error, challengeToken, methods}`` and no token."""
    assert response.status_code == 403, response.text
    body = response.json()
    assert set(body) == {"error", "challengeToken", "methods"}
    assert body["error"] == error
    methods = ["TOTP"] if error is SETUP_REQUIRED else ["TOTP", "BACKUP_CODE"]
    assert body["methods"] == methods
    assert isinstance(body["challengeToken"], str) and len(body["challengeToken"]) >= 40
    return str(body["challengeToken"])


def assert_signed_in(response: httpx.Response) -> dict[str, Any]:
    """Login's shape: ``{user:{_id,email,name}, token, refreshToken}``."""
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"user", "token", "refreshToken"}
    assert set(body["user"]) == {"_id", "email", "name"}
    return body


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code


async def live_sessions(email: str = EMAIL) -> int:
    user = await User.get(email=email)
    return await Session.filter(user_id=user.id, revoked_at=None).count()


# --- sign-in reaches the challenge -----------------------------------------------------------


async def test_login_with_2fa_on_answers_403_with_a_challenge_and_no_token(api: Flux) -> None:
    """Login of an account with 2FA on answers 403 TWO_FACTOR_REQUIRED with the challenge
    and the methods FluxKit can complete, and starts no session."""
    await api.enable()
    before = await live_sessions()
    await api.challenge()
    assert await live_sessions() == before


async def test_magic_link_with_2fa_on_answers_the_challenge(api: Flux) -> None:
    """verify-magic-link of an account with 2FA on answers the 403 challenge, which then
    completes with a code."""
    enrolment = await api.enable()
    assert (await api.call("POST", "/magic-link", {"email": EMAIL})).status_code == 200
    mails, _ = await api.client.delivered()
    challenge = assert_challenge(
        await api.call("POST", "/verify-magic-link", {"token": extract_token(mails[-1])})
    )
    body = assert_signed_in(await api.verify(challenge, totp_code(enrolment.secret, api.clock)))
    assert (await api.me(body["token"])).status_code == 200
    assert await Session.exists(revoked_at=None, method="magic_link")


async def test_verify_2fa_with_totp_signs_in(api: Flux, clock: FrozenClock) -> None:
    """/verify-2fa with the app's code answers {user, token, refreshToken}; both work."""
    enrolment = await api.enable()
    challenge = await api.challenge()
    body = assert_signed_in(await api.verify(challenge, totp_code(enrolment.secret, clock)))
    assert body["user"]["email"] == EMAIL
    me = await api.me(body["token"])
    assert me.status_code == 200 and me.json()["user"]["_id"] == body["user"]["_id"]
    refreshed = await api.call("POST", "/refresh", {"refreshToken": body["refreshToken"]})
    assert refreshed.status_code == 200


async def test_verify_2fa_with_a_backup_code_once(api: Flux) -> None:
    """A backup code (no method needed) completes one sign-in; used again it is refused."""
    enrolment = await api.enable()
    code = enrolment.backup_codes[0]
    assert_signed_in(await api.verify(await api.challenge(), code))
    challenge = await api.challenge()
    response = await api.verify(challenge, code)
    assert response.status_code == 401 and response.json() == INVALID_CODE
    assert_signed_in(await api.verify(challenge, enrolment.backup_codes[1], method="backup_code"))


async def test_method_decides_how_the_code_is_read(api: Flux, clock: FrozenClock) -> None:
    """With method TOTP a backup code is a wrong code; an unknown method is 400."""
    enrolment = await api.enable()
    challenge = await api.challenge()
    wrong = await api.verify(challenge, enrolment.backup_codes[0], method="TOTP")
    assert wrong.json() == INVALID_CODE
    assert_error(
        await api.verify(challenge, "123456", method="CARRIER_PIGEON"), 400, "VALIDATION_ERROR"
    )
    assert_signed_in(await api.verify(challenge, totp_code(enrolment.secret, clock), method="totp"))


async def test_emailed_code_completes_the_challenge(api: Flux) -> None:
    """A code mailed by GraphQL's sendTwoFactorCode completes it with method EMAIL."""
    await api.enable()
    challenge = await api.challenge()
    sent = await api.client.gql(SEND_CODE, {"t": challenge, "m": "EMAIL"})
    assert sent.data["sendTwoFactorCode"] is True
    mails, _ = await api.client.delivered()
    assert_signed_in(await api.verify(challenge, extract_code(mails[-1]), method="EMAIL"))


async def test_replayed_totp_code_is_refused(api: Flux, clock: FrozenClock) -> None:
    """A code that completed one sign-in is refused for the next; the next step's works."""
    enrolment = await api.enable()
    code = totp_code(enrolment.secret, clock)
    assert_signed_in(await api.verify(await api.challenge(), code))
    challenge = await api.challenge()
    assert (await api.verify(challenge, code)).json() == INVALID_CODE
    clock.advance(STEP)
    assert_signed_in(await api.verify(challenge, totp_code(enrolment.secret, clock)))


async def test_challenge_is_never_an_access_token(api: Flux) -> None:
    """As a Bearer the challenge is 401 INVALID_TOKEN on FluxKit and nobody over GraphQL;
    it is no refresh token either."""
    await api.enable()
    challenge = await api.challenge()
    assert_error(await api.me(challenge), 401, "INVALID_TOKEN")
    assert_error(await api.call("POST", "/logout", token=challenge), 401, "INVALID_TOKEN")
    refresh = await api.call("POST", "/refresh", {"refreshToken": challenge})
    assert_error(refresh, 401, "INVALID_TOKEN")
    result = await api.client.gql("query { me { id } }", token=challenge)
    assert not result.body.get("data") or result.body["data"]["me"] is None


async def test_dead_challenges_answer_invalid_challenge(api: Flux, clock: FrozenClock) -> None:
    """Unknown, used, expired and foreign-purpose challenges are 401 INVALID_CHALLENGE."""
    enrolment = await api.enable()
    assert (await api.verify("not-a-challenge", "123456")).json() == INVALID_CHALLENGE
    used = await api.challenge()
    assert_signed_in(await api.verify(used, totp_code(enrolment.secret, clock)))
    clock.advance(STEP)
    response = await api.verify(used, totp_code(enrolment.secret, clock))
    assert response.status_code == 401 and response.json() == INVALID_CHALLENGE
    expired = await api.challenge()
    clock.advance(301)
    assert (await api.verify(expired, totp_code(enrolment.secret, clock))).json() == (
        INVALID_CHALLENGE
    )


async def test_challenge_dies_after_five_wrong_codes(api: Flux, clock: FrozenClock) -> None:
    """Five wrong codes kill the challenge: the right code is then INVALID_CHALLENGE."""
    enrolment = await api.enable()
    challenge = await api.challenge()
    for _ in range(5):
        assert (await api.verify(challenge, "000000")).json() == INVALID_CODE
    response = await api.verify(challenge, totp_code(enrolment.secret, clock))
    assert response.json() == INVALID_CHALLENGE


async def test_wrong_codes_count_toward_the_lockout(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """Wrong second-factor codes lock the account like wrong passwords (423 on login)."""
    api = Flux(make_client(rest_dialects=(("fluxkit", PREFIX),), lockout_threshold=3), clock)
    await api.enable()
    challenge = await api.challenge()
    for _ in range(3):
        assert (await api.verify(challenge, "000000")).status_code == 401
    locked = await api.login()
    assert_error(locked, 423, "ACCOUNT_LOCKED")
    assert int(locked.headers["retry-after"]) > 0


async def test_a_locked_account_cannot_finish_a_live_challenge(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """Once wrong codes lock the account, fresh logins are 423 and the live challenge does
    not complete with the right code either (423, no token)."""
    api = Flux(make_client(rest_dialects=(("fluxkit", PREFIX),), lockout_threshold=3), clock)
    enrolment = await api.enable()
    for _ in range(2):
        assert (await api.verify(await api.challenge(), "000000")).json() == INVALID_CODE
    challenge = await api.challenge()
    assert (await api.verify(challenge, "000000")).json() == INVALID_CODE
    assert_error(await api.login(), 423, "ACCOUNT_LOCKED")
    locked = await api.verify(challenge, totp_code(enrolment.secret, clock))
    assert_error(locked, 423, "ACCOUNT_LOCKED")
    assert int(locked.headers["retry-after"]) > 0


async def test_another_accounts_code_is_a_wrong_code(api: Flux, clock: FrozenClock) -> None:
    """Bob's valid code does not complete Alice's challenge."""
    alice = await api.enable()
    bob = await api.enable(BOB)
    challenge = await api.challenge()
    assert (await api.verify(challenge, totp_code(bob.secret, clock))).json() == INVALID_CODE
    assert_signed_in(await api.verify(challenge, totp_code(alice.secret, clock)))


async def test_verify_2fa_needs_both_fields(api: Flux) -> None:
    """A missing challengeToken or code is 400 VALIDATION_ERROR."""
    assert_error(await api.call("POST", "/verify-2fa", {"code": "123456"}), 400, "VALIDATION_ERROR")
    assert_error(
        await api.call("POST", "/verify-2fa", {"challengeToken": "x"}), 400, "VALIDATION_ERROR"
    )


async def test_parallel_submissions_of_one_code_make_one_session(
    api: Flux, clock: FrozenClock
) -> None:
    """Twenty parallel /verify-2fa calls with one valid code yield exactly one session."""
    enrolment = await api.enable()
    before = await live_sessions()
    challenge = await api.challenge()
    code = totp_code(enrolment.secret, clock)
    responses = await asyncio.gather(*(api.verify(challenge, code) for _ in range(20)))
    assert [r.status_code for r in responses].count(200) == 1
    assert all(r.status_code in (200, 401) for r in responses)
    assert await live_sessions() == before + 1


# --- the "2FA required" policy ---------------------------------------------------------------


async def test_policy_login_answers_setup_required_then_completes(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """Under require_two_factor a login without a factor answers 403
    TWO_FACTOR_SETUP_REQUIRED; enrolled over GraphQL with that challenge, /verify-2fa
    completes it with the next code."""
    client = make_client(rest_dialects=(("fluxkit", PREFIX),), require_two_factor=True)
    api = Flux(client, clock)
    registered = await api.call("POST", "/register", {"email": EMAIL, "password": PASSWORD})
    assert registered.status_code == 201 and set(registered.json()) == {"user"}
    challenge = assert_challenge(await api.login(), SETUP_REQUIRED)
    assert (await api.verify(challenge, "123456")).json() == INVALID_CHALLENGE
    enrolment = await enrol(client, clock, challenge_token=challenge)
    api.shown.update([enrolment.secret, *enrolment.backup_codes])
    clock.advance(STEP)
    assert_signed_in(await api.verify(challenge, totp_code(enrolment.secret, clock)))


# --- documentation ---------------------------------------------------------------------------


async def test_openapi_documents_verify_2fa(api: Flux) -> None:
    """openapi.json lists POST /verify-2fa with its body."""
    paths = (await api.call("GET", "/openapi.json")).json()["paths"]
    schema = paths["/auth/verify-2fa"]["post"]["requestBody"]["content"]["application/json"]
    assert set(schema["schema"]["properties"]) == {"challengeToken", "code", "method"}
    assert schema["schema"]["required"] == ["challengeToken", "code"]
