"""Expansion: prompts files, matrices, repeats, image sources, defaults — streamed."""

from __future__ import annotations

import textwrap
import tracemalloc
from itertools import islice
from pathlib import Path

from pipeline.expand import expand
from pipeline.manifest import parse_manifest

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def load(folder: Path, text: str):
    path = folder / "m.yaml"
    path.write_text(textwrap.dedent(text))
    return parse_manifest(path.read_text(), str(path), path)


def test_matrix_prompts_and_repeat_multiply(tmp_path: Path) -> None:
    """2 prompts x 2 styles x 2 aspects x repeat 2 = 16 jobs, each request complete."""
    (tmp_path / "p.txt").write_text("a cat\n\n  a dog  \n")
    loaded = load(
        tmp_path,
        """
        version: 1
        name: t
        defaults: {model: V_2, magic_prompt_option: OFF}
        jobs:
          - op: generate
            prompts: p.txt
            repeat: 2
            matrix:
              style_type: [REALISTIC, ANIME]
              aspect_ratio: [ASPECT_1_1, ASPECT_16_9]
        """,
    )
    jobs = list(expand(loaded))
    assert len(jobs) == 16
    assert len({j.key for j in jobs}) == 16
    assert {j.request["prompt"] for j in jobs} == {"a cat", "a dog"}
    assert all(j.request["model"] == "V_2" and j.request["magic_prompt_option"] == "OFF" for j in jobs)
    assert {(j.request["style_type"], j.request["aspect_ratio"]) for j in jobs} == {
        ("REALISTIC", "ASPECT_1_1"),
        ("REALISTIC", "ASPECT_16_9"),
        ("ANIME", "ASPECT_1_1"),
        ("ANIME", "ASPECT_16_9"),
    }


def test_csv_and_jsonl_prompts(tmp_path: Path) -> None:
    """CSV prompts come from the `prompt` column, JSONL from each line's `prompt`."""
    (tmp_path / "p.csv").write_text('id,prompt\n1,"a, comma"\n2,plain\n')
    (tmp_path / "p.jsonl").write_text('{"prompt": "from json"}\n\n"bare string"\n')
    loaded = load(
        tmp_path,
        """
        version: 1
        name: t
        jobs:
          - {op: generate, prompts: p.csv}
          - {op: generate, prompts: p.jsonl}
        """,
    )
    assert sorted(j.request["prompt"] for j in expand(loaded)) == [
        "a, comma",
        "bare string",
        "from json",
        "plain",
    ]


def test_defaults_merge_only_into_ops_that_take_them(tmp_path: Path) -> None:
    """An upscale job gets `resemblance` from defaults but never `model` or `aspect_ratio`."""
    (tmp_path / "a.png").write_bytes(PNG)
    loaded = load(
        tmp_path,
        """
        version: 1
        name: t
        defaults: {model: V_2, aspect_ratio: ASPECT_16_9, resemblance: 40}
        jobs:
          - {op: upscale, images: [a.png]}
          - {op: describe, images: [a.png]}
        """,
    )
    upscale, describe = list(expand(loaded))
    assert upscale.request == {"resemblance": 40}
    assert describe.request == {}
    assert upscale.model is None


def test_image_sources_glob_folder_list_and_catalog(tmp_path: Path) -> None:
    """Globs are sorted, folders mean their images, URLs pass through, catalogs keep ids."""
    for name in ("b.png", "a.png", "c.jpg", "notes.txt"):
        (tmp_path / "pics" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "pics" / name).write_bytes(PNG if name != "c.jpg" else b"\xff\xd8\xff" + b"0" * 16)
    (tmp_path / "cat.csv").write_text("sku,url\nS1,https://example.com/1.png\nS2,pics/a.png\n")
    loaded = load(
        tmp_path,
        """
        version: 1
        name: t
        jobs:
          - {op: upscale, images: "pics/*.png"}
          - {op: upscale, images: "pics"}
          - {op: upscale, images: ["https://example.com/x.webp"]}
          - {op: upscale, images: {csv: cat.csv, column: url, id: sku}}
        """,
    )
    jobs = list(expand(loaded))
    by_stage: dict[str, list] = {}
    for job in jobs:
        by_stage.setdefault(job.stage, []).append(job)
    assert [Path(j.source).name for j in by_stage["0"]] == ["a.png", "b.png"]
    assert [Path(j.source).name for j in by_stage["1"]] == ["a.png", "b.png", "c.jpg"]
    assert by_stage["2"][0].source == "https://example.com/x.webp"
    assert by_stage["2"][0].source_sha256 is None
    assert [(j.source_id, j.source_sha256 is not None) for j in by_stage["3"]] == [
        ("S1", False),
        ("S2", True),
    ]


def test_ranks_interleave_the_entries(tmp_path: Path) -> None:
    """Each entry's jobs are ranked 0, 1, 2...: claiming by rank takes every entry in turn."""
    loaded = load(
        tmp_path,
        """
        version: 1
        name: t
        jobs:
          - {op: generate, prompt: a, repeat: 3}
          - {op: generate, prompt: b, repeat: 2}
        """,
    )
    order = sorted(expand(loaded), key=lambda j: (j.rank, j.stage))
    assert [j.request["prompt"] for j in order] == ["a", "b", "a", "b", "a"]


def test_expansion_is_streamed(tmp_path: Path) -> None:
    """Taking the first jobs of a 200,000-line prompts file reads almost nothing into memory."""
    with (tmp_path / "big.txt").open("w") as handle:
        for i in range(200_000):
            handle.write(f"prompt number {i} with some words to make it longer\n")
    loaded = load(tmp_path, "version: 1\nname: t\njobs:\n  - {op: generate, prompts: big.txt}\n")
    tracemalloc.start()
    try:
        first = list(islice(expand(loaded), 10))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [j.request["prompt"] for j in first][:2] == [
        "prompt number 0 with some words to make it longer",
        "prompt number 1 with some words to make it longer",
    ]
    assert peak < 2_000_000
