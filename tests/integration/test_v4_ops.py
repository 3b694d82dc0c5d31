"""Every Ideogram 4.0 op end to end over real sockets, in both dialects, with local files and URLs.

One manifest per dialect, run once for the module: v4-generate from a text
prompt and from a JSON prompt; v4-describe of a local file and of a URL, then
v4-generate from each described ``json_prompt`` with its ``style_description``
overridden, and v4-remix from each ``{description}``; v4-remix and
v4-image-to-image with a local file and a URL. The tests read what the fake
server logged for every call (path, fields by the API's names, parts, file
hashes), what it billed, and what the ledger recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipeline import retrying
from pipeline.cli import main
from pipeline.fake_server import FakeServer, FaultConfig, LogEntry
from pipeline.fake_server.images import render_sample
from pipeline.fake_server.testing import sample_url
from pipeline.structured import merge_patch
from tests.integration.conftest import API_KEY, run

JSON_PROMPT = {
    "high_level_description": "A poster of a lighthouse at dusk with the word HARBOUR",
    "compositional_deconstruction": {
        "background": "A dark sea under an orange sky",
        "elements": [
            {"type": "obj", "bbox": [200, 380, 900, 620], "desc": "A white lighthouse"},
            {"type": "text", "bbox": [40, 100, 160, 900], "text": "HARBOUR", "desc": "bold serif title"},
        ],
    },
}
OVERRIDES = {"style_description": {"art_style": "watercolor illustration", "medium": "watercolor on paper"}}
#: text TURBO, JSON QUALITY, 2 describes, 2 chained generates at TURBO, 2 chained remixes, 2 remixes
#: and 2 image-to-image at DEFAULT
EXPECTED_USD = 0.03 + 0.10 + 2 * 0.01 + 2 * 0.03 + 2 * 0.06 + 2 * 0.06 + 2 * 0.06
V4 = ("v4-generate", "v4-remix", "v4-image-to-image", "v4-describe")


@dataclass(frozen=True)
class Produced:
    """One run's summary, the fake server's log, the files' hashes and the ledger's folder."""

    kind: str
    summary: dict[str, Any]
    log: list[LogEntry]
    sha: dict[str, str]
    folder: Path

    def calls(self, op: str) -> list[LogEntry]:
        """The logged calls of ``op``."""
        return [entry for entry in self.log if entry.op == op]

    def descriptions(self) -> list[dict[str, Any]]:
        """The JSON prompts the ledger recorded as descriptions."""
        with sqlite3.connect(self.folder / "ledger.db") as conn:
            return [json.loads(text) for (text,) in conn.execute("SELECT text FROM descriptions")]


def manifest_text(kind: str, local: str, url: str) -> str:
    """Every V4 op; ``local`` is a file beside the manifest, ``url`` the fake server's sample."""
    return f"""version: 1
name: v4
provider:
  kind: {kind}
jobs:
  - op: v4-generate
    prompt: a lighthouse poster
    rendering_speed: TURBO
    resolution: 1280x720
    seed: 7
  - op: v4-generate
    json_prompt: {json.dumps(JSON_PROMPT)}
    rendering_speed: QUALITY
  - op: v4-describe
    images: ["{local}", "{url}"]
    include_style_descriptions: true
    then:
      - op: v4-generate
        json_prompt: "{{json_prompt}}"
        json_prompt_overrides: {json.dumps(OVERRIDES)}
        rendering_speed: TURBO
      - op: v4-remix
        prompt: "{{description}}, as a linocut"
  - op: v4-remix
    prompt: the same product in blue
    images: ["{local}", "{url}"]
    image_weight: 40
  - op: v4-image-to-image
    prompt: in pencil
    images: ["{local}"]
    resolution: 1024x960
  - op: v4-image-to-image
    images: ["{url}"]
"""


@pytest.fixture(scope="module", params=["ideogram", "crazyrouter"])
def produced(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Produced]:
    """The V4 manifest run once per dialect against one fake server."""
    kind = str(request.param)
    folder = tmp_path_factory.mktemp(f"v4-{kind}")
    local = render_sample("mug", 48, 32, "png")
    (folder / "mug.png").write_bytes(local)
    remote = render_sample("vase", 40, 40, "jpeg")
    sha = {"local": hashlib.sha256(local).hexdigest(), "url": hashlib.sha256(remote).hexdigest()}
    retrying.set_wait_scale(0)

    async def go() -> tuple[dict[str, Any], list[LogEntry]]:
        async with FakeServer(FaultConfig(api_key=API_KEY, seed=4)) as server:
            manifest = folder / "v4.yaml"
            url = sample_url(server.url, "vase", 40, 40, "jpg")
            manifest.write_text(manifest_text(kind, "mug.png", url))
            _code, summary = await run(manifest, server, folder)
            return summary, list(server.state.log)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRAZYROUTER_API_KEY", API_KEY)
        patch.setenv("IDEOGRAM_API_KEY", API_KEY)
        summary, log = asyncio.run(go())
    yield Produced(kind, summary, log, sha, folder)
    retrying.set_wait_scale(1)


