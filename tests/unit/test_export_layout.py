"""Export columns computed from the data, costs split to the micro-dollar, stored paths made absolute."""

from __future__ import annotations

from pipeline.export import Layout, absolute_path, csv_row, split_cost


def test_cost_split_sums_exactly_with_the_remainder_on_the_first_result() -> None:
    """A job's cost over its billed results: integer shares, the remainder first, the total kept."""
    assert split_cost(160_000, 2) == [80_000, 80_000]
    assert split_cost(100_001, 3) == [33_335, 33_333, 33_333]
    assert sum(split_cost(999_999, 7)) == 999_999
    assert split_cost(0, 4) == [0, 0, 0, 0]
    assert split_cost(50_000, 0) == []


def test_columns_are_the_union_of_request_fields_of_the_kind_sorted() -> None:
    """One column per request field of the kind's ops, sorted; merged and colliding fields handled."""
    fields = {
        "generate": {"prompt", "model", "style_type", "aspect_ratio", "seed"},
        "remix": {"prompt", "brush", "path"},  # fields from the data, whatever they are
        "describe": {"describe_model_version"},
    }
    layout = Layout.of("images", False, fields)
    columns = layout.columns
    assert [c for c, _key in layout.request_columns] == [
        "aspect_ratio",
        "brush",
        "request_path",
        "style_type",
    ]
    assert columns.index("enhanced_prompt") < columns.index("aspect_ratio") < columns.index("index")
    assert columns.count("seed") == columns.count("prompt") == columns.count("path") == 1
    assert "reason" not in columns
    assert Layout.of("images", True, fields).columns[3:5] == ["reason", "message"]
    texts = Layout.of("descriptions", False, fields).columns
    assert "describe_model_version" in texts
    assert "style_type" not in texts


def test_relative_stored_paths_are_resolved_against_the_manifest_folder() -> None:
    """An absolute stored path is kept; a relative one is joined to the manifest's folder."""
    assert absolute_path("/srv/out/a.png", "/home/me") == "/srv/out/a.png"
    assert absolute_path("out/a.png", "/home/me/shop") == "/home/me/shop/out/a.png"
    assert absolute_path(None, "/home/me") is None


def test_csv_cells_keep_formulas_inert_and_objects_as_json() -> None:
    """CSV cells: formula starts are quoted, objects become JSON text, cost an exact decimal."""
    cells = csv_row({"prompt": "=1+1", "color_palette": {"name": "PASTEL"}, "cost_usd": 26_667, "seed": 5})
    assert cells == {
        "prompt": "'=1+1",
        "color_palette": '{"name": "PASTEL"}',
        "cost_usd": "0.026667",
        "seed": 5,
    }
