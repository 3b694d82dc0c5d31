"""Rows of a prompts CSV or JSONL that carry their own settings are sent as each row asks (SPEC §11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ManifestError
from pipeline.fake_server import FakeServer
from pipeline.validation import load_valid
from tests.integration.conftest import run, write_manifest

# the columns of Ideogram's own batch template, plus style_type and an id
TEMPLATE_CSV = """\
prompt,aspect_ratio,style_type,seed,num_images,id
a red bicycle,16:9,ANIME,11,2,bike-1
a blue kettle,1:1,REALISTIC,22,1,kettle-1
a green lamp,9:16,,33,3,lamp-1
"""


async def test_each_row_is_sent_with_its_own_settings(tmp_path: Path, fake_server: FakeServer) -> None:
    """The fake server's log shows each row's ratio (op spelling), style, seed and image count."""
    (tmp_path / "prompts.csv").write_text(TEMPLATE_CSV)
    manifest = write_manifest(
        tmp_path,
        """
        - op: generate
          prompts: prompts.csv
          style_type: DESIGN
          num_images: 1
        """,
        extra="defaults:\n  model: V_2\n  aspect_ratio: 4:3\n",
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    sent = sorted(
        (e.fields["prompt"], e.fields["aspect_ratio"], e.fields["style_type"], e.fields["seed"], e.num_images)
        for e in fake_server.state.log
    )
    assert sent == [
        ("a blue kettle", "ASPECT_1_1", "REALISTIC", 22, 1),
        ("a green lamp", "ASPECT_9_16", "DESIGN", 33, 3),  # an empty cell leaves the job's value
        ("a red bicycle", "ASPECT_16_9", "ANIME", 11, 2),
    ]
    assert summary["images"]["downloaded"] == 6
    assert summary["spend_usd"] == pytest.approx(6 * 0.08)


async def test_jsonl_rows_and_a_matrix_multiply(tmp_path: Path, fake_server: FakeServer) -> None:
    """JSONL rows set fields too (`"seed": "5"` read as a CSV cell would be); a matrix still multiplies."""
    (tmp_path / "p.jsonl").write_text(
        '{"prompt": "a fox", "seed": 5, "aspect_ratio": "16:9"}\n{"prompt": "an owl", "seed": "6"}\n'
    )
    manifest = write_manifest(
        tmp_path,
        """
        - op: generate
          prompts: p.jsonl
          matrix: {style_type: [ANIME, REALISTIC]}
        """,
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    sent = sorted(
        (e.fields["prompt"], e.fields["seed"], e.fields.get("aspect_ratio"), e.fields["style_type"])
        for e in fake_server.state.log
    )
    assert sent == [
        ("a fox", 5, "ASPECT_16_9", "ANIME"),
        ("a fox", 5, "ASPECT_16_9", "REALISTIC"),
        ("an owl", 6, None, "ANIME"),
        ("an owl", 6, None, "REALISTIC"),
    ]


def problems_of(folder: Path, csv_text: str, job: str = "") -> list[str]:
    """The problems `validate` finds in a manifest reading ``csv_text`` as its prompts."""
    (folder / "p.csv").write_text(csv_text)
    manifest = write_manifest(folder, f"- op: generate\n  prompts: p.csv\n{job}")
    with pytest.raises(ManifestError) as caught:
        load_valid(str(manifest))
    return [str(p) for p in caught.value.problems]


def test_an_unknown_column_is_refused_with_its_name_and_the_accepted_ones(tmp_path: Path) -> None:
    """`file:1: column: unknown column; did you mean ...` with the list, and nothing else read."""
    csv_text = "prompt,aspect_ration,notes\na,16:9,x\n"
    (problem,) = problems_of(tmp_path, csv_text, "  ignore_columns: [notes]\n")
    where = f"{tmp_path}/p.csv:1: aspect_ration: "
    assert problem.startswith(where + "unknown column; did you mean `aspect_ratio`?")
    assert "(generate takes: prompt, id, aspect_ratio, color_palette," in problem
    assert "ignore_columns" in problem


def test_cells_that_do_not_fit_are_refused_row_by_row(tmp_path: Path) -> None:
    """Each bad cell is `file:line: column: message`: not a number, out of range, a ratio the op lacks."""
    found = problems_of(
        tmp_path,
        "prompt,seed,num_images,aspect_ratio\na,abc,1,16:9\nb,1,9,16:9\nc,2,1,7:5\nd,3,1,1:1\n",
    )
    assert [line.split(" is not one of ")[0] for line in found] == [
        f"{tmp_path}/p.csv:2: seed: 'abc' is not a whole number",
        f"{tmp_path}/p.csv:3: num_images: Input should be less than or equal to 8",
        f"{tmp_path}/p.csv:4: aspect_ratio: '7:5'",
    ]


def test_a_problem_of_the_job_is_reported_once_not_per_row(tmp_path: Path) -> None:
    """`style_type` on a V_1 job is the manifest's problem, however many rows set a seed."""
    found = problems_of(tmp_path, "prompt,seed\na,1\nb,2\nc,3\n", "  model: V_1\n  style_type: ANIME\n")
    assert found == [f"{tmp_path}/t.yaml:9: jobs[0].style_type: not available for model V_1"]


def test_a_row_setting_a_matrix_key_is_refused(tmp_path: Path) -> None:
    """A column that the job's matrix also sets would make equal jobs: say it in one place."""
    found = problems_of(tmp_path, "prompt,style_type\na,ANIME\n", "  matrix: {style_type: [ANIME, DESIGN]}\n")
    message = "also a matrix key of this job: set `style_type` in one place"
    assert found == [f"{tmp_path}/p.csv:1: style_type: {message}"]


def test_a_file_full_of_mistakes_stops_after_a_hundred(tmp_path: Path) -> None:
    """A million bad rows do not make a million messages: the file's reading stops at 100."""
    found = problems_of(tmp_path, "prompt,seed\n" + "a,x\n" * 150)
    assert len(found) == 101
    assert found[-1] == f"{tmp_path}/p.csv:101: stopped reading after 100 problems"
