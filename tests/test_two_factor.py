"""Two-factor authentication over GraphQL: TOTP enrolment, the challenge every sign-in path
returns once 2FA is on, completing it with TOTP, backup, SMS and email codes, every way to
misuse a challenge or a code, managing the factor, the "2FA required" policy, and how the
secrets are stored."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.etree import ElementTree

import pyotp
import pytest
import segno

from authql.models import AuthEventRecord, BackupCode, Session, TotpCredential, User
from authql.services.clock import FrozenClock
from tests.smtp import extract_code, extract_token
from tests.support import PASSWORD, REFRESH, GraphQLClient, GraphQLResult
from tests.totp_helpers import STEP, Enrolment, enrol, totp_code

MakeClient = Callable[..., GraphQLClient]

ADA, ADA_PHONE = "ada@example.com", "+14155550100"
BOB = "bob@example.com"
PRODUCT = "Acme ID"
NEW_PASSWORD = "a brand new passphrase"

PAYLOAD = """
status accessToken refreshToken challengeToken twoFactorMethods
user { id email } session { id method }
"""
LOGIN = f"""
mutation($i: String!, $p: String!) {{ login(identifier: $i, password: $p) {{ {PAYLOAD} }} }}
"""
VERIFY_TWO_FACTOR = f"""
mutation($t: String!, $c: String!, $m: TwoFactorMethod) {{
  verifyTwoFactor(challengeToken: $t, code: $c, method: $m) {{ {PAYLOAD} }}
}}
"""
SEND_TWO_FACTOR_CODE = """
mutation($t: String!, $m: TwoFactorMethod!) { sendTwoFactorCode(challengeToken: $t, method: $m) }
"""
BEGIN_SETUP = """
mutation($t: String) { beginTotpSetup(challengeToken: $t) { secret otpauthUrl qrCodeSvg } }
"""
CONFIRM_SETUP = """
mutation($c: String!, $t: String) { confirmTotpSetup(code: $c, challengeToken: $t) }
"""
STATUS = "query { twoFactorStatus { enabled methods backupCodesRemaining } }"
CHECK = "mutation($i: String!) { checkTwoFactor(identifier: $i) { requiresTwoFactor methods } }"
DISABLE = "mutation($c: String!) { disableTwoFactor(code: $c) }"
REGENERATE = "mutation($c: String!) { regenerateBackupCodes(code: $c) }"
RESET_TOTP = "mutation($c: String!) { resetTotp(code: $c) { secret otpauthUrl qrCodeSvg } }"
ME = "query { me { id email twoFactorEnabled } }"
MY_SESSIONS = "query { mySessions { id } }"
SEND_MAGIC_LINK = "mutation($e: String!) { sendMagicLink(email: $e) }"
VERIFY_MAGIC_LINK = f"mutation($t: String!) {{ verifyMagicLink(token: $t) {{ {PAYLOAD} }} }}"
SEND_SMS = "mutation($p: String!) { sendSmsCode(phone: $p) }"
VERIFY_SMS = f"""
mutation($p: String!, $c: String!) {{ verifySmsCode(phone: $p, code: $c) {{ {PAYLOAD} }} }}
"""
REQUEST_RESET = "mutation($e: String!) { requestPasswordReset(email: $e) }"
RESET_PASSWORD = f"""
mutation($t: String!, $p: String!) {{ resetPassword(token: $t, password: $p) {{ {PAYLOAD} }} }}
"""
SEND_VERIFICATION = "mutation { sendVerificationEmail }"
VERIFY_EMAIL = f"mutation($t: String!) {{ verifyEmail(token: $t) {{ {PAYLOAD} }} }}"


# --- helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """A registered account with 2FA on, and the session it enrolled from."""

    user_id: str
    email: str
    access_token: str
    refresh_token: str
    totp: Enrolment


async def enrolled(
    client: GraphQLClient, clock: FrozenClock, email: str = ADA, **fields: Any
) -> Account:
    """Register ``email`` and turn TOTP on from that session."""
    payload = await client.register(email, **fields)
    assert payload["status"] == "OK"
    enrolment = await enrol(client, clock, access_token=payload["accessToken"])
    return Account(
        payload["user"]["id"],
        email,
        payload["accessToken"],
        payload["refreshToken"],
        enrolment,
    )


async def password_login(client: GraphQLClient, email: str = ADA) -> dict[str, Any]:
    return (await client.gql(LOGIN, {"i": email, "p": PASSWORD})).data["login"]  # type: ignore[no-any-return]


async def challenge_for(client: GraphQLClient, email: str = ADA) -> str:
    """Sign in with the password and return the challenge token it answers with."""
    payload = await password_login(client, email)
    assert_challenge(payload)
    return payload["challengeToken"]  # type: ignore[no-any-return]


async def verify(
    client: GraphQLClient, challenge: str, code: str, method: str = "TOTP"
) -> GraphQLResult:
    return await client.gql(VERIFY_TWO_FACTOR, {"t": challenge, "c": code, "m": method})


def signed_in(result: GraphQLResult) -> dict[str, Any]:
    """The payload of a completed challenge, checked to be a full session."""
    payload = result.data["verifyTwoFactor"]
    assert payload["status"] == "OK"
    assert payload["accessToken"] and payload["refreshToken"] and payload["session"]
    assert payload["challengeToken"] is None
    return payload  # type: ignore[no-any-return]


def assert_challenge(payload: dict[str, Any], status: str = "TWO_FACTOR_REQUIRED") -> None:
    """A pending sign-in: a challenge and the methods for it, and no session at all."""
    assert payload["status"] == status, payload
    assert payload["challengeToken"]
    assert payload["twoFactorMethods"]
    assert payload["accessToken"] is None
    assert payload["refreshToken"] is None
    assert payload["session"] is None


def assert_invalid_token(result: GraphQLResult) -> None:
    assert result.error_code == "INVALID_TOKEN", result.body
    assert result.body["data"] is None


def wrong_code(secret: str, clock: FrozenClock) -> str:
    """A six-digit code that no step within the drift window accepts."""
    window = {totp_code(secret, clock, steps=step) for step in (-1, 0, 1)}
    candidate = int(totp_code(secret, clock))
    while f"{candidate:06d}" in window:
        candidate = (candidate + 1) % 10**6
    return f"{candidate:06d}"


async def status(client: GraphQLClient, access_token: str) -> dict[str, Any]:
    return (await client.gql(STATUS, token=access_token)).data["twoFactorStatus"]  # type: ignore[no-any-return]


async def session_count(user_id: str) -> int:
    return await Session.filter(user_id=user_id).count()


_PATH_STEP = re.compile(r"([A-Za-z])\s*(-?\d+(?:\.\d+)?)(?:[\s,]+(-?\d+(?:\.\d+)?))?")


def svg_dark_modules(svg: str) -> set[tuple[int, int]]:
    """The dark modules (column, row) a segno-style SVG QR code draws: one path of
    horizontal runs (``M``/``m`` moves, ``h`` runs), shifted so the symbol starts at 0, 0."""
    root = ElementTree.fromstring(svg)  # noqa: S314 (our own server's output, in a test)
    assert root.tag.rsplit("}", 1)[-1] == "svg"
    paths = [node for node in root.iter() if node.tag.rsplit("}", 1)[-1] == "path"]
    assert len(paths) == 1, "expected the QR code as one path"
    x = y = 0.0
    dark: set[tuple[int, int]] = set()
    for command, first, second in _PATH_STEP.findall(paths[0].get("d", "")):
        if command == "M":
            x, y = float(first), float(second)
        elif command == "m":
            x, y = x + float(first), y + float(second)
        elif command == "h":
            run = int(float(first))
            assert run > 0, "unexpected backwards run"
            dark.update((int(x) + offset, int(y)) for offset in range(run))
            x += run
        else:
            raise AssertionError(f"unexpected SVG path command {command!r}")
    left = min(column for column, _ in dark)
    top = min(row for _, row in dark)
    return {(column - left, row - top) for column, row in dark}


def qr_symbols(url: str) -> list[set[tuple[int, int]]]:
    """The dark modules of every QR symbol (any error level, any mask) that encodes ``url``."""
    symbols = []
    for error in "LMQH":
        for mask in range(8):
            matrix = segno.make(url, error=error, mask=mask, boost_error=False, micro=False).matrix
            symbols.append(
                {
                    (column, row)
                    for row, line in enumerate(matrix)
                    for column, value in enumerate(line)
                    if value
                }
            )
    return symbols


# --- setup -----------------------------------------------------------------------------------


async def test_setup_returns_secret_url_and_qr_code(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """beginTotpSetup gives a base32 secret, an otpauth URL naming the product and the
    account, and an SVG QR code of that URL."""
    client = make_client(product_name=PRODUCT)
    payload = await client.register(ADA)
    result = await client.gql(BEGIN_SETUP, token=payload["accessToken"])
    setup = result.data["beginTotpSetup"]

    secret = setup["secret"]
    assert re.fullmatch(r"[A-Z2-7]+=*", secret)
    assert len(base64.b32decode(secret)) >= 16

    url = urlsplit(setup["otpauthUrl"])
    assert (url.scheme, url.netloc) == ("otpauth", "totp")
    assert unquote(url.path) == f"/{PRODUCT}:{ADA}"
    query = {key: values[-1] for key, values in parse_qs(url.query).items()}
    assert query["secret"] == secret
    assert query["issuer"] == PRODUCT
    assert query.get("algorithm", "SHA1") == "SHA1"
    assert query.get("digits", "6") == "6"
    assert query.get("period", "30") == "30"
    parsed = pyotp.parse_uri(setup["otpauthUrl"])
    assert parsed.now() == pyotp.TOTP(secret).now()

    svg = setup["qrCodeSvg"]
    assert svg.lstrip().startswith("<svg")
    dark = svg_dark_modules(svg)
    assert len(dark) > 200
    assert dark in qr_symbols(setup["otpauthUrl"]), "the QR code does not encode the URL"


async def test_nothing_is_active_before_confirmation(client: GraphQLClient) -> None:
    """After beginTotpSetup alone, 2FA stays off: login gives a session, no challenge."""
    payload = await client.register(ADA)
    access = payload["accessToken"]
    assert (await client.gql(BEGIN_SETUP, token=access)).errors == []
    assert await status(client, access) == {
        "enabled": False,
        "methods": [],
        "backupCodesRemaining": 0,
    }
    login = await password_login(client)
    assert login["status"] == "OK"
    assert login["accessToken"] and login["challengeToken"] is None
    check = (await client.gql(CHECK, {"i": ADA})).data["checkTwoFactor"]
    assert check == {"requiresTwoFactor": False, "methods": []}


async def test_wrong_confirmation_code_changes_nothing(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """confirmTotpSetup with a wrong code is INVALID_TOKEN and 2FA stays off."""
    payload = await client.register(ADA)
    access = payload["accessToken"]
    setup = (await client.gql(BEGIN_SETUP, token=access)).data["beginTotpSetup"]
    other_secret = pyotp.random_base32()
    for code in (wrong_code(setup["secret"], clock), totp_code(other_secret, clock)):
        assert_invalid_token(await client.gql(CONFIRM_SETUP, {"c": code}, token=access))
    assert (await status(client, access))["enabled"] is False
    assert (await client.gql(ME, token=access)).data["me"]["twoFactorEnabled"] is False
    assert (await password_login(client))["status"] == "OK"
    assert await BackupCode.filter(user_id=payload["user"]["id"]).count() == 0


async def test_confirmation_turns_totp_on_with_ten_backup_codes(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """confirmTotpSetup returns ten distinct backup codes; twoFactorStatus and me show 2FA on."""
    payload = await client.register(ADA)
    access = payload["accessToken"]
    assert await status(client, access) == {
        "enabled": False,
        "methods": [],
        "backupCodesRemaining": 0,
    }
    enrolment = await enrol(client, clock, access_token=access)
    assert len(enrolment.backup_codes) == 10
    assert len(set(enrolment.backup_codes)) == 10
    assert all(len(code) >= 8 for code in enrolment.backup_codes)
    assert await status(client, access) == {
        "enabled": True,
        "methods": ["TOTP", "BACKUP_CODE"],
        "backupCodesRemaining": 10,
    }
    assert (await client.gql(ME, token=access)).data["me"]["twoFactorEnabled"] is True


async def test_check_two_factor_names_the_methods(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """checkTwoFactor names TOTP and BACKUP_CODE for an enrolled account, and answers unknown
    accounts like accounts without a factor."""
    await client.register(BOB)
    await enrolled(client, clock)
    answers = {}
    for identifier in (ADA, BOB, "nobody@example.com"):
        answers[identifier] = (await client.gql(CHECK, {"i": identifier})).data["checkTwoFactor"]
    assert answers[ADA] == {"requiresTwoFactor": True, "methods": ["TOTP", "BACKUP_CODE"]}
    assert answers[BOB] == {"requiresTwoFactor": False, "methods": []}
    assert answers["nobody@example.com"] == answers[BOB]


async def test_enabling_ends_every_other_session(client: GraphQLClient, clock: FrozenClock) -> None:
    """Turning 2FA on revokes the account's other sessions (access and refresh tokens) and
    keeps the one that enrolled."""
    payload = await client.register(ADA)
    other = await password_login(client)
    assert other["status"] == "OK"
    assert await client.me(other["accessToken"]) is not None

    await enrol(client, clock, access_token=payload["accessToken"])

    assert await client.me(other["accessToken"]) is None
    assert (await client.gql(MY_SESSIONS, token=other["accessToken"])).error_code == "UNAUTHORIZED"
    assert_invalid_token(await client.gql(REFRESH, {"token": other["refreshToken"]}))

    assert await client.me(payload["accessToken"]) is not None
    rotated = (await client.gql(REFRESH, {"token": payload["refreshToken"]})).data["refresh"]
    assert rotated["status"] == "OK"
    assert await client.me(rotated["accessToken"]) is not None


# --- every sign-in path reaches a challenge --------------------------------------------------


async def _via_password(client: GraphQLClient, account: Account) -> dict[str, Any]:
    return await password_login(client, account.email)


async def _via_magic_link(client: GraphQLClient, account: Account) -> dict[str, Any]:
    assert (await client.gql(SEND_MAGIC_LINK, {"e": account.email})).data["sendMagicLink"]
    mails, _ = await client.delivered()
    token = extract_token(mails[-1])
    return (await client.gql(VERIFY_MAGIC_LINK, {"t": token})).data["verifyMagicLink"]  # type: ignore[no-any-return]


async def _via_sms(client: GraphQLClient, account: Account) -> dict[str, Any]:
    assert (await client.gql(SEND_SMS, {"p": ADA_PHONE})).data["sendSmsCode"]
    _, texts = await client.delivered()
    assert texts[-1].to == ADA_PHONE
    code = extract_code(texts[-1])
    return (await client.gql(VERIFY_SMS, {"p": ADA_PHONE, "c": code})).data["verifySmsCode"]  # type: ignore[no-any-return]


async def _via_password_reset(client: GraphQLClient, account: Account) -> dict[str, Any]:
    assert (await client.gql(REQUEST_RESET, {"e": account.email})).data["requestPasswordReset"]
    mails, _ = await client.delivered()
    token = extract_token(mails[-1])
    result = await client.gql(RESET_PASSWORD, {"t": token, "p": NEW_PASSWORD})
    return result.data["resetPassword"]  # type: ignore[no-any-return]


async def _via_email_verification(client: GraphQLClient, account: Account) -> dict[str, Any]:
    sent = await client.gql(SEND_VERIFICATION, token=account.access_token)
    assert sent.data["sendVerificationEmail"] is True
    mails, _ = await client.delivered()
    token = extract_token(mails[-1])
    return (await client.gql(VERIFY_EMAIL, {"t": token})).data["verifyEmail"]  # type: ignore[no-any-return]


FirstFactor = Callable[[GraphQLClient, Account], Awaitable[dict[str, Any]]]
FIRST_FACTORS: dict[str, tuple[FirstFactor, str]] = {
    "password": (_via_password, "password"),
    "magic_link": (_via_magic_link, "magic_link"),
    "sms": (_via_sms, "sms"),
    "password_reset": (_via_password_reset, "password_reset"),
    "email_verification": (_via_email_verification, "email_verification"),
}


@pytest.mark.parametrize("path", list(FIRST_FACTORS))
async def test_every_sign_in_path_reaches_a_challenge(
    client: GraphQLClient, clock: FrozenClock, path: str
) -> None:
    """With 2FA on, each sign-in path answers TWO_FACTOR_REQUIRED with a challenge and no
    session; the challenge then completes with a TOTP code into a session of that path."""
    account = await enrolled(client, clock, phone=ADA_PHONE)
    first_factor, method = FIRST_FACTORS[path]
    before = await Session.filter(user_id=account.user_id).count()

    payload = await first_factor(client, account)

    assert_challenge(payload)
    assert {"TOTP", "BACKUP_CODE"} <= set(payload["twoFactorMethods"])
    assert await Session.filter(user_id=account.user_id).count() == before
    assert await client.me(payload["challengeToken"]) is None

    clock.advance(STEP)
    done = signed_in(
        await verify(client, payload["challengeToken"], totp_code(account.totp.secret, clock))
    )
    assert done["session"]["method"] == method
    assert done["user"]["id"] == account.user_id
    me = await client.me(done["accessToken"])
    assert me is not None and me["id"] == account.user_id
    rotated = (await client.gql(REFRESH, {"token": done["refreshToken"]})).data["refresh"]
    assert rotated["status"] == "OK"


# --- completing a challenge ------------------------------------------------------------------


async def test_backup_code_completes_a_challenge_once(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """A backup code completes a challenge, emits BACKUP_CODE_USED with nine remaining, and
    is refused the second time."""
    account = await enrolled(client, clock)
    backup = account.totp.backup_codes[0]

    done = signed_in(await verify(client, await challenge_for(client), backup, "BACKUP_CODE"))
    assert await client.me(done["accessToken"]) is not None
    events = await AuthEventRecord.filter(type="BACKUP_CODE_USED").all()
    assert len(events) == 1
    assert str(events[0].user_id) == account.user_id
    assert events[0].detail.get("remaining") == 9
    assert backup not in str(events[0].detail)
    assert (await status(client, done["accessToken"]))["backupCodesRemaining"] == 9

    assert_invalid_token(await verify(client, await challenge_for(client), backup, "BACKUP_CODE"))
    assert await AuthEventRecord.filter(type="BACKUP_CODE_USED").count() == 1
    assert (await status(client, done["accessToken"]))["backupCodesRemaining"] == 9


async def test_backup_code_is_not_a_totp_code_and_vice_versa(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """A backup code sent as TOTP, or a TOTP code sent as a backup code, is refused."""
    account = await enrolled(client, clock)
    clock.advance(STEP)
    challenge = await challenge_for(client)
    assert_invalid_token(await verify(client, challenge, account.totp.backup_codes[0], "TOTP"))
    code = totp_code(account.totp.secret, clock)
    assert_invalid_token(await verify(client, challenge, code, "BACKUP_CODE"))
    signed_in(await verify(client, challenge, code))
    assert (await status(client, account.access_token))["backupCodesRemaining"] == 10


async def _verify_phone(client: GraphQLClient, access_token: str) -> None:
    """Verify the account's own number with a texted code (signed in)."""
    sent = await client.gql(SEND_SMS, {"p": ADA_PHONE}, token=access_token)
    assert sent.data["sendSmsCode"] is True
    _, texts = await client.delivered()
    code = extract_code(texts[-1])
    result = await client.gql(VERIFY_SMS, {"p": ADA_PHONE, "c": code}, token=access_token)
    assert result.data["verifySmsCode"]["status"] == "OK"


