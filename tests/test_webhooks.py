"""Outgoing webhooks: a durable outbox delivered to real receivers on 127.0.0.1.

Events are produced the way users produce them (registering and signing in over GraphQL);
webhooks are managed through the resolvers the admin REST router calls. Retries wait on
real time, so this module runs on the wall clock with tiny backoffs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from authql.context import RequestContext, build_context
from authql.errors import ErrorCode, Forbidden, NotFound, Unauthorized, ValidationFailed
from authql.models import (
    AuthEventRecord,
    Tenant,
    TrackedEvent,
    User,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)
from authql.resolvers import webhooks as hooks
from authql.resolvers.accounts import create_admin
from authql.services import Services
from authql.services.clock import SystemClock
from authql.services.events import AuthEvent, AuthEventType
from authql.services.webhooks import WebhookDispatcher, iso_timestamp, sign
from tests.support import PASSWORD, GraphQLClient
from tests.webhook_receiver import WebhookReceiver, closed_port, webhook_receiver

MakeClient = Callable[..., GraphQLClient]

ADMIN = "root@example.com"
SECRET = "whsec-shared-with-the-receiver"
FAST = {"webhook_backoff": 0.01, "webhook_attempts": 3}


@pytest.fixture
def clock() -> SystemClock:  # type: ignore[override]
    """Retries are scheduled in real time, so apps in this module use the wall clock."""
    return SystemClock()


# --- helpers ---------------------------------------------------------------------------------


async def admin_context(client: GraphQLClient) -> RequestContext:
    """A request context for a freshly created, signed-in admin."""
    await create_admin(client.services.passwords, email=ADMIN, password=PASSWORD)
    token = (await client.login(ADMIN)).data["login"]["accessToken"]
    return await build_context(client.services, peer="127.0.0.1", access_token=token)


@asynccontextmanager
async def running(services: Services, *, poll: float = 0.02) -> AsyncIterator[WebhookDispatcher]:
    """The webhook worker of ``services`` running for the block (stopped after)."""
    dispatcher: WebhookDispatcher = services.webhooks
    dispatcher.poll_interval = poll
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop()


async def settled(*, within: float = 5) -> list[WebhookDelivery]:
    """Every outbox row once none is pending any more."""
    deadline = time.monotonic() + within
    while await WebhookDelivery.filter(status="pending").exists():
        assert time.monotonic() < deadline, "deliveries still pending"
        await asyncio.sleep(0.01)
    return await WebhookDelivery.all().order_by("created_at")


async def attempts_of(delivery: WebhookDelivery) -> list[WebhookAttempt]:
    return await WebhookAttempt.filter(delivery_id=delivery.id).order_by("id")


async def wait_until(predicate: Callable[[], Any], *, within: float = 5) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def metric(client: GraphQLClient, name: str, **labels: str) -> float | None:
    """A sample of the app's Prometheus registry."""
    value: float | None = client.services.metrics.registry.get_sample_value(name, labels)
    return value


def types_of(receiver: WebhookReceiver) -> list[str]:
    return [hit.payload["type"] for hit in receiver.accepted]


# --- delivery and retries --------------------------------------------------------------------


async def test_receiver_failing_twice_gets_one_signed_delivery_after_three_attempts(
    make_client: MakeClient,
) -> None:
    """A receiver that fails twice then succeeds records one delivery, succeeded after 3 tries."""
    client = make_client(**FAST)
    admin = await admin_context(client)
    async with webhook_receiver() as receiver:
        await hooks.create_webhook(
            admin, url=receiver.url, events=["identity.user.created"], secret=SECRET
        )
        receiver.fail_next(2)
        async with running(client.services):
            user = (await client.register("ada@example.com"))["user"]
            [hit] = await receiver.wait_for(1)
            [delivery] = await settled()
    assert len(receiver.hits) == 3
    assert {h.delivery_id for h in receiver.hits} == {str(delivery.id)}
    assert delivery.status == "succeeded" and delivery.attempts == 3
    log = await attempts_of(delivery)
    assert [(a.success, a.status_code) for a in log] == [(False, 503), (False, 503), (True, 200)]
    assert all(hit.signature_valid(SECRET) for hit in receiver.hits)
    assert not hit.signature_valid("another secret")
    record = await AuthEventRecord.get(type="REGISTERED")
    assert hit.headers["x-webhook-event"] == "identity.user.created"
    assert hit.headers["x-webhook-timestamp"] == iso_timestamp(record.at)
    assert hit.headers["content-type"] == "application/json"
    payload = hit.payload
    assert payload["id"] == str(record.id) and payload["type"] == "identity.user.created"
    assert payload["event"] == "identity.user.created" and payload["userId"] == user["id"]
    assert payload["timestamp"].endswith("Z") and payload["data"]["success"] is True
    assert PASSWORD not in hit.raw.decode()
    assert metric(client, "authql_webhook_attempts_total", outcome="failure") == 2
    assert metric(client, "authql_webhook_attempts_total", outcome="success") == 1
    assert metric(client, "authql_webhook_deliveries_total", outcome="succeeded") == 1


