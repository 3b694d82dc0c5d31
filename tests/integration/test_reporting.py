"""status, export, retry and gallery on a ledger made by a real run with failures and withheld images."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from pipeline import retrying
from pipeline.cli import main
from pipeline.fake_server import FakeServer, FaultConfig
from tests.browser import chromium, require_chromium, wait_until
from tests.integration.conftest import API_KEY, run, write_manifest


@dataclass(frozen=True)
class Produced:
    folder: Path
    ledger: str
    summary: dict


JOBS = """
- op: generate
  prompts: ["a red kite", "a blue kite", "=HYPERLINK(\\"http://evil\\")", "a forbidden kite", "a blurry kite"]
  num_images: 2
- op: describe
  images: ["{url}/_assets/sample/catalog.png?w=64&h=64"]
- op: upscale
  images: {{csv: catalog.csv, column: url, id: sku}}
"""


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> Produced:
    """A real run: 5 two-image generates (unsafe, withheld, formula-like...), a describe, an upscale."""
    folder = tmp_path_factory.mktemp("reporting")
    retrying.set_wait_scale(0)

    async def produce() -> dict:
        config = FaultConfig(api_key=API_KEY, seed=3, unsafe_word="forbidden", withheld_word="blurry")
        async with FakeServer(config) as server:
            (folder / "catalog.csv").write_text(
                f"sku,url\nSKU-1,{server.url}/_assets/sample/shoe.png?w=80&h=40\n"
            )
            manifest = write_manifest(folder, JOBS.format(url=server.url), name="report")
            _code, summary = await run(manifest, server, folder)
            return summary

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRAZYROUTER_API_KEY", API_KEY)
        summary = asyncio.run(produce())
    return Produced(folder, f"sqlite:///{folder}/ledger.db", summary)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_status_json_has_the_shared_shape(produced: Produced) -> None:
    """status --json: jobs per state, images, spend, in-doubt, failures, duration — same as run --json."""
    code, out = invoke("status", "report", "--ledger", produced.ledger, "--json")
    assert code == 0
    status = json.loads(out)
    assert status["manifest"] == "report"
    assert status["jobs"] == {"pending": 0, "running": 0, "succeeded": 6, "failed": 1, "withdrawn": 0}
    assert status["images"]["downloaded"] == 7
    assert status["images"]["withheld"] == 2
    assert status["failures"] == {"unsafe": 1}
    assert status["spend_usd"] == pytest.approx(4 * 2 * 0.08 + 0.01 + 0.06)
    assert status["in_doubt"] == 0
    assert status["duration_s"] > 0
    assert set(produced.summary) >= set(status) - {"run"}
    assert status["by_op"]["generate"] == {
        "pending": 0,
        "running": 0,
        "succeeded": 4,
        "failed": 1,
        "withdrawn": 0,
    }


def test_status_text_names_failures_with_an_example(produced: Produced) -> None:
    """status for people: counts per state and op, spend, and each failure reason with its message."""
    code, out = invoke("status", "report", "--ledger", produced.ledger)
    assert code == 0
    assert "6 succeeded, 1 failed" in out.replace("0 pending, 0 running, ", "")
    assert "unsafe" in out
    assert "safety" in out
    assert "spend:  $0.71" in out


def test_export_csv_rows_and_formula_cells_are_defused(produced: Produced) -> None:
    """export csv: one row per image (descriptions apart), files match their sha256, formulas neutralised."""
    code, out = invoke("export", "report", "--ledger", produced.ledger, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    images = [r for r in rows if r["image_state"] == "downloaded"]
    assert len(images) == 7
    for row in images:
        assert hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest() == row["sha256"]
        assert int(row["width"]) > 0
    withheld = [r for r in rows if r["image_state"] == "withheld"]
    assert len(withheld) == 2
    assert all((r["path"], r["bytes"], r["width"]) == ("", "0", "0") for r in withheld)
    assert not any(r["op"] == "describe" for r in rows)
    code, out = invoke("export", "report", "--ledger", produced.ledger, "--kind", "descriptions")
    texts = list(csv.DictReader(io.StringIO(out)))
    assert texts
    assert all(r["op"] == "describe" and r["text"] for r in texts)
    assert "path" not in texts[0]
    upscale = next(r for r in rows if r["op"] == "upscale")
    assert upscale["source_id"] == "SKU-1"
    formula = [r for r in rows if "HYPERLINK" in r["prompt"]]
    assert formula
    assert all(r["prompt"].startswith("'=") for r in formula)


def test_export_jsonl_keeps_values_as_they_are(produced: Produced, tmp_path: Path) -> None:
    """export jsonl to a file: one JSON object per row, prompts unescaped, seeds as numbers."""
    target = tmp_path / "rows.jsonl"
    code, _ = invoke(
        "export", "report", "--ledger", produced.ledger, "--format", "jsonl", "--out", str(target)
    )
    assert code == 0
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(rows) == 9
    assert any(r["prompt"].startswith("=HYPERLINK") for r in rows if r["prompt"])
    assert all(isinstance(r["seed"], int) for r in rows if r["image_state"] == "downloaded")


def test_retry_puts_failed_jobs_back(produced: Produced, tmp_path: Path) -> None:
    """retry --failed says how many jobs went back to pending; --reason filters."""
    copy = tmp_path / "ledger.db"
    copy.write_bytes((produced.folder / "ledger.db").read_bytes())
    ledger = f"sqlite:///{copy}"
    assert invoke("retry", "report", "--ledger", ledger, "--failed") == (0, "1 job(s) put back to pending\n")
    _code, out = invoke("status", "report", "--ledger", ledger, "--json")
    assert json.loads(out)["jobs"]["pending"] == 1


def test_retry_of_a_reason_no_job_has_is_refused(produced: Produced, tmp_path: Path) -> None:
    """retry --reason with a typo exits 2 naming the reasons present with counts; a real one retries."""
    copy = tmp_path / "ledger.db"
    copy.write_bytes((produced.folder / "ledger.db").read_bytes())
    ledger = f"sqlite:///{copy}"
    code, out = invoke("retry", "report", "--ledger", ledger, "--reason", "unsafee")
    assert code == 2
    assert "no failed job has reason 'unsafee' (did you mean 'unsafe'?)" in out
    assert "unsafe (1)" in out
    assert "Traceback" not in out
    assert invoke("retry", "report", "--ledger", ledger, "--reason", "unsafe") == (
        0,
        "1 job(s) put back to pending\n",
    )
    code, out = invoke("retry", "report", "--ledger", ledger, "--reason", "unsafe")
    assert (code, "no job has failed" in out) == (2, True)


def test_retry_without_a_selection_is_a_usage_error(produced: Produced) -> None:
    """retry with neither --failed nor --reason exits 2 instead of guessing."""
    code, out = invoke("retry", "report", "--ledger", produced.ledger)
    assert code == 2
    assert "--failed" in out


def test_status_of_an_unknown_manifest_exits_2(produced: Produced) -> None:
    """Asking about a manifest the ledger does not have is a usage error, not a traceback."""
    code, out = invoke("status", "nope", "--ledger", produced.ledger)
    assert code == 2
    assert "no manifest 'nope'" in out


def test_gallery_file_lists_pictures_and_failures(produced: Produced, tmp_path: Path) -> None:
    """gallery: one HTML file with a figure per image, relative thumbnail links and the failed job."""
    page = tmp_path / "sheet.html"
    code, out = invoke("gallery", "report", "--ledger", produced.ledger, "--out", str(page))
    assert code == 0
    assert "9 picture(s), 1 failed job(s)" in out
    text = page.read_text()
    assert text.count("<figure") == 9
    assert "sheet_thumbs/" in text
    assert "unsafe" in text
    assert "file://" not in text


def test_gallery_renders_in_chromium_and_filters_work(produced: Produced, tmp_path: Path) -> None:
    """Headless Chromium: every thumbnail decodes, the op/state/prompt filters change what is shown."""
    require_chromium()
    page_file = tmp_path / "gallery.html"
    assert invoke("gallery", "report", "--ledger", produced.ledger, "--out", str(page_file))[0] == 0
    with chromium() as browser:
        browser.get(page_file.as_uri())
        # lazy images: load them all, then wait until each has decoded
        pictures = "Array.from(document.querySelectorAll('.card .pic img'))"
        browser.execute_script(f"for (const i of {pictures}) i.loading = 'eager'")
        wait_until(browser, lambda b: b.execute_script(f"return {pictures}.every(i => i.complete)"))
        widths = browser.execute_script(f"return {pictures}.map(i => i.naturalWidth)")
        assert len(widths) == 7, widths
        assert all(width > 0 for width in widths), widths

        def shown() -> int:
            return int(
                browser.execute_script("return document.querySelectorAll('#grid .card:not([hidden])').length")
            )

        assert shown() == 9
        Select(browser.find_element(By.ID, "op")).select_by_value("upscale")
        assert shown() == 1
        Select(browser.find_element(By.ID, "op")).select_by_value("")
        Select(browser.find_element(By.ID, "state")).select_by_value("withheld")
        assert shown() == 2
        Select(browser.find_element(By.ID, "state")).select_by_value("")
        browser.find_element(By.ID, "prompt").send_keys("red kite")
        assert shown() == 2
        assert browser.find_element(By.ID, "shown").text == "2 of 9 shown"
        browser.find_element(By.ID, "prompt").clear()
        browser.find_element(By.ID, "prompt").send_keys(" ")
        assert browser.save_screenshot(str(tmp_path / "gallery.png"))
    assert (tmp_path / "gallery.png").stat().st_size > 10_000
