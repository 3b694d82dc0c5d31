"""Job keys are stable under reordering and unrelated edits, and change with the request."""

from __future__ import annotations

import textwrap
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.expand import expand
from pipeline.keys import job_key
from pipeline.manifest import parse_manifest

MODELS = ["V_2", "V_2_TURBO", "V_1"]
ASPECTS = ["ASPECT_1_1", "ASPECT_16_9", "ASPECT_3_2"]

requests = st.fixed_dictionaries(
    {"prompt": st.text(min_size=1, max_size=40)},
    optional={
        "model": st.sampled_from(MODELS),
        "aspect_ratio": st.sampled_from(ASPECTS),
        "seed": st.integers(0, 2_147_483_647),
        "num_images": st.integers(1, 8),
    },
)


@given(requests, st.randoms())
def test_key_ignores_field_order(request: dict, rnd) -> None:
    """The same request with its fields in another order has the same key."""
    items = list(request.items())
    rnd.shuffle(items)
    assert job_key("generate", dict(items), None, 0) == job_key("generate", request, None, 0)


@given(requests, st.sampled_from(["seed", "model", "aspect_ratio", "num_images", "prompt"]), st.data())
def test_key_changes_when_the_request_changes(request: dict, field: str, data: st.DataObject) -> None:
    """Changing any field of the request makes a different key."""
    choices = {
        "seed": st.integers(0, 2_147_483_647),
        "model": st.sampled_from(MODELS),
        "aspect_ratio": st.sampled_from(ASPECTS),
        "num_images": st.integers(1, 8),
        "prompt": st.text(min_size=1, max_size=40),
    }
    new_value = data.draw(choices[field].filter(lambda v: v != request.get(field)))
    changed = {**request, field: new_value}
    assert job_key("generate", changed, None, 0) != job_key("generate", request, None, 0)


@given(requests)
def test_key_depends_on_op_source_and_replica(request: dict) -> None:
    """Op, source identity and replica index are each part of the key."""
    base = job_key("remix", request, "https://x/a.png", 0)
    assert job_key("generate", request, "https://x/a.png", 0) != base
    assert job_key("remix", request, "https://x/b.png", 0) != base
    assert job_key("remix", request, "https://x/a.png", 1) != base


def keys_of(text: str, folder: Path) -> list[str]:
    loaded = parse_manifest(textwrap.dedent(text), str(folder / "m.yaml"), folder / "m.yaml")
    return [job.key for job in expand(loaded)]


prompts = st.lists(
    st.text(alphabet="abcdefghij ", min_size=1, max_size=12).map(str.strip).filter(bool),
    min_size=2,
    max_size=4,
    unique=True,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40)
@given(prompts, st.sampled_from(ASPECTS), st.integers(1, 3))
def test_reordered_yaml_keys_keep_every_key(
    tmp_path: Path, texts: list[str], aspect: str, repeat: int
) -> None:
    """Writing a job's YAML keys in another order keeps all job keys."""
    first = "".join(
        f"  - op: generate\n    prompt: {t!r}\n    aspect_ratio: {aspect}\n    repeat: {repeat}\n"
        for t in texts
    )
    second = "".join(
        f"  - repeat: {repeat}\n    aspect_ratio: {aspect}\n    prompt: {t!r}\n    op: generate\n"
        for t in texts
    )
    head = "version: 1\nname: k\ndefaults: {model: V_2}\njobs:\n"
    assert keys_of(head + first, tmp_path) == keys_of(
        "name: k\nversion: 1\njobs:\n" + second + "defaults: {model: V_2}\n", tmp_path
    )


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40)
@given(prompts, st.text(alphabet="klmnop", min_size=1, max_size=8))
def test_editing_one_job_keeps_the_other_keys(tmp_path: Path, texts: list[str], edit: str) -> None:
    """Editing one job's prompt changes only that job's key."""

    def manifest(items: list[str]) -> str:
        return "version: 1\nname: k\njobs:\n" + "".join(
            f"  - op: generate\n    prompt: {t!r}\n" for t in items
        )

    before = keys_of(manifest(texts), tmp_path)
    edited = [*texts[:-1], texts[-1] + " " + edit]
    after = keys_of(manifest(edited), tmp_path)
    assert after[:-1] == before[:-1]
    assert after[-1] != before[-1]


def test_local_source_key_follows_file_content(tmp_path: Path) -> None:
    """A local source is identified by its bytes: same bytes, same key; new bytes, new key."""
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"1" * 32)
    text = "version: 1\nname: k\njobs:\n  - op: upscale\n    images: [a.png]\n"
    first = keys_of(text, tmp_path)
    assert keys_of(text, tmp_path) == first
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"2" * 32)
    assert keys_of(text, tmp_path) != first
