"""The request-body limit answers 413 before the app parses anything: at once for a declared
``Content-Length`` over the limit, as soon as a streamed body passes it; a body within the limit
reaches the app unchanged. The last tests go through the real app (no state needed: the limit
runs before the route, and the service is only opened by the app's lifespan)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rankflow.serving.body_limit import BodyLimit

# The lock's httpx is what Starlette's TestClient runs on; its successor is not in the lock.
pytestmark = pytest.mark.filterwarnings("ignore::starlette.exceptions.StarletteDeprecationWarning")

LIMIT = 1024


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/score", "headers": headers}


class _Recorder:
    """The inner app: records what it received; never reached by a refused body."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self.messages = []
        while True:
            message = await receive()
            self.messages.append(message)
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _run(scope: dict, chunks: list[bytes]) -> tuple[_Recorder, list[dict], int, list[str]]:
    """Send ``chunks`` as the body: the recorder, the response, the chunks read, the refusals."""
    inner, sent, refused = _Recorder(), [], []
    read = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(BodyLimit(inner, LIMIT, on_refused=refused.append)(scope, receive, send))
    return inner, sent, read, refused


def test_a_declared_length_over_the_limit_is_refused_without_reading_the_body() -> None:
    scope = _scope([(b"content-length", str(20 * 1024 * 1024).encode())])
    inner, sent, read, refused = _run(scope, [b"x" * LIMIT] * 3)
    assert sent[0]["status"] == 413 and b"serving.max_body_bytes" in sent[1]["body"]
    assert read == 0 and inner.messages is None and refused == ["/score"]


def test_a_streamed_body_is_refused_as_soon_as_it_passes_the_limit() -> None:
    inner, sent, read, _ = _run(_scope([]), [b"x" * 400] * 10)  # chunked: no Content-Length
    assert sent[0]["status"] == 413
    assert read == 3 and inner.messages is None  # 1200 bytes read of 4000


def test_a_body_within_the_limit_reaches_the_app_unchanged() -> None:
    chunks = [b"a" * 500, b"b" * 524]  # exactly the limit
    inner, sent, _, refused = _run(_scope([(b"content-length", b"1024")]), chunks)
    assert sent[0]["status"] == 200 and not refused
    assert inner.messages is not None
    assert b"".join(m["body"] for m in inner.messages) == b"".join(chunks)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    """The real app with a 2 KiB limit; not entered as a context, so no service is opened."""
    from fastapi.testclient import TestClient

    from rankflow.config import parse_config
    from rankflow.serving.app import create_app
    from rankflow.settings import Settings

    scoring = parse_config({"serving": {"max_body_bytes": 2048}}).scoring()
    yield TestClient(create_app(Settings(home=tmp_path), scoring))


def _oversized() -> bytes:
    return b'{"user_id": 1, "item_ids": [' + b"1, " * 1000 + b'1], "device": "m"}'


def test_the_app_answers_413_for_an_oversized_body_and_counts_it(client: Any) -> None:
    response = client.post(
        "/score", content=_oversized(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413, response.text
    assert "2048 bytes" in response.json()["detail"]
    streamed = client.post(
        "/score",
        content=iter([_oversized()[:1500], _oversized()[1500:]]),
        headers={"content-type": "application/json"},
    )
    assert streamed.status_code == 413, streamed.text
    metrics = client.get("/metrics").text
    assert 'rankflow_requests_total{endpoint="/score",status="413"} 2.0' in metrics
    assert 'rankflow_errors_total{kind="too_large"} 2.0' in metrics
