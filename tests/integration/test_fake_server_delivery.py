"""Split and slow writes, and the image redirect, provoked over real sockets.

A raw socket client records each read it gets, so the tests see the pieces
the server flushed, headers included (aiohttp's client would hide them).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import pytest

from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.fake_server.state import FIRST_PIECE_MAX
from tests.integration.test_fake_server_downloads import image_url

KEY = "fake-key"


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer(FaultConfig(seed=5)) as server:
        yield server


@dataclass
class Exchange:
    """What a raw client received: each read, and the time it took to get them all."""

    reads: list[bytes]
    elapsed_s: float

    @property
    def raw(self) -> bytes:
        return b"".join(self.reads)

    @property
    def head_length(self) -> int:
        return self.raw.index(b"\r\n\r\n") + 4

    @property
    def status(self) -> int:
        return int(self.raw.split(b" ", 2)[1])

    @property
    def body(self) -> bytes:
        return self.raw[self.head_length :]

    def boundaries(self) -> list[int]:
        """The offsets where a read ended."""
        ends, total = [], 0
        for read in self.reads:
            total += len(read)
            ends.append(total)
        return ends


async def exchange(url: str, method: str = "GET", body: bytes = b"", headers: str = "") -> Exchange:
    """Send one raw HTTP/1.1 request to ``url`` and read the answer to EOF, read by read."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (
        f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    started = loop.time()
    try:
        writer.write(request)
        reads = []
        while chunk := await reader.read(65536):
            reads.append(chunk)
    finally:
        writer.close()
        await writer.wait_closed()
    return Exchange(reads, loop.time() - started)


def generate_request(prompt: str = "a kite") -> tuple[bytes, str]:
    body = json.dumps({"image_request": {"prompt": prompt}}).encode()
    return body, f"Api-Key: {KEY}\r\nContent-Type: application/json\r\n"


def assert_split(answer: Exchange) -> None:
    """Headers came in several reads, the body started in a read of its own, a few bytes long."""
    ends = answer.boundaries()
    head = answer.head_length
    assert sum(1 for end in ends if end < head) >= 1, "the headers arrived in one piece"
    assert head in ends, "the body did not start in a read of its own"
    first_body_read = next(end for end in ends if end > head) - head
    assert first_body_read <= FIRST_PIECE_MAX
    assert sum(1 for end in ends if end > head) >= 2, "the body arrived in one piece"
    assert b"Connection: close" in answer.raw[:head]


async def test_split_writes_cut_an_api_answer_headers_and_body(server: FakeServer) -> None:
    """split_writes sends a 200 JSON answer as pieces: headers in parts, the body a few bytes first."""
    server.set_faults(split_writes=1.0)
    body, headers = generate_request()
    answer = await exchange(f"{server.url}/generate", "POST", body, headers)
    assert answer.status == 200
    assert_split(answer)
    length = int(answer.raw.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    assert length == len(answer.body)
    assert json.loads(answer.body)["data"][0]["url"]
    assert server.state.stats()["billed"] == 1


@pytest.mark.parametrize("kind", ["image", "error-400", "error-403", "sample-source"])
async def test_split_writes_cut_every_kind_of_response(
    server: FakeServer, http: aiohttp.ClientSession, kind: str
) -> None:
    """Image bodies, error bodies and the sample sources of URL-source jobs are split too."""
    url = await image_url(http, server)
    server.set_faults(split_writes=1.0)
    if kind == "image":
        answer = await exchange(url)
        assert answer.body.startswith(b"\x89PNG")
    elif kind == "error-400":
        body, headers = generate_request("")
        answer = await exchange(f"{server.url}/generate", "POST", body, headers)
        assert b"prompt" in answer.body
    elif kind == "error-403":
        answer = await exchange(url.replace("sig=", "sig=0"))
        assert b"AccessDenied" in answer.body
    else:
        answer = await exchange(f"{server.url}/_assets/sample/cat.png?w=64&h=48")
        assert answer.body.startswith(b"\x89PNG")
    assert answer.status == {"image": 200, "error-400": 400, "error-403": 403, "sample-source": 200}[kind]
    assert_split(answer)


async def test_split_writes_at_a_rate_split_some_answers(server: FakeServer) -> None:
    """A rate below 1 splits a share of the answers; the others arrive in one piece."""
    server.set_faults(split_writes=0.5)
    body, headers = generate_request()
    headers += "Connection: close\r\n"  # an answer sent whole then ends the exchange too
    answers = [await exchange(f"{server.url}/generate", "POST", body, headers) for _ in range(12)]
    split = [len(answer.reads) > 1 for answer in answers]
    assert 0 < sum(split) < 12
    assert all(answer.status == 200 for answer in answers)


async def test_trickle_sends_bodies_slowly(server: FakeServer) -> None:
    """trickle_bps sends a 400-byte body at 4000 B/s: in pieces, over at least a tenth of a second."""
    server.set_faults(trickle_bps=4000)
    answer = await exchange(f"{server.url}/_assets/bytes/400")
    assert (answer.status, len(answer.body)) == (200, 400)
    assert answer.elapsed_s >= 0.08
    assert sum(1 for end in answer.boundaries() if end > answer.head_length) >= 4


async def test_control_routes_are_never_split_or_slowed(server: FakeServer) -> None:
    """The control plane answers as usual (kept alive, no Connection: close) whatever the faults."""
    server.set_faults(split_writes=1.0, trickle_bps=1)
    answer = await exchange(f"{server.url}/_stats", headers="Connection: close\r\n")
    assert answer.status == 200
    assert answer.elapsed_s < 1
    assert json.loads(answer.body)["requests"] == 0


async def test_control_endpoint_accepts_split_trickle_and_redirect(
    server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """POST /_control sets split_writes, trickle_bps and download_redirect_url; bad values get 400."""
    changes = {"split_writes": 0.5, "trickle_bps": 1000, "download_redirect_url": "http://127.0.0.1:9/x"}
    async with http.post(f"{server.url}/_control", json=changes) as response:
        assert response.status == 200
        config = await response.json()
    assert {key: config[key] for key in changes} == changes
    for bad in ({"split_writes": 1.5}, {"trickle_bps": -1}, {"split_writes": "often"}):
        async with http.post(f"{server.url}/_control", json=bad) as response:
            assert response.status == 400


async def test_download_redirect_answers_302(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """download_redirect_url makes a valid image URL answer 302 to that location, not served."""
    url = await image_url(http, server)
    server.set_faults(download_redirect_url="http://127.0.0.1:9/moved.png")
    async with http.get(url, allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "http://127.0.0.1:9/moved.png"
    stats = server.state.stats()
    assert (stats["downloads_served"], stats["faults"]["download_redirect"]) == (0, 1)
