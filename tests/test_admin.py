"""Administration: bootstrapping an admin, listing and looking up accounts."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any

import pytest

from authql.models import User, UserRole
from authql.resolvers.accounts import create_admin
from tests.support import PASSWORD, GraphQLClient

USERS = """
query Users($search: String, $role: String, $first: Int, $after: String) {
  users(search: $search, role: $role, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id email roles } }
  }
}
"""

USER = "query($id: ID!) { user(id: $id) { id email roles deletedAt } }"

ADMIN_EMAIL = "root@example.com"


async def _admin_token(client: GraphQLClient) -> str:
    """Create the admin account and sign it in over GraphQL."""
    await create_admin(client.services.passwords, email=ADMIN_EMAIL, password=PASSWORD)
    login = await client.login(ADMIN_EMAIL)
    return login.data["login"]["accessToken"]  # type: ignore[no-any-return]


async def _register_many(client: GraphQLClient, count: int) -> list[dict[str, Any]]:
    return [await client.register(f"user{i}@example.com") for i in range(count)]


async def _users(client: GraphQLClient, token: str, **variables: Any) -> dict[str, Any]:
    return (await client.gql(USERS, variables, token=token)).data["users"]  # type: ignore[no-any-return]


# --- bootstrap ------------------------------------------------------------------------------


async def test_created_admin_signs_in_with_the_admin_role(client: GraphQLClient) -> None:
    """create_admin makes an account that logs in with "admin" in its token and in me.roles."""
    user_id = await create_admin(
        client.services.passwords, email="Root@Example.com", password=PASSWORD
    )
    login = (await client.login(ADMIN_EMAIL)).data["login"]
    assert login["user"]["id"] == user_id
    claims = client.services.access_tokens.verify(login["accessToken"])
    assert "admin" in claims["roles"]
    me = await client.me(login["accessToken"])
    assert me is not None and "admin" in me["roles"]


async def test_create_admin_promotes_an_existing_account(client: GraphQLClient) -> None:
    """Running create_admin on a registered email grants the role to that same account."""
    registered = await client.register("ada@example.com")
    user_id = await create_admin(
        client.services.passwords, email="ADA@example.com", password="another password"
    )
    assert user_id == registered["user"]["id"]
    assert await User.filter(email="ada@example.com").count() == 1
    assert await UserRole.filter(user_id=user_id, role="admin").count() == 1
    again = await create_admin(
        client.services.passwords, email="ada@example.com", password="another password"
    )
    assert again == user_id
    assert await UserRole.filter(user_id=user_id).count() == 1
    login = (await client.login("ada@example.com", "another password")).data["login"]
    assert "admin" in client.services.access_tokens.verify(login["accessToken"])["roles"]


async def test_create_admin_validates_its_input(client: GraphQLClient) -> None:
    """A malformed email or a short password creates nothing."""
    from authql.errors import ValidationFailed

    with pytest.raises(ValidationFailed):
        await create_admin(client.services.passwords, email="not-an-email", password=PASSWORD)
    with pytest.raises(ValidationFailed):
        await create_admin(client.services.passwords, email=ADMIN_EMAIL, password="short")
    assert await User.all().count() == 0


# --- users(...) -----------------------------------------------------------------------------


async def test_users_pages_through_every_account_once(client: GraphQLClient) -> None:
    """first/after walk all accounts in order, each exactly once, with a stable totalCount."""
    token = await _admin_token(client)
    await _register_many(client, 5)
    first = await _users(client, token, first=2)
    assert len(first["edges"]) == 2
    assert first["pageInfo"]["hasNextPage"] is True
    assert first["pageInfo"]["endCursor"] == first["edges"][-1]["cursor"]
    assert first["totalCount"] == 6

    seen = [edge["node"]["email"] for edge in first["edges"]]
    page = first
    while page["pageInfo"]["hasNextPage"]:
        page = await _users(client, token, first=2, after=page["pageInfo"]["endCursor"])
        assert page["totalCount"] == 6
        assert 1 <= len(page["edges"]) <= 2
        seen += [edge["node"]["email"] for edge in page["edges"]]
    assert sorted(seen) == sorted([ADMIN_EMAIL] + [f"user{i}@example.com" for i in range(5)])
    assert len(seen) == len(set(seen))


async def test_users_pages_are_ordered_by_creation(client: GraphQLClient) -> None:
    """Accounts come oldest first, so a page boundary never skips a new sign-up."""
    token = await _admin_token(client)
    await _register_many(client, 3)
    listed = await _users(client, token, first=10)
    emails = [edge["node"]["email"] for edge in listed["edges"]]
    assert emails == [ADMIN_EMAIL, "user0@example.com", "user1@example.com", "user2@example.com"]
    assert listed["pageInfo"]["hasNextPage"] is False


async def test_users_search_filters_by_substring(client: GraphQLClient) -> None:
    """search matches part of an email, case-insensitively, and totalCount follows it."""
    token = await _admin_token(client)
    await _register_many(client, 3)
    await client.register("someone@other.test")
    found = await _users(client, token, search="OTHER.te")
    assert [edge["node"]["email"] for edge in found["edges"]] == ["someone@other.test"]
    assert found["totalCount"] == 1
    many = await _users(client, token, search="user")
    assert many["totalCount"] == 3


async def test_users_role_filter_returns_only_admins(client: GraphQLClient) -> None:
    """role: "admin" lists only accounts holding that role."""
    token = await _admin_token(client)
    await _register_many(client, 3)
    await create_admin(client.services.passwords, email="user1@example.com", password=PASSWORD)
    admins = await _users(client, token, role="admin")
    emails = {edge["node"]["email"] for edge in admins["edges"]}
    assert emails == {ADMIN_EMAIL, "user1@example.com"}
    assert admins["totalCount"] == 2
    assert all("admin" in edge["node"]["roles"] for edge in admins["edges"])
    nobody = await _users(client, token, role="auditor")
    assert nobody == {
        "totalCount": 0,
        "pageInfo": {"hasNextPage": False, "endCursor": None},
        "edges": [],
    }


@pytest.mark.parametrize("first", [0, -1, 101, 1000])
async def test_users_page_size_is_bounded(client: GraphQLClient, first: int) -> None:
    """first outside 1..100 is a VALIDATION_ERROR naming the argument."""
    token = await _admin_token(client)
    result = await client.gql(USERS, {"first": first}, token=token)
    assert result.error_code == "VALIDATION_ERROR"
    assert "first" in result.errors[0]["extensions"]["fields"]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


_SOME_ID = "6f1c2a3e-8d4b-4e7a-9c0d-1a2b3c4d5e6f"


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("not a cursor", id="not-base64"),
        pytest.param("%%%", id="symbols"),
        pytest.param(_b64("garbage"), id="no-separator"),
        pytest.param(_b64(f"yesterday|{_SOME_ID}"), id="bad-date"),
        pytest.param(_b64("2026-01-01T00:00:00+00:00|not-a-uuid"), id="bad-uuid"),
        pytest.param(_b64(f"2026-01-01T00:00:00|{_SOME_ID}"), id="naive-date"),
        pytest.param(base64.urlsafe_b64encode(b"\xff\xfe|\x00").decode(), id="not-utf8"),
    ],
)
async def test_users_bad_cursor_is_a_validation_error(client: GraphQLClient, cursor: str) -> None:
    """A cursor the server did not issue is a VALIDATION_ERROR, never an internal failure."""
    token = await _admin_token(client)
    result = await client.gql(USERS, {"after": cursor}, token=token)
    assert result.error_code == "VALIDATION_ERROR", result.errors


# --- user(id) and visibility ----------------------------------------------------------------


async def test_admin_reads_one_account_including_deletion(client: GraphQLClient) -> None:
    """user(id) returns the account to an admin, with deletedAt for soft-deleted accounts."""
    token = await _admin_token(client)
    ada = await client.register("ada@example.com")
    found = (await client.gql(USER, {"id": ada["user"]["id"]}, token=token)).data["user"]
    assert found == {
        "id": ada["user"]["id"],
        "email": "ada@example.com",
        "roles": [],
        "deletedAt": None,
    }
    deleted_at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    await User.filter(id=ada["user"]["id"]).update(deleted_at=deleted_at)
    again = (await client.gql(USER, {"id": ada["user"]["id"]}, token=token)).data["user"]
    assert again is not None
    assert dt.datetime.fromisoformat(again["deletedAt"]) == deleted_at


async def test_user_lookup_of_unknown_or_malformed_id_is_null(client: GraphQLClient) -> None:
    """An id that names no account answers null, whether well-formed or not."""
    token = await _admin_token(client)
    for user_id in (str(uuid.uuid4()), "not-a-uuid"):
        result = await client.gql(USER, {"id": user_id}, token=token)
        assert result.data["user"] is None


async def test_deleted_at_is_hidden_from_the_account_owner(client: GraphQLClient) -> None:
    """A regular user reading their own account gets deletedAt null."""
    ada = await client.register("ada@example.com")
    result = await client.gql("{ me { email deletedAt } }", token=ada["accessToken"])
    assert result.data["me"] == {"email": "ada@example.com", "deletedAt": None}


async def test_non_admins_are_forbidden_from_admin_reads(client: GraphQLClient) -> None:
    """A signed-in user without the admin role gets FORBIDDEN for users and user."""
    ada = await client.register("ada@example.com")
    bob = await client.register("bob@example.com")
    listing = await client.gql(USERS, {}, token=ada["accessToken"])
    assert listing.error_code == "FORBIDDEN"
    assert listing.body.get("data") is None
    lookup = await client.gql(USER, {"id": bob["user"]["id"]}, token=ada["accessToken"])
    assert lookup.error_code == "FORBIDDEN"
    assert "bob@example.com" not in str(lookup.body)


async def test_anonymous_callers_are_unauthorized_for_admin_reads(client: GraphQLClient) -> None:
    """Without a token, users and user answer UNAUTHORIZED."""
    bob = await client.register("bob@example.com")
    assert (await client.gql(USERS)).error_code == "UNAUTHORIZED"
    assert (await client.gql(USER, {"id": bob["user"]["id"]})).error_code == "UNAUTHORIZED"


async def test_revoked_admin_token_loses_admin_access(client: GraphQLClient) -> None:
    """An admin's token stops granting admin reads as soon as its session is logged out."""
    token = await _admin_token(client)
    assert (await client.gql(USERS, {}, token=token)).data["users"]["totalCount"] == 1
    await client.gql("mutation { logout }", token=token)
    assert (await client.gql(USERS, {}, token=token)).error_code == "UNAUTHORIZED"


