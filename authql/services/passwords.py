"""Password hashing with argon2id, off the event loop.

argon2 is deliberately slow (~250 ms at the default parameters on 2 cores), so every hash
and verify runs in a worker thread (argon2-cffi releases the GIL) and the loop keeps serving
other requests during a login burst. Unknown identifiers still pay one verify against a
dummy hash, so timing does not reveal whether an account exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


@dataclass(frozen=True)
class Verification:
    """The result of checking a password: whether it matched and whether to re-hash it."""

    ok: bool
    needs_rehash: bool = False


#: Scheduling niceness of hashing threads: under contention the event loop thread wins, so
#: a login burst does not stall every other request; alone, hashing still gets full CPU.
HASHING_NICENESS = 10


def _usable_cpus() -> int:
    """CPUs this process may run on (affinity-aware, unlike ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _yield_to_the_event_loop() -> None:
    """Lower this worker thread's priority (argon2's own lane threads inherit it)."""
    # Where this is not supported, hashing still works at normal priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


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
            max_workers=workers or _usable_cpus(),
            thread_name_prefix="argon2",
            initializer=_yield_to_the_event_loop,
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
