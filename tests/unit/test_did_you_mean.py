"""An unknown key, at any level of a manifest, is answered with the name it was probably meant to be."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ManifestError
from pipeline.validation import load_valid

HEAD = "version: 1\nname: shop\n"
JOB = "jobs:\n  - op: generate\n    prompt: a red bicycle\n"

# (case id, manifest text, where the problem is, the name suggested)
CASES = [
    ("limits", HEAD + "limits:\n  concurency: 4\n" + JOB, ":4: limits.concurency:", "concurrency"),
    ("job-key", HEAD + "jobs:\n  - op: generate\n    promt: a bicycle\n", ":5: jobs[0].promt:", "prompt"),
    ("stages", HEAD + JOB + "    thne:\n      - op: upscale\n", ":6: jobs[0].thne:", "then"),
    ("top-level", HEAD + "defualts: {model: V_2}\n" + JOB, ":3: defualts:", "defaults"),
    ("section-key-at-top", HEAD + "concurrency: 4\n" + JOB, ":3: concurrency:", "limits.concurrency"),
    ("retry", HEAD + "retry:\n  atempts: 3\n" + JOB, ":4: retry.atempts:", "attempts"),
    ("provider", HEAD + "provider:\n  base_ulr: http://x\n" + JOB, ":4: provider.base_ulr:", "base_url"),
    ("output", HEAD + "output:\n  dri: out\n" + JOB, ":4: output.dri:", "dir"),
    ("field", HEAD + "defaults: {aspect_ration: x}\n" + JOB, ":3: defaults.aspect_ration:", "aspect_ratio"),
    ("matrix", HEAD + JOB + "    matrix: {style_typ: [A]}\n", ":6: jobs[0].matrix.style_typ:", "style_type"),
]


@pytest.mark.parametrize(("text", "where", "meant"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_typo_gets_a_did_you_mean(tmp_path: Path, text: str, where: str, meant: str) -> None:
    """The problem names the file, line and key, and suggests the closest known name."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(text)
    with pytest.raises(ManifestError) as caught:
        load_valid(str(manifest))
    shown = [str(p) for p in caught.value.problems]
    assert any(where in line and line.endswith(f"; did you mean `{meant}`?") for line in shown), shown


def test_a_name_nothing_resembles_gets_no_guess(tmp_path: Path) -> None:
    """Far from every known key, the message makes no suggestion."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(HEAD + "zzqx: 1\n" + JOB)
    with pytest.raises(ManifestError) as caught:
        load_valid(str(manifest))
    assert [str(p) for p in caught.value.problems] == [f"{manifest}:3: zzqx: unknown key"]
