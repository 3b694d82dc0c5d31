"""Ledger URLs as users write them, and where a ledger is kept by default (`pipeline.ledger_location`)."""

from __future__ import annotations

#: the folder, beside a manifest (or in the working directory), that holds its ledger
LEDGER_DIR = ".ideobatch"
#: the SQLite file in that folder
LEDGER_FILE = "ledger.db"
#: the ledger of a command given no MANIFEST file when neither --ledger nor IDEOBATCH_LEDGER
#: says otherwise (relative to the working directory)
DEFAULT_LEDGER_URL = f"sqlite:///{LEDGER_DIR}/{LEDGER_FILE}"