async def _verify_email(client: GraphQLClient, access_token: str) -> None:
    """Verify the account's address from the emailed link (before 2FA is on)."""
    assert (await client.gql(SEND_VERIFICATION, token=access_token)).data["sendVerificationEmail"]
    mails, _ = await client.delivered()
    result = await client.gql(VERIFY_EMAIL, {"t": extract_token(mails[-1])})
    assert result.data["verifyEmail"]["status"] == "OK"


async def test_sms_code_completes_a_challenge(client: GraphQLClient, clock: FrozenClock) -> None:
    """For a verified phone, sendTwoFactorCode(SMS) texts a code that completes the challenge."""
    payload = await client.register(ADA, phone=ADA_PHONE)
    await _verify_phone(client, payload["accessToken"])
    await enrol(client, clock, access_token=payload["accessToken"])

    login = await password_login(client)
    assert_challenge(login)
    assert "SMS" in login["twoFactorMethods"]
    assert "SMS" in (await client.gql(CHECK, {"i": ADA})).data["checkTwoFactor"]["methods"]
    _, before = await client.delivered()
    sent = await client.gql(SEND_TWO_FACTOR_CODE, {"t": login["challengeToken"], "m": "SMS"})
    assert sent.data["sendTwoFactorCode"] is True
    _, texts = await client.delivered()
    assert len(texts) == len(before) + 1
    assert texts[-1].to == ADA_PHONE
    code = extract_code(texts[-1])

    assert_invalid_token(await verify(client, login["challengeToken"], code, "EMAIL"))
    done = signed_in(await verify(client, login["challengeToken"], code, "SMS"))
    assert done["session"]["method"] == "password"
    assert await client.me(done["accessToken"]) is not None


