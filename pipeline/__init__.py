"""ideobatch: resumable, concurrent batch runner for the Ideogram image API."""

from __future__ import annotations

__version__ = "0.1.0"
