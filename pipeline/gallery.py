"""`ideobatch gallery`: one self-contained HTML contact sheet of a run's images.

The page needs no server: thumbnails (256 px JPEGs, made once per image and
cached by its sha256) sit in a folder beside the HTML file and are linked
relative to it, so a 10,000-image gallery stays a small file that opens fast;
each thumbnail links to the full image. Prompt and seed show under each
picture and in full on hover. Filters by op, state and job (key or prompt
text) run in the page; failed jobs are listed with their reasons.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.ledger.exports import ExportRow
from pipeline.ledger.repository import opened_ledger
from pipeline.reporting import manifest_id_for

THUMB_PX = 256
THUMB_QUALITY = 80


@dataclass(frozen=True)
class Card:
    """One picture (or withheld/expired/failed slot) on the sheet."""

    job_key: str
    op: str
    state: str
    prompt: str
    seed: int | None
    index: int | None
    thumb: str | None
    full: str | None
    detail: str


def make_thumbnail(image: Path, sha256: str, folder: Path) -> Path | None:
    """A JPEG thumbnail of ``image`` in ``folder`` (reused if it exists); None if unreadable."""
    target = folder / f"{sha256[:24]}.jpg"
    if target.exists():
        return target
    try:
        with Image.open(image) as source:
            source.thumbnail((THUMB_PX, THUMB_PX))
            temp = target.with_suffix(".tmp")
            source.convert("RGB").save(temp, "JPEG", quality=THUMB_QUALITY, optimize=True)
            os.replace(temp, target)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return target


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def cards_from_rows(rows: Iterable[ExportRow], page_dir: Path, thumbs: Path) -> list[Card]:
    """Cards for image rows, with thumbnails made as needed."""
    cards = []
    for row in rows:
        if row.text is not None:
            continue
        prompt = row.enhanced_prompt or str(row.request.get("prompt") or "") or (row.source or "")
        thumb = full = None
        state = row.image_state or "pending"
        if state == "downloaded" and row.path and row.sha256 and Path(row.path).is_file():
            made = make_thumbnail(Path(row.path), row.sha256, thumbs)
            thumb = _relative(made, page_dir) if made else None
            full = _relative(Path(row.path), page_dir)
        detail = f"{row.op} · job {row.job_key[:12]} · image {row.index}"
        if row.seed is not None:
            detail += f" · seed {row.seed}"
        if row.source_id:
            detail += f" · id {row.source_id}"
        cards.append(Card(row.job_key, row.op, state, prompt, row.seed, row.index, thumb, full, detail))
    return cards


def render(
    title: str, cards: list[Card], failures: list[dict[str, Any]], descriptions: list[dict[str, Any]]
) -> str:
    """The gallery page."""
    figures = "\n".join(_figure(card) for card in cards)
    ops = sorted({c.op for c in cards} | {f["op"] for f in failures})
    states = sorted({c.state for c in cards})
    failed_rows = "\n".join(
        f"<tr data-op='{html.escape(f['op'])}'><td><code>{html.escape(f['job_key'][:12])}</code></td>"
        f"<td>{html.escape(f['op'])}</td><td>{html.escape(f['reason'] or '')}</td>"
        f"<td>{html.escape(f['message'] or '')}</td><td>{html.escape(f['prompt'] or '')}</td></tr>"
        for f in failures
    )
    described = "\n".join(
        f"<li><code>{html.escape(d['job_key'][:12])}</code> {html.escape(d['text'])}</li>"
        for d in descriptions
    )
    return _PAGE.format(
        title=html.escape(title),
        count=len(cards),
        figures=figures,
        op_options=_options(ops),
        state_options=_options(states),
        failed_rows=failed_rows or "<tr><td colspan='5'>none</td></tr>",
        failed_count=len(failures),
        descriptions=described or "<li>none</li>",
        description_count=len(descriptions),
        data=html.escape(json.dumps({"images": len(cards), "failed": len(failures)})),
    )


def _options(values: Iterable[str]) -> str:
    return "".join(f"<option value='{html.escape(v)}'>{html.escape(v)}</option>" for v in values)


def _figure(card: Card) -> str:
    caption = card.prompt if len(card.prompt) <= 90 else card.prompt[:87] + "..."
    seed = f"seed {card.seed}" if card.seed is not None else ""
    if card.thumb:
        picture = (
            f"<a href='{html.escape(card.full or '')}'><img loading='lazy' decoding='async' "
            f"src='{html.escape(card.thumb)}' alt='{html.escape(caption)}'></a>"
        )
    else:
        picture = f"<div class='placeholder'>{html.escape(card.state)}</div>"
    return (
        f"<figure data-op='{html.escape(card.op)}' data-state='{html.escape(card.state)}' "
        f"data-job='{html.escape(card.job_key)}' data-text='{html.escape(card.prompt.lower())}' "
        f"title='{html.escape(card.prompt + chr(10) + card.detail)}'>{picture}"
        f"<figcaption><span class='prompt'>{html.escape(caption)}</span>"
        f"<span class='meta'>{html.escape(card.op)} · {html.escape(card.state)} {html.escape(seed)}</span>"
        "</figcaption></figure>"
    )


async def build_gallery(ledger_url: str, manifest: str | None, out_file: str | None) -> tuple[Path, int, int]:
    """Write the gallery; returns (path, pictures, failed jobs)."""
    async with opened_ledger(ledger_url, create=False) as ledger:
        manifest_id = await manifest_id_for(ledger, manifest)
        title = manifest or "all manifests"
        if out_file is None:
            if manifest_id is None:
                out_file = "gallery.html"
            else:
                record = await ledger.get_manifest_by_id(manifest_id)
                out_dir = Path(record.config["output"]["dir"])
                out_file = str(out_dir / "gallery.html")
                title = record.name
        page = Path(out_file).resolve()
        thumbs = page.parent / f"{page.stem}_thumbs"
        thumbs.mkdir(parents=True, exist_ok=True)
        rows = [row async for row in ledger.export_rows(manifest_id)]
        failures = await ledger.failed_jobs(manifest_id)
    cards = await asyncio.to_thread(cards_from_rows, rows, page.parent, thumbs)
    descriptions = [{"job_key": r.job_key, "text": r.text} for r in rows if r.text is not None]
    text = render(title, cards, failures, descriptions)
    temp = page.with_suffix(".tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, page)
    return page, len(cards), len(failures)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ideobatch · {title}</title>
<style>
 body {{ font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #111; color: #ddd; }}
 header {{ position: sticky; top: 0; background: #1b1b1b; padding: 10px 16px; display: flex; gap: 12px;
   align-items: center; flex-wrap: wrap; border-bottom: 1px solid #333; z-index: 1; }}
 header h1 {{ font-size: 16px; margin: 0 12px 0 0; }}
 select, input {{ background: #222; color: #ddd; border: 1px solid #444; border-radius: 4px;
   padding: 4px 6px; }}
 #grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 12px;
   padding: 16px; }}
 figure {{ margin: 0; background: #1b1b1b; border-radius: 6px; overflow: hidden; }}
 figure img {{ width: 100%; aspect-ratio: 1; object-fit: contain; background: #000; display: block; }}
 .placeholder {{ aspect-ratio: 1; display: grid; place-items: center; color: #888; background: #222;
   text-transform: uppercase; letter-spacing: .1em; }}
 figcaption {{ padding: 6px 8px; }}
 .prompt {{ display: block; }} .meta {{ display: block; color: #888; font-size: 12px; }}
 section {{ padding: 0 16px 16px; }} table {{ border-collapse: collapse; width: 100%; }}
 td, th {{ border-bottom: 1px solid #333; padding: 4px 6px; text-align: left; vertical-align: top; }}
 [hidden] {{ display: none !important; }}
</style></head>
<body>
<header>
 <h1>ideobatch · {title}</h1>
 <label>op <select id="op"><option value="">all</option>{op_options}</select></label>
 <label>state <select id="state"><option value="">all</option>{state_options}</select></label>
 <label>job <input id="job" type="search" placeholder="key or prompt text"></label>
 <span id="shown">{count} of {count} shown</span>
</header>
<main id="grid">
{figures}
</main>
<section><h2>Failed jobs ({failed_count})</h2>
<table id="failed"><tr><th>job</th><th>op</th><th>reason</th><th>message</th><th>prompt</th></tr>
{failed_rows}
</table></section>
<section><h2>Descriptions ({description_count})</h2><ul>{descriptions}</ul></section>
<script type="application/json" id="summary">{data}</script>
<script>
 const figures = Array.from(document.querySelectorAll('#grid figure'));
 const op = document.getElementById('op'), state = document.getElementById('state');
 const job = document.getElementById('job'), shown = document.getElementById('shown');
 function apply() {{
   const o = op.value, s = state.value, j = job.value.trim().toLowerCase();
   let n = 0;
   for (const f of figures) {{
     const ok = (!o || f.dataset.op === o) && (!s || f.dataset.state === s) &&
       (!j || f.dataset.job.startsWith(j) || f.dataset.text.includes(j));
     f.hidden = !ok; if (ok) n++;
   }}
   for (const r of document.querySelectorAll('#failed tr[data-op]')) r.hidden = !!o && r.dataset.op !== o;
   shown.textContent = n + ' of ' + figures.length + ' shown';
 }}
 op.addEventListener('change', apply); state.addEventListener('change', apply);
 job.addEventListener('input', apply);
</script>
</body></html>
"""
