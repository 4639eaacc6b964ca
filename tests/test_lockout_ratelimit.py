"""Account lockout and rate limits on the sign-in surfaces, as a client sees them."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from authql.services.clock import FrozenClock
from authql.settings import parse_rate_limits
from tests.support import PASSWORD, REGISTER, GraphQLClient, GraphQLResult

MakeClient = Callable[..., GraphQLClient]
WRONG = "wrong password!"
PROXIES = (ipaddress.ip_network("203.0.113.0/24"),)  # the test transport's peer is 203.0.113.7


def forwarded(address: str) -> dict[str, str]:
    return {"x-forwarded-for": address}


async def login_from(
    client: GraphQLClient, identifier: str, password: str, *, forwarded_for: str
) -> GraphQLResult:
    return await client.gql(
        "mutation($i: String!, $p: String!) { login(identifier: $i, password: $p) { status } }",
        {"i": identifier, "p": password},
        headers=forwarded(forwarded_for),
    )


async def register_from(client: GraphQLClient, email: str, forwarded_for: str) -> GraphQLResult:
    return await client.gql(
        REGISTER,
        {"input": {"email": email, "password": PASSWORD}},
        headers=forwarded(forwarded_for),
    )


def assert_rate_limited(result: GraphQLResult) -> None:
    assert result.error_code == "RATE_LIMITED", result.errors
    retry_after = result.errors[0]["extensions"]["retryAfter"]
    assert isinstance(retry_after, int) and retry_after > 0


def assert_ok(result: GraphQLResult) -> None:
    assert result.data["login"]["status"] == "OK"


# --- lockout ---------------------------------------------------------------------------------


async def test_lockout_after_threshold_failures(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """After lockout_threshold wrong passwords even the right one answers ACCOUNT_LOCKED,
    with retryAfter and without saying how many attempts there were or remain."""
    client = make_client(lockout_threshold=3, lockout_minutes=10)
    await client.register("ada@example.com")
    failures = [await client.login("ada@example.com", WRONG) for _ in range(3)]
    assert [f.error_code for f in failures] == ["INVALID_CREDENTIALS"] * 3
    assert len({f.errors[0]["message"] for f in failures}) == 1
    locked = await client.login("ada@example.com", PASSWORD)
    assert locked.error_code == "ACCOUNT_LOCKED"
    assert locked.body["data"] is None
    extensions = locked.errors[0]["extensions"]
    assert 0 < extensions["retryAfter"] <= 600
    assert set(extensions) == {"code", "retryAfter"}
    message = locked.errors[0]["message"]
    assert not any(char.isdigit() for char in message), message
    assert (await client.login("ada@example.com", WRONG)).error_code == "ACCOUNT_LOCKED"


async def test_unknown_identifiers_lock_like_real_accounts(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """Lockout reveals nothing: an email without an account locks after the same failures,
    with the same answer, and unlocks after the same time."""
    client = make_client(lockout_threshold=3, lockout_minutes=10)
    await client.register("ada@example.com")
    answers = {}
    for email in ("ada@example.com", "nobody@example.com"):
        for _ in range(3):
            await client.login(email, WRONG)
        answers[email] = await client.login(email, WRONG)
    real, phantom = answers["ada@example.com"], answers["nobody@example.com"]
    assert real.error_code == phantom.error_code == "ACCOUNT_LOCKED"
    assert real.errors[0]["message"] == phantom.errors[0]["message"]
    assert real.errors[0]["extensions"] == phantom.errors[0]["extensions"]
    clock.advance(10 * 60 + 1)
    assert (await client.login("nobody@example.com", WRONG)).error_code == "INVALID_CREDENTIALS"


async def test_lock_expires_after_lockout_minutes(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """The right password is refused while locked and works once lockout_minutes passed."""
    client = make_client(lockout_threshold=3, lockout_minutes=10)
    await client.register("ada@example.com")
    for _ in range(3):
        await client.login("ada@example.com", WRONG)
    clock.advance(10 * 60 - 5)
    locked = await client.login("ada@example.com", PASSWORD)
    assert locked.error_code == "ACCOUNT_LOCKED"
    assert locked.errors[0]["extensions"]["retryAfter"] == 5
    clock.advance(6)
    assert_ok(await client.login("ada@example.com", PASSWORD))


async def test_waiting_retry_after_unlocks(make_client: MakeClient, clock: FrozenClock) -> None:
    """Waiting exactly the announced retryAfter is enough to sign in again."""
    client = make_client(lockout_threshold=3, lockout_minutes=10)
    await client.register("ada@example.com")
    for _ in range(3):
        await client.login("ada@example.com", WRONG)
    clock.advance(123)
    locked = await client.login("ada@example.com", PASSWORD)
    clock.advance(locked.errors[0]["extensions"]["retryAfter"])
    assert_ok(await client.login("ada@example.com", PASSWORD))


async def test_successful_login_resets_the_failure_count(make_client: MakeClient) -> None:
    """threshold-1 failures, a success, threshold-1 failures: the account is not locked."""
    client = make_client(lockout_threshold=3)
    await client.register("ada@example.com")
    for _ in range(2):
        assert (await client.login("ada@example.com", WRONG)).error_code == "INVALID_CREDENTIALS"
    assert_ok(await client.login("ada@example.com", PASSWORD))
    for _ in range(2):
        assert (await client.login("ada@example.com", WRONG)).error_code == "INVALID_CREDENTIALS"
    assert_ok(await client.login("ada@example.com", PASSWORD))


async def test_failures_count_per_account_across_identifiers(make_client: MakeClient) -> None:
    """Failures by email (any case) and by username all count towards one account's lock."""
    client = make_client(lockout_threshold=3)
    await client.register("ada@example.com", username="ada_l")
    for identifier in ("ada@example.com", "ADA_L", "Ada@Example.com"):
        assert (await client.login(identifier, WRONG)).error_code == "INVALID_CREDENTIALS"
    assert (await client.login("ada_l", PASSWORD)).error_code == "ACCOUNT_LOCKED"


