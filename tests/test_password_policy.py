"""The password policy wherever a password is set (register, changePassword, resetPassword,
a REST dialect's register): length, required character classes, and the breached-password
check against a real k-anonymity range server on 127.0.0.1 (``tests.pwned_api``), which
never blocks a sign-up when it cannot answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

import pytest

from authql.models import User
from authql.resolvers.policy import PasswordRules
from authql.services.pwned import PwnedPasswords, breach_count, range_key
from tests.github_standin import closed_port_url
from tests.pwned_api import PwnedApi, sha1_upper
from tests.smtp import extract_token
from tests.support import PASSWORD, GraphQLClient, GraphQLResult
from tests.test_tenants import admin_token, create_tenant, register

MakeClient = Callable[..., GraphQLClient]

BREACHED = "password1234"
BREACH_MESSAGE = "This password has appeared in a data breach"
CHANGE_PASSWORD = """
mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }
"""
REQUEST_RESET = "mutation($e: String!) { requestPasswordReset(email: $e) }"
RESET = """
mutation($t: String!, $p: String!) { resetPassword(token: $t, password: $p) { status } }
"""


@pytest.fixture
def pwned() -> Iterator[PwnedApi]:
    with PwnedApi([BREACHED]) as api:
        yield api


def fields_of(result: GraphQLResult) -> dict[str, str]:
    assert result.error_code == "VALIDATION_ERROR", result.body
    return result.errors[0]["extensions"]["fields"]  # type: ignore[no-any-return]


async def reset_token(client: GraphQLClient, email: str) -> str:
    await client.gql(REQUEST_RESET, {"e": email})
    mails, _ = await client.delivered()
    return extract_token(mails[-1])


# --- the rules -------------------------------------------------------------------------------


def test_each_rule_is_named_in_the_message() -> None:
    """A password breaking a rule is told which one: length bounds, then every missing
    character class at once; spaces are not symbols."""
    rules = PasswordRules(10, 20, ("upper", "lower", "digit", "symbol"))
    assert rules.problem("Ab1!") == ("Password too short.", "Must be at least 10 characters.")
    assert rules.problem(" " * 12) == ("Password too short.", "Must be at least 10 characters.")
    assert rules.problem("Ab1!" * 6) == ("Password too long.", "Must be at most 20 characters.")
    assert rules.problem("all lower case") == (
        "Password too weak.",
        "Must contain an upper-case letter, a digit and a symbol.",
    )
    assert rules.problem("ALL UPPER 12!") == (
        "Password too weak.",
        "Must contain a lower-case letter.",
    )
    assert rules.problem("Mixed Case 12!") is None


async def test_register_enforces_length_and_character_classes(make_client: MakeClient) -> None:
    """With rules configured, registration refuses what breaks them (VALIDATION_ERROR on
    password naming the rule) and accepts what meets them."""
    client = make_client(password_min_length=12, password_rules=("upper", "digit"))
    too_short = await register(client, "ada@example.com", "Short pass1")
    assert fields_of(too_short) == {"password": "Must be at least 12 characters."}
    too_long = await register(client, "ada@example.com", "A1" + "x" * 127)
    assert fields_of(too_long) == {"password": "Must be at most 128 characters."}
    weak = await register(client, "ada@example.com", "long but plain passphrase")
    assert fields_of(weak) == {"password": "Must contain an upper-case letter and a digit."}
    assert not await User.exists(email="ada@example.com")
    good = await register(client, "ada@example.com", "Long and 7 times better")
    assert good.data["register"]["status"] == "OK"


async def test_change_password_follows_the_accounts_tenant(client: GraphQLClient) -> None:
    """changePassword checks the new password against the rules of the account's tenant
    (field newPassword) and then accepts one that meets them."""
    token = await admin_token(client)
    await create_tenant(client, token, name="Acme", domains=["acme.test"], passwordRules=["symbol"])
    signed_up = (await register(client, "ada@acme.test", "correct horse battery!")).data
    user_token = signed_up["register"]["accessToken"]
    weak = await client.gql(
        CHANGE_PASSWORD,
        {"c": "correct horse battery!", "n": "another long passphrase"},
        token=user_token,
    )
    assert fields_of(weak) == {"newPassword": "Must contain a symbol."}
    changed = await client.gql(
        CHANGE_PASSWORD,
        {"c": "correct horse battery!", "n": "another long passphrase?"},
        token=user_token,
    )
    assert changed.data["changePassword"] is True


async def test_a_reset_below_the_tenants_minimum_keeps_the_link(client: GraphQLClient) -> None:
    """resetPassword applies the account's tenant minimum; a refused password does not
    spend the link, which then sets a good one."""
    token = await admin_token(client)
    await create_tenant(client, token, name="Acme", domains=["acme.test"], passwordMinLength=16)
    await register(client, "ada@acme.test", "sixteen chars ok")
    link = await reset_token(client, "ada@acme.test")
    short = await client.gql(RESET, {"t": link, "p": "fifteen chars!!"})
    assert fields_of(short) == {"password": "Must be at least 16 characters."}
    done = await client.gql(RESET, {"t": link, "p": "a new sixteen ch"})
    assert done.data["resetPassword"]["status"] == "OK"
    assert (await client.login("ada@acme.test", "a new sixteen ch")).data["login"]["status"] == "OK"


# --- breached passwords ----------------------------------------------------------------------


def test_range_answers_are_matched_locally_and_padding_never_counts() -> None:
    """Only the five-character prefix names the password; a padding line (count 0) for the
    same suffix is not a breach."""
    prefix, suffix = range_key(BREACHED)
    assert prefix + suffix == sha1_upper(BREACHED) and len(prefix) == 5
    assert breach_count(f"{suffix}:0\r\n0123:9\r\n", suffix) == 0
    assert breach_count(f"AAAA:3\r\n{suffix.lower()}:17\r\n", suffix) == 17


async def test_a_breached_password_is_refused_at_sign_up(
    make_client: MakeClient, pwned: PwnedApi
) -> None:
    """Signing up with a breached password is VALIDATION_ERROR "This password has appeared
    in a data breach"; the range API saw only the hash prefix, asked with padding."""
    client = make_client(pwned_passwords_url=pwned.url)
    refused = await register(client, "ada@example.com", BREACHED)
    assert refused.errors[0]["message"] == BREACH_MESSAGE
    assert BREACH_MESSAGE in fields_of(refused)["password"]
    assert not await User.exists(email="ada@example.com")
    [request] = pwned.requests
    assert request.path == f"/range/{sha1_upper(BREACHED)[:5]}"
    assert request.headers["add-padding"] == "true"
    assert sha1_upper(BREACHED)[5:] not in repr(request)
    assert (await register(client, "ada@example.com")).data["register"]["status"] == "OK"
    assert len(pwned.requests) == 2


