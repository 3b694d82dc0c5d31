"""Signed, expiring image URLs, shaped like Ideogram's ephemeral links.

``{base}/api/images/ephemeral/{token}.png?exp={unix}&sig={hex}``. The token
carries what to render (seed, size, variant) plus a nonce, so the server keeps
no table of images; ``sig`` is an HMAC-SHA256 of ``token.exp`` under a
per-server secret, so a client cannot forge a token or stretch an expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from enum import Enum

IMAGE_PATH_PREFIX = "/api/images/ephemeral/"
_TOKEN = struct.Struct(">IHHB7s")  # seed, width, height, variant, nonce: 16 bytes


@dataclass(frozen=True)
class ImageSpec:
    """What an image URL renders: the PNG's seed, served size and variant."""

    seed: int
    width: int
    height: int
    variant: int = 0


class Verdict(Enum):
    """Outcome of checking a signed URL."""

    OK = "ok"
    EXPIRED = "expired"
    BAD_SIGNATURE = "bad_signature"


class UrlSigner:
    """Mints and checks image URLs with one secret."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def token(self, spec: ImageSpec, nonce: bytes) -> str:
        """The URL token for an image (22 URL-safe characters, like Ideogram's)."""
        raw = _TOKEN.pack(spec.seed, spec.width, spec.height, spec.variant, nonce[:7])
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def sign(self, token: str, exp: int) -> str:
        """The hex signature of a token and expiry."""
        message = f"{token}.{exp}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def url(self, base: str, spec: ImageSpec, exp: int, nonce: bytes) -> str:
        """A full signed URL under ``base`` (scheme://host[:port])."""
        token = self.token(spec, nonce)
        return f"{base}{IMAGE_PATH_PREFIX}{token}.png?exp={exp}&sig={self.sign(token, exp)}"

    def check(self, token: str, exp: str, sig: str, now: float) -> tuple[Verdict, ImageSpec | None]:
        """Whether a URL's token, exp and sig are genuine and unexpired, and what it renders."""
        try:
            exp_value = int(exp)
        except ValueError:
            return Verdict.BAD_SIGNATURE, None
        if not sig.isascii() or not hmac.compare_digest(self.sign(token, exp_value), sig):
            return Verdict.BAD_SIGNATURE, None
        spec = decode_token(token)
        if spec is None:
            return Verdict.BAD_SIGNATURE, None
        if now >= exp_value:
            return Verdict.EXPIRED, spec
        return Verdict.OK, spec


def decode_token(token: str) -> ImageSpec | None:
    """The image a token names, or None if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        seed, width, height, variant, _ = _TOKEN.unpack(raw)
    except (ValueError, struct.error):
        return None
    if width == 0 or height == 0:
        return None
    return ImageSpec(seed, width, height, variant)
