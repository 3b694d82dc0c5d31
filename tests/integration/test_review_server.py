"""`ideobatch serve` over HTTP (in-process, real sockets): pages, filters, files, token, actions, metrics."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from pipeline import retrying
from pipeline.cli import main
from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.ledger.repository import Ledger
from pipeline.reporting import status_summary
from pipeline.review.app import create_app
from pipeline.review.security import check_bind
from pipeline.review.state import ReviewOptions
from tests.integration.conftest import API_KEY
from tests.review_data import IMAGES, MANIFEST, UNSAFE_WORD, produce

CARD = re.compile(r'<figure class="card[^"]*"[^>]*data-image="(\d+)"')


@dataclass(frozen=True)
class Produced:
    folder: Path
    ledger: Path


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> Produced:
    """The review run, once for the module (tests that write use a copy of its ledger)."""
    folder = tmp_path_factory.mktemp("review")
    retrying.set_wait_scale(0)

    async def go() -> None:
        async with FakeServer(FaultConfig(api_key=API_KEY, seed=5, unsafe_word=UNSAFE_WORD)) as server:
            code, summary = await produce(folder, server)
            assert code == 1, summary

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRAZYROUTER_API_KEY", API_KEY)
        asyncio.run(go())
    return Produced(folder, folder / "ledger.db")


Client = Callable[..., Awaitable[TestClient[object, object]]]


@pytest.fixture
async def serve(produced: Produced, tmp_path: Path) -> AsyncIterator[Client]:
    """Start review apps on copies of the ledger; ``await serve(allow_actions=..., token=...)``."""
    opened: list[tuple[Ledger, TestClient[object, object]]] = []

    async def start(**options: object) -> TestClient[object, object]:
        copy = tmp_path / f"ledger-{len(opened)}.db"
        shutil.copy(produced.ledger, copy)
        url = f"sqlite:///{copy}"
        ledger = await Ledger.open(url)
        settings = ReviewOptions(ledger_url=url, thumbs_dir=str(tmp_path / "thumbs"), **options)  # type: ignore[arg-type]
        client: TestClient[object, object] = TestClient(TestServer(create_app(ledger, settings)))
        await client.start_server()
        opened.append((ledger, client))
        return client

    yield start
    for ledger, client in opened:
        await client.close()
        await ledger.close()


async def text_of(client: TestClient[object, object], path: str, status: int = 200) -> str:
    response = await client.get(path)
    body = await response.text()
    assert response.status == status, body
    return body


async def raw_status(client: TestClient[object, object], path: str, host: str = "127.0.0.1") -> int:
    """The status of a GET sent byte for byte (no client normalizes ``..`` or escapes away)."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


async def test_overview_shows_each_manifest_with_progress_spend_and_failures(serve: Client) -> None:
    """The overview page, its polled fragment and its JSON say 8 of 8 jobs done, $0.53, 1 unsafe."""
    client = await serve()
    page = await text_of(client, "/")
    assert 'data-manifest="review" data-done="8" data-total="8"' in page
    assert "$0.53" in page  # 4 × $0.08 + $0.05 + 2 remixes × $0.08
    assert "unsafe 1" in page
    assert 'src="/static/review.js"' in page
    fragment = await text_of(client, "/live")
    assert 'data-manifest="review"' in fragment
    assert "<html" not in fragment
    data = await (await client.get("/api/overview")).json()
    assert data["manifests"][0]["done"] == 8
    assert data["manifests"][0]["failures"] == [["unsafe", 1]]


async def test_gallery_filters_on_a_matrix_value_and_shows_what_differs(serve: Client) -> None:
    """Cards name the varying request fields; filtering on style_type=ANIME keeps exactly its 2 images."""
    client = await serve()
    everything = await text_of(client, "/m/1")
    assert len(CARD.findall(everything)) == IMAGES
    assert 'name="f.style_type"' in everything
    assert '<option value="&#34;ANIME&#34;">ANIME</option>' in everything
    assert '<option value="null">(not set)</option>' in everything
    assert everything.count('data-field="style_type"') == 4
    assert "↳ a red fox" in everything  # the prompt as the API rewrote it
    assert "id SKU-7" in everything
    anime = await text_of(client, '/m/1?f.style_type="ANIME"')
    assert len(CARD.findall(anime)) == 2
    assert anime.count('data-field="style_type" data-value="ANIME"') == 2
    assert "2 image(s)" in anime
    wolf = await text_of(client, "/m/1?prompt=WOLF&op=generate")
    assert len(CARD.findall(wolf)) == 1
    odd = await text_of(client, "/m/1?seed=many&pick=maybe&cost=NaN&f.seed=NaN&f.model=1e999")
    assert "seed: &#39;many&#39; is not a whole number" in odd
    assert "cost: &#39;NaN&#39; is not an amount in USD" in odd
    assert len(CARD.findall(odd)) == 0  # no request has the text "NaN" as its seed
    for path, status in [
        (f"/m/1?seed={'9' * 30}", 200),
        ("/m/1?after=1e3", 400),
        (f"/m/1?before={'9' * 30}", 400),
        (f"/m/{'9' * 30}", 404),
        ("/m/١", 404),
        (f"/m/1/images/{'9' * 30}", 404),
        ("/thumbs/1?size=²", 404),
        ("/sources/x", 404),
    ]:
        assert (await client.get(path)).status == status, path


