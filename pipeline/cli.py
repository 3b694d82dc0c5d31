"""The `ideobatch` command line (SPEC §3): thin click wrappers around the modules that do the work.

Progress and logs go to stderr, results to stdout (`--json`: one JSON
document). A user mistake is one clear message and exit 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, TypeVar

import click

from pipeline import __version__
from pipeline.errors import (
    IdeobatchError,
    LedgerError,
    LockHeld,
    ManifestError,
    OutputUnusable,
    UsageError,
)
from pipeline.exit_codes import EXIT_ABORTED, EXIT_LOCKED, EXIT_UNUSABLE, EXIT_USAGE
from pipeline.leases import DEFAULT_LEASE_S
from pipeline.ledger.urls import DEFAULT_LEDGER_URL

T = TypeVar("T")
log = logging.getLogger("ideobatch")

ledger_option = click.option(
    "--ledger",
    "ledger_url",
    envvar="IDEOBATCH_LEDGER",
    default=DEFAULT_LEDGER_URL,
    show_default=True,
    help="Ledger URL: sqlite:///path or postgresql://user@host/db (env IDEOBATCH_LEDGER).",
)
lease_option = click.option(
    "--lease",
    "lease_s",
    type=click.FloatRange(1),
    default=DEFAULT_LEASE_S,
    show_default=True,
    help="Seconds a claimed job stays leased without a heartbeat.",
)
ledger_retry_option = click.option(
    "--ledger-retry",
    "ledger_retry",
    metavar="DURATION",
    help="How long to wait for a ledger that stops answering before stopping with exit 5 "
    "(e.g. 30s, 5m; default: the manifest's retry.ledger_retry, env IDEOBATCH_LEDGER_RETRY, else 60s).",
)
json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document, on one line, on stdout (for logs and jq).",
)


def _setup_logging(quiet: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; turn our errors into messages and exit codes."""
    try:
        return asyncio.run(factory())
    except ManifestError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} problem(s); nothing was sent or recorded.", err=True)
        sys.exit(EXIT_USAGE)
    except LockHeld as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_LOCKED)
    except UsageError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except (LedgerError, OutputUnusable) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_UNUSABLE)
    except IdeobatchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ABORTED)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_ABORTED)


