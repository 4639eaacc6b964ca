"""The background delivery queue: mail and SMS leave after the response, with retries.

A flow's answer must never wait on (or reveal) a slow or broken mail server: that would
leak whether an account exists through timing or errors. So flows ``submit`` a delivery
and return at once. A single worker task sends in order, retries with exponential backoff,
and reports a final failure to ``on_failure`` (which logs it and emits an event). The queue
is bounded: past ``maxsize`` waiting deliveries new ones are dropped and reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

logger = logging.getLogger("authql.delivery")

Send = Callable[[], Awaitable[None]]
FailureHook = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True)
class _Job:
    kind: str
    send: Send


class DeliveryQueue:
    """A bounded FIFO of pending deliveries served by one lazily started worker."""

    def __init__(
        self,
        *,
        maxsize: int = 1_000,
        attempts: int = 4,
        backoff: float = 0.5,
        on_failure: FailureHook | None = None,
    ) -> None:
        self._maxsize = maxsize
        self._attempts = attempts
        self._backoff = backoff
        self._on_failure = on_failure
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed = 0
        self._reports: set[asyncio.Task[None]] = set()

    def submit(self, kind: str, send: Send) -> None:
        """Queue one delivery; never blocks and never raises to the caller."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = self._queue or asyncio.Queue(maxsize=self._maxsize)
            self._worker = loop.create_task(self._run(), name="authql-delivery")
        try:
            self._queue.put_nowait(_Job(kind, send))
        except asyncio.QueueFull:
            self.failed += 1
            logger.error("delivery queue full; dropped a %s", kind)
            if self._on_failure is not None:
                report = loop.create_task(self._on_failure(kind, "queue full"))
                self._reports.add(report)
                report.add_done_callback(self._reports.discard)

    def defer(self, kind: str, job: Send) -> None:
        """Run ``job`` once, soon, off the response path (a flow's work that must not show
        in its answer's timing, such as looking up whether an account exists)."""

        async def run() -> None:
            try:
                await job()
            except Exception:
                logger.exception("deferred %s failed", kind)

        task = asyncio.get_running_loop().create_task(run(), name=f"authql-{kind}")
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def drain(self) -> None:
        """Wait until every deferred job has run and every submitted delivery has been sent
        or given up (tests, shutdown)."""
        while self._reports:
            await asyncio.gather(*list(self._reports), return_exceptions=True)
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        """Stop the worker (pending deliveries are abandoned)."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            try:
                await self._deliver(job)
            finally:
                self._queue.task_done()

    async def _deliver(self, job: _Job) -> None:
        for attempt in range(1, self._attempts + 1):
            try:
                await job.send()
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"[:300]
                if attempt == self._attempts:
                    self.failed += 1
                    logger.error(
                        "giving up on a %s after %d attempts: %s", job.kind, attempt, reason
                    )
                    if self._on_failure is not None:
                        try:
                            await self._on_failure(job.kind, reason)
                        except Exception:
                            logger.exception("reporting a failed %s failed", job.kind)
                    return
                logger.warning("%s delivery attempt %d failed: %s", job.kind, attempt, reason)
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            else:
                self.delivered += 1
                return