def test_every_v4_job_succeeds_at_its_paths_and_prices(produced: Produced) -> None:
    """12 jobs, each billed once at its op's path in the dialect; spend is the V4 tiers' sum."""
    assert produced.summary["jobs"]["succeeded"] == 12, produced.summary
    assert produced.summary["jobs"]["failed"] == 0
    prefix = "/ideogram" if produced.kind == "crazyrouter" else ""
    paths = {entry.op: {e.path for e in produced.calls(entry.op)} for entry in produced.log}
    assert paths == {op: {f"{prefix}/v1/ideogram-{op.replace('v4-', 'v4/')}"} for op in V4}
    assert all(entry.status == 200 and entry.billed for entry in produced.log)
    assert produced.summary["spend_usd"] == pytest.approx(EXPECTED_USD)
    assert sum(float(entry.cost) for entry in produced.log) == pytest.approx(EXPECTED_USD)


def test_generate_sends_prompt_as_text_prompt_or_a_json_prompt(produced: Produced) -> None:
    """A text prompt goes as `text_prompt` (JSON body); a JSON prompt goes as the object, alone."""
    [text] = [e for e in produced.calls("v4-generate") if e.fields and "text_prompt" in e.fields]
    assert text.encoding == "json"
    assert text.fields == {
        "text_prompt": "a lighthouse poster",
        "rendering_speed": "TURBO",
        "resolution": "1280x720",
        "seed": 7,
    }
    [structured] = [
        e for e in produced.calls("v4-generate") if (e.fields or {}).get("rendering_speed") == "QUALITY"
    ]
    assert structured.fields == {"json_prompt": JSON_PROMPT, "rendering_speed": "QUALITY"}
    assert float(structured.cost) == pytest.approx(0.10)


def test_describe_then_generate_sends_the_described_object_with_its_override(produced: Produced) -> None:
    """Each chained generate sends its describe's json_prompt, style_description patched and the rest kept."""
    described = produced.descriptions()
    assert len(described) == 2
    assert all(d["style_description"]["art_style"] == "photorealistic" for d in described)
    describes = produced.calls("v4-describe")
    assert sorted(e.files["image_file"][0] for e in describes) == sorted(produced.sha.values())
    assert all(e.fields == {"include_style_descriptions": True} for e in describes)
    chained = [
        e.fields["json_prompt"]
        for e in produced.calls("v4-generate")
        if e.fields and "json_prompt" in e.fields
    ]
    sent = [p for p in chained if p != JSON_PROMPT]
    expected = [merge_patch(d, OVERRIDES) for d in described]
    assert sorted(sent, key=json.dumps) == sorted(expected, key=json.dumps)
    for prompt, source in zip(sorted(sent, key=json.dumps), sorted(described, key=json.dumps), strict=True):
        assert prompt["style_description"]["art_style"] == "watercolor illustration"
        assert prompt["style_description"]["lighting"] == source["style_description"]["lighting"]
        assert prompt["compositional_deconstruction"] == source["compositional_deconstruction"]


def test_description_is_the_high_level_description_and_the_parents_source(produced: Produced) -> None:
    """`{description}` after v4-describe is the object's high_level_description; the remix gets its image."""
    summaries = {d["high_level_description"] for d in produced.descriptions()}
    chained = [e for e in produced.calls("v4-remix") if e.fields and "linocut" in e.fields["text_prompt"]]
    assert {e.fields["text_prompt"] for e in chained if e.fields} == {f"{s}, as a linocut" for s in summaries}
    assert sorted(e.files["image"][0] for e in chained) == sorted(produced.sha.values())


def test_remix_and_image_to_image_upload_local_files_and_urls(produced: Produced) -> None:
    """Both sources arrive as `image` parts; remix says `text_prompt`, image-to-image `prompt`."""
    remixes = [e for e in produced.calls("v4-remix") if e.fields and e.fields.get("image_weight") == 40]
    assert sorted(e.files["image"][0] for e in remixes) == sorted(produced.sha.values())
    assert all(
        e.encoding == "multipart" and set(e.parts) == {"text_prompt", "image_weight", "image"}
        for e in remixes
    )
    by_prompt = {(e.fields or {}).get("prompt"): e for e in produced.calls("v4-image-to-image")}
    assert by_prompt["in pencil"].files == {"image": (produced.sha["local"],)}
    assert by_prompt["in pencil"].fields == {"prompt": "in pencil", "resolution": "1024x960"}
    assert by_prompt[None].files == {"image": (produced.sha["url"],)}


def test_the_described_json_prompt_is_exported_as_json_text(produced: Produced) -> None:
    """`export --kind descriptions` gives each json_prompt as JSON text, as the ledger holds it."""
    args = ["export", "v4", "--ledger", f"sqlite:///{produced.folder}/ledger.db", "--format", "jsonl"]
    result = CliRunner().invoke(main, [*args, "--kind", "descriptions"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [row["op"] for row in rows] == ["v4-describe", "v4-describe"]
    assert sorted((json.loads(row["text"]) for row in rows), key=json.dumps) == sorted(
        produced.descriptions(), key=json.dumps
    )
