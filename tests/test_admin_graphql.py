"""Administration over GraphQL: sessions, the audit log, metrics, roles, locks and revocation,
as an admin (and a user on the receiving end) sees them."""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from authql.models import UserRole
from authql.resolvers.accounts import create_admin
from authql.services.clock import FrozenClock
from tests.support import ME, PASSWORD, REFRESH, GraphQLClient

MakeClient = Callable[..., GraphQLClient]
WRONG = "wrong password!"

USERS = """
query($role: String, $first: Int, $after: String) {
  users(role: $role, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } edges { cursor node { email roles } }
  }
}
"""
USER_SESSIONS = "query($u: ID!) { userSessions(userId: $u) { id current method revokedAt } }"
AUDIT = """
query($u: ID, $types: [AuthEventType!], $first: Int, $after: String) {
  auditEvents(userId: $u, types: $types, first: $first, after: $after) {
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id type at userId sessionId success detail } }
  }
}
"""
METRICS = """
query($w: Int) {
  metrics(windowSeconds: $w) {
    at windowSeconds loginsSucceeded loginsFailed registrations activeSessions rateLimited
    eventsPerType
  }
}
"""
SET_ROLES = "mutation($u: ID!, $r: [String!]!) { setUserRoles(userId: $u, roles: $r) { id roles } }"
LOCK = "mutation($u: ID!, $m: Int) { lockUser(userId: $u, minutes: $m) { id lockedUntil } }"
UNLOCK = "mutation($u: ID!) { unlockUser(userId: $u) { id lockedUntil } }"
REVOKE = "mutation($u: ID!) { revokeUserSessions(userId: $u) }"

#: Every admin field this module adds, with the variables it needs (``$u``: a user id).
ADMIN_OPERATIONS = [
    pytest.param(USER_SESSIONS, {}, id="userSessions"),
    pytest.param(AUDIT, {}, id="auditEvents"),
    pytest.param(METRICS, {}, id="metrics"),
    pytest.param(SET_ROLES, {"r": ["admin"]}, id="setUserRoles"),
    pytest.param(LOCK, {}, id="lockUser"),
    pytest.param(UNLOCK, {}, id="unlockUser"),
    pytest.param(REVOKE, {}, id="revokeUserSessions"),
]
#: The ones that name an account and must answer NOT_FOUND for one that does not exist.
TARGETED_OPERATIONS = [
    param for param in ADMIN_OPERATIONS if param.id not in ("auditEvents", "metrics")
]


@dataclass
class Account:
    id: str
    token: str
    refresh_token: str
    email: str
    session_id: str


async def admin_account(client: GraphQLClient, email: str = "root@example.com") -> Account:
    """An account with the admin role, signed in over GraphQL."""
    user_id = await create_admin(client.services.passwords, email=email, password=PASSWORD)
    login = (await client.login(email)).data["login"]
    return Account(
        user_id, login["accessToken"], login["refreshToken"], email, login["session"]["id"]
    )


async def user_account(client: GraphQLClient, email: str = "ada@example.com") -> Account:
    """A registered (signed-in) account without roles."""
    payload = await client.register(email)
    return Account(
        payload["user"]["id"],
        payload["accessToken"],
        payload["refreshToken"],
        email,
        payload["session"]["id"],
    )


async def audit(client: GraphQLClient, token: str, **variables: Any) -> dict[str, Any]:
    return (await client.gql(AUDIT, variables, token=token)).data["auditEvents"]  # type: ignore[no-any-return]


