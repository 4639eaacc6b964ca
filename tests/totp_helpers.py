"""Two-factor test helpers: enrol an account over GraphQL, and compute the authenticator
app's code for a frozen clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyotp

from authql.services.clock import FrozenClock
from tests.support import GraphQLClient

STEP = 30  # seconds per TOTP step

BEGIN_TOTP_SETUP = """
mutation($challenge: String) {
  beginTotpSetup(challengeToken: $challenge) { secret otpauthUrl qrCodeSvg }
}
"""
CONFIRM_TOTP_SETUP = """
mutation($code: String!, $challenge: String) {
  confirmTotpSetup(code: $code, challengeToken: $challenge)
}
"""


@dataclass(frozen=True)
class Enrolment:
    """What enrolling showed the user: the secret (as the app stores it), the setup payload
    and the ten backup codes (shown once)."""

    secret: str
    backup_codes: list[str]
    setup: dict[str, Any]


def totp_code(secret: str, clock: FrozenClock, *, steps: int = 0) -> str:
    """The authenticator app's code for ``secret`` at the clock's time (``steps`` later)."""
    return pyotp.TOTP(secret).at(clock.now().timestamp() + steps * STEP)


async def enrol(
    client: GraphQLClient,
    clock: FrozenClock,
    *,
    access_token: str | None = None,
    challenge_token: str | None = None,
) -> Enrolment:
    """Turn TOTP on for the signed-in account (or the owner of a setup challenge) with the
    current step's code; that step is then used up."""
    begun = await client.gql(BEGIN_TOTP_SETUP, {"challenge": challenge_token}, token=access_token)
    setup = begun.data["beginTotpSetup"]
    confirmed = await client.gql(
        CONFIRM_TOTP_SETUP,
        {"code": totp_code(setup["secret"], clock), "challenge": challenge_token},
        token=access_token,
    )
    return Enrolment(setup["secret"], confirmed.data["confirmTotpSetup"], setup)
