"""One scenario, every surface: what a user sees must not depend on the door they use.

register -> login -> me -> refresh (where the product has it) -> logout -> the old
credential is refused; plus the same refusal for a wrong password, and sign-ins and
revocations that cross surfaces.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.contract.surfaces import ALL_SURFACES, MOUNTS, GraphQLSurface, Refused, Surface
from tests.support import PASSWORD, GraphQLClient

MakeClient = Callable[..., GraphQLClient]


def _surfaces(client: GraphQLClient) -> dict[str, Surface]:
    return {kind.name: kind(client.http) for kind in ALL_SURFACES}


@pytest.fixture
def surfaces(make_client: MakeClient) -> dict[str, Surface]:
    """Every surface of one app that mounts every dialect."""
    return _surfaces(make_client(rest_dialects=MOUNTS))


@pytest.mark.parametrize("name", [kind.name for kind in ALL_SURFACES])
async def test_the_account_lifecycle_looks_the_same_everywhere(
    surfaces: dict[str, Surface], name: str
) -> None:
    """register, sign in, see yourself, refresh, sign out: the old credential then fails."""
    surface = surfaces[name]
    email = f"{name.replace('-', '')}@example.com"
    await surface.register(email, PASSWORD)
    credential = await surface.login(email, PASSWORD)
    assert await surface.me(credential) == email
    if surface.has_refresh:
        renewed = await surface.refresh(credential)
        assert await surface.me(renewed) == email
        with pytest.raises(Refused):
            await surface.refresh(credential)  # single use: the old refresh token is dead
        credential = await surface.login(email, PASSWORD)
    await surface.logout(credential)
    assert await surface.me(credential) is None


@pytest.mark.parametrize("name", [kind.name for kind in ALL_SURFACES])
async def test_a_wrong_password_is_refused_everywhere(
    surfaces: dict[str, Surface], name: str
) -> None:
    """Every surface refuses a wrong password and an unknown account alike."""
    surface = surfaces[name]
    await surfaces["graphql"].register("ada@example.com", PASSWORD)
    with pytest.raises(Refused):
        await surface.login("ada@example.com", "not the password")
    with pytest.raises(Refused):
        await surface.login("nobody@example.com", "not the password")


@pytest.mark.parametrize("origin", [kind.name for kind in ALL_SURFACES])
async def test_an_account_from_any_surface_signs_in_on_every_other(
    surfaces: dict[str, Surface], origin: str
) -> None:
    """One account, every dialect: registered through one door, it opens all of them."""
    email = f"from-{origin.replace('-', '')}@example.com"
    await surfaces[origin].register(email, PASSWORD)
    for name, surface in surfaces.items():
        credential = await surface.login(email, PASSWORD)
        assert await surface.me(credential) == email, name


async def test_a_revocation_anywhere_is_refused_everywhere(
    surfaces: dict[str, Surface],
) -> None:
    """logoutAll over GraphQL kills the sessions that every dialect handed out."""
    graphql = surfaces["graphql"]
    assert isinstance(graphql, GraphQLSurface)
    await graphql.register("ada@example.com", PASSWORD)
    credentials = {
        name: await surface.login("ada@example.com", PASSWORD) for name, surface in surfaces.items()
    }
    assert all([await surfaces[name].me(credential) for name, credential in credentials.items()])
    await graphql._gql("mutation { logoutAll }", {}, credentials["graphql"])
    for name, credential in credentials.items():
        assert await surfaces[name].me(credential) is None, name