async def test_lockout_of_one_account_leaves_others_alone(make_client: MakeClient) -> None:
    """Locking one account does not affect another one."""
    client = make_client(lockout_threshold=3)
    await client.register("ada@example.com")
    await client.register("bob@example.com")
    for _ in range(3):
        await client.login("ada@example.com", WRONG)
    assert_ok(await client.login("bob@example.com", PASSWORD))


async def test_account_locked_event_is_persisted(make_client: MakeClient) -> None:
    """Reaching the threshold records one ACCOUNT_LOCKED audit event for the account."""
    from authql.models import AuthEventRecord

    client = make_client(lockout_threshold=3, lockout_minutes=10)
    ada = await client.register("ada@example.com")
    for _ in range(2):
        await client.login("ada@example.com", WRONG)
    assert not await AuthEventRecord.filter(type="ACCOUNT_LOCKED").exists()
    await client.login("ada@example.com", WRONG)
    await client.login("ada@example.com", PASSWORD)
    events = await AuthEventRecord.filter(type="ACCOUNT_LOCKED").all()
    assert len(events) == 1
    assert str(events[0].user_id) == ada["user"]["id"]
    assert events[0].success is False
    assert events[0].detail.get("minutes") == 10


async def test_lockout_threshold_zero_disables_lockout(make_client: MakeClient) -> None:
    """With lockout_threshold=0 wrong passwords never lock the account."""
    client = make_client(lockout_threshold=0)
    await client.register("ada@example.com")
    for _ in range(8):
        assert (await client.login("ada@example.com", WRONG)).error_code == "INVALID_CREDENTIALS"
    assert_ok(await client.login("ada@example.com", PASSWORD))


# --- per-identifier and per-ip login limits --------------------------------------------------


async def test_login_limit_per_identifier(make_client: MakeClient, clock: FrozenClock) -> None:
    """The 4th attempt on one identifier is RATE_LIMITED (any case), another identifier
    still gets through, and after the window has passed the first works again."""
    client = make_client(rate_limits={"login": (3, 900)})
    await client.register("ada@example.com")
    await client.register("bob@example.com")
    for _ in range(3):
        assert (await client.login("ada@example.com", WRONG)).error_code == "INVALID_CREDENTIALS"
    assert_rate_limited(await client.login("ada@example.com", PASSWORD))
    assert_rate_limited(await client.login(" ADA@example.COM ", PASSWORD))
    assert_ok(await client.login("bob@example.com", PASSWORD))
    clock.advance(2 * 900)
    assert_ok(await client.login("ada@example.com", PASSWORD))


async def test_login_limit_applies_to_unknown_identifiers(make_client: MakeClient) -> None:
    """Unknown accounts are limited exactly like real ones (no enumeration via limits)."""
    client = make_client(rate_limits={"login": (3, 900)})
    await client.register("ada@example.com")
    for identifier in ("ada@example.com", "nobody@example.com"):
        for _ in range(3):
            assert (await client.login(identifier, WRONG)).error_code == "INVALID_CREDENTIALS"
        assert_rate_limited(await client.login(identifier, WRONG))