async def test_detail_shows_a_catalog_source_beside_the_result(serve: Client, produced: Produced) -> None:
    """A catalog remix's detail: its source preview (JPEG of the file) beside the result image."""
    client = await serve()
    page = await text_of(client, "/m/1?id=SKU-7")
    (image_id,) = CARD.findall(page)
    detail = await text_of(client, f"/m/1/images/{image_id}")
    source = re.search(r'id="source-image" src="([^"]+)"', detail)
    result = re.search(r'id="result-image" src="([^"]+)"', detail)
    assert source is not None
    assert result is not None
    assert result.group(1).startswith("/files/1/remix/")
    preview = await client.get(source.group(1))
    assert preview.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(await preview.read())).size == (48, 32)
    full = await client.get(result.group(1))
    assert full.headers["Content-Type"] == "image/png"
    thumb = await client.get(f"/thumbs/{image_id}")
    assert Image.open(io.BytesIO(await thumb.read())).format == "JPEG"
    # a source whose bytes are no longer the ones planned is not shown
    fresh = source.group(1).replace("size=1024", "size=256")
    shoe = produced.folder / "catalog" / "shoe.png"
    original = shoe.read_bytes()
    try:
        Image.new("RGB", (48, 32), (0, 0, 0)).save(shoe)
        assert (await client.get(fresh)).status == 404
    finally:
        shoe.write_bytes(original)


async def test_no_file_outside_the_output_folder_is_served(serve: Client, produced: Produced) -> None:
    """``..``, encoded dots and slashes, symlinks out of the folder and non-image files are all 404."""
    client = await serve()
    out = produced.folder / "out"
    image = next((out / "generate").glob("*.png")).name
    assert await raw_status(client, f"/files/1/generate/{image}") == 200
    (out / "notes.txt").write_text("not an image")
    (out / "escape.png").unlink(missing_ok=True)
    (out / "escape.png").symlink_to(produced.folder / "catalog" / "shoe.png")
    (out / "outside").unlink(missing_ok=True)
    (out / "outside").symlink_to(produced.folder / "catalog")
    (produced.folder / "secret.png").write_bytes((out / "generate" / image).read_bytes())
    refused = [
        "/files/1/../secret.png",
        "/files/1/generate/../../secret.png",
        "/files/1/%2e%2e/secret.png",
        "/files/1/generate%2f..%2f..%2fsecret.png",
        "/files/1/generate%2F..%2F..%2Fsecret.png",
        "/files/1/..%5csecret.png",
        "/files/1/escape.png",
        "/files/1/outside/shoe.png",
        "/files/1/notes.txt",
        "/files/1/./generate/" + image,
        "/files/1//generate/" + image,
        "/files/2/generate/" + image,
        "/files/x/generate/" + image,
    ]
    assert {path: await raw_status(client, path) for path in refused} == dict.fromkeys(refused, 404)


async def test_a_token_is_asked_of_every_request(serve: Client) -> None:
    """With --token: 401 without it; header, bearer or the cookie set by ?token= let a request in."""
    token = "s3cret-review-token-0123"
    client = await serve(token=token)
    assert (await client.get("/")).status == 401
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/", headers={"Authorization": f"Bearer {token}"})).status == 200
    assert (await client.get("/", headers={"X-Ideobatch-Token": token})).status == 200
    assert (await client.get("/?token=wrong")).status == 401
    landing = await client.get(f"/m/1?token={token}&op=generate", allow_redirects=False)
    assert landing.status == 303
    assert landing.headers["Location"] == "/m/1?op=generate"
    assert "HttpOnly" in landing.headers["Set-Cookie"]
    assert (await client.get("/m/1?op=generate")).status == 200  # the cookie jar sends it


