"""Output names: sanitized values, never outside the output folder, never colliding."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.naming import NameFields, UnsafePath, render_name, slugify, template_problem, unique_template

FIELDS = NameFields(op="generate", slug="a-cat", key="0123456789abcdef" * 4, index=0, ext="png", seed=7)


@pytest.mark.parametrize(
    "template",
    [
        "../{key}.{ext}",
        "a/../../{key}.{ext}",
        "/etc/{key}.{ext}",
        "~/{key}.{ext}",
        "a//{key}.{ext}",
        "{key}\\..\\x.{ext}",
        "{nope}.{ext}",
        "{key!r}.{ext}",
        "{key:>10}.{ext}",
        "",
    ],
)
def test_unsafe_templates_are_refused(template: str) -> None:
    """Traversal, absolute paths, unknown placeholders and format tricks are validation errors."""
    assert template_problem(template) is not None


@pytest.mark.parametrize(
    "template", ["{op}/{slug}-{seed}.{ext}", "{id}/{key}-{index}.{ext}", "flat-{key}.{ext}"]
)
def test_reasonable_templates_are_accepted(template: str) -> None:
    """Ordinary templates with sub-folders pass."""
    assert template_problem(template) is None


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "/abs/path", "..", "a/b\\c", "\x00x"])
def test_hostile_values_stay_inside_the_folder(tmp_path: Path, hostile: str) -> None:
    """Catalog ids and slugs that look like paths become plain file-name text."""
    fields = NameFields(op="upscale", slug=hostile, key="k" * 64, index=0, ext="png", id=hostile)
    path = render_name("{id}/{slug}-{key}.{ext}", fields, tmp_path)
    assert path.resolve().is_relative_to(tmp_path.resolve())
    assert len(path.relative_to(tmp_path.resolve()).parts) == 2


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    """A symlink already in the output folder cannot carry an image outside it."""
    out = tmp_path / "out"
    outside = tmp_path / "elsewhere"
    out.mkdir()
    outside.mkdir()
    os.symlink(outside, out / "generate")
    with pytest.raises(UnsafePath):
        render_name("{op}/{key}.{ext}", FIELDS, out)


def test_templates_that_could_collide_get_the_key_and_index() -> None:
    """Without {key} (and {index} for multi-image jobs) the template gets them added."""
    assert unique_template("{op}/{slug}-{seed}.{ext}", multi_image=False) == "{op}/{slug}-{seed}-{key}.{ext}"
    assert unique_template("{op}/{slug}.{ext}", multi_image=True) == "{op}/{slug}-{key}-{index}.{ext}"
    assert unique_template("{key}-{index}.{ext}", multi_image=True) == "{key}-{index}.{ext}"


def test_two_images_never_share_a_path(tmp_path: Path) -> None:
    """Same prompt and seed in two jobs (or two indexes) still give distinct paths."""
    template = unique_template("{slug}-{seed}.{ext}", multi_image=True)
    a = render_name(template, FIELDS, tmp_path)
    b = render_name(template, NameFields(**{**FIELDS.__dict__, "key": "f" * 64}), tmp_path)
    c = render_name(template, NameFields(**{**FIELDS.__dict__, "index": 1}), tmp_path)
    assert len({a, b, c}) == 3


def test_slugs_are_short_ascii() -> None:
    """Prompts become short lowercase ASCII slugs; empty ones fall back."""
    assert slugify("Café au Lait — at DAWN!!") == "cafe-au-lait-at-dawn"
    assert len(slugify("word " * 100)) <= 60
    assert slugify("日本語") == "image"


def test_a_template_with_a_name_too_long_for_any_file_system_is_refused() -> None:
    """A literal part that alone makes a file name too long is a validation error."""
    assert template_problem("x" * 130 + "-{key}.{ext}") is not None
    assert template_problem("a" * 100 + "/" + "b" * 100 + "-{key}.{ext}") is None


@pytest.mark.parametrize(
    "template", ["{id}-{slug}-{key}-{index}.{ext}", "{key}-{id}{id}{slug}.{ext}", "{id}/{id}-{key}.{ext}"]
)
def test_long_values_are_cut_to_fit_and_the_key_is_kept(tmp_path: Path, template: str) -> None:
    """Names over the file system's limit are cut (slug, id), never the key, index or extension."""
    fields = NameFields(
        op="generate",
        slug="s" * 60,
        key="0123456789abcdef" * 4,
        index=3,
        ext="png",
        seed=7,
        id="catalog-id-" + "9" * 200,
    )
    path = render_name(template, fields, tmp_path)
    for part in path.relative_to(tmp_path).parts:
        assert len(part.encode()) <= 200
    assert "0123456789ab" in path.name
    assert path.name.endswith(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")  # the file system takes it


def test_a_template_of_too_many_folder_levels_is_refused_and_a_too_long_path_is_unsafe(
    tmp_path: Path,
) -> None:
    """80 `{slug}/` levels pass no validate; a path over the limit fails its image, not the run."""
    assert template_problem("/".join(["{slug}"] * 80) + "-{key}.{ext}") is not None
    deep = "/".join(["{slug}"] * 16) + "-{key}.{ext}"
    assert template_problem(deep) is None
    fields = NameFields(op="generate", slug="s" * 60, key="0123456789abcdef" * 4, index=0, ext="png")
    with pytest.raises(UnsafePath, match="path longer"):
        render_name(deep, fields, tmp_path.joinpath(*["d" * 200] * 15))
