"""What the fake server's Ideogram 4.0 describe answers: a plausible JSON prompt of the image.

The object has the shape of ``V4JsonPrompt`` (a high-level description, a
background and elements with bounding boxes, and — when asked with
``include_style_descriptions`` and ``include_tags`` — a style description and
tags; ``include_bbox: false`` drops the boxes), and is a pure function of the
image: its size, its dominant colour and its hash, so the same image is
always described the same way and two images differently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.api_schema_v4 import describe_flag
from pipeline.fake_server.images import SourceInfo, colour_hex, orientation

#: where the boxes of the described objects may start, and their least size, on the 1000x1000 canvas
_BOX_MARGIN = 100
_BOX_MIN = 300


def _box(digest: bytes) -> list[int]:
    """A bounding box ``[y_min, x_min, y_max, x_max]`` in ``[0, 1000]``, from four bytes of a hash."""
    top = _BOX_MARGIN + digest[0] % 200
    left = _BOX_MARGIN + digest[1] % 200
    return [top, left, top + _BOX_MIN + digest[2] % 300, left + _BOX_MIN + digest[3] % 300]


def describe_structured(info: SourceInfo, params: Mapping[str, Any], suffix: str = "") -> dict[str, Any]:
    """A JSON prompt of the image ``info`` describes, shaped by the request's ``include_*`` flags.

    ``suffix`` is appended to the high-level description (the server's hostile-text option).
    """
    digest = bytes.fromhex(info.sha256)
    shape = orientation(info.width, info.height)
    main = colour_hex(info.colour)
    elements: list[dict[str, Any]] = [
        {
            "type": "obj",
            "bbox": _box(digest[:4]),
            "desc": f"A {info.colour} block-shaped product, centred, catching soft light",
            "color_palette": [main],
        }
    ]
    if digest[4] % 2:
        elements.append(
            {
                "type": "text",
                "bbox": [820, 80 + digest[5] % 100, 900, 400 + digest[5] % 100],
                "text": f"No. {info.sha256[:4].upper()}",
                "desc": "a small printed label in the lower left corner",
            }
        )
    if not describe_flag(params, "include_bbox"):
        for element in elements:
            del element["bbox"]
    prompt: dict[str, Any] = {
        "high_level_description": (
            f"A {shape} product photo of a {info.colour} object on a plain backdrop{suffix}"
        ),
        "compositional_deconstruction": {
            "background": f"A plain, softly lit {info.colour} studio backdrop",
            "elements": elements,
        },
    }
    if describe_flag(params, "include_style_descriptions"):
        prompt["style_description"] = {
            "photo": "50mm lens, f/8, eye level",
            "art_style": "photorealistic",
            "medium": "photograph",
            "aesthetics": "clean, minimal catalog look",
            "lighting": "soft even studio lighting from the front left",
            "color_palette": [main, "#F0F0F0"],
        }
    if describe_flag(params, "include_tags"):
        prompt["tags"] = ["product", info.colour, shape, "studio"]
    return prompt
