"""SMS codes over GraphQL through a real, signed HTTP gateway: signing in with a texted
code, verifying a new number, and every way to misuse a code.

The app posts each text to a small HTTP server on 127.0.0.1 (tests/sms_gateway.py) that
checks the ``X-Authql-Signature`` HMAC and records what it accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from authql.models import OneTimeToken, Session, User
from authql.services.clock import FrozenClock
from authql.services.sms import WebhookSms
from tests.sms_gateway import SmsGateway, sms_gateway
from tests.smtp import extract_code
from tests.support import GraphQLClient, GraphQLResult

MakeClient = Callable[..., GraphQLClient]
Connect = Callable[..., GraphQLClient]

SECRET = "gateway-shared-secret"
PRODUCT = "Acme ID"
ADA, ADA_PHONE = "ada@example.com", "+14155550100"
BOB, BOB_PHONE = "bob@example.com", "+14155550199"
NEW_PHONE = "+442079460000"
UNKNOWN_PHONE = "+14155550123"
PROXIES = (ipaddress.ip_network("203.0.113.0/24"),)  # the test transport's peer is 203.0.113.7

SEND_SMS = "mutation($p: String!) { sendSmsCode(phone: $p) }"
VERIFY_SMS = """
mutation($p: String!, $c: String!) {
  verifySmsCode(phone: $p, code: $c) {
    status accessToken refreshToken
    user { id email phone phoneVerified }
    session { id method }
  }
}
"""
ME = "query { me { id phone phoneVerified } }"


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
async def gateway() -> AsyncIterator[SmsGateway]:
    """A real HTTP SMS gateway on 127.0.0.1 (set up before, torn down after, the apps)."""
    async with sms_gateway(secret=SECRET) as server:
        yield server


@pytest.fixture
def connect(gateway: SmsGateway, make_client: MakeClient) -> Connect:
    """Clients for apps that text through ``gateway`` with a signed webhook."""

    def make(**settings: Any) -> GraphQLClient:
        sender = WebhookSms(gateway.url, SECRET, timeout=5)
        return make_client(sms=sender, product_name=PRODUCT, **settings)

    return make


@pytest.fixture
def client(connect: Connect) -> GraphQLClient:
    return connect()


async def register(
    client: GraphQLClient, email: str = ADA, phone: str | None = ADA_PHONE
) -> dict[str, Any]:
    fields = {"phone": phone} if phone else {}
    payload = await client.register(email, **fields)
    assert payload["status"] == "OK"
    return payload


async def send_code(
    client: GraphQLClient, gateway: SmsGateway, phone: str, *, access: str | None = None
) -> str:
    """Ask for a code texted to ``phone`` and return it, as read at the gateway."""
    before = len(gateway.received)
    result = await client.gql(SEND_SMS, {"p": phone}, token=access)
    assert result.data == {"sendSmsCode": True}
    await client.delivered()
    texts = gateway.received[before:]
    assert [text.to for text in texts] == [phone]
    return extract_code(texts[0].body)


async def verify(
    client: GraphQLClient, phone: str, code: str, *, access: str | None = None
) -> GraphQLResult:
    return await client.gql(VERIFY_SMS, {"p": phone, "c": code}, token=access)


def wrong(code: str) -> str:
    """A six-digit code that is not ``code``."""
    return f"{(int(code) + 1) % 10**6:06d}"


def assert_invalid_token(result: GraphQLResult) -> None:
    assert result.error_code == "INVALID_TOKEN", result.body
    assert result.body["data"] is None


async def snapshot() -> list[Any]:
    users = await User.all().order_by("email").values("id", "phone", "phone_verified")
    sessions = await Session.all().order_by("id").values("id", "revoked_at")
    return [users, sessions]


# --- the text arrives, signed, and its code works --------------------------------------------


async def test_sign_in_code_arrives_signed_and_signs_in(
    client: GraphQLClient, gateway: SmsGateway
) -> None:
    """The gateway receives a signed JSON {to, body} whose body carries a six-digit code,
    the product name and the lifetime; verifySmsCode with it signs in and marks the phone
    verified."""
    await register(client)
    result = await client.gql(SEND_SMS, {"p": "+1 (415) 555-0100"})
    assert result.data == {"sendSmsCode": True}
    await client.delivered()
    [text] = gateway.requests
    assert text.status == 200 and text.signed and text.path == "/sms"
    assert text.headers["content-type"] == "application/json"
    assert json.loads(text.raw) == {"to": ADA_PHONE, "body": text.body}
    expected = hmac.new(SECRET.encode(), text.raw, hashlib.sha256).hexdigest()
    assert text.headers["x-authql-signature"] == f"sha256={expected}"
    assert re.search(r"(?<!\d)\d{6}(?!\d)", text.body)
    assert PRODUCT in text.body and "10 minutes" in text.body

    payload = (await verify(client, ADA_PHONE, extract_code(text.body))).data["verifySmsCode"]
    assert payload["status"] == "OK" and payload["accessToken"]
    assert payload["session"]["method"] == "sms"
    assert payload["user"]["phone"] == ADA_PHONE and payload["user"]["phoneVerified"] is True
    me = (await client.gql(ME, token=payload["accessToken"])).data["me"]
    assert me["phoneVerified"] is True


async def test_the_gateway_can_come_from_settings(
    gateway: SmsGateway, make_client: MakeClient
) -> None:
    """AUTHQL_SMS_WEBHOOK_URL and AUTHQL_SMS_WEBHOOK_SECRET wire the same signed gateway."""
    client = make_client(sms=None, sms_webhook_url=gateway.url, sms_webhook_secret=SECRET)
    await register(client)
    code = await send_code(client, gateway, ADA_PHONE)
    assert gateway.requests[0].signed
    assert (await verify(client, ADA_PHONE, code)).data["verifySmsCode"]["status"] == "OK"


async def test_a_signed_in_user_sets_and_verifies_a_new_number(
    client: GraphQLClient, gateway: SmsGateway
) -> None:
    """Signed in, sendSmsCode to a new number texts that number; verifySmsCode then sets and
    verifies it on the account without starting another session."""
    ada = await register(client, phone=None)
    code = await send_code(client, gateway, NEW_PHONE, access=ada["accessToken"])
    # The number is not on the account until the code comes back.
    assert (await client.gql(ME, token=ada["accessToken"])).data["me"]["phone"] is None
    sessions = await Session.all().count()
    payload = (await verify(client, NEW_PHONE, code, access=ada["accessToken"])).data[
        "verifySmsCode"
    ]
    assert payload["status"] == "OK"
    assert payload["accessToken"] is None and payload["session"] is None
    assert payload["user"]["phone"] == NEW_PHONE and payload["user"]["phoneVerified"] is True
    assert await Session.all().count() == sessions
    me = (await client.gql(ME, token=ada["accessToken"])).data["me"]
    assert me == {"id": ada["user"]["id"], "phone": NEW_PHONE, "phoneVerified": True}
    # The number now signs in too.
    login_code = await send_code(client, gateway, NEW_PHONE)
    assert (await verify(client, NEW_PHONE, login_code)).data["verifySmsCode"]["accessToken"]


async def test_a_number_of_another_account_cannot_be_claimed(
    client: GraphQLClient, gateway: SmsGateway
) -> None:
    """Signed in, asking for a code to another account's number is a VALIDATION_ERROR on
    `phone` and texts nothing."""
    ada = await register(client, phone=None)
    await register(client, BOB, BOB_PHONE)
    result = await client.gql(SEND_SMS, {"p": BOB_PHONE}, token=ada["accessToken"])
    assert result.error_code == "VALIDATION_ERROR"
    assert set(result.errors[0]["extensions"]["fields"]) == {"phone"}
    await client.delivered()
    assert gateway.requests == []


async def test_a_code_for_one_number_does_not_verify_another(
    client: GraphQLClient, gateway: SmsGateway
) -> None:
    """A verification code texted to one number cannot set a different number."""
    ada = await register(client, phone=None)
    code = await send_code(client, gateway, NEW_PHONE, access=ada["accessToken"])
    result = await verify(client, "+442079460001", code, access=ada["accessToken"])
    assert_invalid_token(result)
    assert (await User.get(email=ADA)).phone is None


# --- misuse ----------------------------------------------------------------------------------


async def test_a_code_dies_after_the_allowed_wrong_guesses(
    connect: Connect, gateway: SmsGateway
) -> None:
    """After code_max_attempts wrong codes even the right one is INVALID_TOKEN and nothing
    signs in; fewer wrong guesses leave it usable."""
    client = connect(code_max_attempts=3)
    await register(client)
    code = await send_code(client, gateway, ADA_PHONE)
    for _ in range(3):
        assert_invalid_token(await verify(client, ADA_PHONE, wrong(code)))
    before = await snapshot()
    assert_invalid_token(await verify(client, ADA_PHONE, code))
    assert await snapshot() == before

    code = await send_code(client, gateway, ADA_PHONE)
    for _ in range(2):
        assert_invalid_token(await verify(client, ADA_PHONE, wrong(code)))
    assert (await verify(client, ADA_PHONE, code)).data["verifySmsCode"]["status"] == "OK"


async def test_an_expired_code_is_refused(
    client: GraphQLClient, gateway: SmsGateway, clock: FrozenClock
) -> None:
    """A code works for sms_code_ttl seconds (10 minutes) and is INVALID_TOKEN after."""
    await register(client)
    code = await send_code(client, gateway, ADA_PHONE)
    clock.advance(client.services.settings.sms_code_ttl + 1)
    before = await snapshot()
    assert_invalid_token(await verify(client, ADA_PHONE, code))
    assert await snapshot() == before
    code = await send_code(client, gateway, ADA_PHONE)
    clock.advance(client.services.settings.sms_code_ttl - 1)
    assert (await verify(client, ADA_PHONE, code)).data["verifySmsCode"]["status"] == "OK"


async def test_a_code_works_once(client: GraphQLClient, gateway: SmsGateway) -> None:
    """The second use of a code is INVALID_TOKEN."""
    await register(client)
    code = await send_code(client, gateway, ADA_PHONE)
    assert (await verify(client, ADA_PHONE, code)).data["verifySmsCode"]["status"] == "OK"
    before = await snapshot()
    assert_invalid_token(await verify(client, ADA_PHONE, code))
    assert await snapshot() == before


async def test_a_new_code_kills_the_earlier_one(client: GraphQLClient, gateway: SmsGateway) -> None:
    """Asking again texts a new code; the earlier one no longer works."""
    await register(client)
    first = await send_code(client, gateway, ADA_PHONE)
    second = await send_code(client, gateway, ADA_PHONE)
    if first != second:  # one chance in a million that the two codes are equal
        assert_invalid_token(await verify(client, ADA_PHONE, first))
    assert (await verify(client, ADA_PHONE, second)).data["verifySmsCode"]["status"] == "OK"


async def test_an_unknown_number_answers_like_a_wrong_code(
    client: GraphQLClient, gateway: SmsGateway
) -> None:
    """verifySmsCode for a number without an account is INVALID_TOKEN with the same body
    and status as a wrong code for a real number."""
    await register(client)
    code = await send_code(client, gateway, ADA_PHONE)
    known = await verify(client, ADA_PHONE, wrong(code))
    unknown = await verify(client, UNKNOWN_PHONE, wrong(code))
    assert_invalid_token(unknown)
    assert known.status_code == unknown.status_code
    assert known.body == unknown.body


async def test_another_users_code_does_not_work(client: GraphQLClient, gateway: SmsGateway) -> None:
    """Ada's code does not sign in as Bob (nor Bob's as Ada): codes are bound to their
    account; each still works for its own."""
    await register(client)
    await register(client, BOB, BOB_PHONE)
    ada_code = await send_code(client, gateway, ADA_PHONE)
    bob_code = await send_code(client, gateway, BOB_PHONE)
    while bob_code == ada_code:  # make the codes differ, so the check means something
        bob_code = await send_code(client, gateway, BOB_PHONE)
    before = await snapshot()
    assert_invalid_token(await verify(client, BOB_PHONE, ada_code))
    assert_invalid_token(await verify(client, ADA_PHONE, bob_code))
    assert await snapshot() == before
    ada = (await verify(client, ADA_PHONE, ada_code)).data["verifySmsCode"]
    bob = (await verify(client, BOB_PHONE, bob_code)).data["verifySmsCode"]
    assert ada["user"]["phone"] == ADA_PHONE and bob["user"]["phone"] == BOB_PHONE


async def test_codes_for_sign_in_and_for_phone_verification_do_not_mix(
    client: GraphQLClient, gateway: SmsGateway
) -> None:
    """A code texted to verify a number does not sign anyone in, and a sign-in code does
    not verify a number for a signed-in caller."""
    ada = await register(client)  # ADA_PHONE on the account, not yet verified
    verification_code = await send_code(client, gateway, ADA_PHONE, access=ada["accessToken"])
    before = await snapshot()
    assert_invalid_token(await verify(client, ADA_PHONE, verification_code))
    assert await snapshot() == before

    sign_in_code = await send_code(client, gateway, ADA_PHONE)
    assert_invalid_token(await verify(client, ADA_PHONE, sign_in_code, access=ada["accessToken"]))
    assert (await User.get(email=ADA)).phone_verified is False


async def test_garbage_codes_are_refused(client: GraphQLClient, gateway: SmsGateway) -> None:
    """Empty, short, long and non-numeric codes are INVALID_TOKEN (and count as guesses)."""
    await register(client)
    code = await send_code(client, gateway, ADA_PHONE)
    for garbage in ("", "12345", "x" * 100):
        assert_invalid_token(await verify(client, ADA_PHONE, garbage))
    assert (await verify(client, ADA_PHONE, code)).data["verifySmsCode"]["status"] == "OK"


# --- enumeration and limits ------------------------------------------------------------------


async def test_known_and_unknown_numbers_get_identical_answers(
    client: GraphQLClient, gateway: SmsGateway
) -> None:
    """sendSmsCode answers byte for byte the same for a number with and without an account;
    only the real one gets a text."""
    await register(client)
    answers = []
    for phone in (ADA_PHONE, UNKNOWN_PHONE):
        response = await client.http.post(
            "/graphql", json={"query": SEND_SMS, "variables": {"p": phone}}
        )
        answers.append(response)
    known, unknown = answers
    assert known.status_code == unknown.status_code == 200
    assert known.content == unknown.content
    await client.delivered()
    assert [text.to for text in gateway.requests] == [ADA_PHONE]
    assert await OneTimeToken.all().count() == 1


async def test_invalid_numbers_are_a_validation_error(
    client: GraphQLClient, gateway: SmsGateway
) -> None:
    """A number not in international format is VALIDATION_ERROR on `phone`, for everyone."""
    for phone in ("0415 555 0100", "+0123", "call me"):
        result = await client.gql(SEND_SMS, {"p": phone})
        assert result.error_code == "VALIDATION_ERROR"
        assert set(result.errors[0]["extensions"]["fields"]) == {"phone"}
    await client.delivered()
    assert gateway.requests == []


async def test_codes_are_limited_per_number(
    connect: Connect, gateway: SmsGateway, clock: FrozenClock
) -> None:
    """Past the budget for one number sendSmsCode is RATE_LIMITED (known or unknown number
    alike) and texts nothing; other numbers, and the same one after the window, are
    served."""
    client = connect(rate_limits={"sms_send": (2, 900)})
    await register(client)
    await register(client, BOB, BOB_PHONE)
    for phone in (ADA_PHONE, UNKNOWN_PHONE):
        for _ in range(2):
            assert (await client.gql(SEND_SMS, {"p": phone})).errors == []
        limited = await client.gql(SEND_SMS, {"p": phone})
        assert limited.error_code == "RATE_LIMITED"
        assert limited.errors[0]["extensions"]["retryAfter"] > 0
    assert (await client.gql(SEND_SMS, {"p": BOB_PHONE})).errors == []
    await client.delivered()
    assert [text.to for text in gateway.requests].count(ADA_PHONE) == 2
    clock.advance(2 * 900)
    assert (await client.gql(SEND_SMS, {"p": ADA_PHONE})).errors == []


async def test_codes_are_limited_per_ip(connect: Connect, gateway: SmsGateway) -> None:
    """One client address cannot text many numbers; another address still can."""
    client = connect(rate_limits={"sms_send_ip": (2, 900)}, trusted_proxies=PROXIES)
    await register(client)
    here, there = {"x-forwarded-for": "198.51.100.1"}, {"x-forwarded-for": "198.51.100.2"}
    for phone in (UNKNOWN_PHONE, BOB_PHONE):
        assert (await client.gql(SEND_SMS, {"p": phone}, headers=here)).errors == []
    assert (await client.gql(SEND_SMS, {"p": ADA_PHONE}, headers=here)).error_code == (
        "RATE_LIMITED"
    )
    assert (await client.gql(SEND_SMS, {"p": ADA_PHONE}, headers=there)).errors == []
    await client.delivered()
    assert [text.to for text in gateway.requests] == [ADA_PHONE]


async def test_wrong_codes_are_limited_per_ip(connect: Connect, gateway: SmsGateway) -> None:
    """Guessing codes across numbers from one address runs into the verify_ip budget."""
    client = connect(rate_limits={"verify_ip": (3, 900)})
    await register(client)
    code = await send_code(client, gateway, ADA_PHONE)
    for phone in (UNKNOWN_PHONE, BOB_PHONE, "+14155550777"):
        assert_invalid_token(await verify(client, phone, "000000"))
    assert (await verify(client, ADA_PHONE, code)).error_code == "RATE_LIMITED"


async def test_an_sms_code_gives_no_session_to_an_unverified_address_when_required(
    connect: Connect, gateway: SmsGateway
) -> None:
    """With require_email_verification a correct SMS code for an account whose email is not
    verified answers EMAIL_NOT_VERIFIED without tokens."""
    client = connect(require_email_verification=True)
    assert (await client.register(ADA, phone=ADA_PHONE))["status"] == "EMAIL_NOT_VERIFIED"
    code = await send_code(client, gateway, ADA_PHONE)
    payload = (await verify(client, ADA_PHONE, code)).data["verifySmsCode"]
    assert payload["status"] == "EMAIL_NOT_VERIFIED"
    assert payload["accessToken"] is None and payload["session"] is None
    assert await Session.all().count() == 0
