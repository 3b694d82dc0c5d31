"""`ideobatch serve` in a real headless Chromium: live overview, filters, keyboard picks, detail, retry.

One module-wide setup (per test process: pytest-xdist may share the module's
tests between its two): a fake server (in a thread), the review run recorded in
a SQLite ledger, two `ideobatch serve` processes on it (read-only, and with
--allow-actions) and one browser. Every wait is on a condition of the page or
of the ledger, never a sleep.
"""

from __future__ import annotations

import asyncio
import json
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from pipeline import retrying
from pipeline.fake_server import FakeServer, FaultConfig
from tests.acceptance.conftest import API_KEY, command_env
from tests.browser import chromium, require_chromium, wait_until
from tests.integration.conftest import write_manifest
from tests.review_data import UNSAFE_WORD, produce

T = TypeVar("T")
IDEOBATCH = (sys.executable, "-m", "pipeline.cli")
#: the spec's 2 s for a change in the ledger to reach the overview, with slack for a loaded CI machine
LIVE_UPDATE_S = 4.0


class ThreadedFakeServer:
    """A fake server on an event loop of its own thread (the browser tests are synchronous)."""

    def __init__(self, config: FaultConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-server", daemon=True)
        self.server = FakeServer(config)

    def _run(self, work: Coroutine[Any, Any, T], timeout_s: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout_s)

    def call(self, work: Callable[[], T]) -> T:
        """Run ``work()`` on the server's loop."""

        async def go() -> T:
            return work()

        return self._run(go())

    def __enter__(self) -> ThreadedFakeServer:
        self.thread.start()
        self._run(self.server.start())
        return self

    def __exit__(self, *_exc: object) -> None:
        self.call(self.server.state.release)
        self._run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Served:
    """`ideobatch serve` started in a subprocess on a free port (`wait_ready` for its address)."""

    def __init__(self, ledger: str, folder: Path, *extra: str) -> None:
        self.process = subprocess.Popen(
            [
                *IDEOBATCH,
                "serve",
                "--ledger",
                ledger,
                "--port",
                "0",
                "--thumbs",
                str(folder / "thumbs"),
                *extra,
            ],
            cwd=folder,
            env=command_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = ""

    def wait_ready(self) -> Served:
        """Wait for the address the server prints once it listens."""
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        assert ready, "ideobatch serve did not print its address"
        self.url = self.process.stdout.readline().strip().rstrip("/")
        assert self.url.startswith("http://127.0.0.1:"), self.process.stderr
        return self

    def stop(self) -> None:
        """SIGTERM, then wait for the server to close."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(15) == 0
        for stream in (self.process.stdout, self.process.stderr):
            assert stream is not None
            stream.close()


@dataclass
class Site:
    folder: Path
    ledger: str
    api: ThreadedFakeServer
    reader: Served
    writer: Served
    browser: WebDriver

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Read the ledger directly (SQLite's WAL lets a reader in while the servers and runs write)."""
        with sqlite3.connect(self.folder / "ledger.db", timeout=10) as conn:
            return conn.execute(sql).fetchall()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The review run in a ledger, served twice (read-only, and with --allow-actions), and a browser."""
    require_chromium()
    folder = tmp_path_factory.mktemp("review-browser")
    retrying.set_wait_scale(0)
    config = FaultConfig(api_key=API_KEY, seed=11, unsafe_word=UNSAFE_WORD)
    with ThreadedFakeServer(config) as api, pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRAZYROUTER_API_KEY", API_KEY)
        code, summary = asyncio.run(produce(folder, api.server))
        assert code == 1, summary
        ledger = f"sqlite:///{folder}/ledger.db"
        reader, writer = Served(ledger, folder), Served(ledger, folder, "--allow-actions")
        reader.wait_ready()
        writer.wait_ready()
        try:
            with chromium() as browser:
                yield Site(folder, ledger, api, reader, writer, browser)
        finally:
            reader.stop()
            writer.stop()


def cards(browser: WebDriver) -> list[Any]:
    return list(browser.find_elements(By.CSS_SELECTOR, "#grid .card"))


def press(browser: WebDriver, *keys: str) -> None:
    """Type keys into the page (what has the focus gets them)."""
    ActionChains(browser).send_keys(*keys).perform()


def notice_text(browser: WebDriver) -> str:
    """The message the page shows in its notice, once it shows one."""
    notice = browser.find_element(By.ID, "notice")
    wait_until(browser, lambda _b: notice.is_displayed())
    return str(notice.text)


def manifest_state(browser: WebDriver, name: str) -> dict[str, str] | None:
    """The data attributes of a manifest's overview entry, or None while it is not shown.

    Read in one script: the page replaces the entry every second, so an element
    found by one WebDriver call may be gone by the next.
    """
    found: dict[str, str] | None = browser.execute_script(
        "const a = document.querySelector(`article.manifest[data-manifest='${arguments[0]}']`);"
        "return a && {done: a.dataset.done, total: a.dataset.total, 'in-flight': a.dataset.inFlight};",
        name,
    )
    return found


def worker_text(browser: WebDriver, in_flight: int) -> str | None:
    """The overview's line of a worker with ``in_flight`` images in flight, or None."""
    found: str | None = browser.execute_script(
        "const w = document.querySelector(`tr.worker[data-in-flight='${arguments[0]}']`);"
        "return w && w.textContent;",
        str(in_flight),
    )
    return found


def test_overview_updates_while_a_run_goes_on_in_another_process(site: Site) -> None:
    """A run started after the page loaded appears with its images in flight, then finishes, unreloaded."""
    browser = site.browser
    browser.get(site.reader.url + "/")
    browser.execute_script("window.loadedOnce = true")
    prompts = json.dumps([f"a live heron {i}" for i in range(6)])
    manifest = write_manifest(
        site.folder,
        f"- op: generate\n  model: V_2_TURBO\n  prompts: {prompts}\n",
        name="live",
        extra="limits:\n  concurrency: 4\n",
    )
    site.api.call(site.api.server.state.hold)
    out = ("--out", str(site.folder / "live-out"))
    api = ("--base-url", site.api.server.url)
    run = subprocess.Popen(
        [*IDEOBATCH, "run", str(manifest), "--ledger", site.ledger, "--quiet", *out, *api],
        cwd=site.folder,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        shown = wait_until(
            browser,
            lambda b: (
                (state := manifest_state(b, "live")) is not None and state["in-flight"] == "4" and state
            ),
        )
        assert shown == {"done": "0", "total": "6", "in-flight": "4"}
        assert "a live heron" in wait_until(browser, lambda b: worker_text(b, 4))
    finally:
        site.api.call(site.api.server.state.release)
    _out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    finished = time.monotonic()
    wait_until(
        browser,
        lambda b: manifest_state(b, "live") == {"done": "6", "total": "6", "in-flight": "0"},
        timeout_s=LIVE_UPDATE_S,
    )
    assert time.monotonic() - finished < LIVE_UPDATE_S
    assert browser.execute_script("return window.loadedOnce") is True
    assert "No run or worker is alive" in browser.find_element(By.ID, "live").text


def test_filtering_by_a_matrix_value_shows_exactly_the_matching_cards(site: Site) -> None:
    """Choosing style_type ANIME shows the ledger's ANIME images, each card saying so, and no other."""
    browser = site.browser
    browser.get(site.reader.url + "/m/1")
    assert len(cards(browser)) == 7
    Select(browser.find_element(By.ID, "f-style_type")).select_by_visible_text("ANIME")
    wait_until(browser, lambda b: "f.style_type" in b.current_url and len(cards(b)) == 2)
    expected = site.query(
        "SELECT images.id FROM images JOIN jobs ON jobs.id = images.job_id "
        "WHERE json_extract(jobs.request, '$.style_type') = 'ANIME' ORDER BY images.id"
    )
    shown = cards(browser)
    assert [int(card.get_attribute("data-image")) for card in shown] == [row[0] for row in expected]
    for card in shown:
        chip = card.find_element(By.CSS_SELECTOR, 'li[data-field="style_type"]')
        assert chip.text == "style_type ANIME"
    assert browser.find_element(By.ID, "shown").text == "2 image(s)"


def test_picking_with_the_keyboard_persists_across_a_reload(site: Site) -> None:
    """→ p → x picks the first card and rejects the second; a reload (and the ledger) keeps both."""
    browser = site.browser
    browser.get(site.writer.url + "/m/1?op=generate")
    first, second = cards(browser)[:2]
    press(browser, Keys.ARROW_RIGHT, "p", Keys.ARROW_RIGHT, "x")
    wait_until(
        browser,
        lambda b: (
            (first.get_attribute("data-verdict"), second.get_attribute("data-verdict"))
            == ("picked", "rejected")
        ),
    )
    browser.refresh()
    first, second = cards(browser)[:2]
    assert "picked" in (first.get_attribute("class") or "").split()
    assert "rejected" in (second.get_attribute("class") or "").split()
    ids = [int(first.get_attribute("data-image") or 0), int(second.get_attribute("data-image") or 0)]
    assert site.query(f"SELECT image_id, verdict FROM picks WHERE image_id IN ({ids[0]}, {ids[1]})") == [
        (ids[0], "picked"),
        (ids[1], "rejected"),
    ]
    # read-only: the same keys are refused, and say why
    browser.get(site.reader.url + "/m/1?op=generate")
    third = cards(browser)[2]
    press(browser, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, "p")
    assert "--allow-actions" in notice_text(browser)
    assert third.get_attribute("data-verdict") == ""


def test_a_remix_detail_shows_source_and_result(site: Site) -> None:
    """Opening a catalog remix shows its source image beside its result; a chained one names its parent."""
    browser = site.browser
    browser.get(site.reader.url + "/m/1?id=SKU-7")
    (card,) = cards(browser)
    card.find_element(By.CSS_SELECTOR, "a.pic").click()
    wait_until(browser, lambda b: "/images/" in b.current_url)

    def loaded(element_id: str) -> int:
        script = f"const i = document.getElementById('{element_id}'); return i.complete ? i.naturalWidth : 0"
        return int(browser.execute_script(script))

    assert wait_until(browser, lambda b: loaded("source-image") and loaded("result-image"))
    assert loaded("source-image") == 48  # the catalog file, 48 × 32
    assert loaded("result-image") > 0
    assert "SKU-7" in browser.find_element(By.CSS_SELECTOR, "table.fields").text
    browser.get(site.reader.url + "/m/1?op=remix&prompt=snow")
    cards(browser)[0].find_element(By.CSS_SELECTOR, "a.pic").click()
    wait_until(browser, lambda b: loaded("source-image") and loaded("result-image"))
    parent = browser.find_element(By.CSS_SELECTOR, "section.related .card")
    assert "a grey wolf" in parent.text


def test_retry_these_puts_jobs_back_with_allow_actions_and_is_refused_without(site: Site) -> None:
    """Read-only: "retry these" is refused and the job stays failed; with --allow-actions it is pending."""
    browser = site.browser
    failed = "SELECT state FROM jobs WHERE json_extract(request, '$.prompt') = 'a forbidden fox'"
    browser.get(site.reader.url + "/m/1/failures")
    browser.find_element(By.CSS_SELECTOR, 'button[data-retry="unsafe"]').click()
    assert "read-only" in notice_text(browser)
    assert site.query(failed) == [("failed",)]
    browser.get(site.writer.url + "/m/1/failures")
    button = browser.find_element(By.CSS_SELECTOR, 'button[data-retry="unsafe"]')
    button.click()
    wait_until(browser, lambda b: button.text == "1 put back to pending")
    assert site.query(failed) == [("pending",)]