def _window(value: str | None) -> float | None:
    """A --ledger-retry value in seconds (exit 2 if it does not parse)."""
    from pipeline.ledger.faults import parse_window

    try:
        return parse_window(value)
    except ValueError as exc:
        click.echo(f"error: --ledger-retry: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def _emit(summary: dict[str, Any], as_json: bool) -> None:
    from pipeline.summary import render_text

    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    else:
        click.echo(render_text(summary))


class _Commands(click.Group):
    """Our commands, with `fake-server` loaded only when it is asked for (it imports the server)."""

    _lazy: ClassVar[dict[str, tuple[str, str]]] = {
        "fake-server": ("pipeline.fake_server.command", "fake_server_command")
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            module, name = self._lazy[cmd_name]
            command: click.Command = getattr(importlib.import_module(module), name)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ideobatch")
def main() -> None:
    """Resumable, concurrent batch runner for the Ideogram image API."""


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@ledger_option
@click.option(
    "--concurrency",
    type=click.IntRange(1, 10_000),
    help="Images in flight (overrides limits.concurrency).",
)
@click.option(
    "--budget",
    "budget_usd",
    type=click.FloatRange(0),
    help="Stop claiming jobs before spend passes USD.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Output folder (overrides output.dir).",
)
@click.option("--max-jobs", type=click.IntRange(1), help="Claim at most N jobs in this run.")
@click.option("--base-url", help="API base URL (overrides provider.base_url; e.g. a fake server).")
@click.option("--quiet", is_flag=True, help="No progress bar; warnings and the summary only.")
@click.option("--lock", is_flag=True, help="Refuse to start (exit 4) while another run holds this manifest.")
@lease_option
@ledger_retry_option
@json_option
def run(
    manifest: str,
    ledger_url: str,
    concurrency: int | None,
    budget_usd: float | None,
    out_dir: str | None,
    max_jobs: int | None,
    base_url: str | None,
    quiet: bool,
    lock: bool,
    lease_s: float,
    ledger_retry: str | None,
    as_json: bool,
) -> None:
    """Plan MANIFEST into the ledger, then work through every unfinished job (resumes)."""
    from pipeline.running import RunOptions, run_manifest

    _setup_logging(quiet)
    window = _window(ledger_retry)
    options = RunOptions(
        manifest=manifest,
        ledger_url=ledger_url,
        concurrency=concurrency,
        budget_usd=budget_usd,
        out_dir=out_dir,
        max_jobs=max_jobs,
        quiet=quiet,
        lock=lock,
        lease_s=lease_s,
        base_url=base_url,
        ledger_retry_s=window,
    )
    code, summary = _run_async(lambda: run_manifest(options))
    _emit(summary, as_json)
    sys.exit(code)


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
def validate(manifest: str) -> None:
    """Check MANIFEST; print every problem as file:line: field: message (exit 2 if any)."""
    from pipeline.validation import load_valid

    def check() -> Any:
        async def inner() -> Any:
            return load_valid(manifest)

        return inner()

    _loaded, counts = _run_async(check)
    click.echo(f"{manifest}: valid, {counts.total} job(s) before chained stages")


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@ledger_option
@json_option
@click.option("--save", is_flag=True, help="Also store the manifest and its jobs in the ledger, for workers.")
@click.option(
    "--budget", "budget_usd", type=click.FloatRange(0), help="With --save: the budget workers share."
)
def plan(manifest: str, ledger_url: str, as_json: bool, save: bool, budget_usd: float | None) -> None:
    """Validate and expand MANIFEST without calling the API: jobs, what is done, estimated cost."""
    from pipeline.planning import plan_report, render_plan, save_plan

    _setup_logging()
    if save:
        _run_async(lambda: save_plan(manifest, ledger_url, budget_usd))
    report = _run_async(lambda: plan_report(manifest, ledger_url))
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
    else:
        click.echo(render_plan(report))


@main.command()
@click.argument("manifest", required=False)
@ledger_option
@json_option
def status(manifest: str | None, ledger_url: str, as_json: bool) -> None:
    """Counts per state, spend, in-doubt attempts, failures by reason, runs and workers."""
    from pipeline.reporting import status_summary

    summary = _run_async(lambda: status_summary(ledger_url, manifest))
    _emit(summary, as_json)


@main.command()
@click.argument("manifest", required=False)
@ledger_option
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Write to FILE instead of stdout.")
@click.option("--picked", is_flag=True, help="Only the images picked in `ideobatch serve`.")
def export(manifest: str | None, ledger_url: str, fmt: str, out_file: str | None, picked: bool) -> None:
    """One row per produced image or description: key, op, prompt, seed, path, sha256, source..."""
    from pipeline.reporting import export as export_rows

    if out_file is None:
        count = _run_async(lambda: export_rows(ledger_url, manifest, fmt, sys.stdout, picked=picked))
    else:
        with open(out_file, "w", encoding="utf-8", newline="") as handle:
            count = _run_async(lambda: export_rows(ledger_url, manifest, fmt, handle, picked=picked))
        click.echo(f"{count} row(s) written to {out_file}", err=True)


@main.command()
@click.argument("manifest", required=False)
@ledger_option
@click.option("--failed", is_flag=True, help="Every failed job.")
@click.option("--reason", help="Only failed jobs of this reason (unsafe, url_expired, http_503, ...).")
def retry(manifest: str | None, ledger_url: str, failed: bool, reason: str | None) -> None:
    """Put failed jobs back to pending (the next run or worker picks them up)."""
    from pipeline.reporting import retry_jobs

    count = _run_async(lambda: retry_jobs(ledger_url, manifest, failed=failed, reason=reason))
    click.echo(f"{count} job(s) put back to pending")


@main.command()
@click.argument("manifest", required=False)
@ledger_option
@click.option(
    "--out", "out_file", type=click.Path(dir_okay=False), help="HTML file (default: OUTPUT_DIR/gallery.html)."
)
def gallery(manifest: str | None, ledger_url: str, out_file: str | None) -> None:
    """A self-contained HTML contact sheet of the produced images (opens without a server)."""
    from pipeline.gallery import build_gallery

    page, pictures, failed = _run_async(lambda: build_gallery(ledger_url, manifest, out_file))
    click.echo(f"{page}  ({pictures} picture(s), {failed} failed job(s))")


@main.command()
@click.argument("manifest")
@ledger_option
@click.option("--rejected", is_flag=True, help="A new job for each image rejected in `ideobatch serve`.")
def reroll(manifest: str, ledger_url: str, rejected: bool) -> None:
    """Plan new jobs for rejected images: same request, a new seed, the next replica (paid as usual)."""
    from pipeline.reroll import check_selection, reroll_rejected

    async def plan() -> tuple[list[Any], Any]:
        check_selection(rejected)
        return await reroll_rejected(ledger_url, manifest)

    made, estimate = _run_async(plan)
    click.echo(f"{len(made)} job(s) planned for rejected images, estimated ${estimate:.2f}")
    if made:
        click.echo(f"run them: ideobatch run {manifest} (or: ideobatch worker)", err=True)


@main.command()
@ledger_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0: any free port."
)
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Let the page write to the ledger: picks and rejections, retrying failed jobs.",
)
@click.option(
    "--token",
    envvar="IDEOBATCH_REVIEW_TOKEN",
    help="Required of every request (header, cookie or ?token=); needed to listen beyond this machine "
    "(env IDEOBATCH_REVIEW_TOKEN).",
)
@click.option(
    "--thumbs",
    "thumbs_dir",
    type=click.Path(file_okay=False),
    help="Thumbnail cache folder (default: $XDG_CACHE_HOME/ideobatch/thumbs).",
)
def serve(
    ledger_url: str, host: str, port: int, allow_actions: bool, token: str | None, thumbs_dir: str | None
) -> None:
    """A live web view of the ledger: progress, gallery, picks, failures, /metrics."""
    from pipeline.review.app import ReviewOptions, serve_forever

    _setup_logging()
    options = ReviewOptions(
        ledger_url=ledger_url,
        host=host,
        port=port,
        allow_actions=allow_actions,
        token=token or None,
        thumbs_dir=thumbs_dir,
    )
    _run_async(lambda: serve_forever(options))


