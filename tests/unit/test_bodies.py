"""Reading a body to its end under a cap, over a stand-in stream that hands out pieces."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest

from pipeline.bodies import BodyIncomplete, BodyTooLarge, read_body, read_prefix


class Pieces:
    """A stream whose `read(n)` returns what "arrived": the next piece (at most n bytes), as aiohttp's."""

    def __init__(self, pieces: Sequence[bytes], error: Exception | None = None) -> None:
        self.pieces = [bytes(p) for p in pieces]
        self.error = error
        self.reads = 0

    async def read(self, n: int = -1) -> bytes:
        self.reads += 1
        if not self.pieces:
            if self.error is not None:
                raise self.error
            return b""
        piece = self.pieces[0]
        taken, rest = piece[:n], piece[n:]
        if rest:
            self.pieces[0] = rest
        else:
            self.pieces.pop(0)
        return taken


class Response:
    """The parts of `aiohttp.ClientResponse` the readers use."""

    def __init__(self, content: Pieces, length: int | None = None, encoding: str | None = None) -> None:
        self.content = content
        self.content_length = length
        self.headers = {"Content-Encoding": encoding} if encoding else {}


def response(pieces: Sequence[bytes], length: int | None = None, **kw: Any) -> Any:
    return Response(Pieces(pieces, kw.pop("error", None)), length, **kw)


async def test_a_body_in_pieces_is_read_to_its_end() -> None:
    """A JSON body arriving as 1, 5 and 300 bytes is read whole, not just its first piece."""
    body = b'{"data": [' + b"1," * 150 + b"1]}"
    pieces = [body[:1], body[1:6], body[6:]]
    assert await read_body(response(pieces, len(body)), 4096) == body


async def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    """Content-Length over the cap raises at once; not a byte is read."""
    stream = response([b"x" * 10], 5000)
    with pytest.raises(BodyTooLarge) as caught:
        await read_body(stream, 1000)
    assert (caught.value.declared, caught.value.size) == (True, 5000)
    assert stream.content.reads == 0


async def test_an_undeclared_body_over_the_cap_stops_at_the_cap() -> None:
    """Without Content-Length, reading stops as soon as the cap is passed."""
    stream = response([b"x" * 600] * 10)
    with pytest.raises(BodyTooLarge) as caught:
        await read_body(stream, 1000)
    assert caught.value.declared is False
    assert stream.content.reads == 2


async def test_a_body_shorter_than_its_content_length_is_incomplete() -> None:
    """EOF before Content-Length is a truncation, not a success."""
    with pytest.raises(BodyIncomplete, match="after 7 of its 10 bytes"):
        await read_body(response([b"1234", b"567"], 10), 100)


async def test_a_compressed_body_is_not_held_to_its_wire_length() -> None:
    """A gzip body's Content-Length counts wire bytes: the decoded body may be any length."""
    assert await read_body(response([b"abc"], 10, encoding="gzip"), 100) == b"abc"


async def test_read_prefix_reads_pieces_up_to_its_limit_and_keeps_a_cut_page() -> None:
    """An error page is read to its end or its limit; one cut short gives what arrived."""
    assert await read_prefix(response([b"ab", b"cd", b"ef"]), 100) == b"abcdef"
    assert await read_prefix(response([b"ab", b"cd", b"ef"]), 3) == b"abc"
    cut = response([b"<html>", b"bad "], error=aiohttp.ClientPayloadError("cut"))
    assert await read_prefix(cut, 100) == b"<html>bad "
