"""The API key cut out of text that may be recorded or shown (SPEC §3 Secrets).

A server may quote the request's headers back (a misconfigured proxy's error
page), and messages are cut to a length before they are recorded: a cut that
falls inside the key would leave its beginning behind. `redact` removes the
whole key and any prefix of it at least `MIN_SECRET_CHARS` long, wherever it
appears — so it must run on the whole text, before any cut.

Keys shorter than `MIN_SECRET_CHARS` are not redacted: cutting every
occurrence of a short string would mangle ordinary words, and real keys are
long (Ideogram's are about 80 characters).
"""

from __future__ import annotations

#: the shortest key, and the shortest prefix of a key, that is cut out
MIN_SECRET_CHARS = 8
REDACTED = "[redacted]"


def redact(text: str, secret: str) -> str:
    """``text`` with every run of characters that equals a prefix of ``secret`` (≥ 8 long) replaced."""
    if len(secret) < MIN_SECRET_CHARS:
        return text
    head = secret[:MIN_SECRET_CHARS]
    start = text.find(head)
    if start < 0:
        return text
    spans: list[tuple[int, int]] = []
    while start >= 0:
        end = start + MIN_SECRET_CHARS
        limit = min(len(text), start + len(secret))
        while end < limit and text[end] == secret[end - start]:
            end += 1
        if spans and start <= spans[-1][1]:  # overlapping matches (a key that repeats itself)
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
        start = text.find(head, start + 1)
    pieces = []
    done = 0
    for begin, end in spans:
        pieces += [text[done:begin], REDACTED]
        done = end
    pieces.append(text[done:])
    return "".join(pieces)
