"""Text a ledger can store: no NUL, no lone surrogates.

PostgreSQL refuses a NUL (``\\0``) in text, and a lone surrogate (a code point
in U+D800–U+DFFF, as YAML's ``"\\ud800"`` or JSON's ``\\ud800`` escapes make)
cannot be encoded as UTF-8 by either database driver. Text the user writes
(manifests, prompts files, catalogs) is refused at validate time with
`unstorable`; text the API sends back is cleaned with `storable`, because by
then the call has been paid for and the answer must be recorded.
"""

from __future__ import annotations

import re

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SURROGATES = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def unstorable(text: str) -> str | None:
    """Why ``text`` cannot be stored (its first NUL or lone surrogate, and where), or None.

    The message never contains the offending character itself, so it can be
    printed on any terminal.
    """
    if _plainly_storable(text):
        return None
    match = _UNSTORABLE.search(text)
    if match is None:
        return None
    char, at = match.group(), match.start() + 1
    if char == "\x00":
        return f"contains a NUL character (\\0) at character {at}; text cannot hold NULs"
    return f"contains a lone surrogate (U+{ord(char):04X}) at character {at}, which is not valid Unicode text"


def storable(text: str) -> str:
    """``text`` with NULs removed and lone surrogates replaced by U+FFFD (itself when clean)."""
    if _plainly_storable(text) or _UNSTORABLE.search(text) is None:
        return text
    return _SURROGATES.sub(REPLACEMENT, text.replace("\x00", ""))


def _plainly_storable(text: str) -> bool:
    # the common case, without a regex: ASCII (a flag of the string, checked at once) and no NUL
    return text.isascii() and "\x00" not in text
