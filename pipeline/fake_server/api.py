"""One handler for every op of the catalog in both dialects: admit, work, bill, answer.

The order of checks is the real API's as far as it is known: auth, then the
request (400), then the safety filter (422), then the in-flight limit (429),
then the balance (402/403). None of those is billed. An admitted call counts
its images in flight while it "works" (latency), then may fail with a 5xx (not
billed), or is billed and answered, or is billed and its connection reset or
its body truncated. aiohttp does not cancel a handler whose client went away,
so a call abandoned mid-way is still billed, as it would be for real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal

from aiohttp import web

from pipeline.endpoints import Encoding, Endpoint
from pipeline.fake_server.dialects import (
    NATIVE,
    PROXY,
    Auth,
    Dialect,
    Failure,
    ImageResult,
    gateway_error,
)
from pipeline.fake_server.flat import read_flat_call
from pipeline.fake_server.images import describe, resolution_for, served_size, v3_resolution_like
from pipeline.fake_server.requests import FETCHER, BadRequest, Call, read_call
from pipeline.fake_server.state import NO_RESPONSE, STATE, LogEntry, ServerState
from pipeline.fake_server.structured import describe_structured
from pipeline.fake_server.transport import reset_connection, send_truncated
from pipeline.fake_server.urls import ImageSpec

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAGIC_SUFFIX = ", highly detailed"
_SEED_SPACE = 2**31
_GATEWAY_STATUSES = (500, 502, 503)
_INFLIGHT_MESSAGE = (
    "Too many in-flight requests: your limit is {limit} images in flight. "
    "Wait for some of your in-flight requests to finish, then retry."
)
_FUNDS_MESSAGE = "Insufficient funds: the account balance cannot cover this request."


class _Outcome:
    """What the log will say about the call being handled."""

    __slots__ = ("billed", "call", "fault", "message")

    def __init__(self) -> None:
        self.call: Call | None = None
        self.billed = False
        self.fault: str | None = None
        self.message: str | None = None


def api_handler(dialect: Dialect, ep: Endpoint) -> Handler:
    """The aiohttp handler of an endpoint in ``dialect``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        outcome = _Outcome()
        response = await _handle(request, state, dialect, ep, outcome)
        call = outcome.call
        state.record(
            LogEntry(
                time=state.now(),
                dialect=dialect.name,
                op=ep.op,
                status=response.status if outcome.fault != "reset" else NO_RESPONSE,
                billed=outcome.billed,
                cost=call.cost if call and outcome.billed else Decimal(0),
                num_images=call.images if call else 0,
                request_hash=call.request_hash if call else None,
                fault=outcome.fault,
                message=outcome.message,
                path=request.path,
                encoding=call.encoding if call else None,
                fields=call.endpoint.to_wire(call.params) if call else None,
                parts=call.parts if call else (),
                files=dict(call.files) if call else {},
            )
        )
        return response

    handle.__name__ = f"{dialect.name}_{ep.op}"
    return handle


def native_handler(ep: Endpoint) -> Handler:
    """The handler of the endpoint's native path."""
    return api_handler(NATIVE, ep)


def proxy_handler(ep: Endpoint) -> Handler:
    """The handler of the endpoint's proxy path."""
    return api_handler(PROXY, ep)


async def _handle(
    request: web.Request, state: ServerState, dialect: Dialect, ep: Endpoint, outcome: _Outcome
) -> web.StreamResponse:
    cfg = state.config

    def fail(failure: Failure, message: str, fault: str | None = None) -> web.Response:
        message += cfg.response_text_suffix
        outcome.message, outcome.fault = message, fault
        return dialect.failure(failure, message, ep, inflight_limit=state.reported_inflight_limit)

    auth = dialect.authenticate(request.headers, cfg.api_key)
    if auth is not Auth.OK:
        return fail(Failure.UNAUTHORIZED, dialect.auth_messages[auth])
    try:
        reader = read_flat_call if ep.encoding is Encoding.FLAT else read_call
        call = await reader(request, ep, proxy=dialect is PROXY, fetcher=request.app.get(FETCHER))
    except BadRequest as exc:
        return fail(Failure.BAD_REQUEST, exc.message)
    outcome.call = call
    cfg = state.config  # reading the body may have taken a while
    if cfg.unsafe_word and cfg.unsafe_word.lower() in call.prompt.lower():
        return fail(Failure.UNSAFE, dialect.unsafe_message, "unsafe")
    if state.chance(cfg.rate_429):
        response = fail(Failure.RATE_LIMITED, _inflight_message(state), "rate_429")
        return _with_retry_after(response, state)
    if state.over_inflight_limit(call.images):
        response = fail(Failure.RATE_LIMITED, _inflight_message(state), "inflight_limit")
        return _with_retry_after(response, state)
    cost = call.cost
    if not state.reserve(cost):
        return fail(Failure.NO_FUNDS, _FUNDS_MESSAGE, "balance")

    gateway = state.chance(cfg.rate_5xx)
    reset = not gateway and state.chance(cfg.rate_reset)
    truncate = not gateway and not reset and state.chance(cfg.rate_truncate)
    billed = False
    try:
        with state.in_flight(call.images):
            delay = state.latency_s()
            if delay > 0:
                await asyncio.sleep(delay)
            await state.pass_gate()
            if gateway:
                outcome.fault = "5xx"
                page = gateway_error(state.choice(_GATEWAY_STATUSES))
                if cfg.echo_auth_in_errors:
                    # like a debugging proxy, the quote comes first: its offset in the page's
                    # text is the padding plus a fixed length, whatever the status
                    echoed = request.headers.get("Authorization") or request.headers.get("Api-Key") or ""
                    quote = f"{'.' * cfg.error_padding}request headers: Authorization: {echoed}"
                    page.text = f"<p>{quote}</p>\r\n{page.text or ''}"
                return page
            billed = outcome.billed = True
    finally:
        state.settle(cost, call.request_hash, billed=billed)

    response = _success(request, state, dialect, call)
    if reset:
        outcome.fault = "reset"
        return reset_connection(request)
    if truncate:
        outcome.fault = "truncate"
        return await send_truncated(request, response)
    return response