async def test_email_code_completes_a_challenge(client: GraphQLClient, clock: FrozenClock) -> None:
    """For a verified address, sendTwoFactorCode(EMAIL) mails a code that completes the
    challenge."""
    payload = await client.register(ADA)
    await _verify_email(client, payload["accessToken"])
    await enrol(client, clock, access_token=payload["accessToken"])

    login = await password_login(client)
    assert_challenge(login)
    assert "EMAIL" in login["twoFactorMethods"]
    before, _ = await client.delivered()
    sent = await client.gql(SEND_TWO_FACTOR_CODE, {"t": login["challengeToken"], "m": "EMAIL"})
    assert sent.data["sendTwoFactorCode"] is True
    mails, _ = await client.delivered()
    assert len(mails) == len(before) + 1
    assert mails[-1].to == ADA
    code = extract_code(mails[-1])

    done = signed_in(await verify(client, login["challengeToken"], code, "EMAIL"))
    assert await client.me(done["accessToken"]) is not None


async def test_unavailable_methods_send_nothing(client: GraphQLClient, clock: FrozenClock) -> None:
    """sendTwoFactorCode for a phone that is not verified (or absent) or an unverified
    address is VALIDATION_ERROR and sends nothing."""
    await enrolled(client, clock, phone=ADA_PHONE)
    login = await password_login(client)
    assert login["twoFactorMethods"] == ["TOTP", "BACKUP_CODE"]
    mails_before, texts_before = await client.delivered()
    for method in ("SMS", "EMAIL"):
        result = await client.gql(SEND_TWO_FACTOR_CODE, {"t": login["challengeToken"], "m": method})
        assert result.error_code == "VALIDATION_ERROR", result.body
    assert await client.delivered() == (mails_before, texts_before)


