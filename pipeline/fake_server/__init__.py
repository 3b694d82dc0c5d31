"""A fake Ideogram API (native and crazyrouter dialects) with fault injection.

What every test, benchmark and ``ideobatch demo`` runs against::

    async with FakeServer(FaultConfig(rate_429=0.2)) as server:
        server.url           # http://127.0.0.1:PORT; proxy paths under /ideogram/
        server.state.stats() # requests, billed, duplicate_billed, max_inflight_images, ...
        server.set_faults(rate_5xx=1.0)

Modules: `config` (FaultConfig), `state` (log, billing, in flight), `dialects`
(wire shapes), `requests` (parsing and validation), `flat` (Ideogram 3.0 and 4.0 calls),
`structured` (V4 describe's JSON prompts), `api` (the call handler),
`images` (PNG rendering), `urls` (signed URLs), `downloads` (GET routes),
`transport` (resets, truncation), `delivery` (split and slow writes),
`control` (/_control, /_stats...), `app`, `server` (FakeServer), `command`
(the ``fake-server`` click command).
"""

from __future__ import annotations

from pipeline.fake_server.app import create_app
from pipeline.fake_server.config import FaultConfig
from pipeline.fake_server.server import FakeServer
from pipeline.fake_server.state import LogEntry, ServerState

__all__ = ["FakeServer", "FaultConfig", "LogEntry", "ServerState", "create_app"]