async def test_only_local_host_names_are_answered(serve: Client) -> None:
    """Bound to 127.0.0.1, a request naming another host (DNS rebinding) is refused."""
    client = await serve()
    assert await raw_status(client, "/", host="localhost:8765") == 200
    assert await raw_status(client, "/", host="evil.example:8765") == 421


async def test_actions_need_allow_actions_and_the_pages_header(serve: Client) -> None:
    """Read-only refuses a pick (403); with --allow-actions only the page's own request is taken."""
    body = json.dumps({"verdict": "picked"})
    header = {"X-Ideobatch-Action": "1"}
    reader = await serve()
    refused = await reader.post("/api/images/1/pick", data=body, headers=header)
    assert refused.status == 403
    assert "--allow-actions" in await refused.text()
    writer = await serve(allow_actions=True)
    assert (await writer.post("/api/images/1/pick", data=body)).status == 403
    other_site = {**header, "Origin": "http://evil.example"}
    assert (await writer.post("/api/images/1/pick", data=body, headers=other_site)).status == 403
    picked = await writer.post("/api/images/1/pick", data=body, headers=header)
    assert await picked.json() == {"image_id": 1, "verdict": "picked"}
    bad = await writer.post("/api/images/1/pick", data='{"verdict": "maybe"}', headers=header)
    assert bad.status == 400
    assert (await writer.post("/api/images/999/pick", data=body, headers=header)).status == 404
    assert 'data-verdict="picked"' in await text_of(writer, "/m/1?pick=picked")


async def test_retry_these_puts_failed_jobs_back_like_retry_reason(serve: Client) -> None:
    """POST /m/1/retry {reason: unsafe} resets the failed job (with --allow-actions), 403 without."""
    header = {"X-Ideobatch-Action": "1"}
    body = json.dumps({"reason": "unsafe"})
    assert (await (await serve()).post("/m/1/retry", data=body, headers=header)).status == 403
    client = await serve(allow_actions=True)
    page = await text_of(client, "/m/1/failures")
    assert 'data-reason="unsafe" data-count="1"' in page
    assert "a forbidden fox" in page
    answer = await client.post("/m/1/retry", data=body, headers=header)
    assert await answer.json() == {"manifest_id": 1, "reason": "unsafe", "retried": 1}
    data = await (await client.get("/api/overview")).json()
    assert data["manifests"][0]["jobs"]["pending"] == 1
    assert "No job of review has failed" in await text_of(client, "/m/1/failures")


async def test_metrics_agree_with_status(serve: Client, produced: Produced) -> None:
    """/metrics in the Prometheus format: jobs, images, spend, failures, requests, latency per manifest."""
    client = await serve()
    response = await client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(await response.text())
        for s in family.samples
    }
    status = await status_summary(f"sqlite:///{produced.ledger}", MANIFEST)
    label = (("manifest", MANIFEST),)
    for state, count in status["jobs"].items():
        assert samples[("ideobatch_jobs", (*label, ("state", state)))] == count
    assert samples[("ideobatch_images", (*label, ("state", "downloaded")))] == status["images"]["downloaded"]
    assert samples[("ideobatch_spend_usd_total", label)] == pytest.approx(status["spend_usd"])
    assert samples[("ideobatch_failed_jobs", (*label, ("reason", "unsafe")))] == 1
    assert samples[("ideobatch_in_doubt_total", label)] == status["in_doubt"]
    assert samples[("ideobatch_requests_total", (*label, ("status", "422")))] == 1
    assert samples[("ideobatch_request_duration_seconds_count", label)] == 8


def test_serve_refuses_to_listen_beyond_this_machine_without_a_token(tmp_path: Path) -> None:
    """`serve --host 0.0.0.0` without --token exits 2 naming the risk; a missing ledger is exit 5."""
    result = CliRunner().invoke(
        main, ["serve", "--ledger", f"sqlite:///{tmp_path}/l.db", "--host", "0.0.0.0"]
    )
    assert result.exit_code == 2
    assert "without --token" in result.output
    assert not (tmp_path / "l.db").exists()
    missing = CliRunner().invoke(main, ["serve", "--ledger", f"sqlite:///{tmp_path}/l.db"])
    assert missing.exit_code == 5
    assert "there is no ledger at" in missing.output
    assert not (tmp_path / "l.db").exists()
    assert check_bind("127.0.0.1", None) is None
    assert check_bind("::1", None) is None
    assert check_bind("localhost", None) is None
    assert check_bind("0.0.0.0", "a-long-enough-token-1") is None
    assert "at least 16" in (check_bind("0.0.0.0", "short") or "")
    assert "printable ASCII" in (check_bind("0.0.0.0", "a-long-enough-token\n") or "")
    assert check_bind("192.168.1.5", None) is not None
