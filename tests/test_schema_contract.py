"""The generated GraphQL schema: its checked-in snapshot, and the public contract it implements.

``schema.graphql`` (repo root) is the snapshot of what the server really serves; the contract
is ``../shared/design/schema.graphql``. Every name in COVERED must exist in the generated
schema exactly as the contract declares it: field types, argument names, types (nullability
included) and defaults. The generated schema may add types, fields, optional arguments and
enum values; it may not drop or change what the contract says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    build_schema,
    print_ast,
)
from graphql.utilities import get_default_value_ast

from authql.schema import sdl

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = REPO / "schema.graphql"
CONTRACT = Path(__file__).resolve().parents[2] / "shared/design/schema.graphql"
REGENERATE = ".venv/bin/python -m authql schema > schema.graphql"


@dataclass(frozen=True)
class AllExcept:
    """Every field (or enum value) the contract declares, except the ones named."""

    excluded: tuple[str, ...] = ()


ALL = AllExcept()

#: The contract names implemented so far. Extend this as issues land: a tuple lists the
#: covered fields of a type; ALL covers all of its fields (enums: all values, extra values
#: allowed); AllExcept((...)) covers all but the fields named.
COVERED: dict[str, tuple[str, ...] | AllExcept] = {
    "Query": (
        "me",
        "sessionStatus",
        "mySessions",
        "twoFactorStatus",
        "authProviders",
        "health",
        "users",
        "user",
        "userSessions",
        "auditEvents",
        "metrics",
        "tenantPolicy",
    ),
    "Mutation": (
        "register",
        "login",
        "refresh",
        "logout",
        "logoutAll",
        "revokeSession",
        "updateProfile",
        "changePassword",
        "checkTwoFactor",
        "cleanupSessions",
        "requestPasswordReset",
        "resetPassword",
        "sendVerificationEmail",
        "verifyEmail",
        "requestEmailChange",
        "confirmEmailChange",
        "sendMagicLink",
        "verifyMagicLink",
        "sendSmsCode",
        "verifySmsCode",
        "beginTotpSetup",
        "confirmTotpSetup",
        "verifyTwoFactor",
        "disableTwoFactor",
        "regenerateBackupCodes",
        "resetTotp",
        "startOAuth",
        "finishOAuth",
        "unlinkAccount",
        "deleteAccount",
        "requestAccountRestore",
        "restoreAccount",
        "setUserRoles",
        "lockUser",
        "unlockUser",
        "revokeUserSessions",
        "deleteUser",
    ),
    "Subscription": ALL,
    "SessionEvent": ALL,
    "MetricsSnapshot": ALL,
    "AuthEventEdge": ALL,
    "AuthEventConnection": ALL,
    "TenantPolicy": ALL,
    "User": ALL,
    "LinkedAccount": ALL,
    "Session": ALL,
    "TwoFactorPreflight": ALL,
    "TwoFactorMethod": ALL,
    "AuthPayload": ALL,
    "TotpSetup": ALL,
    "TwoFactorStatus": ALL,
    "AuthProvider": ALL,
    "SessionStatus": ALL,
    "Health": ALL,
    "PageInfo": ALL,
    "UserEdge": ALL,
    "UserConnection": ALL,
    "AuthEvent": ALL,
    "ErrorCode": ALL,
    "AuthStatus": ALL,
    "AuthEventType": ALL,
    "UpdateProfileInput": ALL,
    "RegisterInput": ALL,
}

#: Strawberry prints an optional argument whose Python default is None as ``= null``; the
#: contract writes the same argument with no default. Both let clients omit it and behave
#: alike, so they count as equal. Set to False to demand the exact introspected default.
NULL_DEFAULT_IS_NO_DEFAULT = True


CONTRACT_SCHEMA = build_schema(CONTRACT.read_text()) if CONTRACT.exists() else None
GENERATED_SCHEMA = build_schema(sdl())


def _contract() -> GraphQLSchema:
    assert CONTRACT_SCHEMA is not None, (
        f"contract not found at {CONTRACT} (clone ../shared beside the repo)"
    )
    return CONTRACT_SCHEMA


def _covered_names(type_name: str) -> list[str]:
    """The covered field (or enum value) names of ``type_name``, in contract order."""
    if CONTRACT_SCHEMA is None:
        return []
    declared = CONTRACT_SCHEMA.type_map[type_name]
    if isinstance(declared, GraphQLEnumType):
        names = list(declared.values)
    else:
        assert isinstance(declared, GraphQLObjectType | GraphQLInputObjectType)
        names = list(declared.fields)
    coverage = COVERED[type_name]
    if isinstance(coverage, AllExcept):
        return [name for name in names if name not in coverage.excluded]
    return list(coverage)


def _covered_of_kind(kind: type | tuple[type, ...]) -> list[str]:
    """The covered type names that the contract declares as ``kind`` (enum, input, ...)."""
    if CONTRACT_SCHEMA is None:
        return []
    return [name for name in COVERED if isinstance(CONTRACT_SCHEMA.type_map.get(name), kind)]


def _field_cases() -> list[tuple[str, str]]:
    """(type, field) for every covered field of an object or input type."""
    kinds = (GraphQLObjectType, GraphQLInputObjectType)
    return [(t, name) for t in _covered_of_kind(kinds) for name in _covered_names(t)]


def _default(value: GraphQLArgument | GraphQLInputField) -> str | None:
    """The default as GraphQL source text (``20``, ``false``), or None for no default."""
    node = get_default_value_ast(value)
    printed = None if node is None else print_ast(node)
    if (
        NULL_DEFAULT_IS_NO_DEFAULT
        and printed == "null"
        and not isinstance(value.type, GraphQLNonNull)
    ):
        return None
    return printed


def _describe(value: GraphQLArgument | GraphQLInputField) -> str:
    default = _default(value)
    return str(value.type) + ("" if default is None else f" = {default}")


def _is_optional(value: GraphQLArgument | GraphQLInputField) -> bool:
    return not isinstance(value.type, GraphQLNonNull) or _default(value) is not None


# --- snapshot -------------------------------------------------------------------------------


def test_schema_snapshot_is_up_to_date() -> None:
    """The checked-in schema.graphql is exactly what the code generates."""
    assert SNAPSHOT.exists(), f"schema.graphql is missing; run: {REGENERATE}"
    assert sdl() == SNAPSHOT.read_text(), (
        f"schema.graphql is out of date with the code; regenerate it with: {REGENERATE} "
        "(and review the diff: it is the public API)"
    )


def test_contract_is_readable() -> None:
    """The design contract is found beside the repo and parses as a GraphQL schema."""
    assert _contract().query_type is not None


def test_every_covered_name_is_in_the_contract() -> None:
    """COVERED only names types and fields that the contract really declares."""
    contract = _contract()
    for type_name, coverage in COVERED.items():
        assert type_name in contract.type_map, f"{type_name} is not in the contract"
        declared = contract.type_map[type_name]
        names = declared.values if isinstance(declared, GraphQLEnumType) else declared.fields  # type: ignore[attr-defined]
        listed = coverage.excluded if isinstance(coverage, AllExcept) else coverage
        unknown = set(listed) - set(names)
        assert not unknown, f"{type_name}: {sorted(unknown)} are not in the contract"


# --- contract -------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", list(COVERED))
def test_covered_type_exists_with_the_same_kind(type_name: str) -> None:
    """Each covered type exists in the generated schema as the same kind (type/input/enum)."""
    contract = _contract()
    generated = GENERATED_SCHEMA.type_map.get(type_name)
    assert generated is not None, f"{type_name} is missing from the generated schema"
    assert type(generated) is type(contract.type_map[type_name]), (
        f"{type_name} is a {type(generated).__name__} in the generated schema, "
        f"a {type(contract.type_map[type_name]).__name__} in the contract"
    )


@pytest.mark.parametrize("type_name", _covered_of_kind(GraphQLEnumType))
def test_enum_has_every_contract_value(type_name: str) -> None:
    """A covered enum has every value the contract lists (extra values are allowed)."""
    generated = GENERATED_SCHEMA.type_map.get(type_name)
    assert isinstance(generated, GraphQLEnumType), f"{type_name} is not an enum"
    missing = [name for name in _covered_names(type_name) if name not in generated.values]
    assert not missing, f"{type_name} lacks contract values {missing}"


@pytest.mark.parametrize(
    ("type_name", "field_name"), _field_cases(), ids=[f"{t}.{f}" for t, f in _field_cases()]
)
def test_field_matches_the_contract(type_name: str, field_name: str) -> None:
    """A covered field has the contract's type, and the contract's arguments with their types
    and defaults; any extra argument (or input field) is optional."""
    declared = _contract().type_map[type_name]
    generated = GENERATED_SCHEMA.type_map.get(type_name)
    assert isinstance(generated, GraphQLObjectType | GraphQLInputObjectType), type_name
    assert field_name in generated.fields, f"{type_name}.{field_name} is missing"
    want = declared.fields[field_name]  # type: ignore[union-attr]
    got = generated.fields[field_name]
    where = f"{type_name}.{field_name}"

    if isinstance(want, GraphQLInputField):
        assert isinstance(got, GraphQLInputField)
        assert _describe(got) == _describe(want), (
            f"{where}: generated `{_describe(got)}`, contract `{_describe(want)}`"
        )
        return

    assert str(got.type) == str(want.type), (
        f"{where}: generated type `{got.type}`, contract `{want.type}`"
    )
    for name, contract_arg in want.args.items():
        assert name in got.args, f"{where}: argument `{name}` is missing"
        assert _describe(got.args[name]) == _describe(contract_arg), (
            f"{where}({name}:): generated `{_describe(got.args[name])}`, "
            f"contract `{_describe(contract_arg)}`"
        )
    for name, extra in got.args.items():
        if name not in want.args:
            assert _is_optional(extra), f"{where}: added argument `{name}` must be optional"


@pytest.mark.parametrize("type_name", _covered_of_kind(GraphQLInputObjectType))
def test_added_input_fields_are_optional(type_name: str) -> None:
    """Input fields the generated schema adds beyond the contract never break old clients."""
    declared = _contract().type_map[type_name]
    generated = GENERATED_SCHEMA.type_map[type_name]
    assert isinstance(declared, GraphQLInputObjectType)
    assert isinstance(generated, GraphQLInputObjectType)
    for name, field in generated.fields.items():
        if name not in declared.fields:
            assert _is_optional(field), f"{type_name}.{name} is added as required"