async def test_cleanup_sessions_deletes_only_dead_sessions(client: GraphQLClient, clock) -> None:  # type: ignore[no-untyped-def]
    """cleanupSessions removes expired and revoked sessions and keeps live ones working."""
    from authql.models import Session

    token = await _admin_token(client)
    await client.register("ada@example.com")
    revoked = (await client.login()).data["login"]["accessToken"]
    await client.gql("mutation { logout }", token=revoked)
    live = (await client.login()).data["login"]["accessToken"]
    before = await Session.all().count()
    result = await client.gql("mutation { cleanupSessions }", token=token)
    assert result.data["cleanupSessions"] == 1
    assert await Session.all().count() == before - 1
    assert (await client.me(live)) is not None
    clock.advance(1_209_600 + 1)
    assert await Session.filter(expires_at__gt=clock.now()).count() == 0


async def test_cleanup_sessions_is_for_admins_only(client: GraphQLClient) -> None:
    """A regular user may not delete sessions; anonymous callers are unauthorized."""
    payload = await client.register("ada@example.com")
    forbidden = await client.gql("mutation { cleanupSessions }", token=payload["accessToken"])
    anonymous = await client.gql("mutation { cleanupSessions }")
    assert forbidden.error_code == "FORBIDDEN"
    assert anonymous.error_code == "UNAUTHORIZED"


async def test_two_factor_preflight_reveals_no_account(client: GraphQLClient) -> None:
    """checkTwoFactor answers the same for an account without a factor and for nobody."""
    await client.register("ada@example.com")
    query = "mutation($i: String!) { checkTwoFactor(identifier: $i) { requiresTwoFactor methods } }"
    known = await client.gql(query, {"i": "ada@example.com"})
    unknown = await client.gql(query, {"i": "nobody@example.com"})
    assert known.data == unknown.data
    assert known.data["checkTwoFactor"] == {"requiresTwoFactor": False, "methods": []}
