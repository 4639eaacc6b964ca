"""TOTP (RFC 6238) for authenticator apps, and backup codes.

SHA1, 6 digits, 30-second steps: what every authenticator app understands. A code is
accepted for the current step or one step either side (clock drift); the caller learns
which step matched so it can refuse a replay of that step. Secrets are encrypted at rest
with AES-GCM under a key derived (HKDF) from the server secret, so a database dump alone
does not yield working authenticators.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import pyotp
import segno
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1
BACKUP_CODE_COUNT = 10
_BACKUP_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


class TotpService:
    """Secrets, provisioning URIs and QR codes, code checks, and backup codes."""

    def __init__(self, secret_key: str, issuer: str) -> None:
        self.issuer = issuer
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"authql totp secrets"
        ).derive(secret_key.encode())
        self._aead = AESGCM(key)
        self._mac_key = hashlib.sha256(b"authql backup codes" + secret_key.encode()).digest()

    # --- secrets ------------------------------------------------------------------------

    @staticmethod
    def new_secret() -> str:
        """A fresh 160-bit base32 secret (RFC 4226's recommended length)."""
        return pyotp.random_base32(32)

    def encrypt(self, secret: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), b"totp")
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, blob: str) -> str:
        raw = base64.urlsafe_b64decode(blob.encode())
        return self._aead.decrypt(raw[:12], raw[12:], b"totp").decode()

    def otpauth_url(self, secret: str, account: str) -> str:
        """The ``otpauth://totp/...`` URI an authenticator app scans."""
        return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
            name=account, issuer_name=self.issuer
        )

    @staticmethod
    def qr_svg(url: str) -> str:
        """``url`` as an SVG QR code (a complete ``<svg>`` document)."""
        return str(segno.make(url, error="m").svg_inline(scale=4))

    @staticmethod
    def qr_png_data_uri(url: str) -> str:
        """``url`` as a PNG QR code data URI (``data:image/png;base64,...``)."""
        return str(segno.make(url, error="m").png_data_uri(scale=4))

    # --- checking -------------------------------------------------------------------------

    @staticmethod
    def matching_step(secret: str, code: str, now: float) -> int | None:
        """The time step whose code equals ``code`` (current one, or one either side), or
        None. Every candidate is compared in constant time."""
        code = code.strip().replace(" ", "")
        if len(code) != DIGITS or not code.isdigit():
            return None
        totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
        current = int(now // STEP_SECONDS)
        matched = None
        for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
            if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
                matched = step
        return matched

    # --- backup codes -------------------------------------------------------------------

    @staticmethod
    def new_backup_codes(count: int = BACKUP_CODE_COUNT) -> list[str]:
        """Fresh human-friendly codes like ``k7mp-x2qa`` (40 bits each)."""

        def one() -> str:
            chars = "".join(secrets.choice(_BACKUP_ALPHABET) for _ in range(8))
            return f"{chars[:4]}-{chars[4:]}"

        return [one() for _ in range(count)]

    def backup_digest(self, user_id: str, code: str) -> str:
        """The stored form of a backup code, bound to its user; input is normalised so
        case, spaces and the dash do not matter."""
        normal = code.strip().lower().replace("-", "").replace(" ", "")
        return hmac.new(self._mac_key, f"{user_id}:{normal}".encode(), hashlib.sha256).hexdigest()
