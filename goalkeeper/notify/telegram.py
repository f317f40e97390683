"""Posts the ops summary to a Telegram chat through the Bot API's sendMessage.

The only module of the daemon that talks to Telegram. The bot token is part of every request
URL, so no URL is ever logged, and aiohttp errors (which carry the URL) are turned into a
DeliveryError with a cleaned message and no exception chain. It must not render anything: it
is handed finished Telegram-HTML and only splits it into messages Telegram accepts.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog

from goalkeeper.aio import Closing, Sleep
from goalkeeper.config import TelegramSettings
from goalkeeper.model import DeliveryError
from goalkeeper.notify.retry import Backoff, Retryable, failed_reason

# Telegram takes 4,096 UTF-16 code units a message; the rest is room for the closing tags a
# split adds.
SOFT_LIMIT = 4000
# A tag, an entity, or a run of text ending at the next line break, tag or entity.
_TOKEN = re.compile(r"<[^<>]*>|&#?[0-9A-Za-z]+;|[^<&\n]*\n|[^<&\n]+|[<&]")
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)")

log = structlog.get_logger(__name__)


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_message(text: str, *, soft_limit: int = SOFT_LIMIT) -> list[str]:
    """Cut Telegram-HTML into messages of at most `soft_limit` UTF-16 units.

    Cuts fall on line breaks where possible, never inside a tag or an entity; tags open at a
    cut are closed at the end of one message and opened again at the start of the next.
    """
    return _Splitter(soft_limit).split(text)


class _Splitter:
    def __init__(self, soft_limit: int) -> None:
        self.limit = soft_limit
        self.messages: list[str] = []
        self.tokens: list[str] = []  # the message being built
        self.size = 0
        self.open_tags: list[tuple[str, str]] = []  # (name, the opening tag as written)

    def split(self, text: str) -> list[str]:
        line: list[str] = []
        for token in _TOKEN.findall(text):
            line.append(token)
            if token.endswith("\n"):
                self._add_line(line)
                line = []
        if line:
            self._add_line(line)
        self._flush()
        return self.messages

    def _add_line(self, tokens: list[str]) -> None:
        if self._fits(tokens):
            self._take(tokens)
            return
        self._flush()
        if self._fits(tokens):
            self._take(tokens)
            return
        for token in tokens:  # one line longer than a whole message: cut it token by token
            self._add_token(token)

    def _add_token(self, token: str) -> None:
        if self._fits([token]):
            self._take([token])
            return
        if token.startswith(("<", "&")) and len(token) > 1:
            self._flush()
            self._take([token])  # an atom longer than a message is beyond saving; Telegram says so
            return
        while token:
            room = self.limit - self.size - self._closing_cost(self.open_tags)
            head = _cut_text(token, room)
            if not head:
                if not self._has_content():
                    raise ValueError("split_message: soft_limit leaves no room for text")
                self._flush()
                continue
            self._take([head])
            token = token[len(head) :]
            if token:
                self._flush()

    def _fits(self, tokens: list[str]) -> bool:
        stack = list(self.open_tags)
        for token in tokens:
            _track(stack, token)
        added = sum(utf16_length(token) for token in tokens)
        return self.size + added + self._closing_cost(stack) <= self.limit

    def _take(self, tokens: list[str]) -> None:
        for token in tokens:
            self.tokens.append(token)
            self.size += utf16_length(token)
            _track(self.open_tags, token)

    def _has_content(self) -> bool:
        return any(not token.startswith("<") and token.strip() for token in self.tokens)

    def _flush(self) -> None:
        if self._has_content():
            closing = "".join(f"</{name}>" for name, _ in reversed(self.open_tags))
            self.messages.append(("".join(self.tokens).rstrip("\n") + closing).strip("\n"))
        reopened = [tag for _, tag in self.open_tags]
        self.tokens = reopened
        self.size = sum(utf16_length(tag) for tag in reopened)

    @staticmethod
    def _closing_cost(stack: list[tuple[str, str]]) -> int:
        return sum(len(name) + 3 for name, _ in stack)


def _track(stack: list[tuple[str, str]], token: str) -> None:
    match = _TAG.match(token)
    if match is None:
        return
    closing, name = match.group(1), match.group(2).lower()
    if not closing:
        stack.append((name, token))
    elif stack and stack[-1][0] == name:
        stack.pop()


def _cut_text(text: str, room: int) -> str:
    """The longest head of `text` within `room` UTF-16 units, preferably ending at a space."""
    used = 0
    end = 0
    for index, char in enumerate(text):
        width = 2 if ord(char) > 0xFFFF else 1
        if used + width > room:
            break
        used += width
        end = index + 1
    # Keep a character with the marks, joiners and modifiers that belong to it, unless the
    # whole head is one such cluster (a wall of combining marks in a customer's server name).
    cluster_end = end
    while 0 < cluster_end < len(text) and (
        _joins(text[cluster_end]) or text[cluster_end - 1] == "\u200d"
    ):
        cluster_end -= 1
    end = cluster_end or end
    space = text.rfind(" ", 0, end)
    if end < len(text) and space > end // 2:
        end = space + 1
    return text[:end]


def _joins(char: str) -> bool:
    return unicodedata.category(char) in ("Mn", "Me", "Mc", "Sk") or char in "\u200d\ufe0f"


class TelegramNotifier(Closing):
    """model.ChatNotifier for the Bot API. Retries 429 after `retry_after`, and 5xx with backoff."""

    def __init__(
        self,
        settings: TelegramSettings,
        session: aiohttp.ClientSession | None = None,
        *,
        attempts: int = 4,
        backoff: float = 1.0,
        max_retry_after: float = 60.0,
        request_timeout: float = 30.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if settings.token is None or not settings.chat_id:
            raise ValueError("notify.telegram needs a token and a chat_id")
        self._token = settings.token.get_secret_value()
        self._settings = settings
        self._session = session
        self._owns_session = session is None
        self._policy = Backoff(attempts=max(1, attempts), base=backoff)
        self._max_retry_after = max_retry_after
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"TelegramNotifier(api_base={self._settings.api_base!r}, token=***)"

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        text: str,
        *,
        parts_done: int = 0,
        on_part: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """Deliver `text` as one or more messages, in order; raise DeliveryError on failure.

        The split is a pure function of the text, so a retry that passes `parts_done` (what
        `on_part` was told before) posts only the parts Telegram has not accepted yet.
        """
        parts = split_message(text)
        for number, part in enumerate(parts, start=1):
            if number <= parts_done:
                continue
            await self._send_part(part)
            log.debug("telegram.part_sent", part=number, parts=len(parts))
            if on_part is not None:
                await on_part(number)
        log.info("telegram.sent", parts=len(parts), skipped=min(parts_done, len(parts)))

    async def _send_part(self, text: str) -> None:
        payload: dict[str, Any] = {
            "chat_id": self._settings.chat_id,
            "text": text,
            "parse_mode": "HTML",
            "disable_web_page_preview": True,
        }
        if self._settings.message_thread_id is not None:
            payload["message_thread_id"] = self._settings.message_thread_id

        reason = await failed_reason(
            lambda _: self._attempt(payload),
            policy=self._policy,
            sleep=self._sleep,
            on_retry=lambda n, delay, error: log.warning(
                "telegram.retry", attempt=n, delay=round(delay, 2), reason=error.reason
            ),
        )
        if reason is None:
            return
        # Raised outside the handler, so no exception chain carries aiohttp's words (the URL).
        raise DeliveryError(
            f"{reason} (gave up after {self._policy.attempts} attempts)", permanent=False
        )

    async def _attempt(self, payload: dict[str, Any]) -> None:
        """One sendMessage; raise DeliveryError (permanent) or Retryable when it fails."""
        status, body, failure = await self._post(payload)
        if failure is not None:
            raise Retryable(failure)
        if status == 200 and body.get("ok") is True:
            return
        description = self._clean(str(body.get("description") or f"HTTP {status}"))
        reason = f"Telegram answered {status}: {description}"
        if status == 429:
            raise Retryable(reason, after=self._retry_after(body))
        if status < 500:
            raise DeliveryError(reason, permanent=True)
        raise Retryable(reason)

    async def _post(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any], str | None]:
        """(status, JSON body, None), or (0, {}, why) when no HTTP answer came back."""
        url = f"{self._settings.api_base}/bot{self._token}/sendMessage"
        try:
            session = self._ensure_session()
            async with session.post(url, json=payload, timeout=self._timeout) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:  # a proxy's HTML error page, not the Bot API
                    body = None
                return response.status, body if isinstance(body, dict) else {}, None
        except TimeoutError:
            return 0, {}, "request to Telegram timed out"
        except aiohttp.ClientError as err:
            # aiohttp puts the URL, and with it the token, into its messages: keep only a
            # cleaned text, and let the original go (no chaining) so no traceback shows it.
            return 0, {}, f"cannot reach Telegram: {type(err).__name__}: {self._clean(str(err))}"

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._owns_session = True
        return self._session

    def _retry_after(self, body: dict[str, Any]) -> float:
        parameters = body.get("parameters")
        value = parameters.get("retry_after") if isinstance(parameters, dict) else None
        seconds = (
            float(value) if isinstance(value, int | float) and value >= 0 else self._policy.base
        )
        return min(seconds, self._max_retry_after)

    def _clean(self, text: str) -> str:
        for form in {self._token, quote(self._token, safe=""), quote(self._token)}:
            text = text.replace(form, "***")
        return text