async def test_rate_limited_attempts_do_not_count_towards_lockout(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """Attempts refused by the rate limit never reach the password check or the lock."""
    client = make_client(rate_limits={"login": (2, 900)}, lockout_threshold=3)
    await client.register("ada@example.com")
    for _ in range(2):
        await client.login("ada@example.com", WRONG)
    for _ in range(5):
        assert_rate_limited(await client.login("ada@example.com", WRONG))
    clock.advance(2 * 900)
    assert_ok(await client.login("ada@example.com", PASSWORD))


async def test_waiting_retry_after_ends_the_rate_limit(
    make_client: MakeClient, clock: FrozenClock
) -> None:
    """A client that waits the announced retryAfter seconds is let through."""
    client = make_client(rate_limits={"login": (3, 900)})
    await client.register("ada@example.com")
    for _ in range(3):
        await client.login("ada@example.com", WRONG)
    limited = await client.login("ada@example.com", PASSWORD)
    assert_rate_limited(limited)
    clock.advance(limited.errors[0]["extensions"]["retryAfter"])
    assert_ok(await client.login("ada@example.com", PASSWORD))


async def test_login_limit_per_ip(make_client: MakeClient, clock: FrozenClock) -> None:
    """login_ip caps attempts from one address whatever identifiers they name."""
    client = make_client(rate_limits={"login_ip": (3, 900)})
    await client.register("ada@example.com")
    for identifier in ("ada@example.com", "bob@example.com", "carol@example.com"):
        assert (await client.login(identifier, WRONG)).error_code == "INVALID_CREDENTIALS"
    assert_rate_limited(await client.login("dave@example.com", WRONG))
    assert_rate_limited(await client.login("ada@example.com", PASSWORD))
    clock.advance(2 * 900)
    assert_ok(await client.login("ada@example.com", PASSWORD))


async def test_successful_login_does_not_reset_the_ip_limit(make_client: MakeClient) -> None:
    """Signing in successfully still spends the per-ip budget."""
    client = make_client(rate_limits={"login_ip": (3, 900)})
    await client.register("ada@example.com")
    for _ in range(3):
        assert_ok(await client.login("ada@example.com", PASSWORD))
    assert_rate_limited(await client.login("ada@example.com", PASSWORD))


async def test_aliased_logins_each_spend_the_budget(make_client: MakeClient) -> None:
    """Five aliased login fields in one document against a limit of 3: the first three run,
    the fourth is RATE_LIMITED, and the budget is spent for the next request too.

    (login is non-null, so the first error nulls ``data`` and ends the serial mutation.)
    """
    client = make_client(rate_limits={"login_ip": (3, 900)})
    await client.register("ada@example.com")
    fields = " ".join(
        f'a{i}: login(identifier: "ada@example.com", password: "{PASSWORD}") {{ status }}'
        for i in range(5)
    )
    result = await client.gql(f"mutation {{ {fields} }}")
    assert [(e["path"], e["extensions"]["code"]) for e in result.errors] == [
        (["a3"], "RATE_LIMITED")
    ]
    assert result.errors[0]["extensions"]["retryAfter"] > 0
    assert_rate_limited(await client.login("ada@example.com", PASSWORD))


async def test_aliased_failed_logins_each_spend_the_identifier_budget(
    make_client: MakeClient,
) -> None:
    """Aliased logins for one identifier spend its budget one alias at a time."""
    client = make_client(rate_limits={"login": (3, 900)})
    await client.register("ada@example.com")
    for _ in range(2):
        await client.login("ada@example.com", WRONG)
    fields = " ".join(
        f'a{i}: login(identifier: "ada@example.com", password: "{WRONG}") {{ status }}'
        for i in range(5)
    )
    result = await client.gql(f"mutation {{ {fields} }}")
    assert result.error_code == "INVALID_CREDENTIALS"
    assert_rate_limited(await client.login("ada@example.com", PASSWORD))


async def test_aliased_registrations_each_spend_the_budget(make_client: MakeClient) -> None:
    """Five aliased register fields against register_ip=3: the fourth is RATE_LIMITED."""
    from authql.models import User

    client = make_client(rate_limits={"register_ip": (3, 3600)})
    fields = " ".join(
        f'a{i}: register(input: {{email: "u{i}@example.com", password: "{PASSWORD}"}}) {{ status }}'
        for i in range(5)
    )
    result = await client.gql(f"mutation {{ {fields} }}")
    assert [(e["path"], e["extensions"]["code"]) for e in result.errors] == [
        (["a3"], "RATE_LIMITED")
    ]
    assert await User.all().count() == 3


# --- client address: X-Forwarded-For --------------------------------------------------------


async def test_forwarded_for_is_ignored_by_default(make_client: MakeClient) -> None:
    """Without trusted proxies, changing X-Forwarded-For does not escape the per-ip limit."""
    client = make_client(rate_limits={"login_ip": (3, 900)})
    await client.register("ada@example.com")
    for i in range(3):
        result = await login_from(client, "ada@example.com", WRONG, forwarded_for=f"198.51.100.{i}")
        assert result.error_code == "INVALID_CREDENTIALS"
    for i in range(3, 6):
        assert_rate_limited(
            await login_from(client, "ada@example.com", PASSWORD, forwarded_for=f"198.51.100.{i}")
        )


async def test_forwarded_for_is_honoured_from_trusted_proxies(make_client: MakeClient) -> None:
    """Behind a trusted proxy each forwarded client address has its own per-ip budget."""
    client = make_client(rate_limits={"login_ip": (3, 900)}, trusted_proxies=PROXIES)
    await client.register("ada@example.com")
    for _ in range(3):
        await login_from(client, "ada@example.com", WRONG, forwarded_for="198.51.100.1")
    assert_rate_limited(
        await login_from(client, "ada@example.com", PASSWORD, forwarded_for="198.51.100.1")
    )
    assert_ok(await login_from(client, "ada@example.com", PASSWORD, forwarded_for="198.51.100.2"))


async def test_spoofed_forwarded_hops_do_not_escape_the_limit(make_client: MakeClient) -> None:
    """A client cannot prepend fake hops: the address the trusted proxy saw is the one limited."""
    client = make_client(rate_limits={"login_ip": (3, 900)}, trusted_proxies=PROXIES)
    await client.register("ada@example.com")
    for i in range(3):
        await login_from(
            client, "ada@example.com", WRONG, forwarded_for=f"10.0.0.{i}, 198.51.100.9"
        )
    for hops in ("10.0.0.99, 198.51.100.9", "198.51.100.9", "1.2.3.4, 198.51.100.9, 203.0.113.8"):
        assert_rate_limited(
            await login_from(client, "ada@example.com", PASSWORD, forwarded_for=hops)
        )


# --- registration and refresh limits ---------------------------------------------------------


async def test_register_limit_per_ip(make_client: MakeClient, clock: FrozenClock) -> None:
    """register_ip caps sign-ups from one address; X-Forwarded-For does not escape it."""
    from authql.models import User

    client = make_client(rate_limits={"register_ip": (3, 3600)})
    for i in range(3):
        result = await register_from(client, f"user{i}@example.com", f"198.51.100.{i}")
        assert result.data["register"]["status"] == "OK"
    limited = await register_from(client, "user3@example.com", "198.51.100.3")
    assert_rate_limited(limited)
    assert await User.all().count() == 3
    clock.advance(2 * 3600)
    result = await register_from(client, "user3@example.com", "198.51.100.3")
    assert result.data["register"]["status"] == "OK"


async def test_register_limit_honours_trusted_proxies(make_client: MakeClient) -> None:
    """Behind a trusted proxy, sign-ups are counted per forwarded client address."""
    client = make_client(rate_limits={"register_ip": (1, 3600)}, trusted_proxies=PROXIES)
    assert (await register_from(client, "a@example.com", "198.51.100.1")).errors == []
    assert_rate_limited(await register_from(client, "b@example.com", "198.51.100.1"))
    assert (await register_from(client, "b@example.com", "198.51.100.2")).errors == []


async def test_refresh_limit_per_ip(make_client: MakeClient) -> None:
    """refresh_ip caps refreshes from one address, even with garbage tokens."""
    from tests.support import REFRESH

    client = make_client(rate_limits={"refresh_ip": (3, 60)})
    payload = await client.register("ada@example.com")
    for _ in range(3):
        result = await client.gql(REFRESH, {"token": "garbage"})
        assert result.error_code == "INVALID_TOKEN"
    assert_rate_limited(await client.gql(REFRESH, {"token": payload["refreshToken"]}))


# --- limits off ------------------------------------------------------------------------------


async def test_rate_limits_off_never_limits(make_client: MakeClient) -> None:
    """AUTHQL_RATE_LIMITS=off: 30 failed logins meet the lockout but never RATE_LIMITED."""
    limits = parse_rate_limits("off")
    assert limits is None
    client = make_client(rate_limits=limits)
    await client.register("ada@example.com")
    codes = {(await client.login("ada@example.com", WRONG)).error_code for _ in range(30)}
    codes |= {(await client.login("nobody@example.com", WRONG)).error_code for _ in range(30)}
    assert codes == {"INVALID_CREDENTIALS", "ACCOUNT_LOCKED"}
    for i in range(15):
        result = await client.gql(
            REGISTER, {"input": {"email": f"u{i}@x.example", "password": PASSWORD}}
        )
        assert result.errors == []


async def test_default_limits_are_on(make_client: MakeClient) -> None:
    """With the default limits (10 per identifier) the 11th failed login is RATE_LIMITED."""
    from authql.settings import DEFAULT_RATE_LIMITS

    client = make_client(rate_limits=dict(DEFAULT_RATE_LIMITS), lockout_threshold=0)
    await client.register("ada@example.com")
    for _ in range(10):
        assert (await client.login("ada@example.com", WRONG)).error_code == "INVALID_CREDENTIALS"
    assert_rate_limited(await client.login("ada@example.com", WRONG))
