"""Who may talk to the review server, and what it may be asked to do.

- It listens on this machine only, unless given a token; with a token every
  request must carry it: ``Authorization: Bearer T``, an ``X-Ideobatch-Token``
  header, or the cookie set by opening any page once with ``?token=T``.
- Bound to this machine, it answers only requests addressed to it by a local
  name (``Host: localhost`` or a loopback address), so that a web page cannot
  reach it by pointing a domain of its own at 127.0.0.1 (DNS rebinding).
- Writes (picks, retries) need ``--allow-actions`` and come only from the
  page's own script: a POST needs the ``X-Ideobatch-Action`` header (a form
  on another site cannot send one) and, when it has an ``Origin``, this
  server's own.
- Every response forbids inline scripts, framing and content sniffing.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from pipeline.review.state import STATE

TOKEN_COOKIE = "ideobatch_token"
TOKEN_HEADER = "X-Ideobatch-Token"
ACTION_HEADER = "X-Ideobatch-Action"
#: a token is sent over the network and guessed at by anyone who can reach the port
MIN_TOKEN_LENGTH = 16
LOCAL_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
#: sources may be image URLs of the catalog (http/https); scripts and styles only our own
CSP = (
    "default-src 'none'; img-src 'self' http: https: data:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_local_host(host: str) -> bool:
    """Whether ``host`` (a name or an address, without a port) stays on this machine."""
    name = host.strip("[]").lower()
    if name in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    return urlsplit(f"//{header}").hostname or ""


def _token_given(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE)


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse what the rules above refuse; let the rest through."""
    options = request.app[STATE].options
    if is_local_host(options.host) and not is_local_host(_host_of(request.host)):
        raise web.HTTPMisdirectedRequest(text="this server answers only to localhost\n")
    if options.token is not None:
        offered = request.query.get("token")
        if offered is not None and request.method == "GET":
            if not _same(offered, options.token):
                raise web.HTTPUnauthorized(text="wrong token\n")
            query = {k: v for k, v in request.query.items() if k != "token"}
            response = web.HTTPSeeOther(request.rel_url.with_query(query))
            response.set_cookie(TOKEN_COOKIE, options.token, httponly=True, samesite="Strict")
            raise response
        if not _same(_token_given(request), options.token):
            raise web.HTTPUnauthorized(
                text="this server needs its token: open the address `ideobatch serve` printed\n",
                headers={"WWW-Authenticate": 'Bearer realm="ideobatch"'},
            )
    if request.method not in ("GET", "HEAD"):
        if not options.allow_actions:
            raise web.HTTPForbidden(
                text="read-only: start `ideobatch serve --allow-actions` to pick images and retry jobs\n"
            )
        if request.headers.get(ACTION_HEADER) != "1":
            raise web.HTTPForbidden(text=f"an action needs the {ACTION_HEADER} header\n")
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(text="an action from another site\n")
    return await handler(request)


async def secure_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """Headers every response carries (an `on_response_prepare` signal)."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"


def check_bind(host: str, token: str | None) -> str | None:
    """Why the server must not listen on ``host`` (None: it may)."""
    if token is None and not is_local_host(host):
        return (
            f"refusing to listen on {host} without --token: anyone who can reach it would see the "
            "ledger (use --token or IDEOBATCH_REVIEW_TOKEN, or keep the default 127.0.0.1)"
        )
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        return (
            f"the token is {len(token)} characters; use at least {MIN_TOKEN_LENGTH} that are hard to "
            'guess, e.g. python -c "import secrets; print(secrets.token_urlsafe())"'
        )
    if token is not None and not (token.isascii() and token.isprintable() and " " not in token):
        return "the token must be printable ASCII characters without spaces (it travels in headers)"
    return None
