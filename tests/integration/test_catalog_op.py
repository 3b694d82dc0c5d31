"""An op added to the endpoint catalog alone is validated, served, paid, priced and exported end to end.

The catalog (`pipeline.endpoints`) is the only place ops are listed: this test
adds a made-up op to a copy of it, and nothing else changes.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from pipeline import endpoints
from pipeline.endpoints import Encoding, Endpoint
from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.reporting import status_summary
from tests.integration.conftest import API_KEY, run, write_manifest


class SketchRequest(BaseModel):
    """The made-up op's fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: StrictStr | None = None
    num_images: StrictInt | None = Field(default=None, ge=1, le=4)
    seed: StrictInt | None = None


SKETCH = Endpoint(
    op="x-sketch",
    native_path="/x/sketch",
    proxy_path="/ideogram/x/sketch",
    encoding=Encoding.LEGACY,
    request=SketchRequest,
    required=("prompt",),
    prices={None: Decimal("0.02")},
)


@pytest.fixture
def catalog_with_sketch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The catalog, with `x-sketch` added."""
    monkeypatch.setattr(endpoints, "CATALOG", {**endpoints.CATALOG, SKETCH.op: SKETCH})


@pytest.mark.parametrize("kind", ["crazyrouter", "ideogram"])
@pytest.mark.usefixtures("catalog_with_sketch", "api_key")
async def test_a_made_up_op_runs_end_to_end(tmp_path: Path, kind: str) -> None:
    """Validated from its schema, served at its paths, priced from its entry, its images on disk."""
    async with FakeServer(FaultConfig(api_key=API_KEY, seed=3)) as server:
        manifest = write_manifest(
            tmp_path,
            """
            - op: x-sketch
              prompts: [a teapot, a kettle]
              num_images: 2
            """,
            kind=kind,
        )
        code, summary = await run(manifest, server, tmp_path)
        log = [entry.as_json() for entry in server.state.log]
    assert code == 0, summary
    assert summary["jobs"]["succeeded"] == 2
    assert summary["images"]["downloaded"] == 4
    assert summary["spend_usd"] == pytest.approx(0.08)
    assert [entry["op"] for entry in log] == ["x-sketch", "x-sketch"]
    assert all(entry["billed"] for entry in log)
    assert len(list((tmp_path / "out" / "x-sketch").glob("*.png"))) == 4
    status = await status_summary(f"sqlite:///{tmp_path}/ledger.db", "t")
    assert status["by_op"] == {
        "x-sketch": {"pending": 0, "running": 0, "succeeded": 2, "failed": 0, "withdrawn": 0}
    }


@pytest.mark.usefixtures("catalog_with_sketch")
async def test_a_made_up_op_is_validated_from_its_schema(tmp_path: Path, fake_server: FakeServer) -> None:
    """Its fields' ranges and unknown fields are validation errors, nothing sent."""
    from pipeline.errors import ManifestError

    manifest = write_manifest(tmp_path, "- op: x-sketch\n  prompt: a cup\n  num_images: 9\n  style: ink\n")
    with pytest.raises(ManifestError) as caught:
        await run(manifest, fake_server, tmp_path)
    text = str(caught.value)
    assert "jobs[0].num_images" in text
    assert "jobs[0].style" in text
    assert fake_server.state.log == []
    assert json.dumps(endpoints.ops()).count("x-sketch") == 1
