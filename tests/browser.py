"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by its ``chromium-driver``.

Selenium talks WebDriver to ``/usr/bin/chromedriver``, which starts
``/usr/bin/chromium``: both come from the same Debian package version, so
nothing is downloaded at run time. Chromium runs as root in CI, hence the
flags (no sandbox, no GPU, and nothing that would reach Google). When either
is missing the browser tests are skipped — except in CI (``CI`` set), where
that is a failure.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)
#: how long a browser test waits for the page to reach a state before failing
WAIT_S = 10.0

T = TypeVar("T")


def require_chromium() -> None:
    """Skip when Debian's chromium or chromium-driver is missing; fail instead in CI."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if not missing:
        return
    reason = f"{' and '.join(missing)} missing (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: browser tests must run in CI", pytrace=False)
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile, closed on exit."""
    require_chromium()
    # Selenium Manager must not look for drivers online: ours are given explicitly
    os.environ.setdefault("SE_OFFLINE", "true")
    with tempfile.TemporaryDirectory(prefix="ideobatch-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in (*CHROMIUM_ARGS, f"--user-data-dir={profile}"):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def wait_until(driver: WebDriver, condition: Callable[[WebDriver], T], timeout_s: float = WAIT_S) -> T:
    """Wait until ``condition(driver)`` is truthy (checked every 50 ms); its value, or TimeoutException."""
    return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(condition)