async def test_texted_code_completes_only_its_own_challenge(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """A code texted for one challenge does not complete another one."""
    payload = await client.register(ADA, phone=ADA_PHONE)
    await _verify_phone(client, payload["accessToken"])
    await enrol(client, clock, access_token=payload["accessToken"])
    first = await challenge_for(client)
    second = await challenge_for(client)
    assert (await client.gql(SEND_TWO_FACTOR_CODE, {"t": first, "m": "SMS"})).errors == []
    _, texts = await client.delivered()
    assert_invalid_token(await verify(client, second, extract_code(texts[-1]), "SMS"))


# --- refusals --------------------------------------------------------------------------------


async def test_the_confirmation_code_cannot_sign_in(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """The code (time step) that confirmed the setup is a replay at sign-in; the next step's
    code works on the same challenge."""
    account = await enrolled(client, clock)
    challenge = await challenge_for(client)
    assert_invalid_token(await verify(client, challenge, totp_code(account.totp.secret, clock)))
    clock.advance(STEP)
    signed_in(await verify(client, challenge, totp_code(account.totp.secret, clock)))


async def test_a_totp_code_signs_in_once(client: GraphQLClient, clock: FrozenClock) -> None:
    """A code that completed one sign-in is refused for the next one, also a step later
    while it is still inside the drift window."""
    account = await enrolled(client, clock)
    clock.advance(STEP)
    code = totp_code(account.totp.secret, clock)
    signed_in(await verify(client, await challenge_for(client), code))

    challenge = await challenge_for(client)
    assert_invalid_token(await verify(client, challenge, code))
    clock.advance(STEP)
    assert totp_code(account.totp.secret, clock, steps=-1) == code
    assert_invalid_token(await verify(client, challenge, code))
    signed_in(await verify(client, challenge, totp_code(account.totp.secret, clock)))


async def test_codes_from_another_secret_are_refused(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """A code from a different authenticator secret does not complete the challenge."""
    account = await enrolled(client, clock)
    clock.advance(STEP)
    window = {totp_code(account.totp.secret, clock, steps=step) for step in (-1, 0, 1)}
    other = pyotp.random_base32()
    while totp_code(other, clock) in window:
        other = pyotp.random_base32()
    challenge = await challenge_for(client)
    assert_invalid_token(await verify(client, challenge, totp_code(other, clock)))
    assert await Session.filter(user_id=account.user_id).count() == 1


async def test_expired_challenge_is_refused(client: GraphQLClient, clock: FrozenClock) -> None:
    """A challenge older than five minutes is refused even with a valid code."""
    account = await enrolled(client, clock)
    challenge = await challenge_for(client)
    clock.advance(301)
    assert_invalid_token(await verify(client, challenge, totp_code(account.totp.secret, clock)))
    assert await Session.filter(user_id=account.user_id).count() == 1


async def test_used_challenge_is_refused(client: GraphQLClient, clock: FrozenClock) -> None:
    """A challenge completes once; a second code on it is refused."""
    account = await enrolled(client, clock)
    challenge = await challenge_for(client)
    clock.advance(STEP)
    signed_in(await verify(client, challenge, totp_code(account.totp.secret, clock)))
    clock.advance(STEP)
    assert_invalid_token(await verify(client, challenge, totp_code(account.totp.secret, clock)))
    assert_invalid_token(
        await verify(client, challenge, account.totp.backup_codes[0], "BACKUP_CODE")
    )
    assert await Session.filter(user_id=account.user_id).count() == 2


async def test_another_users_challenge_is_refused(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """Ada's code (TOTP or backup) does not complete Bob's challenge; it still works on hers."""
    ada = await enrolled(client, clock, ADA)
    bob = await enrolled(client, clock, BOB)
    clock.advance(STEP)
    bobs_challenge = await challenge_for(client, BOB)
    ada_code = totp_code(ada.totp.secret, clock)
    assert_invalid_token(await verify(client, bobs_challenge, ada_code))
    assert_invalid_token(
        await verify(client, bobs_challenge, ada.totp.backup_codes[0], "BACKUP_CODE")
    )
    assert await Session.filter(user_id=bob.user_id).count() == 1

    done = signed_in(await verify(client, await challenge_for(client, ADA), ada_code))
    assert done["user"]["id"] == ada.user_id


async def test_challenge_is_never_an_access_token(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """A challenge token as a Bearer token authenticates nothing: me is null, protected
    fields are UNAUTHORIZED, and a REST dialect answers 401."""
    client = make_client(rest_dialects=(("fluxkit", "/auth"),))
    account = await enrolled(client, clock)
    challenge = await challenge_for(client)

    assert await client.me(challenge) is None
    for query in (STATUS, MY_SESSIONS):
        assert (await client.gql(query, token=challenge)).error_code == "UNAUTHORIZED"
    regenerated = await client.gql(REGENERATE, {"c": account.totp.backup_codes[0]}, token=challenge)
    assert regenerated.error_code == "UNAUTHORIZED"
    response = await client.http.get("/auth/me", headers={"authorization": f"Bearer {challenge}"})
    assert response.status_code == 401

    # The real access token does work there, and the challenge is still usable.
    ok = await client.http.get(
        "/auth/me", headers={"authorization": f"Bearer {account.access_token}"}
    )
    assert ok.status_code == 200
    clock.advance(STEP)
    signed_in(await verify(client, challenge, totp_code(account.totp.secret, clock)))


async def test_challenge_dies_after_five_wrong_codes(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """Four wrong codes leave a challenge usable; after five it is refused even with the
    right code, while a fresh challenge still works."""
    client = make_client(lockout_threshold=100)
    account = await enrolled(client, clock)
    secret = account.totp.secret
    clock.advance(STEP)

    survivor = await challenge_for(client)
    for _ in range(4):
        assert_invalid_token(await verify(client, survivor, wrong_code(secret, clock)))
    signed_in(await verify(client, survivor, totp_code(secret, clock)))

    clock.advance(STEP)
    doomed = await challenge_for(client)
    for _ in range(5):
        assert_invalid_token(await verify(client, doomed, wrong_code(secret, clock)))
    code = totp_code(secret, clock)
    assert_invalid_token(await verify(client, doomed, code))
    assert_invalid_token(await verify(client, doomed, account.totp.backup_codes[0], "BACKUP_CODE"))
    assert (await status(client, account.access_token))["backupCodesRemaining"] == 10

    signed_in(await verify(client, await challenge_for(client), code))


async def test_wrong_codes_count_toward_lockout(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """Wrong second-factor codes lock the account like wrong passwords do."""
    client = make_client(lockout_threshold=3)
    account = await enrolled(client, clock)
    challenge = await challenge_for(client)
    for _ in range(3):
        assert_invalid_token(
            await verify(client, challenge, wrong_code(account.totp.secret, clock))
        )
    locked = await client.gql(LOGIN, {"i": ADA, "p": PASSWORD})
    assert locked.error_code == "ACCOUNT_LOCKED", locked.body
    assert await AuthEventRecord.filter(type="ACCOUNT_LOCKED", user_id=account.user_id).exists()
    assert await AuthEventRecord.filter(type="TWO_FACTOR_FAILED").count() == 3


async def test_parallel_submissions_of_one_code_make_one_session(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """Twenty parallel submissions of one valid code give exactly one session, and the
    losers neither count as wrong guesses nor lock the account."""
    client = make_client(lockout_threshold=3)
    account = await enrolled(client, clock)
    clock.advance(STEP)
    challenge = await challenge_for(client)
    before = await session_count(account.user_id)
    code = totp_code(account.totp.secret, clock)

    results = await asyncio.gather(*(verify(client, challenge, code) for _ in range(20)))

    winners = [result for result in results if not result.errors]
    assert len(winners) == 1
    signed_in(winners[0])
    assert all(result.error_code == "INVALID_TOKEN" for result in results if result.errors)
    assert await session_count(account.user_id) == before + 1
    user = await User.get(id=account.user_id)
    assert user.locked_until is None
    assert user.failed_logins == 0
    assert await AuthEventRecord.filter(type="TWO_FACTOR_FAILED").count() == 0
    assert_challenge(await password_login(client))


# --- managing the factor ---------------------------------------------------------------------


async def test_disable_needs_a_current_code(client: GraphQLClient, clock: FrozenClock) -> None:
    """disableTwoFactor refuses a wrong or replayed code and changes nothing; with a current
    code 2FA goes off and login gives a session again."""
    account = await enrolled(client, clock)
    access = account.access_token
    for code in (wrong_code(account.totp.secret, clock), totp_code(account.totp.secret, clock)):
        assert_invalid_token(await client.gql(DISABLE, {"c": code}, token=access))
    assert (await status(client, access))["enabled"] is True
    assert_challenge(await password_login(client))

    clock.advance(STEP)
    disabled = await client.gql(DISABLE, {"c": totp_code(account.totp.secret, clock)}, token=access)
    assert disabled.data == {"disableTwoFactor": True}
    assert await status(client, access) == {
        "enabled": False,
        "methods": [],
        "backupCodesRemaining": 0,
    }
    assert not await TotpCredential.exists(user_id=account.user_id)
    login = await password_login(client)
    assert login["status"] == "OK"
    assert login["accessToken"] and login["challengeToken"] is None
    assert (await client.gql(CHECK, {"i": ADA})).data["checkTwoFactor"][
        "requiresTwoFactor"
    ] is False


async def test_disable_accepts_a_backup_code(client: GraphQLClient, clock: FrozenClock) -> None:
    """A backup code counts as a current code for disableTwoFactor."""
    account = await enrolled(client, clock)
    result = await client.gql(
        DISABLE, {"c": account.totp.backup_codes[3]}, token=account.access_token
    )
    assert result.data == {"disableTwoFactor": True}
    assert (await password_login(client))["status"] == "OK"


async def test_regenerate_backup_codes_invalidates_the_old_ones(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """regenerateBackupCodes needs a current code; then ten new codes work and every old one
    is gone."""
    account = await enrolled(client, clock)
    access = account.access_token
    old = account.totp.backup_codes
    refused = await client.gql(
        REGENERATE, {"c": wrong_code(account.totp.secret, clock)}, token=access
    )
    assert_invalid_token(refused)
    assert (await status(client, access))["backupCodesRemaining"] == 10

    clock.advance(STEP)
    result = await client.gql(
        REGENERATE, {"c": totp_code(account.totp.secret, clock)}, token=access
    )
    new = result.data["regenerateBackupCodes"]
    assert len(new) == 10 and len(set(new)) == 10
    assert not set(new) & set(old)
    assert (await status(client, access))["backupCodesRemaining"] == 10

    totp = client.services.totp
    digests = set(await BackupCode.filter(user_id=account.user_id).values_list("digest", flat=True))
    assert digests == {totp.backup_digest(account.user_id, code) for code in new}
    challenge = await challenge_for(client)
    assert_invalid_token(await verify(client, challenge, old[0], "BACKUP_CODE"))
    signed_in(await verify(client, challenge, new[0], "BACKUP_CODE"))


async def test_reset_totp_switches_secrets_only_on_confirmation(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """resetTotp needs a current code; the old secret keeps working until the new one is
    confirmed, and from then on only the new one does."""
    account = await enrolled(client, clock)
    access = account.access_token
    old_secret = account.totp.secret
    assert_invalid_token(
        await client.gql(RESET_TOTP, {"c": wrong_code(old_secret, clock)}, token=access)
    )
    credential = await TotpCredential.get(user_id=account.user_id)
    assert credential.pending_encrypted is None

    clock.advance(STEP)
    reset = await client.gql(RESET_TOTP, {"c": totp_code(old_secret, clock)}, token=access)
    setup = reset.data["resetTotp"]
    new_secret = setup["secret"]
    assert new_secret != old_secret
    assert f"secret={new_secret}" in setup["otpauthUrl"]
    assert (await status(client, access))["enabled"] is True

    # Not confirmed yet: the old secret signs in, the new one does not.
    clock.advance(STEP)
    challenge = await challenge_for(client)
    assert_invalid_token(await verify(client, challenge, totp_code(new_secret, clock)))
    signed_in(await verify(client, challenge, totp_code(old_secret, clock)))

    confirmed = await client.gql(CONFIRM_SETUP, {"c": totp_code(new_secret, clock)}, token=access)
    assert len(confirmed.data["confirmTotpSetup"]) == 10

    clock.advance(STEP)
    challenge = await challenge_for(client)
    assert_invalid_token(await verify(client, challenge, totp_code(old_secret, clock)))
    signed_in(await verify(client, challenge, totp_code(new_secret, clock)))


# --- "2FA required" policy -------------------------------------------------------------------


async def test_policy_requires_setup_before_a_session(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """With 2FA required, a user without a factor gets TWO_FACTOR_SETUP_REQUIRED; its
    challenge only enrols TOTP (no verifyTwoFactor, no access), then completes with the next
    step's code."""
    client = make_client(require_two_factor=True)
    registered = await client.register(ADA)
    assert registered["status"] == "TWO_FACTOR_SETUP_REQUIRED"
    assert registered["accessToken"] is None
    user_id = str((await User.get(email=ADA)).id)

    login = await password_login(client)
    assert_challenge(login, "TWO_FACTOR_SETUP_REQUIRED")
    assert login["twoFactorMethods"] == ["TOTP"]
    challenge = login["challengeToken"]

    assert_invalid_token(await verify(client, challenge, "123456"))
    assert_invalid_token(await verify(client, challenge, "abcd-efgh", "BACKUP_CODE"))
    assert await client.me(challenge) is None
    assert (await client.gql(STATUS, token=challenge)).error_code == "UNAUTHORIZED"
    assert (await client.gql(BEGIN_SETUP, token=challenge)).error_code == "UNAUTHORIZED"
    assert await session_count(user_id) == 0

    setup = (await client.gql(BEGIN_SETUP, {"t": challenge})).data["beginTotpSetup"]
    secret = setup["secret"]
    assert_invalid_token(
        await client.gql(CONFIRM_SETUP, {"c": wrong_code(secret, clock), "t": challenge})
    )
    confirmed = await client.gql(CONFIRM_SETUP, {"c": totp_code(secret, clock), "t": challenge})
    assert len(confirmed.data["confirmTotpSetup"]) == 10
    assert await session_count(user_id) == 0

    clock.advance(STEP)
    done = signed_in(await verify(client, challenge, totp_code(secret, clock)))
    assert done["user"]["id"] == user_id
    assert await client.me(done["accessToken"]) is not None
    assert (await status(client, done["accessToken"]))["enabled"] is True

    # From now on, the account signs in like any enrolled one.
    assert_challenge(await password_login(client))


async def test_policy_setup_challenge_cannot_be_completed_by_mail(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """A setup challenge for a verified address (signed in by magic link) cannot be
    completed with a mailed code: only enrolling TOTP gets past it."""
    client = make_client(require_two_factor=True)
    await client.register(ADA)
    account = Account("", ADA, "", "", Enrolment("", [], {}))
    payload = await _via_magic_link(client, account)
    assert_challenge(payload, "TWO_FACTOR_SETUP_REQUIRED")
    assert payload["twoFactorMethods"] == ["TOTP"]
    assert (await User.get(email=ADA)).email_verified is True
    challenge = payload["challengeToken"]
    mails_before, _ = await client.delivered()

    sent = await client.gql(SEND_TWO_FACTOR_CODE, {"t": challenge, "m": "EMAIL"})
    assert sent.errors and sent.body["data"] is None
    mails, _ = await client.delivered()
    assert mails == mails_before
    assert_invalid_token(await verify(client, challenge, "123456", "EMAIL"))
    assert await Session.filter(user__email=ADA).count() == 0

    enrolment = await enrol(client, clock, challenge_token=challenge)
    clock.advance(STEP)
    done = signed_in(await verify(client, challenge, totp_code(enrolment.secret, clock)))
    assert done["session"]["method"] == "magic_link"


async def test_policy_setup_challenge_cannot_touch_enrolled_accounts(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """A normal 2FA challenge is not a setup challenge: beginTotpSetup refuses it."""
    client = make_client(require_two_factor=True)
    await client.register(ADA)
    login = await password_login(client)
    enrolment = await enrol(client, clock, challenge_token=login["challengeToken"])
    clock.advance(STEP)
    signed_in(await verify(client, login["challengeToken"], totp_code(enrolment.secret, clock)))

    challenge = await challenge_for(client)
    assert_invalid_token(await client.gql(BEGIN_SETUP, {"t": challenge}))
    credential = await TotpCredential.get(user__email=ADA)
    assert credential.pending_encrypted is None


# --- secrets at rest -------------------------------------------------------------------------


async def test_secrets_are_not_stored_in_the_clear(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """The stored TOTP secret is encrypted and the stored backup codes are digests."""
    account = await enrolled(client, clock)
    secret = account.totp.secret
    credential = await TotpCredential.get(user_id=account.user_id)
    stored = credential.secret_encrypted
    assert stored
    raw = base64.b32decode(secret)
    for form in (secret, secret.lower(), secret.rstrip("="), raw.hex(), base64.b64encode(raw)):
        text = form if isinstance(form, str) else form.decode()
        assert text not in stored
    assert client.services.totp.decrypt(stored) == secret

    rows = await BackupCode.filter(user_id=account.user_id).values_list("digest", flat=True)
    assert len(rows) == 10
    for code in account.totp.backup_codes:
        for form in (code, code.replace("-", ""), code.upper()):
            assert all(form not in digest for digest in rows)
    totp = client.services.totp
    assert set(rows) == {
        totp.backup_digest(account.user_id, code) for code in account.totp.backup_codes
    }