async def walk_audit(client: GraphQLClient, token: str, **variables: Any) -> list[dict[str, Any]]:
    """Every event the filters select, page by page."""
    events: list[dict[str, Any]] = []
    after = None
    while True:
        page = await audit(client, token, after=after, **variables)
        events += [edge["node"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return events
        after = page["pageInfo"]["endCursor"]
        assert after == page["edges"][-1]["cursor"]


# --- who may ask ----------------------------------------------------------------------------


@pytest.mark.parametrize(("document", "variables"), ADMIN_OPERATIONS)
async def test_admin_fields_refuse_everyone_but_admins(
    client: GraphQLClient, document: str, variables: dict[str, Any]
) -> None:
    """A signed-in user without the admin role gets FORBIDDEN and no data; without a token
    the answer is UNAUTHORIZED; nothing changes either way."""
    ada = await user_account(client)
    bob = await user_account(client, "bob@example.com")
    forbidden = await client.gql(document, {"u": bob.id, **variables}, token=ada.token)
    assert forbidden.error_code == "FORBIDDEN", forbidden.errors
    assert forbidden.body.get("data") is None
    anonymous = await client.gql(document, {"u": bob.id, **variables})
    assert anonymous.error_code == "UNAUTHORIZED", anonymous.errors
    assert await client.me(bob.token) == {
        "id": bob.id,
        "email": "bob@example.com",
        "username": None,
        "name": None,
        "roles": [],
    }


@pytest.mark.parametrize(("document", "variables"), TARGETED_OPERATIONS)
@pytest.mark.parametrize("user_id", [str(uuid.uuid4()), "not-an-id"])
async def test_admin_actions_on_unknown_accounts_are_not_found(
    client: GraphQLClient, document: str, variables: dict[str, Any], user_id: str
) -> None:
    """An id naming no account, well-formed or not, answers NOT_FOUND."""
    root = await admin_account(client)
    result = await client.gql(document, {"u": user_id, **variables}, token=root.token)
    assert result.error_code == "NOT_FOUND", result.errors


# --- users(...) -------------------------------------------------------------------------------


async def test_users_role_filter_pages_through_every_holder(client: GraphQLClient) -> None:
    """Paging users(role:) walks every holder of the role once, totalCount counting them all."""
    root = await admin_account(client)
    for index in range(5):
        await user_account(client, f"user{index}@example.com")
    for index in (0, 2, 4):
        await create_admin(
            client.services.passwords, email=f"user{index}@example.com", password=PASSWORD
        )
    seen: list[str] = []
    after = None
    while True:
        variables = {"role": "admin", "first": 2, "after": after}
        page = (await client.gql(USERS, variables, token=root.token)).data["users"]
        assert page["totalCount"] == 4
        seen += [edge["node"]["email"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [root.email, "user0@example.com", "user2@example.com", "user4@example.com"]


# --- userSessions -----------------------------------------------------------------------------


async def test_user_sessions_lists_only_the_accounts_live_sessions(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """userSessions shows the account's live sessions newest first, none of another account's
    and none that were logged out."""
    root = await admin_account(client)
    ada = await user_account(client)
    await user_account(client, "bob@example.com")
    clock.advance(1)
    ended = (await client.login()).data["login"]
    await client.gql("mutation { logout }", token=ended["accessToken"])
    clock.advance(1)
    latest = (await client.login()).data["login"]
    result = await client.gql(USER_SESSIONS, {"u": ada.id}, token=root.token)
    sessions = result.data["userSessions"]
    assert [session["id"] for session in sessions] == [latest["session"]["id"], ada.session_id]
    assert all(s["current"] is False and s["revokedAt"] is None for s in sessions)
    own = await client.gql(USER_SESSIONS, {"u": root.id}, token=root.token)
    assert own.data["userSessions"] == [
        {"id": root.session_id, "current": True, "method": "password", "revokedAt": None}
    ]


# --- auditEvents ------------------------------------------------------------------------------


async def test_audit_events_come_newest_first_with_filters(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """auditEvents lists events newest first, narrowed to one account and to event types."""
    root = await admin_account(client)
    clock.advance(1)
    ada = await user_account(client)
    clock.advance(1)
    await client.login("ada@example.com", WRONG)
    clock.advance(1)
    bob = await user_account(client, "bob@example.com")
    everything = await walk_audit(client, root.token, first=2)
    times = [event["at"] for event in everything]
    assert times == sorted(times, reverse=True)
    # Registering signs in too: REGISTERED and LOGIN_SUCCEEDED share a timestamp.
    assert [
        sorted(e["type"] for e in everything if e["at"] == at) for at in sorted(set(times))
    ] == [
        ["LOGIN_SUCCEEDED"],
        ["LOGIN_SUCCEEDED", "REGISTERED"],
        ["LOGIN_FAILED"],
        ["LOGIN_SUCCEEDED", "REGISTERED"],
    ]
    failed = await walk_audit(client, root.token, u=ada.id, types=["LOGIN_FAILED"])
    assert len(failed) == 1 and failed[0]["userId"] == ada.id
    assert failed[0]["success"] is False
    assert failed[0]["detail"] == {"reason": "invalid_credentials"}
    adas = await walk_audit(client, root.token, u=ada.id)
    assert sorted(e["type"] for e in adas) == ["LOGIN_FAILED", "LOGIN_SUCCEEDED", "REGISTERED"]
    assert {e["userId"] for e in adas} == {ada.id}
    registrations = await walk_audit(client, root.token, types=["REGISTERED"])
    assert [event["userId"] for event in registrations] == [bob.id, ada.id]
    mixed = await walk_audit(client, root.token, u=ada.id, types=["LOGIN_FAILED", "LOGOUT"])
    assert [e["type"] for e in mixed] == ["LOGIN_FAILED"]
    assert await walk_audit(client, root.token, u=str(uuid.uuid4())) == []


async def test_audit_events_pages_are_stable_while_events_arrive(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """Paging visits every event once even when many share one timestamp, and events recorded
    mid-walk neither repeat nor shift what later pages return."""
    root = await admin_account(client)
    for index in range(7):  # the frozen clock gives these the same timestamp
        await client.login(f"nobody{index}@example.com", WRONG)
    expected = [event["id"] for event in await walk_audit(client, root.token)]
    assert len(expected) == 8
    seen: list[str] = []
    first = await audit(client, root.token, first=3)
    seen += [edge["node"]["id"] for edge in first["edges"]]
    clock.advance(1)
    await client.login("late@example.com", WRONG)  # newer than the cursor: never on a page
    page = first
    while page["pageInfo"]["hasNextPage"]:
        page = await audit(client, root.token, first=3, after=page["pageInfo"]["endCursor"])
        assert 1 <= len(page["edges"]) <= 3
        seen += [edge["node"]["id"] for edge in page["edges"]]
    assert seen == expected
    assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
    assert len(await walk_audit(client, root.token)) == 9


@pytest.mark.parametrize("first", [0, -5, 101])
async def test_audit_events_page_size_is_bounded(client: GraphQLClient, first: int) -> None:
    """first outside 1..100 is a VALIDATION_ERROR naming the argument."""
    root = await admin_account(client)
    result = await client.gql(AUDIT, {"first": first}, token=root.token)
    assert result.error_code == "VALIDATION_ERROR"
    assert "first" in result.errors[0]["extensions"]["fields"]


@pytest.mark.parametrize(
    "variables",
    [
        pytest.param({"after": "not a cursor"}, id="garbage-cursor"),
        pytest.param(
            {"after": base64.urlsafe_b64encode(b"2026-01-01T00:00:00|x").decode()},
            id="forged-cursor",
        ),
        pytest.param({"u": "not-an-id"}, id="malformed-user-id"),
    ],
)
async def test_audit_events_refuse_bad_arguments(
    client: GraphQLClient, variables: dict[str, Any]
) -> None:
    """A cursor the server did not issue or a malformed user id is a VALIDATION_ERROR."""
    root = await admin_account(client)
    result = await client.gql(AUDIT, variables, token=root.token)
    assert result.error_code == "VALIDATION_ERROR", result.errors


async def test_every_admin_action_is_audited_with_its_actor(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """Roles, lock, unlock and revocation each leave an event on the target account naming the
    admin who acted, and none of them carries a secret."""
    root = await admin_account(client)
    ada = await user_account(client)
    await client.gql(SET_ROLES, {"u": ada.id, "r": ["editor"]}, token=root.token)
    clock.advance(1)
    await client.gql(LOCK, {"u": ada.id, "m": 5}, token=root.token)
    clock.advance(1)
    await client.gql(UNLOCK, {"u": ada.id}, token=root.token)
    await client.login()
    clock.advance(1)
    await client.gql(REVOKE, {"u": ada.id}, token=root.token)
    admin_types = ["ROLES_CHANGED", "ACCOUNT_LOCKED", "ACCOUNT_UNLOCKED", "SESSION_REVOKED"]
    events = await walk_audit(client, root.token, u=ada.id, types=admin_types)
    assert [event["type"] for event in events] == admin_types[::-1]
    assert all(event["userId"] == ada.id for event in events)
    assert all(event["detail"]["actor"] == root.id for event in events)
    by_type = {event["type"]: event["detail"] for event in events}
    assert by_type["ROLES_CHANGED"] == {
        "actor": root.id,
        "roles": ["editor"],
        "added": ["editor"],
        "removed": [],
    }
    assert by_type["ACCOUNT_LOCKED"] == {"actor": root.id, "minutes": 5, "sessions_revoked": 1}
    assert by_type["SESSION_REVOKED"] == {"actor": root.id, "scope": "all", "sessions": 1}
    text = str(events)
    assert "accessToken" not in text and ada.token not in text


# --- lockUser / unlockUser ------------------------------------------------------------------


async def test_locking_refuses_sign_in_and_ends_sessions_at_once(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """A locked account's login answers ACCOUNT_LOCKED with retryAfter, and its access and
    refresh tokens stop working on the very next request."""
    root = await admin_account(client)
    ada = await user_account(client)
    assert await client.me(ada.token) is not None
    locked = (await client.gql(LOCK, {"u": ada.id, "m": 10}, token=root.token)).data["lockUser"]
    assert locked["id"] == ada.id and locked["lockedUntil"] is not None
    assert await client.me(ada.token) is None
    assert (await client.gql("{ mySessions { id } }", token=ada.token)).error_code == (
        "UNAUTHORIZED"
    )
    assert (await client.gql(REFRESH, {"token": ada.refresh_token})).error_code == "INVALID_TOKEN"
    refused = await client.login()
    assert refused.error_code == "ACCOUNT_LOCKED"
    assert refused.errors[0]["extensions"]["retryAfter"] == 600
    sessions = await client.gql(USER_SESSIONS, {"u": ada.id}, token=root.token)
    assert sessions.data["userSessions"] == []
    clock.advance(601)
    assert (await client.login()).data["login"]["status"] == "OK"


async def test_a_lock_holds_on_magic_links_too(client: GraphQLClient) -> None:
    """An admin's lock is not only for the password form: a magic link mailed before or
    after the lock starts no session while it lasts."""
    root = await admin_account(client)
    ada = await user_account(client)
    send = "mutation($e: String!) { sendMagicLink(email: $e) }"
    assert (await client.gql(send, {"e": ada.email})).data == {"sendMagicLink": True}
    mails, _ = await client.delivered()
    token = re.search(r"token=([A-Za-z0-9_\-]+)", mails[-1].text).group(1)  # type: ignore[union-attr]
    await client.gql(LOCK, {"u": ada.id, "m": 10}, token=root.token)
    verify = "mutation($t: String!) { verifyMagicLink(token: $t) { status accessToken } }"
    assert (await client.gql(verify, {"t": token})).error_code == "ACCOUNT_LOCKED"


async def test_lock_without_minutes_lasts_until_unlocked(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """lockUser without minutes still refuses sign-in a year later; unlockUser restores it."""
    root = await admin_account(client)
    ada = await user_account(client)
    locked = (await client.gql(LOCK, {"u": ada.id}, token=root.token)).data["lockUser"]
    assert locked["lockedUntil"].startswith("9999-12-31")
    clock.advance(366 * 86_400)
    assert (await client.login()).error_code == "ACCOUNT_LOCKED"
    root = await admin_account(client)  # the admin's own token has long expired
    unlocked = (await client.gql(UNLOCK, {"u": ada.id}, token=root.token)).data["unlockUser"]
    assert unlocked == {"id": ada.id, "lockedUntil": None}
    login = (await client.login()).data["login"]
    assert login["status"] == "OK"
    assert await client.me(login["accessToken"]) is not None


async def test_unlock_lifts_a_failed_login_lockout_and_forgets_the_failures(
    make_client: MakeClient,
) -> None:
    """unlockUser ends a lockout from wrong passwords at once and resets the count, so the
    next wrong password does not lock the account again."""
    client = make_client(lockout_threshold=3, lockout_minutes=30)
    root = await admin_account(client)
    ada = await user_account(client)
    for _ in range(3):
        await client.login("ada@example.com", WRONG)
    assert (await client.login()).error_code == "ACCOUNT_LOCKED"
    await client.gql(UNLOCK, {"u": ada.id}, token=root.token)
    assert (await client.login()).data["login"]["status"] == "OK"
    for _ in range(2):
        assert (await client.login("ada@example.com", WRONG)).error_code == "INVALID_CREDENTIALS"
    await client.gql(UNLOCK, {"u": ada.id}, token=root.token)
    assert (await client.login("ada@example.com", WRONG)).error_code == "INVALID_CREDENTIALS"
    assert (await client.login()).data["login"]["status"] == "OK"


@pytest.mark.parametrize("minutes", [0, -1, 366 * 24 * 60 + 1])
async def test_lock_duration_is_bounded(client: GraphQLClient, minutes: int) -> None:
    """A lock of no time, negative time or over a year is a VALIDATION_ERROR and locks nothing."""
    root = await admin_account(client)
    ada = await user_account(client)
    result = await client.gql(LOCK, {"u": ada.id, "m": minutes}, token=root.token)
    assert result.error_code == "VALIDATION_ERROR"
    assert "minutes" in result.errors[0]["extensions"]["fields"]
    assert await client.me(ada.token) is not None


async def test_admins_cannot_lock_themselves_out(client: GraphQLClient) -> None:
    """Locking one's own account is a CONFLICT and leaves the admin signed in."""
    root = await admin_account(client)
    result = await client.gql(LOCK, {"u": root.id}, token=root.token)
    assert result.error_code == "CONFLICT"
    assert await client.me(root.token) is not None


# --- revokeUserSessions -----------------------------------------------------------------------


async def test_revoke_user_sessions_ends_every_session_of_that_account(
    client: GraphQLClient,
) -> None:
    """revokeUserSessions counts and ends all of the account's sessions (tokens refused at
    once) and leaves other accounts' sessions alone; the account may sign in again."""
    root = await admin_account(client)
    ada = await user_account(client)
    second = (await client.login()).data["login"]
    bob = await user_account(client, "bob@example.com")
    result = await client.gql(REVOKE, {"u": ada.id}, token=root.token)
    assert result.data["revokeUserSessions"] == 2
    assert await client.me(ada.token) is None
    assert await client.me(second["accessToken"]) is None
    assert (await client.gql(REFRESH, {"token": second["refreshToken"]})).error_code == (
        "INVALID_TOKEN"
    )
    assert await client.me(bob.token) is not None
    again = await client.gql(REVOKE, {"u": ada.id}, token=root.token)
    assert again.data["revokeUserSessions"] == 0
    assert (await client.login()).data["login"]["status"] == "OK"


# --- setUserRoles ------------------------------------------------------------------------------


async def test_granting_and_removing_admin_applies_to_the_next_request(
    client: GraphQLClient,
) -> None:
    """A user made admin can use admin fields with the token they already hold, and loses
    them on the next request once the role is taken away."""
    root = await admin_account(client)
    ada = await user_account(client)
    assert (await client.gql(USERS, {}, token=ada.token)).error_code == "FORBIDDEN"
    granted = await client.gql(SET_ROLES, {"u": ada.id, "r": ["admin", "editor"]}, token=root.token)
    assert granted.data["setUserRoles"] == {"id": ada.id, "roles": ["admin", "editor"]}
    assert (await client.me(ada.token) or {})["roles"] == ["admin", "editor"]
    assert (await client.gql(USERS, {}, token=ada.token)).data["users"]["totalCount"] == 2
    taken = await client.gql(SET_ROLES, {"u": ada.id, "r": ["editor"]}, token=root.token)
    assert taken.data["setUserRoles"]["roles"] == ["editor"]
    assert (await client.gql(USERS, {}, token=ada.token)).error_code == "FORBIDDEN"
    assert (await client.gql(ME, token=ada.token)).data["me"]["roles"] == ["editor"]
    cleared = await client.gql(SET_ROLES, {"u": ada.id, "r": []}, token=root.token)
    assert cleared.data["setUserRoles"]["roles"] == []


async def test_set_user_roles_ignores_duplicates(client: GraphQLClient) -> None:
    """Repeating a role (or padding it with spaces) grants it once."""
    root = await admin_account(client)
    ada = await user_account(client)
    result = await client.gql(
        SET_ROLES, {"u": ada.id, "r": ["editor", " editor ", "billing:read"]}, token=root.token
    )
    assert result.data["setUserRoles"]["roles"] == ["billing:read", "editor"]


@pytest.mark.parametrize(
    "roles",
    [
        pytest.param([""], id="empty"),
        pytest.param(["has space"], id="space"),
        pytest.param(["x" * 65], id="too-long"),
        pytest.param(["-leading-dash"], id="leading-dash"),
        pytest.param(["<script>"], id="markup"),
        pytest.param([f"role{i}" for i in range(33)], id="too-many"),
    ],
)
async def test_set_user_roles_refuses_bad_role_names(
    client: GraphQLClient, roles: list[str]
) -> None:
    """A malformed role name (or too many roles) is a VALIDATION_ERROR and changes nothing."""
    root = await admin_account(client)
    ada = await user_account(client)
    await client.gql(SET_ROLES, {"u": ada.id, "r": ["editor"]}, token=root.token)
    result = await client.gql(SET_ROLES, {"u": ada.id, "r": roles}, token=root.token)
    assert result.error_code == "VALIDATION_ERROR"
    assert "roles" in result.errors[0]["extensions"]["fields"]
    assert (await client.me(ada.token) or {})["roles"] == ["editor"]


async def test_the_last_admin_cannot_drop_the_admin_role(client: GraphQLClient) -> None:
    """The only admin removing their own admin role gets CONFLICT and stays admin; once a
    second admin exists, stepping down works."""
    root = await admin_account(client)
    alone = await client.gql(SET_ROLES, {"u": root.id, "r": ["editor"]}, token=root.token)
    assert alone.error_code == "CONFLICT"
    assert (await client.me(root.token) or {})["roles"] == ["admin"]
    ada = await user_account(client)
    await client.gql(SET_ROLES, {"u": ada.id, "r": ["admin"]}, token=root.token)
    stepped_down = await client.gql(SET_ROLES, {"u": root.id, "r": []}, token=root.token)
    assert stepped_down.data["setUserRoles"]["roles"] == []
    assert (await client.gql(USERS, {}, token=root.token)).error_code == "FORBIDDEN"
    refused = await client.gql(SET_ROLES, {"u": ada.id, "r": []}, token=ada.token)
    assert refused.error_code == "CONFLICT"


async def test_an_admin_stepping_down_waits_for_a_concurrent_demotion(
    client: GraphQLClient,
) -> None:
    """While another admin's demotion is still being committed, a second admin dropping their
    own role waits for it and then gets CONFLICT, so an admin always remains."""
    root = await admin_account(client)
    other = await admin_account(client, "second@example.com")
    assert await client.me(root.token) is not None  # warm the principal cache
    uncommitted = asyncio.Event()
    release = asyncio.Event()

    async def other_steps_down() -> None:
        async with in_transaction():
            await UserRole.filter(user_id=other.id, role="admin").delete()
            uncommitted.set()
            await release.wait()

    blocker = asyncio.create_task(other_steps_down())
    await uncommitted.wait()
    demotion = asyncio.create_task(client.gql(SET_ROLES, {"u": root.id, "r": []}, token=root.token))
    await asyncio.sleep(0.2)  # time to slip past a missing lock, were there none
    release.set()
    await blocker
    result = await demotion
    assert result.error_code == "CONFLICT", result.body
    assert await UserRole.filter(role="admin").values_list("user_id", flat=True) == [
        uuid.UUID(root.id)
    ]


# --- metrics -----------------------------------------------------------------------------------


async def test_metrics_count_the_window_of_sign_ins(
    client: GraphQLClient, clock: FrozenClock
) -> None:
    """metrics counts registrations, good and bad logins and live sessions of the last
    windowSeconds; older events fall out of the window, sessions do not."""
    root = await admin_account(client)
    clock.advance(120)
    await user_account(client)
    await user_account(client, "bob@example.com")
    await client.login()
    for _ in range(3):
        await client.login("ada@example.com", WRONG)
    snapshot = (await client.gql(METRICS, {}, token=root.token)).data["metrics"]
    assert snapshot["windowSeconds"] == 60
    assert snapshot["registrations"] == 2
    assert snapshot["loginsSucceeded"] == 3  # register signs in too
    assert snapshot["loginsFailed"] == 3
    assert snapshot["activeSessions"] == 4
    assert snapshot["rateLimited"] == 0
    assert snapshot["eventsPerType"] == {
        "REGISTERED": 2,
        "LOGIN_SUCCEEDED": 3,
        "LOGIN_FAILED": 3,
    }
    wide = (await client.gql(METRICS, {"w": 600}, token=root.token)).data["metrics"]
    assert wide["loginsSucceeded"] == 4  # the admin's own login, two minutes earlier
    clock.advance(61)
    later = (await client.gql(METRICS, {}, token=root.token)).data["metrics"]
    assert later["registrations"] == 0 and later["loginsFailed"] == 0
    assert later["activeSessions"] == 4


@pytest.mark.parametrize("window", [0, -1, 7 * 86_400 + 1])
async def test_metrics_window_is_bounded(client: GraphQLClient, window: int) -> None:
    """A window of no time, negative time or over a week is a VALIDATION_ERROR."""
    root = await admin_account(client)
    result = await client.gql(METRICS, {"w": window}, token=root.token)
    assert result.error_code == "VALIDATION_ERROR"
    assert "windowSeconds" in result.errors[0]["extensions"]["fields"]
