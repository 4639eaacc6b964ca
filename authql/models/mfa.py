"""Second factors: TOTP enrolment, backup codes, and pending sign-in challenges."""

from __future__ import annotations

import uuid

from tortoise import fields
from tortoise.models import Model


class TotpCredential(Model):
    """A user's authenticator secrets, encrypted at rest (AES-GCM, key from the server secret).

    ``secret_encrypted`` is the active secret (null until the first setup is confirmed);
    ``pending_encrypted`` a new one awaiting confirmation (first setup or a reset): nothing
    changes until the user proves the app works. ``last_step`` is the newest accepted
    30-second step: a code whose step is not newer is a replay, refused even under
    parallel requests.
    """

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    user = fields.OneToOneField("models.User", related_name="totp", on_delete=fields.CASCADE)
    secret_encrypted = fields.CharField(max_length=255, null=True)
    pending_encrypted = fields.CharField(max_length=255, null=True)
    created_at = fields.DatetimeField()
    confirmed_at = fields.DatetimeField(null=True)
    last_step = fields.BigIntField(default=0)

    user_id: uuid.UUID

    class Meta:
        table = "totp_credentials"
        table_description = "TOTP secrets (encrypted) and the last accepted step"


class BackupCode(Model):
    """A single-use recovery code, stored as a digest; regeneration deletes the old set."""

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    user = fields.ForeignKeyField(
        "models.User", related_name="backup_codes", on_delete=fields.CASCADE
    )
    digest = fields.CharField(max_length=64, unique=True)
    created_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)

    user_id: uuid.UUID

    class Meta:
        table = "backup_codes"
        table_description = "Single-use 2FA backup codes stored as digests"


class TwoFactorChallenge(Model):
    """A sign-in whose first factor passed and whose second is pending.

    Its token is opaque (never a JWT, so it cannot pass as an access token), stored as a
    digest, short-lived and single use; ``attempts`` counts wrong codes, after which it dies.
    ``method`` and ``remember`` carry the first factor's session details into the session
    the challenge finally creates.
    """

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    user = fields.ForeignKeyField(
        "models.User", related_name="challenges", on_delete=fields.CASCADE
    )
    digest = fields.CharField(max_length=64, unique=True)
    method = fields.CharField(max_length=64)
    remember = fields.BooleanField(default=False)
    #: ``verify`` (complete with a factor) or ``setup`` (policy requires 2FA and the
    #: account has none: the token allows only enrolling TOTP, then becomes ``verify``).
    purpose = fields.CharField(max_length=16, default="verify")
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField(db_index=True)
    attempts = fields.IntField(default=0)
    used_at = fields.DatetimeField(null=True)

    user_id: uuid.UUID

    class Meta:
        table = "two_factor_challenges"
        table_description = "Pending second-factor sign-ins"
