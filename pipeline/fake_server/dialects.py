"""How each API dialect speaks: auth headers, timestamps, image objects, error bodies.

`NATIVE` is Ideogram itself (``Api-Key``; ISO ``created``; Connexion problem+json
for 400; ``{"error", "reject_reason"}`` for the rest; a ``Link`` successor
header). `PROXY` is crazyrouter (``Authorization: Bearer``; integer
``created``; ``{"error": {"message", "type", "code"}}`` for every status; no
``is_image_safe`` on safe images; an empty balance is 403 ``insufficient_quota``).
Gateway failures (5xx) are HTML in both, as a load balancer would send them.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from aiohttp import web

from pipeline.endpoints import Encoding, Endpoint

SUCCESSOR_LINK = '<https://developer.ideogram.ai/v2/api-reference/{op}>; rel="successor-version"'


class Failure(Enum):
    """The errors an API call can end in; each dialect maps them to a status and body."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    NO_FUNDS = "no_funds"
    UNSAFE = "unsafe"
    RATE_LIMITED = "rate_limited"


class Auth(Enum):
    """Outcome of the auth check."""

    OK = "ok"
    MISSING = "missing"
    INVALID = "invalid"


@dataclass(frozen=True)
class ImageResult:
    """One produced image, before a dialect shapes it."""

    url: str | None
    prompt: str
    resolution: tuple[int, int]
    seed: int
    is_image_safe: bool
    style_type: str | None = None
    upscaled_resolution: tuple[int, int] | None = None


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _size(value: tuple[int, int]) -> str:
    return f"{value[0]}x{value[1]}"


class Dialect(ABC):
    """Behaviour shared by both dialects; subclasses fill in the differences."""

    name: str = ""
    #: Ideogram's UNSAFE message (GenerateImageSafetyError)
    unsafe_message = "Prompt provided failed safety check due to the inclusion of prohibited content."

    #: the message of a missing or wrong key
    auth_messages: Mapping[Auth, str] = {
        Auth.MISSING: "Missing API key",
        Auth.INVALID: "Not authorized to generate an image.",
    }

    @abstractmethod
    def authenticate(self, headers: Mapping[str, str], api_key: str) -> Auth:
        """Whether the request carries the right key in this dialect's header."""
        ...

    @abstractmethod
    def auth_status(self, ep: Endpoint) -> int:
        """The status of a call with a missing or wrong key."""
        ...

    @abstractmethod
    def created(self, now: float) -> str | int:
        """The ``created`` value of a successful response."""
        ...

    @abstractmethod
    def image_object(self, image: ImageResult) -> dict[str, Any]:
        """One entry of ``data``."""
        ...

    @abstractmethod
    def failure(
        self, failure: Failure, message: str, ep: Endpoint, *, inflight_limit: int = 0
    ) -> web.Response:
        """The response of a failed call."""
        ...

    def headers(self, ep: Endpoint) -> dict[str, str]:
        """Headers every response of this dialect carries."""
        return {}

    def images_response(self, ep: Endpoint, now: float, images: list[ImageResult]) -> web.Response:
        """The 200 of generate, remix and upscale."""
        body = {"created": self.created(now), "data": [self.image_object(i) for i in images]}
        return self.json(body, 200, ep)

    def describe_response(self, ep: Endpoint, texts: list[str]) -> web.Response:
        """The 200 of describe."""
        return self.json({"descriptions": [{"text": t} for t in texts]}, 200, ep)

    def answer_response(self, ep: Endpoint, body: dict[str, Any]) -> web.Response:
        """The 200 of a describe whose answer is one object (V4: ``{"json_prompt": {...}}``)."""
        return self.json(body, 200, ep)

    def json(
        self, body: Any, status: int, ep: Endpoint, content_type: str = "application/json"
    ) -> web.Response:
        """A JSON response with this dialect's headers."""
        return web.Response(
            text=_dumps(body), status=status, content_type=content_type, headers=self.headers(ep)
        )