@main.command()
@ledger_option
@click.option(
    "--follow", is_flag=True, help="Keep waiting for new work instead of exiting when none is left."
)
@click.option("--quiet", is_flag=True, help="No progress bar; warnings only.")
@lease_option
@ledger_retry_option
def worker(ledger_url: str, follow: bool, quiet: bool, lease_s: float, ledger_retry: str | None) -> None:
    """Claim and execute pending jobs of every planned manifest (many machines, one ledger).

    With --follow a ledger that stops answering is waited for as long as it takes.
    """
    from pipeline.running import run_worker

    _setup_logging(quiet)
    window = _window(ledger_retry)
    if follow and window is None:
        window = float("inf")
    sys.exit(
        _run_async(
            lambda: run_worker(ledger_url, follow=follow, quiet=quiet, lease_s=lease_s, ledger_retry_s=window)
        )
    )


@main.group()
def db() -> None:
    """Ledger schema maintenance."""


@db.command("upgrade")
@ledger_option
def db_upgrade(ledger_url: str) -> None:
    """Apply the ledger's Alembic migrations (PostgreSQL needs this once per release)."""
    from pipeline.ledger.repository import Ledger

    async def upgrade() -> None:
        ledger = await Ledger.open(ledger_url, upgrade=True)
        await ledger.close()

    _run_async(upgrade)
    click.echo(f"ledger {ledger_url.split('@')[-1]} is at the newest schema")


@main.command()
@click.option(
    "--dir",
    "folder",
    default="ideobatch-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the demo writes its images, gallery and ledger.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def demo(folder: str, quiet: bool) -> None:
    """Start the fake server in-process and run jobs/demo.yaml against it."""
    from pipeline.demo import run_demo

    _setup_logging(quiet)
    code, lines = _run_async(lambda: run_demo(os.path.abspath(folder), quiet=quiet))
    for line in lines:
        click.echo(line)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
