"""A fake Telegram Bot API on loopback that holds the real client to the real wire contract.

POST /bot<token>/sendMessage with a JSON or form body, answered the way Telegram answers:
401 for an unknown token, 400 for a text over 4096 UTF-16 units or HTML Telegram cannot parse,
429 with `parameters.retry_after` when told to, and a message object on success. It records
what it accepted so tests and `goalkeeper demo` can show it. It listens on loopback only and
never forwards anything to the real Telegram.
"""

from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from goalkeeper.aio import Running

# Tags Telegram's HTML parse mode understands; anything else is "can't parse entities".
ALLOWED_TAGS = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a"}
    | {"code", "pre", "blockquote", "tg-emoji"}
)
_MARKUP = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)([^<>]*)>|&(#[0-9]+|#x[0-9A-Fa-f]+|\w+);|[<&]")
SIM_TOKEN = "123456:SIMULATED-bot-token"  # noqa: S105 - only this fake accepts it
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


def parse_telegram_html(text: str) -> str:
    """The plain text Telegram would show, or ValueError with Telegram's wording of the fault."""
    plain: list[str] = []
    stack: list[str] = []
    position = 0
    for match in _MARKUP.finditer(text):
        plain.append(text[position : match.start()])
        position = match.end()
        offset = len(text[: match.start()].encode())
        closing, name, entity = match.group(1), match.group(2), match.group(4)
        if name is not None:
            name = name.lower()
            if name not in ALLOWED_TAGS:
                kind = "end" if closing else "start"
                raise ValueError(f'Unsupported {kind} tag "{name}" at byte offset {offset}')
            if not closing:
                stack.append(name)
            elif not stack or stack[-1] != name:
                expected = f"</{stack[-1]}>" if stack else "no end tag"
                raise ValueError(
                    f'Unmatched end tag at byte offset {offset}, expected "{expected}", '
                    f'found "</{name}>"'
                )
            else:
                stack.pop()
        elif entity is not None:
            if entity.startswith("#"):
                plain.append(html.unescape(f"&{entity};"))
            elif entity in _NAMED_ENTITIES:
                plain.append(_NAMED_ENTITIES[entity])
            else:
                raise ValueError(f'Unsupported HTML entity "&{entity};" at byte offset {offset}')
        else:
            raise ValueError(f"Character '{match.group(0)}' is reserved at byte offset {offset}")
    plain.append(text[position:])
    if stack:
        raise ValueError(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(plain)


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True, slots=True)
class SentMessage:
    message_id: int
    chat_id: str
    text: str  # as posted
    plain: str  # as Telegram would display it
    parse_mode: str | None
    message_thread_id: int | None
    disable_web_page_preview: bool


class FakeTelegram(Running):
    """Async context manager; `.url` is the api_base to configure, `.messages` what arrived."""

    def __init__(self, token: str = SIM_TOKEN, *, host: str = "127.0.0.1") -> None:
        if not host.startswith("127."):
            raise ValueError("the fake Telegram listens on loopback only")
        self.token = token
        self.host = host
        self.port = 0
        self.messages: list[SentMessage] = []
        self.requests = 0
        self._failures: list[tuple[int, int]] = []  # (status, retry_after)
        self._fail_from = 0  # failures wait until this many messages were accepted
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def fail_next(
        self, count: int, retry_after: int = 1, *, status: int = 429, after: int = 0
    ) -> None:
        """Answer the next `count` calls with `status`: 429 carries `retry_after`, 5xx does not.
        With `after`, the failures start once that many more messages have been accepted (the
        second part of a long summary, say)."""
        self._failures.extend([(status, retry_after)] * count)
        self._fail_from = len(self.messages) + after

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{bot}/{method}", self._handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, 0).start()
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.match_info["bot"] != f"bot{self.token}":
            return _error(401, "Unauthorized")
        if request.match_info["method"] != "sendMessage":
            return _error(404, "Not Found")
        if self._failures and len(self.messages) >= self._fail_from:
            status, retry_after = self._failures.pop(0)
            if status == 429:
                return _error(
                    429,
                    f"Too Many Requests: retry after {retry_after}",
                    parameters={"retry_after": retry_after},
                )
            return _error(status, "Internal Server Error")
        params = await _parameters(request)
        if params is None:
            return _error(400, "Bad Request: can't parse JSON body")
        return self._send_message(params)

    def _send_message(self, params: dict[str, Any]) -> web.Response:
        chat_id = str(params.get("chat_id") or "")
        text = str(params.get("text") or "")
        parse_mode = params.get("parse_mode")
        if not chat_id:
            return _error(400, "Bad Request: chat_id is empty")
        plain = text
        if isinstance(parse_mode, str) and parse_mode.lower() == "html":
            try:
                plain = parse_telegram_html(text)
            except ValueError as err:
                return _error(400, f"Bad Request: can't parse entities: {err}")
        elif parse_mode:
            return _error(400, f"Bad Request: unsupported parse_mode {parse_mode}")
        if not plain.strip():
            return _error(400, "Bad Request: message text is empty")
        if utf16_units(plain) > 4096:
            return _error(400, "Bad Request: message is too long")
        thread = params.get("message_thread_id")
        message = SentMessage(
            message_id=len(self.messages) + 1,
            chat_id=chat_id,
            text=text,
            plain=plain,
            parse_mode=parse_mode if isinstance(parse_mode, str) else None,
            message_thread_id=int(thread) if thread not in (None, "") else None,
            disable_web_page_preview=str(params.get("disable_web_page_preview")).lower() == "true",
        )
        self.messages.append(message)
        chat: dict[str, Any] = {
            "id": int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id,
            "type": _chat_type(chat_id),
        }
        result = {
            "message_id": message.message_id,
            "date": int(time.time()),
            "chat": chat,
            "text": plain,
        }
        if message.message_thread_id is not None:
            result["message_thread_id"] = message.message_thread_id
        return web.json_response({"ok": True, "result": result})


async def _parameters(request: web.Request) -> dict[str, Any] | None:
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        params.update(body)
    elif request.can_read_body:
        form = await request.post()
        params.update({key: value for key, value in form.items() if isinstance(value, str)})
    return params


def _chat_type(chat_id: str) -> str:
    if chat_id.startswith("@"):
        return "channel"
    if chat_id.startswith("-100"):
        return "supergroup"
    return "group" if chat_id.startswith("-") else "private"


def _error(status: int, description: str, **extra: Any) -> web.Response:
    body = {"ok": False, "error_code": status, "description": description, **extra}
    return web.json_response(body, status=status)
