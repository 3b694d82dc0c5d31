""" "Did you mean ...?" for a key, column or field name nobody knows."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

#: how alike a typo and a known name must be (difflib's ratio) to be suggested
CUTOFF = 0.6


def closest(word: object, candidates: Iterable[str]) -> str | None:
    """The known name closest to ``word``, or None when none is close enough."""
    if not isinstance(word, str):
        return None
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=CUTOFF)
    if not close:
        # a typo of a long name in another case (`Concurrency`) is still that name
        close = difflib.get_close_matches(word.lower(), sorted(set(candidates)), n=1, cutoff=CUTOFF)
    return close[0] if close else None


def did_you_mean(word: object, candidates: Iterable[str]) -> str:
    """``"; did you mean `concurrency`?"`` for the closest candidate, or ``""``."""
    found = closest(word, candidates)
    return f"; did you mean `{found}`?" if found is not None and found != word else ""


def did_you_mean_nested(word: object, own: Iterable[str], nested: Mapping[str, Iterable[str]]) -> str:
    """A hint among ``own`` names first, else among ``nested`` ones shown as ``section.name``.

    ``concurency`` written at the top of a manifest is `limits.concurrency`.
    """
    hint = did_you_mean(word, own)
    if hint:
        return hint
    dotted = {f"{section}.{name}": name for section, names in nested.items() for name in names}
    found = closest(word, dotted.values())
    if found is None:
        return ""
    where = next(path for path, name in dotted.items() if name == found)
    return f"; did you mean `{where}`?"