async def test_a_password_seen_zero_times_is_not_a_breach(
    make_client: MakeClient, pwned: PwnedApi
) -> None:
    """A suffix the range answers with a count of 0 (padding) does not refuse a password."""
    pwned.add(PASSWORD, count=0)
    client = make_client(pwned_passwords_url=pwned.url)
    assert (await register(client, "ada@example.com")).data["register"]["status"] == "OK"


async def test_change_and_reset_refuse_breached_passwords(
    make_client: MakeClient, pwned: PwnedApi
) -> None:
    """changePassword (field newPassword) and resetPassword refuse a breached password; the
    reset link survives the refusal."""
    client = make_client(pwned_passwords_url=pwned.url)
    user_token = (await client.register("ada@example.com"))["accessToken"]
    change = await client.gql(CHANGE_PASSWORD, {"c": PASSWORD, "n": BREACHED}, token=user_token)
    assert change.errors[0]["message"] == BREACH_MESSAGE
    assert set(fields_of(change)) == {"newPassword"}
    link = await reset_token(client, "ada@example.com")
    reset = await client.gql(RESET, {"t": link, "p": BREACHED})
    assert set(fields_of(reset)) == {"password"}
    done = await client.gql(RESET, {"t": link, "p": "not in any breach list"})
    assert done.data["resetPassword"]["status"] == "OK"


async def test_a_rest_dialect_register_gets_the_same_check(
    make_client: MakeClient, pwned: PwnedApi
) -> None:
    """node-auth's POST /auth/register refuses a breached password with 400, like GraphQL."""
    client = make_client(pwned_passwords_url=pwned.url, rest_dialects=(("node-auth", "/auth"),))
    response = await client.http.post(
        "/auth/register", json={"email": "ada@example.com", "password": BREACHED}
    )
    assert response.status_code == 400
    assert BREACH_MESSAGE in response.json()["error"]
    assert not await User.exists(email="ada@example.com")


@pytest.mark.parametrize("outage", ["closed port", "503", "timeout"])
async def test_an_unreachable_range_api_never_blocks_sign_up(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture, outage: str
) -> None:
    """When the range API is down, failing or too slow, sign-up succeeds and a warning says
    the check was skipped."""

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    host, port = silent.sockets[0].getsockname()[:2]
    try:
        with PwnedApi([BREACHED]) as api:
            api.status = 503
            url = {
                "closed port": closed_port_url(),
                "503": api.url,
                "timeout": f"http://{host}:{port}",
            }[outage]
            client = make_client(pwned_passwords_url=url, pwned_timeout=0.1)
            with caplog.at_level(logging.WARNING, logger="authql.pwned"):
                result = await register(client, "ada@example.com", BREACHED)
    finally:
        silent.close()
        await silent.wait_closed()
    assert result.data["register"]["status"] == "OK"
    assert any("breached-password check skipped" in r.getMessage() for r in caplog.records)


async def test_the_check_is_off_without_a_url() -> None:
    """Without a configured range API nothing is asked and nothing is refused."""
    assert await PwnedPasswords("", 1.0).is_breached(BREACHED) is None
