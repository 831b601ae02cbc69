"""A request-body limit in front of the app: 413 before any of an oversized body is parsed.

uvicorn and FastAPI set none: a 20 MB JSON body was read, decoded and validated in full only to
end in a 422. :class:`BodyLimit` is plain ASGI, so it runs before FastAPI reads anything:

- a ``Content-Length`` over the limit is refused at once, without reading the body;
- a body without one (chunked, streamed) is counted as it arrives and refused as soon as it
  passes the limit; a body within it is handed on to the app unchanged.

The 413 answers without draining the rest of the body: uvicorn discards what still arrives for
a finished response, and the connection stays usable.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``; None when absent or not a number (h11 and httptools
    refuse a malformed one before the app runs anyway)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimit:
    """ASGI middleware: bodies over ``max_bytes`` get 413; ``on_refused(path)`` counts them."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)
            return
        messages = await self._read_within_limit(receive)
        if messages is None:
            await self._refuse(scope, send)
            return
        await self.app(scope, _replay(messages, receive), send)

    async def _read_within_limit(self, receive: Receive) -> list[Message] | None:
        """The body's messages, or None once it passes the limit. Reading it here costs no
        extra copy that matters: the app reads the whole body before parsing it anyway."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # a disconnect: the app sees it as it was
                return messages
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return messages

    async def _refuse(self, scope: Scope, send: Send) -> None:
        if self.on_refused is not None:
            self.on_refused(scope.get("path", ""))
        body = json.dumps(
            {
                "detail": f"request body over {self.max_bytes} bytes "
                "(serving.max_body_bytes); a /score body is a few KB"
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that hands out the messages already read, then the connection's own."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
