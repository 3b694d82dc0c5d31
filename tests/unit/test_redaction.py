"""The API key and any 8-character-or-longer prefix of it are cut out of messages (SPEC §3 Secrets)."""

from __future__ import annotations

import aiohttp
import pytest
from aioresponses import aioresponses

from pipeline.client import IdeogramClient
from pipeline.errors import TransientError
from pipeline.manifest import ProviderConfig
from pipeline.redaction import REDACTED, redact
from pipeline.wire import MAX_MESSAGE_CHARS, error_details, error_for_status

KEY = "sk-CANARY-7f3e9a1c5b2d4e6f8a0b1c2d3e4f5a6b"
R = REDACTED

# (case id, text, secret, expected)
CASES = [
    ("whole-key", f"Bearer {KEY} rejected", KEY, f"Bearer {R} rejected"),
    ("cut-inside-the-key", f"Authorization: Bearer {KEY[:20]}", KEY, f"Authorization: Bearer {R}"),
    ("eight-char-prefix", f"x{KEY[:8]}y", KEY, f"x{R}y"),
    ("seven-char-prefix-stays", f"x{KEY[:7]}y", KEY, f"x{KEY[:7]}y"),
    ("prefix-then-other-text", f"{KEY[:12]}ZZZ {KEY}", KEY, f"{R}ZZZ {R}"),
    ("key-followed-by-more", f"{KEY}{KEY[:5]}", KEY, f"{R}{KEY[:5]}"),
    ("twice-back-to-back", KEY + KEY, KEY, R),
    ("self-overlapping-key", "aaaaaaaaaaaaab", "aaaaaaaaab", R),
    ("short-key-not-scrubbed", "my key is short", "short", "my key is short"),
    ("absent", "nothing to see", KEY, "nothing to see"),
    ("empty-text", "", KEY, ""),
]


@pytest.mark.parametrize(("text", "secret", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_redact(text: str, secret: str, expected: str) -> None:
    """Every run of text equal to a prefix of the key of 8 or more characters is replaced."""
    assert redact(text, secret) == expected


@pytest.mark.parametrize("kept", [8, 20, len(KEY) - 1])
def test_an_error_body_is_redacted_before_it_is_cut(kept: int) -> None:
    """A body whose message is cut inside the key keeps no 8-character prefix of it."""
    head = "request headers: Authorization: Bearer "
    filler = "." * (MAX_MESSAGE_CHARS - len(head) - kept)
    for body in (
        f"<html><p>{filler}{head}{KEY}</p></html>",
        '{"error": {"message": "' + filler + head + KEY + '", "code": "x"}}',
    ):
        assert KEY[:kept] in (filler + head + KEY)[:MAX_MESSAGE_CHARS]
        message, _code = error_details(body, KEY)
        assert KEY[:8] not in message
        assert len(message) <= MAX_MESSAGE_CHARS
        error = error_for_status(503, body, None, KEY)
        assert KEY[:8] not in error.message


def test_error_messages_are_storable() -> None:
    """A NUL or lone surrogate in an error body never reaches the recorded message."""
    message, code = error_details('{"error": "bad\\u0000 thing \\ud800", "reject_reason": "r"}')
    assert (message, code) == ("bad thing \ufffd", "r")


async def test_network_error_texts_are_redacted_and_storable() -> None:
    """An exception text quoting a cut of the key (and a NUL) is recorded without either."""
    provider = ProviderConfig(kind="crazyrouter", base_url="http://127.0.0.1:9")

    async def on_send() -> None:
        return None

    async with aiohttp.ClientSession() as session:
        client = IdeogramClient(session, provider, KEY)
        with aioresponses() as mocked:
            text = f"proxy said: Authorization: Bearer {KEY[:15]}\x00"
            mocked.post("http://127.0.0.1:9/ideogram/generate", exception=aiohttp.ClientOSError(text))
            with pytest.raises(TransientError) as caught:
                await client.call("generate", {"prompt": "x"}, [], on_send)
    assert caught.value.message == f"connection lost: ClientOSError: proxy said: Authorization: Bearer {R}"
    assert str(caught.value) == caught.value.message
