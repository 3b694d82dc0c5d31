"""The review's templates (Jinja2, autoescaped) and static files, shipped inside the package."""

from __future__ import annotations

from importlib import resources
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from pipeline.review.cards import usd

#: the page's script and style, served at /static/ (and inlined in the static gallery)
STATIC_FILES = {"review.js": "text/javascript", "review.css": "text/css"}


def duration(seconds: float | None) -> str:
    """``95`` as ``1m 35s``; None as an em dash."""
    if seconds is None:
        return "—"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def static_text(name: str) -> str:
    """A static file's text (one of `STATIC_FILES`)."""
    if name not in STATIC_FILES:
        raise KeyError(name)
    return resources.files("pipeline.review").joinpath("static", name).read_text(encoding="utf-8")


class Templates:
    """The Jinja2 environment of the review pages; every value is escaped unless marked safe."""

    def __init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("pipeline.review", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["usd"] = usd
        self.env.filters["duration"] = duration
        self.env.filters["query"] = lambda params: urlencode(sorted(params.items()))

    def render(self, name: str, **context: Any) -> str:
        """The page ``name`` rendered with ``context``."""
        return self.env.get_template(name).render(**context)
