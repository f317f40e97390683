"""Notifications leave a tick through one bounded queue per channel, each with its own worker.

A slow or dead SMTP server then delays neither Telegram nor the next scan: the tick only
enqueues. Each message is retried with backoff on temporary failures and given up on permanent
ones; every attempt is counted in metrics. The CLI's one-shot `scan` waits for delivery, the
daemon does not. This module knows the Mailer and ChatNotifier seams, never their libraries.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from goalkeeper import logs
from goalkeeper.aio import Sleep, backoff_delay
from goalkeeper.metrics import Metrics
from goalkeeper.model import (
    ChatNotifier,
    DeliveryError,
    Mailer,
    MailOutcome,
    OutgoingMail,
    OwnerReport,
)

log = logs.get_logger(__name__)
Payload = TypeVar("Payload")
P = TypeVar("P")


@dataclass(eq=False)
class _Job(Generic[Payload]):
    run_id: str
    recipient: str
    payload: Payload
    done: asyncio.Future[str | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Channel(Generic[Payload]):
    """A bounded queue and the worker that drains it, for one channel."""

    def __init__(
        self,
        name: str,
        send: Callable[[Payload], Awaitable[None]],
        *,
        metrics: Metrics,
        size: int,
        attempts: int,
        backoff_base: float,
        sleep: Sleep,
    ) -> None:
        self.name = name
        self._send = send
        self._metrics = metrics
        self._queue: asyncio.Queue[_Job[Payload]] = asyncio.Queue(size)
        self._attempts = attempts
        self._backoff_base = backoff_base
        self._sleep = sleep

    def submit(self, job: _Job[Payload]) -> bool:
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            return False
        self._metrics.queue_depth.labels(channel=self.name).set(self._queue.qsize())
        return True

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def join(self) -> None:
        await self._queue.join()

    async def work(self) -> None:
        """The worker loop: runs until cancelled; a job in hand when cancelled is resolved."""
        while True:
            job = await self._queue.get()
            try:
                result = await self._deliver(job)
            except asyncio.CancelledError:
                if not job.done.done():
                    job.done.set_result("not sent: stopped while sending")
                raise
            finally:
                self._queue.task_done()
                self._metrics.queue_depth.labels(channel=self.name).set(self._queue.qsize())
            if not job.done.done():
                job.done.set_result(result)

    def abandon(self) -> int:
        """Resolve every job still queued as not sent; return how many there were."""
        count = 0
        while not self._queue.empty():
            job = self._queue.get_nowait()
            self._queue.task_done()
            if not job.done.done():
                job.done.set_result("not sent: stopped before its turn")
            count += 1
        self._metrics.queue_depth.labels(channel=self.name).set(0)
        return count

    async def _deliver(self, job: _Job[Payload]) -> str | None:
        for attempt in range(self._attempts):
            try:
                await self._send(job.payload)
            except DeliveryError as err:
                last = attempt + 1 == self._attempts
                if err.permanent or last:
                    self._metrics.notifications.labels(channel=self.name, outcome="failed").inc()
                    log.error(
                        "notification failed",
                        channel=self.name,
                        recipient=job.recipient,
                        run=job.run_id,
                        reason=err.reason,
                        permanent=err.permanent,
                        attempts=attempt + 1,
                    )
                    return err.reason
                self._metrics.notifications.labels(channel=self.name, outcome="retried").inc()
                await self._sleep(backoff_delay(attempt, base=self._backoff_base))
            else:
                self._metrics.notifications.labels(channel=self.name, outcome="sent").inc()
                log.info("notification sent", channel=self.name, recipient=job.recipient)
                return None
        raise AssertionError("unreachable: the last attempt returns")


class Delivery:
    """The Dispatcher the pipeline hands its mails and summary to."""

    def __init__(
        self,
        *,
        mailer: Mailer,
        chat: ChatNotifier | None,
        metrics: Metrics,
        wait: bool,
        queue_size: int = 10_000,
        attempts: int = 2,  # on top of the clients' own retries
        backoff_base: float = 10.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.wait = wait

        def channel(name: str, send: Callable[[P], Awaitable[None]]) -> Channel[P]:
            return Channel(
                name, send, metrics=metrics, size=queue_size, attempts=attempts,
                backoff_base=backoff_base, sleep=sleep,
            )  # fmt: skip

        self.email: Channel[OutgoingMail] = channel("email", mailer.send)
        self.telegram: Channel[str] | None = channel("telegram", chat.send) if chat else None

    @property
    def channels(self) -> list[Channel[OutgoingMail] | Channel[str]]:
        return [self.email, *([self.telegram] if self.telegram else [])]

    async def run(self) -> None:
        """Every channel's worker, until cancelled. An unexpected error in one ends them all."""
        async with asyncio.TaskGroup() as group:
            for channel in self.channels:
                group.create_task(channel.work(), name=f"goalkeeper-{channel.name}-worker")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Delivery]:
        task = asyncio.create_task(self.run(), name="goalkeeper-delivery")
        try:
            yield self
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            for channel in self.channels:
                channel.abandon()

    async def submit_mails(
        self, run_id: str, mails: Sequence[tuple[OwnerReport, OutgoingMail]]
    ) -> tuple[MailOutcome, ...]:
        outcomes: list[MailOutcome] = []
        jobs: list[_Job[OutgoingMail] | None] = []
        for report, mail in mails:
            new_job = _Job(run_id, mail.recipient, mail)
            queued = self.email.submit(new_job)
            jobs.append(new_job if queued else None)
            outcomes.append(
                MailOutcome(
                    recipient=mail.recipient,
                    intended=report.intended,
                    owner_name=report.owner.name,
                    findings=len(report.findings),
                    message_id=mail.message_id,
                    delivered=False,
                    error=None if queued else "not sent: the e-mail queue is full",
                    subject=mail.subject,
                    queued=queued,
                )
            )
        if not self.wait:
            return tuple(outcomes)
        settled = []
        for outcome, job in zip(outcomes, jobs, strict=True):
            if job is not None:
                error = await job.done
                outcome = dataclasses.replace(
                    outcome, delivered=error is None, error=error, queued=False
                )
            settled.append(outcome)
        return tuple(settled)

    async def submit_summary(self, run_id: str, text: str) -> bool | None:
        if self.telegram is None:
            return None
        job: _Job[str] = _Job(run_id, "telegram", text)
        if not self.telegram.submit(job):
            log.error("telegram summary dropped: queue full", run=run_id)
            return False
        if not self.wait:
            return None  # queued; the worker reports the outcome
        return await job.done is None

    async def drain(self, seconds: float) -> int:
        """Wait up to `seconds` for the queues to empty; return how many messages were left."""
        try:
            async with asyncio.timeout(seconds):
                for channel in self.channels:
                    await channel.join()
        except TimeoutError:
            pass
        return sum(channel.pending for channel in self.channels)
