"""`ideobatch validate` on an alias bomb: exit 2 with a located message, not a MemoryError."""

from __future__ import annotations

from pathlib import Path

from tests.acceptance.conftest import ideobatch

BOMB = """\
version: 1
name: laughs
defaults:
  a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
jobs:
  - op: generate
    prompt: *i
"""


async def test_validate_refuses_the_billion_laughs(tmp_path: Path) -> None:
    """The few-hundred-byte bomb that used to grow to gigabytes is refused at once (exit 2, file:line)."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    code, out, err = await ideobatch("validate", str(bomb), cwd=tmp_path, limit_s=30)
    assert code == 2, err
    assert "bomb.yaml:8: defaults.e[0]: aliases expand to more than 10000 values" in err
    assert "Traceback" not in err
    assert out == ""