async def test_signature_is_the_hmac_of_the_exact_body(make_client: MakeClient) -> None:
    """The signature header is sha256=<HMAC-SHA256 of the raw body> and absent without secret."""
    client = make_client(**FAST)
    admin = await admin_context(client)
    async with webhook_receiver() as signed, webhook_receiver() as unsigned:
        await hooks.create_webhook(admin, url=signed.url, events=["*"], secret=SECRET)
        await hooks.create_webhook(admin, url=unsigned.url)
        await client.register("ada@example.com")
        await client.services.webhooks.run_once()
    assert len(signed.accepted) == len(unsigned.accepted) >= 1
    [hit] = [h for h in signed.accepted if h.payload["type"] == "identity.user.created"]
    expected = hmac.new(SECRET.encode(), hit.raw, hashlib.sha256).hexdigest()
    assert hit.headers["x-webhook-signature"] == f"sha256={expected}"
    assert sign(hit.raw, SECRET) == f"sha256={expected}"
    assert json.loads(hit.raw) == hit.payload
    [plain] = [h for h in unsigned.accepted if h.payload["id"] == hit.payload["id"]]
    assert "x-webhook-signature" not in plain.headers
    assert plain.raw == hit.raw


async def test_restart_mid_retry_loses_nothing(make_client: MakeClient) -> None:
    """A delivery waiting for its retry when the process stops completes once after restart."""
    settings = {"webhook_backoff": 0.3, "webhook_attempts": 3}
    first = make_client(**settings)
    admin = await admin_context(first)
    async with webhook_receiver() as receiver:
        await hooks.create_webhook(admin, url=receiver.url, events=["REGISTERED"])
        receiver.fail_next(1)
        async with running(first.services):
            await first.register("ada@example.com")
            await receiver.wait_for_hits(1)
            await wait_until(lambda: WebhookAttempt.all().exists())
        [pending] = await WebhookDelivery.all()
        assert pending.status == "pending" and pending.attempts == 1
        assert pending.locked_until is None
        second = make_client(**settings)  # a fresh process: new app, new services
        async with running(second.services):
            await receiver.wait_for(1)
            [delivery] = await settled()
    assert len(receiver.hits) == 2 and len(receiver.accepted) == 1
    assert {h.delivery_id for h in receiver.hits} == {str(delivery.id)}
    assert delivery.status == "succeeded" and delivery.attempts == 2
    assert [a.success for a in await attempts_of(delivery)] == [False, True]


async def test_stop_during_a_request_hands_the_row_back(make_client: MakeClient) -> None:
    """A request still running at shutdown is cut off and the next process sends it again."""
    settings = {"webhook_timeout": 5.0, **FAST}
    first = make_client(**settings)
    admin = await admin_context(first)
    async with webhook_receiver() as receiver:
        await hooks.create_webhook(admin, url=receiver.url, events=["identity.user.created"])
        receiver.stall_next(1, 5.0)
        async with running(first.services) as dispatcher:
            dispatcher.stop_grace = 0.05
            await first.register("ada@example.com")
            await receiver.wait_for_hits(1)
        [owed] = await WebhookDelivery.all()
        assert owed.status == "pending" and owed.locked_until is None and owed.attempts == 0
        second = make_client(**settings)
        async with running(second.services):
            await receiver.wait_for(1)
            [delivery] = await settled()
    assert [hit.delivery_id for hit in receiver.hits] == [str(delivery.id)] * 2
    assert delivery.status == "succeeded" and delivery.attempts == 1


