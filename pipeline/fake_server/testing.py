"""Small helpers for code that talks to the fake server in tests and benchmarks.

They build what a client sends (auth headers, the native multipart form, URLs
of sample sources) and read what it gets back (a PNG's size); they are not a
client of the API, which is ``pipeline.client``'s job.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
from PIL import Image

Dialect = Literal["ideogram", "crazyrouter"]


def auth_headers(dialect: Dialect, key: str) -> dict[str, str]:
    """The auth header each dialect expects."""
    if dialect == "ideogram":
        return {"Api-Key": key}
    return {"Authorization": f"Bearer {key}"}


def op_url(base: str, dialect: Dialect, op: str) -> str:
    """The URL of an op: ``/op`` native, ``/ideogram/op`` proxy."""
    return f"{base}/{op}" if dialect == "ideogram" else f"{base}/ideogram/{op}"


def sample_url(base: str, name: str = "sample", width: int = 256, height: int = 256, ext: str = "png") -> str:
    """The URL of a deterministic sample source image served by the fake server."""
    return f"{base}/_assets/sample/{name}.{ext}?w={width}&h={height}"


def native_form(
    image: bytes | None,
    image_request: Mapping[str, Any] | None = None,
    *,
    filename: str = "source.png",
    fields: Mapping[str, str] | None = None,
) -> aiohttp.FormData:
    """The multipart form of remix/upscale (``image_request`` given) or describe."""
    form = aiohttp.FormData(default_to_multipart=True)
    if image_request is not None:
        form.add_field("image_request", json.dumps(dict(image_request)), content_type="application/json")
    if image is not None:
        # a BytesIO: aiohttp warns about large raw bytes bodies
        form.add_field("image_file", io.BytesIO(image), filename=filename, content_type="image/png")
    for name, value in (fields or {}).items():
        form.add_field(name, value)
    return form


async def form_bytes(form: aiohttp.FormData) -> tuple[bytes, str]:
    """A form's encoded body and its Content-Type (with the boundary)."""
    writer = form()
    return await writer.as_bytes(), writer.content_type


def png_size(data: bytes) -> tuple[int, int]:
    """Decode an image fully and return its (width, height)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size
