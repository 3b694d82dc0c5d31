"""Adversarial pass on issues 22, 24, 25 (attack3): the review server and export.

Each test is a finding of the pass; they fail on the code they were written against.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from tests.integration.test_review_server import (  # noqa: F401  (fixtures)
    Client,
    Produced,
    produced,
    raw_status,
    serve,
)


async def test_an_output_folder_swapped_for_a_symlink_serves_nothing_outside(
    serve: Client,  # noqa: F811
    produced: Produced,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The output folder replaced by a symlink to another folder: that folder's images are not served.

    Found: the folder's real path is taken again every 5 s, so after the swap
    every image file under the symlink's target (``/`` in the worst case) is
    served as if it were in the output folder.
    """
    out = produced.folder / "out"
    elsewhere = tmp_path / "private"
    elsewhere.mkdir()
    image = next((out / "generate").glob("*.png"))
    (elsewhere / "holiday.png").write_bytes(image.read_bytes())
    moved = produced.folder / "out.real"
    out.rename(moved)
    try:
        out.symlink_to(elsewhere)
        client = await serve()
        assert await raw_status(client, "/files/1/holiday.png") == 404
    finally:
        out.unlink()
        moved.rename(out)


async def test_filter_values_that_do_not_parse_are_refused_not_a_500(serve: Client) -> None:  # noqa: F811
    """A filter of deeply nested JSON or a lone surrogate is a problem shown, not a 500."""
    client = await serve()
    for value in ("[" * 3000 + "]" * 3000, '{"a":' * 500 + "1" + "}" * 500, '"\\ud800"'):
        response = await client.get(f"/m/1?f.style_type={quote(value)}")
        assert response.status in (200, 400), value[:20]