def _inflight_message(state: ServerState) -> str:
    return _INFLIGHT_MESSAGE.format(limit=state.reported_inflight_limit)


def _with_retry_after(response: web.Response, state: ServerState) -> web.Response:
    value = state.retry_after()
    if value is not None:
        response.headers["Retry-After"] = value
    return response


def _success(request: web.Request, state: ServerState, dialect: Dialect, call: Call) -> web.Response:
    answer = call.endpoint.answer
    if answer is not None:
        assert call.source is not None
        described = describe_structured(call.source, call.params, state.config.response_text_suffix)
        return dialect.answer_response(call.endpoint, {answer.name: described})
    if not call.endpoint.makes_images:
        assert call.source is not None
        texts = describe(call.source)
        wanted = state.config.descriptions_per_image
        if wanted is not None:
            texts = (texts * wanted)[:wanted]
        return dialect.describe_response(
            call.endpoint, [t + state.config.response_text_suffix for t in texts]
        )
    return dialect.images_response(call.endpoint, state.now(), _images(request, state, call))


def _images(request: web.Request, state: ServerState, call: Call) -> list[ImageResult]:
    cfg = state.config
    params = call.params
    upscaled: tuple[int, int] | None = None
    scale = call.endpoint.output_scale
    if call.source is not None and not {"aspect_ratio", "resolution"} & call.endpoint.fields:
        # an op that keeps its source's size (edit, replace-background), or multiplies it (upscale)
        resolution = (call.source.width, call.source.height)
        if call.endpoint.encoding is Encoding.FLAT:
            resolution = v3_resolution_like(*resolution)
        if scale > 1:
            upscaled = (resolution[0] * scale, resolution[1] * scale)
        size = served_size(*(upscaled or resolution), cfg.image_scale)
    else:
        resolution = resolution_for(params)
        size = served_size(*resolution, cfg.image_scale)
        factor = params.get("upscale_factor")
        if isinstance(factor, str) and factor[1:].isdigit() and int(factor[1:]) > 1:
            upscaled = (resolution[0] * int(factor[1:]), resolution[1] * int(factor[1:]))
    withheld = bool(cfg.withheld_word) and str(cfg.withheld_word).lower() in call.prompt.lower()
    prompt = _returned_prompt(call) + cfg.response_text_suffix
    style = params.get("style_type")
    first_seed = params.get("seed")
    exp = int(state.now() + cfg.url_ttl_s)
    base = f"{request.scheme}://{request.host}"
    images = []
    for seed in _seeds(first_seed, call.images, state):
        spec = ImageSpec(seed, size[0], size[1], call.variant)
        url = None if withheld else state.signer.url(base, spec, exp, state.nonce())
        images.append(
            ImageResult(
                url=url,
                prompt=prompt,
                resolution=resolution,
                seed=seed,
                is_image_safe=not withheld,
                style_type=style if isinstance(style, str) else None,
                upscaled_resolution=upscaled,
            )
        )
    return images


def _seeds(first: object, count: int, state: ServerState) -> list[int]:
    """Seed, seed+1, ... when the request gives one (wrapping at 2**31), else random seeds."""
    if isinstance(first, int):
        return [(first + index) % _SEED_SPACE for index in range(count)]
    return [state.random_seed() for _ in range(count)]


def _returned_prompt(call: Call) -> str:
    """The prompt as Ideogram returns it: MagicPrompt (ON, or AUTO, the default) enhances it."""
    prompt = call.prompt
    if call.structured_summary is not None:
        return prompt  # a structured prompt is used as it is: no MagicPrompt
    if not prompt and call.source is not None:
        return describe(call.source)[0]
    magic = call.params.get("magic_prompt_option", call.params.get("magic_prompt", "AUTO"))
    if magic in ("ON", "AUTO"):
        return prompt + MAGIC_SUFFIX
    return prompt
