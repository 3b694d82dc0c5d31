"""Ledger URLs as users write them."""

from __future__ import annotations

#: the ledger when neither --ledger nor IDEOBATCH_LEDGER says otherwise
DEFAULT_LEDGER_URL = "sqlite:///.ideobatch/ledger.db"
