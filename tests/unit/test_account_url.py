"""An account is named by its base URL as `account_url` spells it (SPEC §11: the cap is the account's)."""

from __future__ import annotations

import pytest

from pipeline.ledger.accounts import account_url


@pytest.mark.parametrize(
    "spelling",
    [
        "https://api.ideogram.ai",
        "https://api.ideogram.ai/",
        "https://API.ideogram.ai/",
        "https://api.ideogram.ai:443",
        "HTTPS://Api.Ideogram.AI:443/",
        "  https://api.ideogram.ai  ",
    ],
)
def test_spellings_of_one_base_url_name_one_account(spelling: str) -> None:
    assert account_url(spelling) == "https://api.ideogram.ai"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("http://api.ideogram.ai", "https://api.ideogram.ai"),
        ("http://api.ideogram.ai:443", "https://api.ideogram.ai"),
        ("https://api.ideogram.ai:8443", "https://api.ideogram.ai"),
        ("https://crazyrouter.com/v1", "https://crazyrouter.com"),
        ("https://api.ideogram.ai", "https://api2.ideogram.ai"),
    ],
)
def test_different_accounts_stay_apart(one: str, other: str) -> None:
    assert account_url(one) != account_url(other)


def test_ports_paths_and_hosts_are_kept_as_they_matter() -> None:
    assert account_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert account_url("http://[::1]:80/") == "http://[::1]"
    assert account_url("https://crazyrouter.com/v1/") == "https://crazyrouter.com/v1"
    assert account_url("https://Bücher.example/") == "https://xn--bcher-kva.example"