class NativeDialect(Dialect):
    """Ideogram's own API at api.ideogram.ai."""

    name = "ideogram"

    def authenticate(self, headers: Mapping[str, str], api_key: str) -> Auth:
        """Native keys come in ``Api-Key``."""
        given = headers.get("Api-Key")
        if not given:
            return Auth.MISSING
        return Auth.OK if given == api_key else Auth.INVALID

    def auth_status(self, ep: Endpoint) -> int:
        """The status the spec lists for the endpoint (403 for remix and upscale, 401 for others)."""
        return ep.unauthorized_status

    def created(self, now: float) -> str:
        """An ISO-8601 date-time string."""
        return datetime.fromtimestamp(now, UTC).isoformat()

    def image_object(self, image: ImageResult) -> dict[str, Any]:
        """Every field of the spec's ImageObject; ``url`` null when withheld."""
        data: dict[str, Any] = {
            "url": image.url,
            "prompt": image.prompt,
            "resolution": _size(image.resolution),
            "is_image_safe": image.is_image_safe,
            "seed": image.seed,
        }
        if image.upscaled_resolution is not None:
            data["upscaled_resolution"] = _size(image.upscaled_resolution)
        if image.style_type is not None:
            data["style_type"] = image.style_type
        return data

    def headers(self, ep: Endpoint) -> dict[str, str]:
        """The deprecation hint Ideogram sends on its legacy endpoints."""
        return {"Link": SUCCESSOR_LINK.format(op=ep.op)} if ep.encoding is Encoding.LEGACY else {}

    def failure(
        self, failure: Failure, message: str, ep: Endpoint, *, inflight_limit: int = 0
    ) -> web.Response:
        """Connexion problem+json for 400, ``{"error", "reject_reason"}`` otherwise."""
        if failure is Failure.BAD_REQUEST:
            problem = {
                "detail": message,
                "status": 400,
                "title": "Bad Request",
                "type": "about:blank",
            }
            return self.json(problem, 400, ep, "application/problem+json")
        body: dict[str, Any] = {"error": message}
        if failure is Failure.UNAUTHORIZED:
            return self.json(body, self.auth_status(ep), ep)
        if failure is Failure.NO_FUNDS:
            body["reject_reason"] = "insufficient_funds"
            return self.json(body, 402, ep)
        if failure is Failure.RATE_LIMITED:
            body["reject_reason"] = "inflight_limit"
            body["max_inflight_requests"] = inflight_limit
            return self.json(body, 429, ep)
        return self.json(body, 422, ep)


#: proxy status, error type and code of each failure
_PROXY_ERRORS: dict[Failure, tuple[int, str, str]] = {
    Failure.BAD_REQUEST: (400, "invalid_request_error", "invalid_request"),
    Failure.UNAUTHORIZED: (401, "authentication_error", "invalid_api_key"),
    Failure.NO_FUNDS: (403, "insufficient_quota", "insufficient_quota"),
    Failure.UNSAFE: (422, "upstream_error", "content_policy_violation"),
    Failure.RATE_LIMITED: (429, "rate_limit_error", "rate_limit_exceeded"),
}


class ProxyDialect(Dialect):
    """The crazyrouter relay at crazyrouter.com/ideogram/*."""

    name = "crazyrouter"
    auth_messages: Mapping[Auth, str] = {
        Auth.MISSING: "No token provided (Authorization: Bearer sk-...)",
        Auth.INVALID: "Invalid token",
    }

    def authenticate(self, headers: Mapping[str, str], api_key: str) -> Auth:
        """Proxy keys come as ``Authorization: Bearer KEY``."""
        given = headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return Auth.MISSING
        return Auth.OK if token.strip() == api_key else Auth.INVALID

    def auth_status(self, ep: Endpoint) -> int:
        """Always 401 ``invalid_api_key``."""
        return 401

    def created(self, now: float) -> int:
        """Integer unix time, as the proxy documents."""
        return int(now)

    def image_object(self, image: ImageResult) -> dict[str, Any]:
        """As the proxy's example: no ``is_image_safe`` unless the image was withheld."""
        data: dict[str, Any] = {
            "url": image.url,
            "prompt": image.prompt,
            "resolution": _size(image.resolution),
            "seed": image.seed,
        }
        if not image.is_image_safe:
            data["is_image_safe"] = False
        if image.upscaled_resolution is not None:
            data["upscaled_resolution"] = _size(image.upscaled_resolution)
        if image.style_type is not None:
            data["style_type"] = image.style_type
        return data

    def failure(
        self, failure: Failure, message: str, ep: Endpoint, *, inflight_limit: int = 0
    ) -> web.Response:
        """``{"error": {"message", "type", "code"}}`` whatever the status."""
        status, kind, code = _PROXY_ERRORS[failure]
        return self.json({"error": {"message": message, "type": kind, "code": code}}, status, ep)


NATIVE = NativeDialect()
PROXY = ProxyDialect()

_GATEWAY_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def gateway_error(status: int) -> web.Response:
    """An HTML 5xx page, as a load balancer in front of either API answers."""
    title = f"{status} {_GATEWAY_REASONS.get(status, 'Server Error')}"
    html = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return web.Response(text=html, status=status, content_type="text/html")
