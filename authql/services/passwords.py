"""Password hashing with argon2id, off the event loop.

argon2 is deliberately slow (~250 ms at the default parameters on 2 cores), so every hash
and verify runs in a worker thread (argon2-cffi releases the GIL) and the loop keeps serving
other requests during a login burst. Unknown identifiers still pay one verify against a
dummy hash, so timing does not reveal whether an account exists.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


@dataclass(frozen=True)
class Verification:
    """The result of checking a password: whether it matched and whether to re-hash it."""

    ok: bool
    needs_rehash: bool = False


class PasswordService:
    """argon2id hashing with configurable cost; ``verify`` never raises for a mismatch."""

    def __init__(
        self,
        *,
        time_cost: int,
        memory_kib: int,
        parallelism: int,
        workers: int | None = None,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=workers or max(2, os.cpu_count() or 2), thread_name_prefix="argon2"
        )
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        """The PHC string for ``password`` (argon2id, current parameters)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> Verification:
        """Check ``password``; a missing hash is checked against a dummy (same cost, fails)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._verify_sync, password_hash, password)

    def _verify_sync(self, password_hash: str | None, password: str) -> Verification:
        target = password_hash or self._dummy_hash
        try:
            self._hasher.verify(target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return Verification(ok=False)
        if password_hash is None:
            return Verification(ok=False)
        return Verification(ok=True, needs_rehash=self._hasher.check_needs_rehash(password_hash))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
