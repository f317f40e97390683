"""Sending stored messages: one bounded queue per channel, each drained by its own worker.

A slow or dead SMTP server then delays neither Telegram nor the next scan: a tick only commits
its messages to the outbox and enqueues their ids. A worker sends, then marks the message sent,
shielded from cancellation, so a stop never turns a delivered mail into a pending one. Temporary
failures are retried with backoff and, past that, left pending for the next pass; permanent ones
are marked failed with the reason. A full queue drops nothing: the message waits in the store.
Past 300 lines: a worker's send, settle and back-off steps share one message's state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta

from goalkeeper import logs
from goalkeeper.aio import Clock, Sleep, backoff_delay, cancel_within, sleep_noting, utc_now
from goalkeeper.channel import Channel
from goalkeeper.crashpoints import crash_point
from goalkeeper.metrics import Metrics
from goalkeeper.model import ChatNotifier, DeliveryError, Mailer
from goalkeeper.progress import SILENT, Progress
from goalkeeper.state import Channel as ChannelName
from goalkeeper.state import OutboxMessage, StateError, StateStore

log = logs.get_logger(__name__)
Reroute = Callable[[OutboxMessage], Awaitable[list[OutboxMessage] | None]]
GIVE_UP_AFTER = timedelta(days=1)  # pending this long: given up on, and ops hear of it
STILL_PENDING = "not sent yet: will be retried"
RELAY_OUTAGE_MAX_DELAY = 300.0
OWNER_CHECK_MAX_DELAY = 300.0  # seconds between owner checks while the inventory stays down
STOP_SECONDS = 5.0  # how long a stop waits for a worker to end once cancelled
# While a channel is down, its oldest pending message is tried this often (doubling from the
# first figure up to the second): once one goes through, everything pending goes at once.
PROBE_SECONDS = (2.0, 15.0)


class Delivery:
    """The pipeline's Dispatcher, backed by the state store's outbox."""

    def __init__(
        self,
        *,
        store: StateStore,
        mailer: Mailer,
        chat: ChatNotifier | None,
        metrics: Metrics,
        wait: bool,
        reroute: Reroute | None = None,
        queue_size: int = 10_000,
        attempts: int = 2,  # per pass, on top of the clients' own retries
        backoff_base: float = 10.0,
        owner_check_base: float = 2.0,
        owner_check_attempts: int | None = None,  # None: until it can be made (the daemon)
        probe_seconds: tuple[float, float] = PROBE_SECONDS,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = utc_now,
        progress: Progress = SILENT,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.wait = wait
        self._reroute = reroute
        self._attempts = attempts
        self._backoff_base = backoff_base
        self._owner_check_base = owner_check_base
        self._owner_check_attempts = owner_check_attempts
        self._probe_seconds = probe_seconds
        self._sleep = sleep
        self._clock = clock
        self._progress = progress
        self._waiting: dict[int, asyncio.Future[str | None]] = {}
        self._queued: set[int] = set()
        self._stalled: set[str] = set()  # channels whose last try left a message pending
        self._recovered = asyncio.Event()  # a stalled channel delivered again
        self._workers: list[asyncio.Task[None]] = []
        # Held by the e-mail worker around one mail's check, send and mark, and by a tick
        # around its decision and commit (`hold`): a mail never goes out between the tick
        # reading it as waiting and the tick's report replacing it.
        self._gate = asyncio.Lock()

        async def send_mail(message: OutboxMessage) -> None:
            await mailer.send(message.mail())

        self.email = self._channel("email", send_mail, size=queue_size)
        self.telegram: Channel | None = None
        if chat is not None:

            async def send_text(message: OutboxMessage) -> None:
                async def accepted(parts: int) -> None:
                    # Shielded: a part Telegram took must be noted, or a retry posts it again.
                    await asyncio.shield(
                        self._store_call(self.store.record_parts_sent(message.id, parts))
                    )

                await chat.send(message.text, parts_done=message.parts_sent, on_part=accepted)

            self.telegram = self._channel("telegram", send_text, size=queue_size)

    def _channel(
        self, name: ChannelName, send: Callable[[OutboxMessage], Awaitable[None]], *, size: int
    ) -> Channel:
        return Channel(
            name, send, size=size, depth=self.metrics.queue_depth.labels(channel=name).set
        )

    @property
    def channels(self) -> list[Channel]:
        return [self.email, *([self.telegram] if self.telegram else [])]

    async def run(self) -> None:
        """Every channel's worker, until cancelled. An unexpected error in one ends them all."""
        async with asyncio.TaskGroup() as group:
            self._workers = [
                group.create_task(self._work(channel), name=f"goalkeeper-{channel.name}-worker")
                for channel in self.channels
            ]

    @asynccontextmanager
    async def running(
        self, *, drain_seconds: float = 60.0, stop_seconds: float = STOP_SECONDS
    ) -> AsyncIterator[Delivery]:
        """The workers, for as long as the block runs (the one-shot `scan` uses this).

        Leaving sends what is still queued (a rerouted mail, say) for up to `drain_seconds`,
        then stops the workers, waiting at most `stop_seconds`: every wait has a deadline, and
        what is not sent stays pending in the store for the next run.
        """
        task = asyncio.create_task(self.run(), name="goalkeeper-delivery")
        finished = False
        try:
            yield self
            finished = True
        finally:
            if finished and not task.done():  # not when the block failed or was cancelled
                await self.drain(drain_seconds)
            await self.stop(task, stop_seconds)

    async def stop(self, workers: asyncio.Task[None], seconds: float) -> None:
        """Cancel the workers' task and forget what is queued, waiting at most `seconds`."""
        if not await cancel_within([workers, *self._workers], seconds):
            log.error("notification workers did not stop in time: left behind", seconds=seconds)
        elif not workers.cancelled() and workers.exception() is not None:
            log.error("notification workers failed", error=workers.exception())
        self.abandon()

    async def submit(self, messages: Sequence[OutboxMessage]) -> dict[int, str | None]:
        """Enqueue pending messages; with `wait`, return each one's result once it has one."""
        futures = self._enqueue(messages)
        return {key: await future for key, future in futures.items()}

    def _enqueue(self, messages: Sequence[OutboxMessage]) -> dict[int, asyncio.Future[str | None]]:
        futures: dict[int, asyncio.Future[str | None]] = {}
        loop = asyncio.get_running_loop()
        for message in messages:
            if message.status != "pending" or message.id in self._queued:
                continue
            channel = self.email if message.channel == "email" else self.telegram
            if channel is None:
                log.warning("no channel for a stored message", channel=message.channel)
                continue
            if self.wait:
                futures[message.id] = self._waiting[message.id] = loop.create_future()
            self._queued.add(message.id)
            self._progress.messages_queued(1)
            if not channel.submit(message):
                self._settle(message.id, "not sent yet: the queue is full; it waits in the store")
        return futures

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """No e-mail is sent, nor marked sent, while the block runs (a mail being sent when
        it starts finishes first: within the mailer's own deadline)."""
        async with self._gate:
            yield

    async def resend_pending(self) -> int:
        """Enqueue every pending message of the store (those of a crashed or stopped run)."""
        try:
            pending = await self.store.pending()
        except StateError as err:
            log.error("cannot read pending messages", error=err)
            return 0
        fresh = [m for m in pending if m.id not in self._queued]
        if fresh:
            log.info("sending pending messages", count=len(fresh))
            await self.submit(fresh)
        return len(fresh)

    async def wait_for_retry(self, seconds: float) -> None:
        """Wait up to `seconds` for the next pass over the outbox, less if a channel recovers.

        While a channel is down, its oldest pending message is tried now and then; the moment
        one goes through (or any other send on that channel does), this returns, so what
        waited goes out at once rather than at the next regular pass.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        probe, cap = self._probe_seconds
        self._recovered.clear()
        while (left := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(min(left, probe) if self._stalled else left):
                    await self._recovered.wait()
                return
            except TimeoutError:
                pass
            await self._probe()
            probe = min(cap, probe * 2)

    async def _probe(self) -> None:
        for channel in self.channels:
            if channel.name not in self._stalled or channel.pending:
                continue  # up, or its worker is busy trying anyway
            try:
                oldest = await self.store.pending(channel.name, limit=1)
            except StateError as err:
                log.error("cannot read pending messages", error=err)
                return
            if not oldest:
                self._stalled.discard(channel.name)
            self._enqueue(oldest)

    def _settle(self, message_id: int, result: str | None) -> None:
        if message_id in self._queued:
            self._progress.message_settled(sent=result is None)
        self._queued.discard(message_id)
        future = self._waiting.pop(message_id, None)
        if future is not None and not future.done():
            future.set_result(result)

    async def _work(self, channel: Channel) -> None:
        """Send until cancelled; a message in hand when cancelled stays pending in the store."""
        while True:
            message = await channel.take()
            try:
                result = await self._deliver(channel, message)
            finally:
                channel.done()
            self._settle(message.id, result)

    def _abandon(self, channel: Channel) -> int:
        dropped = channel.abandon()
        for message in dropped:
            self._settle(message.id, "not sent: stopped before its turn")
        return len(dropped)

    async def _deliver(self, channel: Channel, message: OutboxMessage) -> str | None:
        """Send one message; None when delivered, else why not."""
        # The store is the truth, not the copy in the queue: read the message now (its payload
        # too: commit_tick hands out references), so one sent meanwhile is never sent again.
        loaded = await self._load(message)
        if isinstance(loaded, str):
            return loaded
        message = loaded
        if self._reroute is not None and message.channel == "email":
            replacements = await self._owner_check(self._reroute, message)
            if isinstance(replacements, str):
                return replacements
            if replacements is not None:
                self._enqueue(replacements)  # never awaited here: this worker sends them
                return "rerouted: an address changed owner"
        last_error = ""
        for attempt in range(self._attempts):
            try:
                async with self._gate if channel is self.email else contextlib.nullcontext():
                    # Read again under the gate: superseded by a tick, or sent by another
                    # pass, since it was last read, it does not go.
                    current = await self._load(message)
                    if isinstance(current, str):
                        return current
                    message = current
                    await channel.send(message)
                    # Shielded: once sent, a cancel must not leave it pending (a duplicate).
                    await asyncio.shield(self._mark_sent(message))
            except DeliveryError as err:
                last_error = err.reason
                if err.permanent:
                    return await self._refused(channel, message, err)
                channel.refusals.broken()
                now = self._clock()
                total = await self._store_call(
                    self.store.record_attempt(message.id, error=err.reason, now=now)
                )
                if now - message.created_at >= GIVE_UP_AFTER:
                    reason = f"gave up after {total} attempts over a day: {err.reason}"
                    return await self._give_up(channel, message, reason, permanent=False)
                self.metrics.notifications.labels(channel=channel.name, outcome="retried").inc()
                if attempt + 1 < self._attempts:
                    delay = backoff_delay(attempt, base=self._backoff_base)
                    await self._wait(delay, "notification retry waits", channel=channel.name,
                                     recipient=message.recipient)  # fmt: skip
            else:
                channel.refusals.delivered()
                crash_point("marked")  # test-only, inert in production (goalkeeper.crashpoints)
                if channel.name in self._stalled:
                    self._stalled.discard(channel.name)
                    self._recovered.set()
                self.metrics.notifications.labels(channel=channel.name, outcome="sent").inc()
                waited = (self._clock() - message.created_at).total_seconds()
                self.metrics.delivery_duration.labels(channel=channel.name).observe(waited)
                log.info("notification sent", channel=channel.name, recipient=message.recipient,
                         run=message.run_id)  # fmt: skip
                return None
        log.warning("notification still pending", channel=channel.name,
                    recipient=message.recipient, reason=last_error)  # fmt: skip
        self._stalled.add(channel.name)
        return f"{STILL_PENDING} ({last_error})"

    async def _refused(self, channel: Channel, message: OutboxMessage, err: DeliveryError) -> str:
        """A permanent refusal: the address's fault, unless the relay refuses everyone alike
        (relay.RefusalStreak). Then the streak's messages go back to pending, the rest of the
        queue is left pending too, and the worker backs off; while the outage lasts, a refusal
        with its code keeps the message pending."""
        if channel.refusals.holds(err.code):
            if self._clock() - message.created_at >= GIVE_UP_AFTER:
                reason = f"gave up after a day of a relay refusing everyone: {err.reason}"
                return await self._give_up(channel, message, reason, permanent=False)
            await self._store_call(
                self.store.record_attempt(message.id, error=err.reason, now=self._clock())
            )
            return await self._relay_outage(channel, [message.id], err)
        await self._give_up(channel, message, err.reason, permanent=True)
        streak = channel.refusals.refused(message.id, message.recipient, err.code)
        if not streak:
            return err.reason
        await self._store_call(self.store.requeue(streak))
        return await self._relay_outage(channel, streak, err)

    async def _relay_outage(self, channel: Channel, ids: list[int], err: DeliveryError) -> str:
        before = channel.refusals.outage_started()
        self.metrics.relay_outages.inc()
        left = self._abandon(channel)  # the rest of this pass stays pending in the store
        delay = backoff_delay(before, base=self._backoff_base, cap=RELAY_OUTAGE_MAX_DELAY)
        log.error("mail relay refuses every recipient: messages kept pending", channel=channel.name,
                  code=err.code, reason=err.reason, kept_pending=len(ids) + left,
                  retry_in_s=round(delay, 1))  # fmt: skip
        self._stalled.add(channel.name)  # its recovery sends the rest at once (wait_for_retry)
        await self._wait(delay, "mail relay outage: waiting before the next try",
                         channel=channel.name)  # fmt: skip
        return f"{STILL_PENDING} (the relay refused every recipient: {err.reason})"

    async def _owner_check(
        self, reroute: Reroute, message: OutboxMessage
    ) -> list[OutboxMessage] | str | None:
        """The send-time owner check, retried with backoff until it can be made: with OpenStack
        or Fleio down (and no inventory read since the start), the mail must wait rather than go
        to an owner nobody checked, and the worker must not die (a crash loop sends nothing).
        Past `owner_check_attempts` (the one-shot scan), why it stays pending."""
        attempt = 0
        while True:
            try:
                return await reroute(message)
            except Exception as err:  # whatever stops the check, the mail waits for it
                self.metrics.owner_check_failures.inc()
                attempt += 1
                if self._owner_check_attempts is not None and attempt >= self._owner_check_attempts:
                    log.warning(
                        "owner check failed: the mail stays pending",
                        recipient=message.recipient,
                        run=message.run_id,
                        error=str(err),
                    )
                    return f"{STILL_PENDING} (its owner could not be checked: {err})"
                delay = backoff_delay(
                    attempt - 1, base=self._owner_check_base, cap=OWNER_CHECK_MAX_DELAY
                )
                log.warning("owner check failed: the mail waits", recipient=message.recipient,
                            run=message.run_id, attempt=attempt, retry_in_s=round(delay, 1),
                            error=str(err))  # fmt: skip
                await self._wait(delay, "owner check waits", recipient=message.recipient)

    async def _wait(self, seconds: float, event: str, **context: object) -> None:
        """Sleep `seconds`, logging `event` with the time left at the start and every 30 s, so
        a run that waits to retry says so instead of going quiet."""
        await sleep_noting(
            self._sleep, seconds, lambda left: log.info(event, retry_in_s=round(left, 1), **context)
        )

    async def drain(self, seconds: float) -> int:
        """Wait up to `seconds` for the queues to empty; return how many messages were left."""
        try:
            async with asyncio.timeout(seconds):
                for channel in self.channels:
                    await channel.join()
        except TimeoutError:
            pass
        return sum(channel.pending for channel in self.channels)

    def abandon(self) -> int:
        return sum(self._abandon(channel) for channel in self.channels)

    async def _give_up(
        self, channel: Channel, message: OutboxMessage, reason: str, *, permanent: bool
    ) -> str:
        await asyncio.shield(
            self._store_call(self.store.mark_failed(message.id, reason=reason, now=self._clock()))
        )
        self.metrics.notifications.labels(channel=channel.name, outcome="failed").inc()
        log.error("notification failed", channel=channel.name, recipient=message.recipient,
                  run=message.run_id, reason=reason, permanent=permanent)  # fmt: skip
        return reason

    async def _load(self, message: OutboxMessage) -> OutboxMessage | str:
        """The whole stored message, or why it is not sent now (it stays in the store)."""
        try:
            full = await self.store.message(message.id)
        except StateError as err:
            log.error("state store unavailable while reading a message", error=err)
            return f"{STILL_PENDING} (state store unavailable)"
        if full is None:
            return "not sent: no longer in the store"
        if full.status != "pending":
            return f"not sent: already {full.status}"
        return full

    async def _mark_sent(self, message: OutboxMessage) -> None:
        await self._store_call(self.store.mark_sent(message.id, now=self._clock()))

    async def _store_call(self, call: Awaitable[object]) -> object:
        try:
            return await call
        except StateError as err:
            # The message stays pending and is sent again later: one repeat, never a loss.
            log.error("state store unavailable while recording a delivery", error=err)
            return None
