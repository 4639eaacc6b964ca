"""Registration and password sign-in over GraphQL."""

from __future__ import annotations

from tests.support import LOGIN, PASSWORD, GraphQLClient


async def test_register_signs_the_new_account_in(client: GraphQLClient) -> None:
    """register returns tokens and a current session for the new account."""
    payload = await client.register("Ada@Example.com", username="ada_l")
    assert payload["status"] == "OK"
    assert payload["tokenType"] == "Bearer"
    assert payload["expiresIn"] == 900
    assert payload["user"]["email"] == "ada@example.com"
    assert payload["user"]["hasPassword"] is True
    assert payload["session"]["current"] is True
    assert payload["session"]["method"] == "password"
    me = await client.me(payload["accessToken"])
    assert me is not None and me["id"] == payload["user"]["id"]


async def test_register_rejects_bad_input_with_field_messages(client: GraphQLClient) -> None:
    """Every invalid field is reported at once under extensions.fields."""
    result = await client.gql(
        "mutation($i: RegisterInput!) { register(input: $i) { status } }",
        {"i": {"email": "not-an-email", "password": "short", "username": "x"}},
    )
    assert result.error_code == "VALIDATION_ERROR"
    fields = result.errors[0]["extensions"]["fields"]
    assert set(fields) == {"email", "password", "username"}


async def test_register_conflict_on_taken_email_any_case(client: GraphQLClient) -> None:
    """The same email in another case is taken: CONFLICT, and no second account."""
    await client.register("ada@example.com")
    result = await client.gql(
        "mutation($i: RegisterInput!) { register(input: $i) { status } }",
        {"i": {"email": "ADA@example.com", "password": PASSWORD}},
    )
    assert result.error_code == "CONFLICT"
    assert result.errors[0]["extensions"]["fields"] == {"email": "Already in use."}


async def test_login_by_email_case_insensitively_and_by_username(client: GraphQLClient) -> None:
    """Email and username both identify the account; email case does not matter."""
    await client.register("ada@example.com", username="Ada_L")
    by_email = await client.login("ADA@EXAMPLE.COM")
    by_username = await client.login("ada_l")
    assert by_email.data["login"]["status"] == "OK"
    assert by_username.data["login"]["user"]["email"] == "ada@example.com"


async def test_wrong_password_and_unknown_user_answer_identically(client: GraphQLClient) -> None:
    """No enumeration: the same code and message for both failures."""
    await client.register("ada@example.com")
    wrong = await client.login("ada@example.com", "wrong password!")
    unknown = await client.login("nobody@example.com", "wrong password!")
    assert wrong.error_code == unknown.error_code == "INVALID_CREDENTIALS"
    assert wrong.errors[0]["message"] == unknown.errors[0]["message"]
    assert wrong.status_code == unknown.status_code


async def test_login_emits_audit_events_without_secrets(client: GraphQLClient) -> None:
    """Successful and failed logins are persisted as AuthEvents with no password in them."""
    from authql.models import AuthEventRecord

    await client.register("ada@example.com")
    await client.login("ada@example.com", "wrong password!")
    await client.login("ada@example.com")
    types = await AuthEventRecord.all().order_by("at").values_list("type", flat=True)
    assert list(types) == [
        "REGISTERED",
        "LOGIN_SUCCEEDED",
        "LOGIN_FAILED",
        "LOGIN_SUCCEEDED",
    ]
    dump = str(await AuthEventRecord.all().values())
    assert PASSWORD not in dump and "wrong password!" not in dump


async def test_login_rehashes_when_parameters_change(make_client) -> None:  # type: ignore[no-untyped-def]
    """A hash made with old argon2 parameters is upgraded on the next successful login."""
    from authql.models import User

    old = make_client()
    await old.register("ada@example.com")
    before = (await User.get(email="ada@example.com")).password_hash
    stronger = make_client(argon2_time_cost=2)
    assert (await stronger.login()).data["login"]["status"] == "OK"
    after = (await User.get(email="ada@example.com")).password_hash
    assert before != after and "t=2" in after


async def test_required_email_verification_withholds_tokens(make_client) -> None:  # type: ignore[no-untyped-def]
    """With verification required, a correct password yields EMAIL_NOT_VERIFIED, no tokens."""
    client = make_client(require_email_verification=True)
    payload = await client.register("ada@example.com")
    assert payload["status"] == "EMAIL_NOT_VERIFIED" and payload["accessToken"] is None
    login = await client.gql(LOGIN, {"identifier": "ada@example.com", "password": PASSWORD})
    assert login.data["login"]["status"] == "EMAIL_NOT_VERIFIED"
    assert login.data["login"]["accessToken"] is None
