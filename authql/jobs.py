"""Periodic jobs the server runs in the background (cleanup of what has expired)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from authql.services import Services


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


def start_jobs(services: Services) -> Jobs:
    """Start the periodic jobs ``services.settings`` asks for."""
    return Jobs()