async def test_receiver_down_fails_after_every_attempt_is_recorded(
    make_client: MakeClient,
) -> None:
    """With nothing listening, a delivery is marked failed after N attempts, each logged."""
    client = make_client(**FAST)
    admin = await admin_context(client)
    port = await closed_port()
    await hooks.create_webhook(admin, url=f"http://127.0.0.1:{port}/hook")
    async with running(client.services):
        await client.register("ada@example.com")
        deliveries = await settled()
    assert {d.event_type for d in deliveries} >= {"identity.user.created"}
    for delivery in deliveries:
        assert delivery.status == "failed" and delivery.attempts == 3
        assert delivery.completed_at is not None and delivery.last_error
        log = await attempts_of(delivery)
        assert len(log) == 3
        assert all(not a.success and a.status_code is None and a.error for a in log)
    failed = metric(client, "authql_webhook_deliveries_total", outcome="failed")
    assert failed == len(deliveries)


async def test_redirects_are_not_followed(make_client: MakeClient) -> None:
    """A 302 counts as a failed attempt; the worker never requests the redirect target."""
    client = make_client(**FAST)
    admin = await admin_context(client)
    async with webhook_receiver() as receiver:
        await hooks.create_webhook(admin, url=receiver.url, events=["identity.user.created"])
        receiver.redirect_next(1)
        async with running(client.services):
            await client.register("ada@example.com")
            await receiver.wait_for(1)
            [delivery] = await settled()
    assert [hit.path for hit in receiver.hits] == ["/hook", "/hook"]
    log = await attempts_of(delivery)
    assert [(a.status_code, a.success) for a in log] == [(302, False), (200, True)]
    assert log[0].error is not None and "redirect" in log[0].error


async def test_slow_receiver_times_out_and_is_retried(make_client: MakeClient) -> None:
    """An attempt slower than webhook_timeout is recorded as a timeout and retried."""
    client = make_client(webhook_timeout=0.2, **FAST)
    admin = await admin_context(client)
    async with webhook_receiver() as receiver:
        await hooks.create_webhook(admin, url=receiver.url, events=["identity.user.created"])
        receiver.stall_next(1, 2.0)
        async with running(client.services):
            await client.register("ada@example.com")
            await receiver.wait_for(1)
            [delivery] = await settled()
    log = await attempts_of(delivery)
    assert [a.success for a in log] == [False, True]
    assert log[0].error is not None and "timed out" in log[0].error
    assert log[0].duration_ms < 1500


async def test_worker_wakes_at_once_for_new_events(make_client: MakeClient) -> None:
    """A new event is delivered right away even when the worker polls rarely."""
    client = make_client(**FAST)
    admin = await admin_context(client)
    async with webhook_receiver() as receiver:
        await hooks.create_webhook(admin, url=receiver.url, events=["identity.user.created"])
        async with running(client.services, poll=30):
            await asyncio.sleep(0.05)  # the worker is idle, waiting for its next poll
            started = time.monotonic()
            await client.register("ada@example.com")
            await receiver.wait_for(1, within=2)
    assert time.monotonic() - started < 2


# --- what is owed to whom ------------------------------------------------------------------


async def test_event_filters_choose_what_each_webhook_gets(make_client: MakeClient) -> None:
    """A webhook for identity.user.created gets only registrations; one for logins, logins."""
    client = make_client(**FAST)
    admin = await admin_context(client)
    async with (
        webhook_receiver() as created,
        webhook_receiver() as logins,
        webhook_receiver() as everything,
    ):
        await hooks.create_webhook(admin, url=created.url, events=["identity.user.created"])
        await hooks.create_webhook(admin, url=logins.url, events=["LOGIN_SUCCEEDED"])
        await hooks.create_webhook(admin, url=everything.url, events=[])
        before = set(await AuthEventRecord.all().values_list("id", flat=True))
        async with running(client.services):
            await client.register("ada@example.com")
            await client.register("bob@example.com")
            assert (await client.login("ada@example.com")).data["login"]["status"]
            await settled()
    published = [r for r in await AuthEventRecord.all().order_by("at") if r.id not in before]
    logged_in = [r for r in published if r.type == "LOGIN_SUCCEEDED"]
    assert types_of(created) == ["identity.user.created"] * 2
    assert types_of(logins) == ["identity.auth.login.success"] * len(logged_in)
    assert len(logged_in) >= 1
    assert sorted(h.payload["id"] for h in everything.accepted) == sorted(
        str(r.id) for r in published
    )


