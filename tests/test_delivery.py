"""Delivery: a broken or slow mail server or SMS gateway never shows in an answer.

Flows answer at once and the same way whether or not mail can leave; the background queue
retries with backoff, and a final failure is logged and persisted as a DELIVERY_FAILED
event. The first tests drive the app over GraphQL against a closed port, a mail server
that refuses our credentials and a failing HTTP gateway; the last ones drive the
DeliveryQueue directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from authql.models import AuthEventRecord, OneTimeToken, User
from authql.services.delivery import DeliveryQueue
from authql.services.mail import MailMessage, SmtpMailer
from authql.services.sms import WebhookSms
from tests.sms_gateway import SmsGateway, sms_gateway
from tests.smtp import MAIL_FROM, extract_code, extract_token, free_port, smtp_server
from tests.support import PASSWORD, GraphQLClient

MakeClient = Callable[..., GraphQLClient]

ADA, ADA_PHONE = "ada@example.com", "+14155550100"
NEW_EMAIL = "ada.new@example.org"
SECRET = "gateway-shared-secret"
ATTEMPTS = 3

REQUEST_RESET = "mutation($e: String!) { requestPasswordReset(email: $e) }"
RESET = "mutation($t: String!, $p: String!) { resetPassword(token: $t, password: $p) { status } }"
SEND_VERIFICATION = "mutation { sendVerificationEmail }"
REQUEST_EMAIL_CHANGE = (
    "mutation($e: String!, $p: String) { requestEmailChange(newEmail: $e, password: $p) }"
)
SEND_MAGIC_LINK = "mutation($e: String!) { sendMagicLink(email: $e) }"
SEND_SMS = "mutation($p: String!) { sendSmsCode(phone: $p) }"
VERIFY_SMS = "mutation($p: String!, $c: String!) { verifySmsCode(phone: $p, code: $c) { status } }"


# --- helpers ---------------------------------------------------------------------------------


class Counting:
    """Wraps a mailer or SMS sender and counts the sends it was asked for."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    async def send(self, message: Any) -> None:
        self.calls += 1
        await self.inner.send(message)


class BlockingMailer:
    """A mail server that accepts nothing until ``release`` is set."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.outbox: list[MailMessage] = []

    async def send(self, message: MailMessage) -> None:
        self.started.set()
        await self.release.wait()
        self.outbox.append(message)


def fast_retries(client: GraphQLClient, *, attempts: int = ATTEMPTS) -> DeliveryQueue:
    """Keep the app's retry schedule but shrink the backoff so a total failure takes
    milliseconds instead of seconds (there is no setting for it yet)."""
    delivery: DeliveryQueue = client.services.delivery
    delivery._attempts = attempts
    delivery._backoff = 0.005
    return delivery


def closed_smtp_mailer() -> Counting:
    """A real SmtpMailer pointed at a port nothing listens on."""
    url = f"smtp://127.0.0.1:{free_port()}?starttls=false"
    return Counting(SmtpMailer(url, sender=MAIL_FROM, timeout=2))


async def failures() -> list[AuthEventRecord]:
    return await AuthEventRecord.filter(type="DELIVERY_FAILED").order_by("at")


async def raw(client: GraphQLClient, query: str, variables: dict[str, Any]) -> tuple[int, bytes]:
    response = await client.http.post("/graphql", json={"query": query, "variables": variables})
    return response.status_code, response.content


async def live_tokens(purpose: str) -> int:
    return await OneTimeToken.filter(purpose=purpose, used_at=None).count()


@pytest.fixture
async def gateway() -> AsyncIterator[SmsGateway]:
    async with sms_gateway(secret=SECRET) as server:
        yield server


# --- SMTP down -------------------------------------------------------------------------------


async def test_smtp_down_reset_answers_alike_and_the_failure_is_recorded(
    make_client: MakeClient,
) -> None:
    """With the mail server unreachable, requestPasswordReset still answers true, byte for
    byte as for an unknown account; the mail is retried, then a DELIVERY_FAILED event is
    stored; the account keeps its password and one live reset token."""
    mailer = closed_smtp_mailer()
    client = make_client(mailer=mailer)
    fast_retries(client)
    await client.register(ADA)
    known = await raw(client, REQUEST_RESET, {"e": ADA})
    unknown = await raw(client, REQUEST_RESET, {"e": "nobody@example.com"})
    assert known == unknown == (200, b'{"data":{"requestPasswordReset":true}}')
    await client.delivered()

    assert mailer.calls == ATTEMPTS
    [failure] = await failures()
    assert failure.success is False
    assert failure.detail["channel"] == "mail"
    assert "SMTPConnectError" in str(failure.detail["reason"])
    assert await live_tokens("password_reset") == 1
    assert (await client.login(ADA, PASSWORD)).data["login"]["status"] == "OK"


async def test_a_recovered_mail_server_gets_the_next_mail(make_client: MakeClient) -> None:
    """After a failed delivery the app keeps working: once the server is back, the next
    request's mail arrives and its link resets the password."""
    mailer = closed_smtp_mailer()
    client = make_client(mailer=mailer)
    fast_retries(client)
    await client.register(ADA)
    await client.gql(REQUEST_RESET, {"e": ADA})
    await client.delivered()
    assert len(await failures()) == 1
    async with smtp_server() as smtp:
        mailer.inner = smtp.mailer()
        assert (await client.gql(REQUEST_RESET, {"e": ADA})).data["requestPasswordReset"]
        await client.delivered()
        [message] = smtp.to(ADA)
    reset = await client.gql(RESET, {"t": extract_token(message), "p": "a brand new passphrase"})
    assert reset.data["resetPassword"]["status"] == "OK"
    assert len(await failures()) == 1


