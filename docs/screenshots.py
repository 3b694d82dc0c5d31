"""Make the screenshots of the README: docs/review-{overview,gallery,detail}.png and docs/gallery.png.

    python docs/screenshots.py

Runs jobs/demo.yaml against the fake server (with an unsafe prompt added),
picks and rejects a few images, then starts a second manifest whose calls the
fake server holds, so that the overview shows a run in flight; serves the
ledger and photographs the pages, and the static `ideobatch gallery` file, in
Debian's headless Chromium.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from aiohttp import web
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import retrying  # noqa: E402
from pipeline.fake_server import FakeServer, FaultConfig  # noqa: E402
from pipeline.gallery import build_gallery  # noqa: E402
from pipeline.ledger.gallery import GalleryFilter  # noqa: E402
from pipeline.ledger.repository import Ledger  # noqa: E402
from pipeline.review.app import create_app  # noqa: E402
from pipeline.review.state import ReviewOptions  # noqa: E402
from pipeline.running import RunOptions, run_manifest  # noqa: E402

KEY = "screenshot-key"
ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--hide-scrollbars",
)


def shoot(pages: list[tuple[str, Path, int]]) -> None:
    """Load each URL and save a screenshot of the given height."""
    with tempfile.TemporaryDirectory() as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for argument in (*ARGS, f"--user-data-dir={profile}"):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            for url, target, height in pages:
                driver.set_window_size(1400, height)
                driver.get(url)
                driver.execute_script("for (const i of document.images) i.loading = 'eager'")
                driver.execute_async_script(
                    "const done = arguments[0];"
                    "Promise.all(Array.from(document.images).map(i => i.decode().catch(() => 0)))"
                    ".then(() => setTimeout(done, 1200));"  # one refresh of the overview
                )
                if url.endswith("/m/1"):
                    driver.execute_script("document.querySelectorAll('#grid .card')[1].focus()")
                driver.save_screenshot(str(target))
                print(target)
        finally:
            driver.quit()


async def main() -> None:
    os.environ["CRAZYROUTER_API_KEY"] = KEY
    retrying.set_wait_scale(0)
    with tempfile.TemporaryDirectory(prefix="ideobatch-shots-") as tmp:
        folder = Path(tmp)
        shutil.copytree(ROOT / "jobs", folder / "jobs")
        demo = (folder / "jobs" / "demo.yaml").read_text()
        demo = demo.replace('      - "A bowl of ramen', '      - "A forbidden bowl of ramen')
        (folder / "jobs" / "demo.yaml").write_text(demo)
        ledger_url = f"sqlite:///{folder}/ledger.db"
        config = FaultConfig(api_key=KEY, seed=3, unsafe_word="forbidden")
        async with FakeServer(config) as server:
            await run_manifest(
                RunOptions(str(folder / "jobs" / "demo.yaml"), ledger_url, base_url=server.url, quiet=True)
            )
            ledger = await Ledger.open(ledger_url)
            for image_id, verdict in [(1, "picked"), (3, "rejected"), (4, "picked"), (6, "picked")]:
                await ledger.set_pick(image_id, verdict)
            (remix,) = (await ledger.gallery_page(1, GalleryFilter(op="remix"))).rows
            sheet, _pictures, _failed = await build_gallery(ledger_url, "demo", f"{tmp}/sheet/gallery.html")
            prompts = [f"product shot of sneaker {i}, white background" for i in range(40)]
            (folder / "nightly.yaml").write_text(
                "version: 1\nname: nightly-catalog\nprovider:\n  kind: crazyrouter\n"
                f"  base_url: {server.url}\nlimits:\n  concurrency: 6\n  budget_usd: 5\n"
                f"output:\n  dir: {folder}/nightly\njobs:\n  - op: generate\n    model: V_2_TURBO\n"
                f"    prompts: {json.dumps(prompts)}\n"
            )
            server.set_faults(latency_ms=300)
            nightly = asyncio.create_task(
                run_manifest(RunOptions(str(folder / "nightly.yaml"), ledger_url, quiet=True))
            )
            await server.state.wait_until(lambda s: s.stats()["billed"] >= 14, timeout_s=60)
            server.state.hold()
            runner = web.AppRunner(create_app(ledger, ReviewOptions(ledger_url, thumbs_dir=f"{tmp}/thumbs")))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            base = f"http://{host}:{port}"
            docs = ROOT / "docs"
            try:
                await asyncio.to_thread(
                    shoot,
                    [
                        (f"{base}/", docs / "review-overview.png", 820),
                        (f"{base}/m/1", docs / "review-gallery.png", 980),
                        (f"{base}/m/1/images/{remix.image_id}", docs / "review-detail.png", 900),
                        (sheet.as_uri(), docs / "gallery.png", 900),
                    ],
                )
            finally:
                server.state.release()
                await nightly
                await runner.cleanup()
                await ledger.close()


if __name__ == "__main__":
    asyncio.run(main())
