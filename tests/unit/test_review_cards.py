"""What a review card says differs, how filters are read from a query, and the review's small rules."""

from __future__ import annotations

import json
from dataclasses import fields

from pipeline.keys import canonical_json
from pipeline.ledger.gallery import GalleryFilter, GalleryRow, JobFields
from pipeline.review.cards import parse_filters, usd, usd_value
from pipeline.review.fields import MAX_LISTED_VALUES, FieldSummary
from pipeline.review.media import resolve_inside
from pipeline.review.security import check_bind, is_local_host


def job(job_id: int, op: str, cost: int = 80_000, **request: object) -> JobFields:
    return JobFields(job_id, op, canonical_json(request), cost, 1)


def test_fields_vary_per_op_counting_a_missing_field_as_a_value() -> None:
    """style_type varies among generates (one lacks it); the prompt is shown apart; upscale has its own."""
    summary = FieldSummary()
    summary.add(
        [
            job(1, "generate", prompt="a", model="V_2", style_type="ANIME"),
            job(2, "generate", prompt="b", model="V_2", style_type="REALISTIC"),
            job(3, "generate", prompt="c", model="V_2"),
            job(4, "upscale", 60_000, resemblance=50),
            job(5, "upscale", 60_000, resemblance=50),
        ]
    )
    assert summary.varying("generate") == ["style_type"]
    assert summary.varying("upscale") == []
    (choice,) = summary.choices()
    assert choice.name == "style_type"
    assert choice.values == (('"ANIME"', "ANIME"), ('"REALISTIC"', "REALISTIC"), ("null", "(not set)"))
    assert summary.unit_costs == {80_000, 60_000}
    assert summary.last_job_id == 5


def test_a_field_with_too_many_values_is_typed_not_listed() -> None:
    """Past MAX_LISTED_VALUES distinct values a field still varies, but its filter is a text box."""
    summary = FieldSummary()
    summary.add(job(i, "generate", seed=i) for i in range(1, MAX_LISTED_VALUES + 3))
    (choice,) = summary.choices()
    assert (choice.name, choice.crowded, choice.values) == ("seed", True, ())
    assert summary.varying("generate") == ["seed"]


def test_long_values_are_cut_for_people() -> None:
    """An object value (a JSON prompt, say) is labelled by its JSON text, cut to 60 characters."""
    summary = FieldSummary()
    summary.add(job(i, "generate", json_prompt={"scene": "x" * 200, "n": i}) for i in (1, 2))
    (choice,) = summary.choices()
    assert [len(label) for _value, label in choice.values] == [60, 60]
    assert choice.values[0][0].startswith('{"n":1,')


def test_numbers_are_offered_in_numeric_order() -> None:
    """image_weight 5, 20, 100 are listed as numbers, not as text."""
    summary = FieldSummary()
    summary.add(job(i, "remix", image_weight=w) for i, w in enumerate([100, 5, 20], start=1))
    assert [label for _value, label in summary.choices()[0].values] == ["5", "20", "100"]


def test_filters_are_read_from_the_query_and_bad_values_reported() -> None:
    """f.* values are JSON (or plain text); a bad seed, state or field name is reported and ignored."""
    filters = parse_filters(
        {
            "f.style_type": '"ANIME"',
            "f.image_weight": "50",
            "f.negative_prompt": "no text",
            "f.bad name": "1",
            "f.model": "null",
            "seed": "x1",
            "state": "glowing",
            "cost": "$0.08",
            "prompt": " fox ",
            "op": "",
            "after": "12",
        }
    )
    assert filters.wanted == GalleryFilter(
        prompt="fox",
        cost_micros=80_000,
        fields=(
            ("image_weight", 50),
            ("model", None),
            ("negative_prompt", "no text"),
            ("style_type", "ANIME"),
        ),
    )
    assert len(filters.problems) == 3
    assert "after" not in filters.params
    assert filters.query(after=7)["after"] == "7"
    assert json.loads(filters.params["f.style_type"]) == "ANIME"


def test_money_is_shown_to_the_cent_or_finer() -> None:
    """$0.08, $0.025, $1.00, and the cost filter's plain value."""
    assert [usd(80_000), usd(25_000), usd(1_000_000), usd(0)] == ["$0.08", "$0.025", "$1.00", "$0.00"]
    assert usd_value(25_000) == "0.025"


def test_paths_with_dots_empty_parts_or_backslashes_are_refused() -> None:
    """`resolve_inside` refuses .., ., empty parts, backslashes, NUL and files that are not images."""
    root = "/srv/out"
    for path in [
        "../x.png",
        "a/../../x.png",
        "./a.png",
        "a//b.png",
        "a\\..\\b.png",
        "a\x00.png",
        "a.txt",
        "",
    ]:
        assert resolve_inside(root, path) is None, path
    assert resolve_inside(root, "generate/a.png") == "/srv/out/generate/a.png"


def test_local_names_and_binds() -> None:
    """Loopback names and addresses are local; any other bind needs a token."""
    assert all(is_local_host(h) for h in ["localhost", "127.0.0.1", "127.8.0.1", "::1", "[::1]"])
    assert not any(is_local_host(h) for h in ["0.0.0.0", "example.com", "10.0.0.1", ""])
    assert check_bind("0.0.0.0", None) is not None
    assert check_bind("0.0.0.0", "a-long-enough-token-2") is None


def test_values_no_database_takes_are_kept_as_text_or_dropped() -> None:
    """1e999 (infinite) and NaN stay text, a NUL is dropped, a price past $1M or negative is refused."""
    filters = parse_filters({"f.model": "1e999", "f.seed": "NaN", "prompt": "fo\x00x", "cost": "-1"})
    assert filters.wanted == GalleryFilter(prompt="fox", fields=(("model", "1e999"), ("seed", "NaN")))
    assert filters.problems == ("cost: '-1' is not an amount in USD",)


def _row(op: str, request: dict[str, object]) -> GalleryRow:
    values: dict[str, object] = {f.name: None for f in fields(GalleryRow)}
    return GalleryRow(**{**values, "op": op, "request": request})  # type: ignore[arg-type]


def test_a_card_shows_the_summary_of_a_json_prompt_as_its_prompt() -> None:
    """A V4 job written as a JSON prompt is found and read by its high-level description."""
    structured = {"high_level_description": "a red kettle on oak", "style_description": {"medium": "photo"}}
    assert _row("v4-generate", {"json_prompt": structured}).prompt == "a red kettle on oak"
    assert _row("v4-generate", {"prompt": "a kettle"}).prompt == "a kettle"
    assert _row("v4-describe", {}).prompt is None
    assert _row("an-op-of-a-later-release", {"json_prompt": structured}).prompt is None
