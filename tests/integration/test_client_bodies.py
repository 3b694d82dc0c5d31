"""The client reads answers, error bodies and URL sources to their end, over real sockets.

The fake server splits every response (``split_writes``): headers in parts, a
body's first piece a few bytes long. A client that takes one `read(n)` for
the whole body sees "not JSON", a cut error message, a source image of four
bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from pipeline.client import IdeogramClient, Source
from pipeline.errors import PermanentError, TransientError
from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.fake_server.testing import sample_url
from pipeline.manifest import ProviderConfig
from pipeline.redirects import RedirectPolicy
from tests.integration.elsewhere import Elsewhere

KEY = "client-key-1234567890"
UNSAFE_MESSAGE = "Prompt provided failed safety check due to the inclusion of prohibited content."


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer(FaultConfig(api_key=KEY, seed=11, split_writes=1.0)) as server:
        yield server


def client(
    http: aiohttp.ClientSession, server: FakeServer, kind: str = "ideogram", **kw: Any
) -> IdeogramClient:
    provider = ProviderConfig(kind=kind, base_url=server.url)  # type: ignore[arg-type]
    return IdeogramClient(http, provider, KEY, **kw)


async def sent() -> None:
    """The on_send hook: nothing to record here."""


@pytest.mark.parametrize("kind", ["ideogram", "crazyrouter"])
async def test_a_json_answer_in_pieces_is_parsed_and_billed_once(
    server: FakeServer, http: aiohttp.ClientSession, kind: str
) -> None:
    """A 200 answer split in pieces is one result: no "not JSON", no retry, billed once."""
    result = await client(http, server, kind).call(
        "generate", {"prompt": "a kite", "num_images": 2}, [], sent
    )
    assert len(result.images) == 2
    assert all(image.url for image in result.images)
    assert server.state.stats()["billed"] == 1


async def test_an_error_body_in_pieces_is_recorded_whole(
    server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """A 422 whose body arrives in pieces fails the job with the server's whole message."""
    server.set_faults(unsafe_word="forbidden")
    with pytest.raises(PermanentError) as caught:
        await client(http, server).call("generate", {"prompt": "a forbidden act"}, [], sent)
    assert caught.value.reason == "unsafe"
    assert caught.value.message == f"HTTP 422: {UNSAFE_MESSAGE}"


@pytest.mark.parametrize("pad", [0, 200_000], ids=["small", "over-64KB"])
async def test_a_url_source_in_pieces_is_uploaded_whole(
    server: FakeServer, http: aiohttp.ClientSession, pad: int
) -> None:
    """Native dialect: a URL source served in pieces is downloaded whole and uploaded as served."""
    url = sample_url(server.url, "cat", 64, 48) + (f"&pad={pad}" if pad else "")
    described = await client(http, server).call("describe", {}, [("image_file", Source(url))], sent)
    assert described.descriptions
    server.set_faults(split_writes=0.0)
    await client(http, server).call("describe", {}, [("image_file", Source(url))], sent)
    split, whole = server.state.log
    assert split.request_hash == whole.request_hash  # the same bytes reached the server
    assert (split.status, split.billed) == (200, True)


async def test_a_url_source_redirect_is_followed_to_an_allowed_host(
    server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """A URL source redirected to another loopback port is fetched there (the provider is on loopback)."""
    async with Elsewhere() as elsewhere:
        url = f"{elsewhere.url}/to?url={quote(sample_url(server.url, 'dog', 32, 32))}"
        described = await client(http, server).call("describe", {}, [("image_file", Source(url))], sent)
    assert described.descriptions
    assert elsewhere.hits["/to"] == 1
    assert server.state.stats()["billed"] == 1


async def test_a_url_source_redirect_to_a_forbidden_host_fails_the_job_unsent(
    server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """With a public provider, a source redirected to loopback is refused: bad_source, nothing sent."""
    policy = RedirectPolicy.for_base_url("https://api.ideogram.ai")
    async with Elsewhere() as elsewhere:
        source = f"{elsewhere.url}/to?url={quote(f'{elsewhere.url}/moved.png')}"
        with pytest.raises(PermanentError) as caught:
            await client(http, server, redirects=policy).call(
                "describe", {}, [("image_file", Source(source))], sent
            )
        assert elsewhere.hits == {"/to": 1}
    assert caught.value.reason == "bad_source"
    assert "127.0.0.1" in caught.value.message
    assert "refused" in caught.value.message
    assert server.state.log == []


async def test_a_url_source_trickling_past_its_deadline_is_retried_later(
    server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """A source sent at 50 B/s outlives a 0.2 s deadline: a retryable source_unavailable, nothing sent."""
    server.set_faults(split_writes=0.0, trickle_bps=50)
    with pytest.raises(TransientError) as caught:
        await client(http, server, source_deadline_s=0.2).call(
            "describe", {}, [("image_file", Source(sample_url(server.url, "slow", 64, 64)))], sent
        )
    assert caught.value.reason == "source_unavailable"
    assert "deadline of 0.2 s passed" in caught.value.message
    assert server.state.log == []
