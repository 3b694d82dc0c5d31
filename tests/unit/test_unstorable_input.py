"""NULs and lone surrogates in anything a manifest brings in are refused at validate time (exit 2).

PostgreSQL cannot store a NUL and no driver can encode a lone surrogate: such
text would pass `validate` and then fail the result's INSERT after the call
was paid for. YAML's double-quoted escapes (``"\\0"``, ``"\\x00"``,
``"\\ud800"``) and JSON's ``\\u0000`` / ``\\ud800`` make them from plain ASCII.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.storable import storable, unstorable

HEAD = "version: 1\nname: shop\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64

# (case id, manifest text, extra files, expected "file:line: field: message" fragment)
CASES: list[tuple[str, str, dict[str, str | bytes], str]] = [
    (
        "yaml-nul-escape",
        HEAD + 'jobs:\n  - op: generate\n    prompt: "a\\0b"\n',
        {},
        "m.yaml:5: jobs[0].prompt: contains a NUL character",
    ),
    (
        "yaml-hex-nul-escape",
        HEAD + 'jobs:\n  - op: generate\n    prompt: "a\\x00b"\n',
        {},
        "m.yaml:5: jobs[0].prompt: contains a NUL character",
    ),
    (
        "yaml-lone-surrogate",
        HEAD + 'jobs:\n  - op: generate\n    prompt: "a\\ud800b"\n',
        {},
        "m.yaml:5: jobs[0].prompt: contains a lone surrogate (U+D800)",
    ),
    (
        "yaml-surrogate-pair-escapes",
        HEAD + 'jobs:\n  - op: generate\n    prompt: "\\ud83d\\ude00"\n',
        {},
        "m.yaml:5: jobs[0].prompt: contains a lone surrogate (U+D83D)",
    ),
    (
        "defaults-negative-prompt",
        HEAD + 'defaults:\n  negative_prompt: "blur\\0"\njobs:\n  - op: generate\n    prompt: x\n',
        {},
        "m.yaml:4: defaults.negative_prompt: contains a NUL character",
    ),
    (
        "matrix-value",
        HEAD + 'jobs:\n  - op: generate\n    prompt: x\n    matrix:\n      style_type: [ANIME, "\\ud800"]\n',
        {},
        "m.yaml:7: jobs[0].matrix.style_type[1]: contains a lone surrogate",
    ),
    (
        "then-template",
        HEAD + "jobs:\n  - op: describe\n    images: [a.png]\n    then:\n"
        '      - op: generate\n        prompt: "{description}\\0"\n',
        {"a.png": PNG},
        "m.yaml:8: jobs[0].then[0].prompt: contains a NUL character",
    ),
    (
        "job-id",
        HEAD + 'jobs:\n  - op: generate\n    prompt: x\n    id: "sku\\x00"\n',
        {},
        "m.yaml:6: jobs[0].id: contains a NUL character",
    ),
    (
        "key",
        HEAD + 'jobs:\n  - op: generate\n    prompt: x\n    "k\\ud800": 1\n',
        {},
        "m.yaml:6: jobs[0]: a key contains a lone surrogate",
    ),
    (
        "raw-nul-byte",
        HEAD + "jobs:\n  - op: generate\n    prompt: a\x00b\n",
        {},
        "m.yaml:5: YAML error: unacceptable character #x0000",
    ),
    (
        "txt-prompts-raw-nul",
        HEAD + "jobs:\n  - op: generate\n    prompts: p.txt\n",
        {"p.txt": b"fine\nbad\x00prompt\n"},
        "p.txt:2: prompt: contains a NUL character (\\0) at character 4",
    ),
    (
        "csv-prompts-raw-nul",
        HEAD + "jobs:\n  - op: generate\n    prompts: p.csv\n",
        {"p.csv": b"prompt\nfine\nbad\x00\n"},
        "p.csv:3: prompt: contains a NUL character",
    ),
    (
        "jsonl-surrogate-escape",
        HEAD + "jobs:\n  - op: generate\n    prompts: p.jsonl\n",
        {"p.jsonl": '{"prompt": "ok"}\n{"prompt": "x\\ud800y"}\n'},
        "p.jsonl:2: prompt: contains a lone surrogate (U+D800) at character 2",
    ),
    (
        "jsonl-nul-escape",
        HEAD + "jobs:\n  - op: generate\n    prompts: p.jsonl\n",
        {"p.jsonl": '"x\\u0000"\n'},
        "p.jsonl:1: prompt: contains a NUL character",
    ),
    (
        "jsonl-key",
        HEAD + "jobs:\n  - op: generate\n    prompts: p.jsonl\n",
        {"p.jsonl": '{"prompt": "x", "\\udfff": 1}\n'},
        "p.jsonl:1: a key contains a lone surrogate (U+DFFF)",
    ),
    (
        "catalog-id",
        HEAD + "jobs:\n  - op: upscale\n    images: {csv: c.csv, column: path, id: sku}\n",
        {"c.csv": b"sku,path\nA\x00,a.png\n", "a.png": PNG},
        "c.csv:2: sku: contains a NUL character",
    ),
    (
        "catalog-url",
        HEAD + "jobs:\n  - op: upscale\n    images: {csv: c.csv, column: url}\n",
        {"c.csv": b"url\nhttps://example.com/a\x00.png\n"},
        "c.csv:2: url: contains a NUL character",
    ),
]


def write(folder: Path, text: str, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    manifest = folder / "m.yaml"
    manifest.write_text(text)
    return manifest


@pytest.mark.parametrize(("text", "files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_unstorable_text_is_refused_with_its_location(
    tmp_path: Path, command: str, text: str, files: dict[str, str | bytes], expected: str
) -> None:
    """A NUL or lone surrogate anywhere in the manifest or its data files is `file:line: field: message`."""
    manifest = write(tmp_path, text, files)
    args = [command, str(manifest)]
    if command == "plan":
        args += ["--ledger", f"sqlite:///{tmp_path}/ledger.db"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert expected in result.output, result.output
    assert "Traceback" not in result.output
    assert "\x00" not in result.output
    assert not (tmp_path / "ledger.db").exists()


@pytest.mark.skipif(os.uname().sysname == "Darwin", reason="macOS refuses file names that are not UTF-8")
def test_a_globbed_file_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    """A source file whose name is not UTF-8 (read with surrogate escapes) is refused, shown escaped."""
    (tmp_path / "ok.png").write_bytes(PNG)
    with open(os.fsencode(tmp_path) + b"/bad\xff.png", "wb") as handle:
        handle.write(PNG)
    manifest = write(tmp_path, HEAD + "jobs:\n  - op: upscale\n    images: '*.png'\n", {})
    result = CliRunner().invoke(main, ["validate", str(manifest)])
    assert result.exit_code == 2, result.output
    assert "m.yaml:5: jobs[0].images: " in result.output
    assert "bad\\udcff.png: the file name is not UTF-8 text" in result.output


def test_clean_text_passes_and_storable_cleans_the_rest() -> None:
    """`unstorable` accepts text beyond the BMP; `storable` drops NULs and replaces lone surrogates."""
    assert unstorable("a 😀 b\tc\u2028") is None
    assert storable("plain") == "plain"
    assert storable("a\x00b\ud800c\udfff") == "ab\ufffdc\ufffd"