async def test_inactive_webhooks_get_nothing(make_client: MakeClient) -> None:
    """An inactive webhook gets no rows; one disabled after an event is cancelled unsent."""
    client = make_client(**FAST)
    admin = await admin_context(client)
    async with webhook_receiver() as receiver:
        await hooks.create_webhook(admin, url=receiver.url, is_active=False)
        await client.register("ada@example.com")
        assert not await WebhookDelivery.exists()
        later = await hooks.create_webhook(admin, url=receiver.url, events=["REGISTERED"])
        await client.register("bob@example.com")
        assert await WebhookDelivery.all().count() == 1
        await hooks.update_webhook(admin, webhook_id=later.id, is_active=False)
        assert await client.services.webhooks.run_once() == 1
    assert receiver.hits == []
    [delivery] = await WebhookDelivery.all()
    assert delivery.status == "cancelled" and not await WebhookAttempt.exists()


async def test_rolled_back_event_writes_no_outbox_row(make_client: MakeClient) -> None:
    """If the transaction publishing an event rolls back, nothing is owed to any webhook."""
    client = make_client(**FAST)
    admin = await admin_context(client)
    await hooks.create_webhook(admin, url="http://127.0.0.1:9/hook")
    bus = client.services.events

    def event() -> AuthEvent:
        return AuthEvent(type=AuthEventType.PROFILE_UPDATED, at=client.services.clock.now())

    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with in_transaction():
            await bus.publish(event())
            assert await WebhookDelivery.all().count() == 1  # written in the same transaction
            raise Abort
    assert not await WebhookDelivery.exists()
    assert not await AuthEventRecord.filter(type="PROFILE_UPDATED").exists()
    await bus.publish(event())
    assert await WebhookDelivery.all().count() == 1


async def test_tenant_webhook_gets_only_its_tenants_events(make_client: MakeClient) -> None:
    """A webhook scoped to a tenant (by id or slug) only gets events of that tenant's users."""
    client = make_client(**FAST)
    admin = await admin_context(client)
    tenant = await Tenant.create(slug="acme", name="Acme")
    async with webhook_receiver() as scoped, webhook_receiver() as overall:
        view = await hooks.create_webhook(
            admin, url=scoped.url, events=["identity.auth.login.success"], tenant_id="acme"
        )
        assert view.tenant_id == str(tenant.id)
        await hooks.create_webhook(admin, url=overall.url, events=["identity.auth.login.success"])
        for email in ("ada@example.com", "bob@example.com"):
            await client.register(email)
        await User.filter(email="ada@example.com").update(tenant_id=tenant.id)
        await client.login("ada@example.com")
        await client.login("bob@example.com")
        await client.services.webhooks.run_once()
    ada = await User.get(email="ada@example.com")
    assert [hit.payload["userId"] for hit in scoped.accepted] == [str(ada.id)]
    assert scoped.accepted[0].payload["tenantId"] == str(tenant.id)
    bob = await User.get(email="bob@example.com")
    assert {hit.payload["userId"] for hit in overall.accepted} == {str(ada.id), str(bob.id)}


async def test_tracked_application_events_reach_catch_all_webhooks(
    make_client: MakeClient,
) -> None:
    """An event tracked by an application goes to "*" webhooks with its data, not others."""
    client = make_client(**FAST)
    admin = await admin_context(client)
    dispatcher: WebhookDispatcher = client.services.webhooks
    async with webhook_receiver() as catch_all, webhook_receiver() as filtered:
        await hooks.create_webhook(admin, url=catch_all.url, events=["*"])
        await hooks.create_webhook(admin, url=filtered.url, events=["identity.user.created"])
        async with in_transaction():
            tracked = await TrackedEvent.create(
                name="checkout.completed", at=client.services.clock.now(), data={"total": 42}
            )
            await dispatcher.enqueue_tracked(
                tracked.name,
                event_id=str(tracked.id),
                at=tracked.at,
                data=tracked.data,
                correlation_id="order-7",
            )
        await dispatcher.run_once()
    [hit] = catch_all.accepted
    assert hit.headers["x-webhook-event"] == "checkout.completed"
    assert hit.payload["id"] == str(tracked.id) and hit.payload["data"] == {"total": 42}
    assert hit.payload["metadata"]["correlationId"] == "order-7"
    assert filtered.hits == []


async def test_two_dispatchers_deliver_each_row_once(make_client: MakeClient) -> None:
    """Two workers (two processes) racing over one outbox send every row exactly once."""
    one, two = make_client(**FAST), make_client(**FAST)
    admin = await admin_context(one)
    async with webhook_receiver() as receiver:
        await hooks.create_webhook(admin, url=receiver.url, events=["identity.user.created"])
        for index in range(6):
            await one.register(f"user{index}@example.com")
        counts = await asyncio.gather(
            one.services.webhooks.run_once(), two.services.webhooks.run_once()
        )
        assert sum(counts) == 6
        async with running(one.services), running(two.services):
            for index in range(6, 12):
                await two.register(f"user{index}@example.com")
            await receiver.wait_for(12)
            await settled()
            await asyncio.sleep(0.1)  # time for a duplicate to show up, if there were one
    ids = [hit.delivery_id for hit in receiver.hits]
    assert len(ids) == 12 and len(set(ids)) == 12
    assert await WebhookAttempt.all().count() == 12


