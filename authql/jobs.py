"""Periodic jobs the server runs in the background (cleanup of what has expired).

Every process of a deployment runs the loop, and they may share one database, so each
round first takes the ``cleanup`` Lease row with one conditional UPDATE (or, the first
time, an INSERT that only one process can win). The lease lasts one interval: whoever takes
it runs the round and the others skip theirs until it lapses, so the cleanup runs about
once per interval across the deployment, and a holder that died is replaced when its lease
expires. The first round runs one interval after start-up (``authql cleanup`` runs one at
any time). A failed round is logged and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q

from authql.models import Lease
from authql.resolvers.cleanup import CleanupReport, run_cleanup
from authql.services import Services

logger = logging.getLogger("authql.jobs")

CLEANUP_LEASE = "cleanup"


@dataclass
class Jobs:
    """The running periodic tasks; ``stop`` cancels them at shutdown."""

    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def new_holder() -> str:
    """A name for this process's claim on leases: unique even across hosts."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


async def take_lease(name: str, holder: str, *, now: dt.datetime, seconds: float) -> bool:
    """Hold lease ``name`` until ``now + seconds`` if it is free, lapsed or already
    ``holder``'s. Atomic across processes: a conditional UPDATE, else an INSERT that a
    concurrent winner makes fail on the primary key."""
    until = now + dt.timedelta(seconds=seconds)
    taken = await Lease.filter(Q(expires_at__lte=now) | Q(holder=holder), name=name).update(
        holder=holder, expires_at=until
    )
    if taken:
        return True
    try:
        await Lease.create(name=name, holder=holder, expires_at=until)
    except IntegrityError:
        return False
    return True


async def cleanup_round(services: Services, holder: str) -> CleanupReport | None:
    """One round of the periodic cleanup, if this holder gets the lease (else None)."""
    settings = services.settings
    now = services.clock.now()
    if not await take_lease(CLEANUP_LEASE, holder, now=now, seconds=settings.cleanup_interval):
        return None
    report = await run_cleanup(now=now, retention_days=settings.deleted_retention_days)
    if report.total:
        counts = ", ".join(f"{kind}={count}" for kind, count in report.counts().items())
        logger.info("cleanup deleted %d rows (%s)", report.total, counts)
    return report


async def _cleanup_loop(services: Services, holder: str) -> None:
    interval = float(services.settings.cleanup_interval)
    while True:
        await asyncio.sleep(interval)
        try:
            await cleanup_round(services, holder)
        except Exception:
            logger.exception("cleanup round failed; the next one runs in %ss", interval)


def start_jobs(services: Services) -> Jobs:
    """Start the periodic jobs ``services.settings`` asks for (cleanup every
    ``cleanup_interval`` seconds; 0 turns it off)."""
    jobs = Jobs()
    if services.settings.cleanup_interval > 0:
        task = asyncio.get_running_loop().create_task(
            _cleanup_loop(services, new_holder()), name="authql-cleanup"
        )
        jobs.tasks.append(task)
    return jobs
