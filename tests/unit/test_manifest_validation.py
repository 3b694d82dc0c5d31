"""`ideobatch validate`: every bad input is one `file:line: field: message` line and exit 2."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main

GOOD = """\
version: 1
name: shop
defaults:
  model: V_2
jobs:
  - op: generate
    prompt: "a red bicycle"
"""


def write(folder: Path, text: str, files: dict[str, str | bytes] | None = None) -> Path:
    for name, content in (files or {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    manifest = folder / "m.yaml"
    manifest.write_text(textwrap.dedent(text))
    return manifest


def validate(manifest: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["validate", str(manifest)])
    return result.exit_code, result.output


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64

# (case id, manifest text, extra files, expected "line: field: message" fragment)
CASES = [
    (
        "yaml-syntax",
        'version: 1\nname: shop\njobs:\n  - op: generate\n    prompt: "unclosed\n',
        {},
        ":5: YAML syntax error",
    ),
    ("unknown-key", GOOD + "colour: blue\n", {}, ":8: colour: unknown key"),
    (
        "base-url-with-password",
        GOOD + "provider:\n  base_url: https://me:hunter2@api.example.com\n",
        {},
        ":9: provider.base_url: base_url must not hold a user name or password",
    ),
    (
        "base-url-bad-port",
        GOOD + "provider:\n  base_url: http://127.0.0.1:99999\n",
        {},
        ":9: provider.base_url: base_url is not a URL that parses",
    ),
    (
        "bad-enum",
        GOOD + "    aspect_ratio: ASPECT_5_4\n",
        {},
        ":8: jobs[0].aspect_ratio: 'ASPECT_5_4' is not one of",
    ),
    (
        "out-of-range",
        GOOD + "    num_images: 9\n",
        {},
        ":8: jobs[0].num_images: Input should be less than or equal to 8",
    ),
    (
        "aspect-with-resolution",
        GOOD + "    aspect_ratio: ASPECT_1_1\n    resolution: RESOLUTION_1024_1024\n",
        {},
        ":9: jobs[0].resolution: `aspect_ratio` and `resolution` cannot be combined",
    ),
    (
        "missing-prompts-file",
        "version: 1\nname: shop\njobs:\n  - op: generate\n    prompts: nope.txt\n",
        {},
        ":5: jobs[0].prompts: nope.txt: no such file",
    ),
    (
        "missing-image-file",
        "version: 1\nname: shop\njobs:\n  - op: upscale\n    images:\n      - missing.png\n",
        {},
        ":6: jobs[0].images[0]: missing.png: no such file",
    ),
    (
        "csv-without-column",
        "version: 1\nname: shop\njobs:\n  - op: upscale\n    images: {csv: cat.csv, column: url}\n",
        {"cat.csv": "sku,link\n1,https://example.com/a.png\n"},
        ":5: jobs[0].images.column: cat.csv has no column `url`",
    ),
    (
        "empty-expansion",
        "version: 1\nname: shop\njobs:\n  - op: generate\n    prompts: empty.txt\n",
        {"empty.txt": "\n\n"},
        ":4: jobs[0]: expands to zero jobs",
    ),
    (
        "template-traversal",
        GOOD + 'output:\n  name: "../../etc/{key}.{ext}"\n',
        {},
        ":9: output.name: the name template may not contain `..`",
    ),
    (
        "negative-concurrency",
        GOOD + "limits:\n  concurrency: -3\n",
        {},
        ":9: limits.concurrency: Input should be greater than or equal to 1",
    ),
    (
        "field-the-op-does-not-take",
        "version: 1\nname: shop\njobs:\n  - op: upscale\n    images: [a.png]\n    model: V_2\n",
        {"a.png": PNG},
        ":6: jobs[0].model: not a field this op takes",
    ),
    (
        "style-type-on-v1",
        GOOD + "    model: V_1\n    style_type: ANIME\n",
        {},
        ":9: jobs[0].style_type: not available for model V_1",
    ),
    (
        "bad-matrix-value",
        GOOD + "    matrix:\n      style_type: [REALISTIC, CARTOON]\n",
        {},
        ":9: jobs[0].matrix.style_type: 'CARTOON' is not one of",
    ),
    (
        "not-an-image",
        "version: 1\nname: shop\njobs:\n  - op: describe\n    images: [notes.png]\n",
        {"notes.png": "just text"},
        ":5: jobs[0].images[0]: notes.png: not a JPEG, PNG or WebP image",
    ),
    (
        "csv-prompts-without-prompt-column",
        "version: 1\nname: shop\njobs:\n  - op: generate\n    prompts: p.csv\n",
        {"p.csv": "text\nhello\n"},
        "p.csv:1: prompt: no column named `prompt`",
    ),
    (
        "jsonl-bad-line",
        "version: 1\nname: shop\njobs:\n  - op: generate\n    prompts: p.jsonl\n",
        {"p.jsonl": '{"prompt": "ok"}\n{"prompt": \n'},
        "p.jsonl:2: not JSON",
    ),
    (
        "duplicate-key",
        "version: 1\nname: shop\nname: other\njobs:\n  - op: generate\n    prompt: x\n",
        {},
        ":3: name: duplicate key",
    ),
    (
        "bad-duration",
        GOOD + "retry:\n  initial: soon\n",
        {},
        ":9: retry.initial: a duration is a number of seconds",
    ),
    (
        "url-encoding-with-local-file",
        "version: 1\nname: shop\nprovider: {image_encoding: url}\n"
        "jobs:\n  - op: upscale\n    images: [a.png]\n",
        {"a.png": PNG},
        ":6: jobs[0].images: ",
    ),
    (
        "unknown-template-placeholder",
        "version: 1\nname: shop\njobs:\n  - op: describe\n    images: [a.png]\n    then:\n"
        "      - op: generate\n        prompt: '{caption} in oil'\n",
        {"a.png": PNG},
        ":8: jobs[0].then[0].prompt: unknown placeholder {caption}",
    ),
]


@pytest.mark.parametrize(("text", "files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_located_and_exits_2(
    tmp_path: Path, text: str, files: dict[str, str], expected: str
) -> None:
    """Each bad input exits 2 and names the file, the line and the field."""
    manifest = write(tmp_path, text, files)
    code, output = validate(manifest)
    assert code == 2, output
    assert expected in output, output
    assert "Traceback" not in output


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Three independent mistakes give three lines, in file order, in one run."""
    manifest = write(
        tmp_path,
        GOOD + "    num_images: 0\nlimits:\n  concurrency: 0\noutput:\n  name: '/abs/{key}.{ext}'\n",
    )
    code, output = validate(manifest)
    assert code == 2
    lines = [line for line in output.splitlines() if line.startswith(str(manifest))]
    assert [line.split(": ", 2)[1] for line in lines] == [
        "jobs[0].num_images",
        "limits.concurrency",
        "output.name",
    ]
    assert "3 problem(s)" in output


def test_valid_manifest_passes_without_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`validate` needs no API key and reports the job count."""
    monkeypatch.delenv("CRAZYROUTER_API_KEY", raising=False)
    manifest = write(tmp_path, GOOD + "    repeat: 3\n")
    code, output = validate(manifest)
    assert code == 0, output
    assert "3 job(s)" in output


def test_missing_manifest_file_is_a_usage_error(tmp_path: Path) -> None:
    """A manifest path that does not exist exits 2 with a message, not a traceback."""
    code, output = validate(tmp_path / "nope.yaml")
    assert code == 2
    assert "nope.yaml: no such file" in output


def test_defaults_apply_only_where_the_op_takes_them(tmp_path: Path) -> None:
    """`model` in defaults does not make an upscale job invalid (upscale takes no model)."""
    manifest = write(
        tmp_path,
        "version: 1\nname: shop\ndefaults: {model: V_2, resemblance: 40}\njobs:\n"
        "  - op: upscale\n    images: [a.png]\n  - op: generate\n    prompt: x\n",
        {"a.png": PNG},
    )
    code, output = validate(manifest)
    assert code == 0, output
