"""Text in API answers is made storable and the fields it was found in are named (SPEC §6)."""

from __future__ import annotations

from pipeline.endpoints import endpoint
from pipeline.wire import parse_result


def test_every_text_field_of_an_image_is_cleaned_and_named() -> None:
    """NULs go, lone surrogates become U+FFFD, in prompt, resolution, style_type and url alike."""
    body = {
        "created": 1,
        "data": [
            {
                "url": "https://x.test/a\x00.png",
                "prompt": "p\x00",
                "resolution": "1024x1024\ud800",
                "style_type": "ANIME\udfff",
                "seed": 3,
            },
            {"url": "https://x.test/b.png", "prompt": "q\x00", "seed": 4},
        ],
    }
    result = parse_result(endpoint("generate"), body)
    first, second = result.images
    assert (first.url, first.prompt, first.resolution, first.style_type) == (
        "https://x.test/a.png",
        "p",
        "1024x1024\ufffd",
        "ANIME\ufffd",
    )
    assert second.prompt == "q"
    assert result.sanitized == ("url", "prompt", "resolution", "style_type")
    assert "prompt" in result.sanitized_note


def test_descriptions_are_cleaned_and_clean_answers_are_untouched() -> None:
    """A description's text is cleaned too; an answer without such characters reports nothing."""
    result = parse_result(
        endpoint("describe"), {"descriptions": [{"text": "a\x00 cat \ud83d"}, {"text": "ok 😀"}]}
    )
    assert result.descriptions == ("a cat \ufffd", "ok 😀")
    assert result.sanitized == ("text",)
    clean = parse_result(
        endpoint("generate"), {"data": [{"url": "https://x.test/a.png", "prompt": "fine 😀"}]}
    )
    assert clean.sanitized == ()
    assert clean.sanitized_note == ""
    assert clean.images[0].prompt == "fine 😀"