async def test_smtp_down_other_mail_flows_answer_and_write_nothing_half(
    make_client: MakeClient,
) -> None:
    """sendVerificationEmail, requestEmailChange and sendMagicLink answer true with the
    mail server down; each mail becomes one DELIVERY_FAILED event; the account is neither
    verified nor moved, and each flow left exactly one live token."""
    client = make_client(mailer=closed_smtp_mailer())
    fast_retries(client)
    access = (await client.register(ADA))["accessToken"]
    assert (await client.gql(SEND_VERIFICATION, token=access)).data["sendVerificationEmail"]
    change = await client.gql(REQUEST_EMAIL_CHANGE, {"e": NEW_EMAIL, "p": PASSWORD}, token=access)
    assert change.data["requestEmailChange"] is True
    assert (await client.gql(SEND_MAGIC_LINK, {"e": ADA})).data["sendMagicLink"] is True
    await client.delivered()

    # verification, change confirmation, change notice, magic link
    assert [event.detail["channel"] for event in await failures()] == ["mail"] * 4
    user = await User.get(id=(await client.me(access) or {})["id"])
    assert user.email == ADA and user.email_verified is False
    for purpose in ("email_verification", "email_change", "magic_link"):
        assert await live_tokens(purpose) == 1, purpose


async def test_smtp_refusing_credentials_is_a_delivery_failure(make_client: MakeClient) -> None:
    """A mail server that rejects the configured password (535) leaves no mail; the caller
    still gets true and the failure is recorded."""
    async with smtp_server(username="mailer@acme.example", password="right") as smtp:
        url = smtp.url(password="wrong")
        client = make_client(mailer=None, smtp_url=url, smtp_timeout=5.0)
        fast_retries(client)
        await client.register(ADA)
        assert (await client.gql(REQUEST_RESET, {"e": ADA})).data["requestPasswordReset"]
        await client.delivered()
        assert smtp.messages == []
        assert smtp.logins and not any(ok for _, ok in smtp.logins)
    [failure] = await failures()
    assert "535" in str(failure.detail["reason"])


# --- SMS gateway down ------------------------------------------------------------------------


async def test_sms_gateway_unreachable_answers_alike_and_is_recorded(
    make_client: MakeClient,
) -> None:
    """With the gateway's port closed sendSmsCode answers true, identically for a known and
    an unknown number; the text is retried, then one DELIVERY_FAILED (channel sms) is
    stored and the code row is the only thing written."""
    sender = Counting(WebhookSms(f"http://127.0.0.1:{free_port()}/sms", SECRET, timeout=2))
    client = make_client(sms=sender)
    fast_retries(client)
    await client.register(ADA, phone=ADA_PHONE)
    known = await raw(client, SEND_SMS, {"p": ADA_PHONE})
    unknown = await raw(client, SEND_SMS, {"p": "+14155550123"})
    assert known == unknown == (200, b'{"data":{"sendSmsCode":true}}')
    await client.delivered()
    assert sender.calls == ATTEMPTS
    [failure] = await failures()
    assert failure.detail["channel"] == "sms" and failure.success is False
    assert await live_tokens("sms_login") == 1
    assert (await User.get(email=ADA)).phone_verified is False


