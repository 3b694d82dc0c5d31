"""Bad Ideogram 4.0 inputs: `ideobatch run` exits 2 with `file:line: field: message`, and sends nothing."""

from __future__ import annotations

import asyncio
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import main
from pipeline.fake_server import FakeServer, FaultConfig
from tests.integration.conftest import API_KEY

HEAD = "version: 1\nname: bad\nprovider:\n  kind: ideogram\n"
#: a valid JSON prompt, as YAML flow text
PROMPT = "{high_level_description: a mug, compositional_deconstruction: {background: white, elements: []}}"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    """One fake server for every case, on a thread of its own (the command runs in the test's)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-server-v4", daemon=True)
    thread.start()
    fake = FakeServer(FaultConfig(api_key=API_KEY, seed=2))
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(30)
    yield fake
    asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)
    loop.close()


# (case id, jobs/defaults YAML after the head, expected "line: field: message" fragment)
CASES = [
    (
        "both-prompts",
        f"jobs:\n  - op: v4-generate\n    prompt: x\n    json_prompt: {PROMPT}\n",
        ":8: jobs[0].json_prompt: give `prompt` or `json_prompt`, not both",
    ),
    (
        "neither-prompt",
        "jobs:\n  - op: v4-generate\n    rendering_speed: TURBO\n",
        ":6: jobs[0]: v4-generate needs `prompt` or `json_prompt` (or `prompts`)",
    ),
    (
        "flash",
        "jobs:\n  - op: v4-generate\n    prompt: x\n    rendering_speed: FLASH\n",
        ":8: jobs[0].rendering_speed: FLASH is not available for Ideogram 4.0 yet: use TURBO,",
    ),
    (
        "flash-in-defaults",
        "defaults:\n  rendering_speed: FLASH\njobs:\n  - op: v4-remix\n    prompt: x\n    images: [a.png]\n",
        ":6: defaults.rendering_speed: FLASH is not available for Ideogram 4.0 yet",
    ),
    (
        "json-prompt-breaking-the-schema",
        "jobs:\n  - op: v4-generate\n    json_prompt:\n      high_level_description: x\n"
        "      compositional_deconstruction:\n        background: y\n        elements:\n"
        "          - {type: obj, bbox: [0, 0, 1200, 500], desc: z}\n",
        ":12: jobs[0].json_prompt.compositional_deconstruction.elements[0].bbox[2]: "
        "1200 is greater than the maximum of 1000",
    ),
    (
        "json-prompt-unknown-key",
        "jobs:\n  - op: v4-generate\n    json_prompt:\n      high_level_description: x\n"
        "      compositional_deconstruction: {background: y, elements: []}\n      style_descripton: {}\n",
        ":10: jobs[0].json_prompt.style_descripton: unknown key; did you mean `style_description`?",
    ),
    (
        "unknown-resolution",
        "jobs:\n  - op: v4-generate\n    prompt: x\n    resolution: 1000x1000\n",
        ":8: jobs[0].resolution: '1000x1000' is not one of 2048x2048, 1440x2880",
    ),
    (
        "generate-resolution-on-image-to-image",
        "jobs:\n  - op: v4-image-to-image\n    images: [a.png]\n    resolution: 2048x2048\n",
        ":8: jobs[0].resolution: '2048x2048' is not one of 512x512, 960x832",
    ),
    (
        "json-prompt-placeholder-after-legacy-describe",
        "jobs:\n  - op: describe\n    images: [a.png]\n    then:\n      - op: v4-generate\n"
        '        json_prompt: "{json_prompt}"\n',
        ":10: jobs[0].then[0].json_prompt: {json_prompt} is the answer of v4-describe: use it in a `then:`",
    ),
    (
        "override-of-the-wrong-type",
        "jobs:\n  - op: v4-describe\n    images: [a.png]\n    then:\n      - op: v4-generate\n"
        '        json_prompt: "{json_prompt}"\n        json_prompt_overrides:\n'
        "          style_description: watercolor\n",
        ":12: jobs[0].then[0].json_prompt_overrides.style_description: 'watercolor' is not of type 'object'",
    ),
    (
        "json-prompt-in-a-prompt-template",
        "jobs:\n  - op: v4-describe\n    images: [a.png]\n    then:\n      - op: v4-remix\n"
        '        prompt: "{json_prompt}"\n',
        ":10: jobs[0].then[0].prompt: unknown placeholder {json_prompt}; after v4-describe use",
    ),
    (
        "a-row-with-both-prompts",
        "jobs:\n  - op: v4-generate\n    prompts: rows.jsonl\n",
        "rows.jsonl:2: json_prompt: give `prompt` or `json_prompt`, not both",
    ),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_v4_inputs_exit_2_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeServer, body: str, expected: str
) -> None:
    """Each V4 field, rule and JSON prompt problem: exit 2, its line and field, no request."""
    monkeypatch.setenv("IDEOGRAM_API_KEY", API_KEY)
    Image.new("RGB", (24, 16), (40, 90, 160)).save(tmp_path / "a.png")
    (tmp_path / "rows.jsonl").write_text(
        '{"prompt": "a mug"}\n'
        '{"prompt": "a cup", "json_prompt": {"high_level_description": "a cup", '
        '"compositional_deconstruction": {"background": "white", "elements": []}}}\n'
    )
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(HEAD + textwrap.dedent(body))
    args = ["run", str(manifest), "--ledger", f"sqlite:///{tmp_path}/l.db", "--base-url", server.url]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output, result.output
    assert "Traceback" not in result.output
    assert server.state.log == []
