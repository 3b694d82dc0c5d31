"""V3 uploads: streamed from disk and checked against their planned hash; URL inputs checked when fetched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from pipeline.fake_server import FakeServer
from pipeline.fake_server.testing import sample_url
from pipeline.planning import save_plan
from pipeline.uploads import CHUNK_BYTES, SourceChanged, StreamedFile
from tests.integration.conftest import run, run_saved_plan, write_manifest


class Collector:
    """A stream writer that keeps what it is given."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def write(self, chunk: bytes) -> None:
        self.chunks.append(bytes(chunk))


def streamed(path: Path, sha: str) -> StreamedFile:
    return StreamedFile(
        path, size=path.stat().st_size, sha256=sha, filename=path.name, content_type="image/png"
    )


async def test_a_file_is_streamed_in_chunks_and_a_changed_one_never_sent_whole(tmp_path: Path) -> None:
    """An intact file goes out in chunks; one changed since planning stops before its last chunk."""
    path = tmp_path / "big.png"
    data = bytes(range(256)) * (CHUNK_BYTES // 256 * 3 + 10)
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    writer = Collector()
    await streamed(path, sha).write(writer)  # type: ignore[arg-type]
    assert b"".join(writer.chunks) == data
    assert max(len(c) for c in writer.chunks) <= CHUNK_BYTES
    upload = streamed(path, sha)
    path.write_bytes(data[:-1] + b"\x00")  # same size, other bytes
    changed = Collector()
    with pytest.raises(SourceChanged):
        await upload.write(changed)  # type: ignore[arg-type]
    assert len(b"".join(changed.chunks)) < len(data)


async def test_a_reference_that_changed_after_planning_is_not_paid_for(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """A worker finds a reference whose bytes changed since planning: source_changed, nothing billed."""
    reference = tmp_path / "style.png"
    Image.new("RGB", (20, 20), (1, 1, 1)).save(reference)
    manifest = write_manifest(
        tmp_path,
        "- op: v3-generate\n  prompt: x\n  style_reference_images: [style.png]\n",
        kind="ideogram",
    )
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    await save_plan(str(manifest), ledger, None)
    Image.new("RGB", (20, 20), (9, 9, 9)).save(reference)
    result = await run_saved_plan(manifest, ledger, fake_server)
    assert result.tally.failures == {"source_changed": 1}
    assert fake_server.state.stats()["billed"] == 0


@pytest.mark.usefixtures("api_key")
async def test_a_url_mask_of_another_size_fails_its_job_when_downloaded(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """URL inputs are checked once downloaded: a mask the size of no image fails bad_source, unsent."""
    image = sample_url(fake_server.url, "door", 40, 40)
    mask = sample_url(fake_server.url, "door-mask", 64, 40)
    manifest = write_manifest(
        tmp_path,
        f'- op: v3-edit\n  prompt: x\n  images: ["{image}"]\n  mask: "{mask}"\n',
        kind="ideogram",
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 1
    assert summary["failures"] == {"bad_source": 1}
    assert "64x40" in summary["failure_examples"]["bad_source"]
    assert fake_server.state.log == []


@pytest.mark.usefixtures("api_key")
@pytest.mark.parametrize("kind", ["ideogram", "crazyrouter"])
async def test_v3_calls_come_through_the_fake_servers_faults(
    tmp_path: Path, fake_server: FakeServer, kind: str
) -> None:
    """Split writes, 5xx, resets and truncated answers on V3 calls: every job ends, re-sends in doubt."""
    fake_server.set_faults(split_writes=1.0, rate_5xx=0.2, rate_reset=0.15, rate_truncate=0.15)
    for name, size in (("a", (40, 40)), ("b", (64, 40))):
        Image.new("RGB", size, (5, 50, 90)).save(tmp_path / f"{name}.png")
        Image.new("L", size, 0).save(tmp_path / f"{name}-mask.png")
    manifest = write_manifest(
        tmp_path,
        """
        - op: v3-edit
          prompts: [a red door, a blue door, a green door]
          images: [a.png, b.png]
          mask: "{stem}-mask.png"
        - op: v3-generate-transparent
          prompts: [a fox, an owl]
        """,
        kind=kind,
        extra="retry:\n  attempts: 20\n",
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert summary["jobs"]["succeeded"] == 8
    stats = fake_server.state.stats()
    assert stats["faults"].get("split_writes", 0) > 0
    assert stats["billed"] == 8 + stats["duplicate_billed"]
    assert stats["duplicate_billed"] <= summary["in_doubt"]
    assert summary["spend_usd"] == pytest.approx(6 * 0.06 + 2 * 0.07)
