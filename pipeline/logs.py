"""Logging of every command: text for people or one JSON object per line, on stderr and a file.

A JSON line carries ``time`` (ISO 8601 with date and UTC offset), ``level``,
``event`` (``log`` unless the caller names one: ``progress``, ``run_end``,
``error``...), ``message``, and, when known, ``manifest`` and ``counts``.
Values registered with `redact` (the API key) are replaced by ``***`` in
every line, whatever logged them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

LOGGER_NAME = "ideobatch"
FORMATS = ("text", "json")
REDACTED = "***"

log = logging.getLogger(LOGGER_NAME)

#: the manifest being worked on, added to JSON lines (a worker goes from one to the next)
_manifest: ContextVar[str | None] = ContextVar("ideobatch_manifest", default=None)
_secrets: set[str] = set()
_json = False


def redact(secret: str) -> None:
    """Never write ``secret`` in a log line (it is replaced by ``***``)."""
    if secret:
        _secrets.add(secret)


@contextlib.contextmanager
def manifest_context(name: str | None) -> Iterator[None]:
    """Log lines written inside name this manifest."""
    token = _manifest.set(name)
    try:
        yield
    finally:
        _manifest.reset(token)


def is_json() -> bool:
    """Whether log lines are JSON (then messages meant for people go through the log too)."""
    return _json


class _Redactor(logging.Filter):
    """Replaces registered secrets in a record's message before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = record.getMessage()
            cleaned = message
            for secret in _secrets:
                cleaned = cleaned.replace(secret, REDACTED)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


class _ConsoleHandler(logging.StreamHandler[TextIO]):
    """Writes a line above a progress bar on the same stream instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        progress_bars = sys.modules.get(
            "tqdm"
        )  # imported by a progress bar only: none, no bar to write above
        if progress_bars is None:
            super().emit(record)
            return
        with progress_bars.tqdm.external_write_mode(file=self.stream):
            super().emit(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "log"),
            "message": record.getMessage(),
        }
        manifest = getattr(record, "manifest", None) or _manifest.get()
        if manifest:
            doc["manifest"] = manifest
        counts = getattr(record, "counts", None)
        if counts is not None:
            doc["counts"] = counts
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def _text_formatter(with_date: bool) -> logging.Formatter:
    if with_date:
        return logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S%z")
    return logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S")


def level_for(verbosity: int) -> int:
    """-1 (quiet): warnings; 0: info; 1 and more (-v): debug."""
    if verbosity < 0:
        return logging.WARNING
    return logging.INFO if verbosity == 0 else logging.DEBUG


def setup_logging(
    *, fmt: str = "text", verbosity: int = 0, log_file: str | None = None, stream: TextIO | None = None
) -> None:
    """Send the ``ideobatch`` logger to stderr (and ``log_file``, appended) in ``fmt``.

    Raises `OSError` if the log file cannot be opened.
    """
    global _json
    _json = fmt == "json"
    handlers: list[logging.Handler] = [_ConsoleHandler(stream or sys.stderr)]
    handlers[0].setFormatter(JsonFormatter() if _json else _text_formatter(with_date=False))
    if log_file:
        file_handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        file_handler.setFormatter(JsonFormatter() if _json else _text_formatter(with_date=True))
        handlers.append(file_handler)
    for handler in log.handlers:
        handler.close()
    for handler in handlers:
        handler.addFilter(_Redactor())
    log.handlers[:] = handlers
    log.setLevel(level_for(verbosity))
    log.propagate = False