async def test_sms_gateway_answering_errors_is_retried_then_recorded(
    make_client: MakeClient, gateway: SmsGateway
) -> None:
    """A gateway that keeps answering 503 gets exactly the configured attempts, then the
    failure (with the status) is recorded."""
    client = make_client(sms=WebhookSms(gateway.url, SECRET, timeout=5))
    fast_retries(client)
    await client.register(ADA, phone=ADA_PHONE)
    gateway.fail_next(100)
    assert (await client.gql(SEND_SMS, {"p": ADA_PHONE})).data["sendSmsCode"] is True
    await client.delivered()
    assert [request.status for request in gateway.requests] == [503] * ATTEMPTS
    assert gateway.received == []
    [failure] = await failures()
    assert "503" in str(failure.detail["reason"])


async def test_sms_gateway_failing_twice_then_succeeding_delivers_once(
    make_client: MakeClient, gateway: SmsGateway
) -> None:
    """Two failures then a success: the text arrives exactly once, no failure is recorded,
    and its code signs in."""
    client = make_client(sms=WebhookSms(gateway.url, SECRET, timeout=5))
    fast_retries(client, attempts=4)
    await client.register(ADA, phone=ADA_PHONE)
    gateway.fail_next(2)
    assert (await client.gql(SEND_SMS, {"p": ADA_PHONE})).data["sendSmsCode"] is True
    await client.delivered()
    assert [request.status for request in gateway.requests] == [503, 503, 200]
    [text] = gateway.received
    assert await failures() == []
    verified = await client.gql(VERIFY_SMS, {"p": ADA_PHONE, "c": extract_code(text.body)})
    assert verified.data["verifySmsCode"]["status"] == "OK"


async def test_a_gateway_refusing_our_signature_is_a_delivery_failure(
    make_client: MakeClient, gateway: SmsGateway
) -> None:
    """Signed with the wrong secret, every post is refused by the gateway (401) and the
    failure is recorded; nothing was accepted."""
    client = make_client(sms=WebhookSms(gateway.url, "not-the-secret", timeout=5))
    fast_retries(client)
    await client.register(ADA, phone=ADA_PHONE)
    assert (await client.gql(SEND_SMS, {"p": ADA_PHONE})).data["sendSmsCode"] is True
    await client.delivered()
    assert [(r.status, r.signed) for r in gateway.requests] == [(401, False)] * ATTEMPTS
    assert len(await failures()) == 1


# --- never blocking, bounded -----------------------------------------------------------------


async def test_a_stuck_mail_server_never_blocks_the_response(make_client: MakeClient) -> None:
    """While the mail server accepts nothing, sendVerificationEmail and requestPasswordReset
    answer at once; the mail leaves when the server recovers."""
    mailer = BlockingMailer()
    client = make_client(mailer=mailer)
    access = (await client.register(ADA))["accessToken"]
    started = time.monotonic()
    verification = await client.gql(SEND_VERIFICATION, token=access)
    reset = await client.gql(REQUEST_RESET, {"e": ADA})
    assert verification.data["sendVerificationEmail"] is True
    assert reset.data["requestPasswordReset"] is True
    assert time.monotonic() - started < 2
    await asyncio.wait_for(mailer.started.wait(), 5)  # a send is in flight, held
    assert not mailer.release.is_set() and mailer.outbox == []

    mailer.release.set()
    mails, _ = await client.delivered()
    assert [mail.to for mail in mails] == [ADA, ADA]
    assert await failures() == []


async def test_a_full_queue_drops_and_reports(make_client: MakeClient) -> None:
    """Past the queue bound a delivery is dropped, not waited for: the request still
    answers true, a DELIVERY_FAILED "queue full" event is stored, and the queued mail
    leaves once the server recovers."""
    mailer = BlockingMailer()
    client = make_client(mailer=mailer)
    delivery = client.services.delivery
    delivery._maxsize = 1  # read when the queue is first used
    access = (await client.register(ADA))["accessToken"]
    assert (await client.gql(SEND_VERIFICATION, token=access)).data["sendVerificationEmail"]
    await asyncio.wait_for(mailer.started.wait(), 5)  # the first mail is being sent
    for _ in range(2):  # the second waits in the queue; the third finds it full
        answer = await client.gql(SEND_VERIFICATION, token=access)
        assert answer.data["sendVerificationEmail"] is True
    mailer.release.set()
    mails, _ = await client.delivered()
    assert len(mails) == 2
    [failure] = await failures()
    assert failure.detail == {"channel": "mail", "reason": "queue full"}
    assert delivery.failed == 1 and delivery.delivered == 2