# --- administration ----------------------------------------------------------------------------


async def test_webhook_admin_validates_and_hides_the_secret(make_client: MakeClient) -> None:
    """Bad URLs and unknown events are refused; the secret is stored encrypted, never shown."""
    client = make_client()
    admin = await admin_context(client)
    for url in ("ftp://example.com/x", "example.com/hook", "http://", "http://h:99999/"):
        with pytest.raises(ValidationFailed) as refused:
            await hooks.create_webhook(admin, url=url)
        assert refused.value.code is ErrorCode.VALIDATION_ERROR and "url" in refused.value.fields
    with pytest.raises(ValidationFailed) as unknown:
        await hooks.create_webhook(admin, url="https://example.com/h", events=["user.made"])
    assert "user.made" in unknown.value.fields["events"]
    with pytest.raises(ValidationFailed):
        await hooks.create_webhook(admin, url="https://example.com/h", tenant_id="nope")
    view = await hooks.create_webhook(
        admin,
        url="https://example.com/h",
        events=["TWO_FACTOR_ENABLED", "identity.user.created", "identity.user.created"],
        secret=SECRET,
    )
    assert view.events == ["identity.user.2fa.enabled", "identity.user.created"]
    assert view.has_secret and SECRET not in repr(view)
    row = await Webhook.get(id=view.id).values()
    assert SECRET not in json.dumps(row, default=str)
    assert (await hooks.get_webhook(admin, webhook_id=view.id)) == view


async def test_webhook_admin_updates_lists_and_deletes(make_client: MakeClient) -> None:
    """Partial updates change only what is given; delete removes the outbox rows too."""
    client = make_client()
    admin = await admin_context(client)
    first = await hooks.create_webhook(admin, url="https://a.example/h", secret=SECRET)
    second = await hooks.create_webhook(admin, url="https://b.example/h", events=["*"])
    changed = await hooks.update_webhook(admin, webhook_id=first.id, events=["LOGOUT"], secret=None)
    assert changed.url == first.url and changed.events == ["identity.auth.logout"]
    assert not changed.has_secret and changed.is_active
    changed = await hooks.update_webhook(admin, webhook_id=first.id, url="http://c.example/h")
    assert changed.url == "http://c.example/h" and changed.events == ["identity.auth.logout"]
    with pytest.raises(ValidationFailed):
        await hooks.update_webhook(admin, webhook_id=first.id, secret_encrypted="x")
    page, total = await hooks.list_webhooks(admin, limit=1)
    assert total == 2 and [v.id for v in page] == [second.id]
    page, _ = await hooks.list_webhooks(admin, limit=1, offset=1)
    assert [v.id for v in page] == [first.id]
    await client.register("ada@example.com")
    deliveries, count = await hooks.list_deliveries(admin, webhook_id=second.id)
    assert count == len(deliveries) >= 1 and deliveries[0].status == "pending"
    assert deliveries[0].attempt_log == []
    assert await hooks.delete_webhook(admin, webhook_id=second.id)
    assert not await WebhookDelivery.exists()
    for missing in (second.id, "not-a-uuid"):
        with pytest.raises(NotFound):
            await hooks.get_webhook(admin, webhook_id=missing)
        with pytest.raises(NotFound):
            await hooks.delete_webhook(admin, webhook_id=missing)
    with pytest.raises(ValidationFailed):
        await hooks.list_webhooks(admin, limit=0)


async def test_webhooks_are_for_admins_only(make_client: MakeClient) -> None:
    """A signed-in non-admin is FORBIDDEN and an anonymous caller UNAUTHORIZED."""
    client = make_client()
    token = (await client.register("ada@example.com"))["accessToken"]
    user = await build_context(client.services, peer="127.0.0.1", access_token=token)
    with pytest.raises(Forbidden):
        await hooks.create_webhook(user, url="https://example.com/h")
    with pytest.raises(Forbidden):
        await hooks.list_webhooks(user)
    anonymous = await build_context(client.services, peer="127.0.0.1")
    with pytest.raises(Unauthorized):
        await hooks.list_deliveries(anonymous, webhook_id="x")