# --- the queue itself ------------------------------------------------------------------------


class Recorder:
    """A failure hook that remembers what it was told."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, str]] = []

    async def __call__(self, kind: str, reason: str) -> None:
        self.reports.append((kind, reason))


def flaky(failures: int, calls: list[float]) -> Callable[[], Any]:
    """A send that raises ``failures`` times, then succeeds; records when it was called."""

    async def send() -> None:
        calls.append(time.monotonic())
        if len(calls) <= failures:
            raise RuntimeError("boom")

    return send


async def test_queue_retries_with_growing_backoff_then_reports() -> None:
    """A send that always fails is tried `attempts` times with doubling pauses, then
    reported once to the failure hook with the error."""
    hook = Recorder()
    queue = DeliveryQueue(attempts=3, backoff=0.02, on_failure=hook)
    calls: list[float] = []
    queue.submit("mail", flaky(99, calls))
    await queue.drain()
    await queue.close()
    assert len(calls) == 3
    first_pause, second_pause = calls[1] - calls[0], calls[2] - calls[1]
    assert first_pause >= 0.02 and second_pause >= 0.04
    assert hook.reports == [("mail", "RuntimeError: boom")]
    assert (queue.delivered, queue.failed) == (0, 1)


async def test_queue_delivers_once_after_transient_failures() -> None:
    """Two failures then a success: delivered once, nothing reported."""
    hook = Recorder()
    queue = DeliveryQueue(attempts=4, backoff=0.001, on_failure=hook)
    calls: list[float] = []
    queue.submit("sms", flaky(2, calls))
    await queue.drain()
    await queue.close()
    assert len(calls) == 3
    assert hook.reports == []
    assert (queue.delivered, queue.failed) == (1, 0)


async def test_one_failed_delivery_does_not_hold_up_the_next() -> None:
    """Deliveries keep their order; a failure is given up on and the next one is sent."""
    hook = Recorder()
    queue = DeliveryQueue(attempts=2, backoff=0.001, on_failure=hook)
    sent: list[str] = []

    async def broken() -> None:
        raise ConnectionRefusedError("closed")

    async def fine() -> None:
        sent.append("second")

    queue.submit("mail", broken)
    queue.submit("mail", fine)
    await queue.drain()
    await queue.close()
    assert sent == ["second"]
    assert hook.reports == [("mail", "ConnectionRefusedError: closed")]


async def test_full_queue_drops_without_blocking_and_reports() -> None:
    """submit never waits: past maxsize the delivery is dropped and reported as
    "queue full"; what fit in the queue is still delivered."""
    hook = Recorder()
    queue = DeliveryQueue(maxsize=2, attempts=1, backoff=0, on_failure=hook)
    sent: list[int] = []

    def job(number: int) -> Callable[[], Any]:
        async def send() -> None:
            sent.append(number)

        return send

    for number in range(4):  # no await in between: the worker has not taken anything yet
        queue.submit("mail", job(number))
    await queue.drain()
    await queue.close()
    assert sent == [0, 1]
    assert hook.reports == [("mail", "queue full"), ("mail", "queue full")]
    assert (queue.delivered, queue.failed) == (2, 2)


async def test_a_failing_failure_hook_does_not_stop_the_worker() -> None:
    """Even if reporting a failure fails, later deliveries still go out."""

    async def broken_hook(kind: str, reason: str) -> None:
        raise RuntimeError("audit log down")

    queue = DeliveryQueue(attempts=1, backoff=0, on_failure=broken_hook)
    sent: list[str] = []

    async def broken() -> None:
        raise RuntimeError("smtp down")

    async def fine() -> None:
        sent.append("ok")

    queue.submit("mail", broken)
    queue.submit("mail", fine)
    await queue.drain()
    await queue.close()
    assert sent == ["ok"]
