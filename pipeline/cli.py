"""The `ideobatch` command line (SPEC §3): thin click wrappers around the modules that do the work.

Progress and logs go to stderr, results to stdout (`--json`: one JSON
document). A user mistake is one clear message and exit 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click
from click.core import ParameterSource

from pipeline import __version__, logs
from pipeline.cli_types import FiniteRange
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
from pipeline.manifest import MAX_BUDGET_USD

if TYPE_CHECKING:
    from pipeline.ledger_location import LedgerPlace

T = TypeVar("T")
log = logging.getLogger("ideobatch")

ledger_option = click.option(
    "--ledger",
    "ledger_url",
    envvar="IDEOBATCH_LEDGER",
    help="Ledger URL: sqlite:///path or postgresql://user@host/db (env IDEOBATCH_LEDGER). "
    "Default: .ideobatch/ledger.db beside the MANIFEST file; without one, in the working directory.",
)
lease_option = click.option(
    "--lease",
    "lease_s",
    type=FiniteRange(1),
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


_LOG_OPTIONS = (
    click.option("-v", "--verbose", count=True, help="Debug log lines too."),
    click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only, and no progress bar."),
    click.option(
        "--log-format",
        type=click.Choice(logs.FORMATS),
        default="text",
        show_default=True,
        envvar="IDEOBATCH_LOG_FORMAT",
        help="text, or json: one JSON object per log line (env IDEOBATCH_LOG_FORMAT).",
    ),
    click.option(
        "--log-file",
        type=click.Path(dir_okay=False),
        envvar="IDEOBATCH_LOG_FILE",
        help="Also append the log lines to FILE (env IDEOBATCH_LOG_FILE).",
    ),
)


def logging_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command -v/-q, --log-format and --log-file, and set logging up before it runs.

    A command whose function takes ``quiet`` gets the flag passed on (no progress bar).
    """
    takes_quiet = "quiet" in inspect.signature(command).parameters

    @functools.wraps(command)
    def wrapper(
        *args: Any, verbose: int, quiet: bool, log_format: str, log_file: str | None, **kwargs: Any
    ) -> Any:
        try:
            logs.setup_logging(fmt=log_format, verbosity=-1 if quiet else verbose, log_file=log_file)
        except OSError as exc:
            click.echo(f"error: cannot write the log file {log_file}: {exc.strerror or exc}", err=True)
            sys.exit(EXIT_USAGE)
        if takes_quiet:
            kwargs["quiet"] = quiet
        return command(*args, **kwargs)

    decorated: Callable[..., Any] = wrapper
    for option in reversed(_LOG_OPTIONS):
        decorated = option(decorated)
    return decorated


def _say(message: str, *, event: str = "error", level: int = logging.ERROR) -> None:
    """A message for the user on stderr: as is, or as a JSON log line with --log-format json."""
    if logs.is_json():
        log.log(level, "%s", message, extra={"event": event})
    else:
        click.echo(message, err=True)


def resume_command() -> str | None:
    """The command that goes on with an interrupted `run` or `worker`, as typed (shell-quoted).

    Options given on the command line or by the environment are repeated; a
    password in the ledger URL is shown as ``***`` (a ledger URL with a
    password that came from IDEOBATCH_LEDGER is left to that variable, so the
    line can be pasted as it is); the API key is never on a command line (it
    stays in its environment variable).
    """
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.command.name not in ("run", "worker"):
        return None
    from pipeline.ledger.faults import masked

    words = ["ideobatch", ctx.command.name]
    options: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if name is None or ctx.get_parameter_source(name) not in (
            ParameterSource.COMMANDLINE,
            ParameterSource.ENVIRONMENT,
        ):
            continue
        value = ctx.params[name]
        if name == "ledger_url":
            value = masked(str(value))
            if value != ctx.params[name] and ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT:
                continue
        if isinstance(param, click.Argument):
            words.append(str(value))
        elif isinstance(param, click.Option) and param.count:
            options.extend([param.opts[0]] * int(value))
        elif isinstance(param, click.Option) and param.is_flag:
            if value:
                options.append(_long(param))
        elif isinstance(param, click.Option) and value is not None:
            options.extend([_long(param), str(value)])
    return shlex.join([*words, *options])


def _long(param: click.Option) -> str:
    return next((opt for opt in param.opts if opt.startswith("--")), param.opts[0])


def _interrupted() -> None:
    command = resume_command()
    message = f"interrupted: resume with: {command}" if command else "interrupted"
    _say(message, event="interrupted", level=logging.WARNING)


def _run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; turn our errors into messages and exit codes."""
    try:
        return asyncio.run(factory())
    except ManifestError as exc:
        for problem in exc.problems:
            _say(str(problem))
        _say(f"{len(exc.problems)} problem(s); nothing was sent or recorded.")
        sys.exit(EXIT_USAGE)
    except LockHeld as exc:
        _say(f"error: {exc}")
        sys.exit(EXIT_LOCKED)
    except UsageError as exc:
        _say(f"error: {exc}")
        sys.exit(EXIT_USAGE)
    except (LedgerError, OutputUnusable) as exc:
        _say(f"error: {exc}")
        sys.exit(EXIT_UNUSABLE)
    except IdeobatchError as exc:
        _say(f"error: {exc}")
        sys.exit(EXIT_ABORTED)
    except KeyboardInterrupt:
        _interrupted()
        sys.exit(EXIT_ABORTED)


def _window(value: str | None) -> float | None:
    """A --ledger-retry value in seconds (exit 2 if it does not parse)."""
    from pipeline.ledger.faults import parse_window

    try:
        return parse_window(value)
    except ValueError as exc:
        click.echo(f"error: --ledger-retry: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def _base_url(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from pipeline.manifest import checked_base_url

    try:
        return None if value is None else checked_base_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _ledger_place(manifest: str | None, ledger_url: str | None, *, must_exist: bool) -> LedgerPlace:
    """The command's ledger (SPEC §11): --ledger, IDEOBATCH_LEDGER, beside MANIFEST, or here.

    ``must_exist``: a command that only reads creates no ledger; a missing one
    is exit 5 with where it was looked for.
    """
    from pipeline.ledger_location import Origin, legacy_notice, locate

    ctx = click.get_current_context()
    from_env = ctx.get_parameter_source("ledger_url") is ParameterSource.ENVIRONMENT
    origin = Origin.ENV if from_env else Origin.OPTION
    place = _run_async(lambda: locate(manifest, ledger_url, origin, must_exist=must_exist))
    if notice := legacy_notice(place):
        _say(f"warning: {notice}", event="ledger_elsewhere", level=logging.WARNING)
    return place


def _emit(summary: dict[str, Any], as_json: bool) -> None:
    from pipeline.summary import render_text

    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    else:
        click.echo(render_text(summary))


#: whether this process is the command (then a finished run may leave without tearing down)
_WHOLE_PROCESS = False


def _leave(code: int) -> None:
    """Exit with ``code``; when this process is the command, at once, once the output is flushed.

    Everything is recorded and closed by then: tearing down the interpreter
    (collecting every object, finalizing every module) costs a run 0.1-0.5 s
    after its last image, for nothing. A test's in-process call exits as usual.
    """
    if not _WHOLE_PROCESS:
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _Commands(click.Group):
    """Our commands, with `fake-server` loaded only when it is asked for (it imports the server)."""

    _lazy: ClassVar[dict[str, tuple[str, str]]] = {
        "fake-server": ("pipeline.fake_server.command", "fake_server_command")
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._lazy])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The process's command (the console script, ``python -m pipeline.cli``), not a test's call."""
        global _WHOLE_PROCESS
        _WHOLE_PROCESS = True
        return super().__call__(*args, **kwargs)

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
    type=FiniteRange(0, MAX_BUDGET_USD),
    help="Stop claiming jobs before spend passes USD.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Output folder (overrides output.dir).",
)
@click.option("--max-jobs", type=click.IntRange(1), help="Claim at most N jobs in this run.")
@click.option(
    "--base-url",
    callback=_base_url,
    help="API base URL (overrides provider.base_url; e.g. a fake server).",
)
@click.option("--lock", is_flag=True, help="Refuse to start (exit 4) while another run holds this manifest.")
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Spread the run over N processes of this machine (one progress display, one summary).",
)
@lease_option
@ledger_retry_option
@json_option
@logging_options
def run(
    manifest: str,
    ledger_url: str | None,
    concurrency: int | None,
    budget_usd: float | None,
    out_dir: str | None,
    max_jobs: int | None,
    base_url: str | None,
    quiet: bool,
    lock: bool,
    processes: int,
    lease_s: float,
    ledger_retry: str | None,
    as_json: bool,
) -> None:
    """Plan MANIFEST into the ledger, then work through every unfinished job (resumes)."""
    from pipeline.running import RunOptions, run_manifest

    if processes > 1 and max_jobs is not None:
        _say("error: --max-jobs counts one process's claims: it cannot be combined with --processes")
        sys.exit(EXIT_USAGE)
    window = _window(ledger_retry)
    place = _ledger_place(manifest, ledger_url, must_exist=False)
    options = RunOptions(
        manifest=manifest,
        ledger_url=place.url,
        concurrency=concurrency,
        budget_usd=budget_usd,
        out_dir=out_dir,
        max_jobs=max_jobs,
        quiet=quiet,
        lock=lock,
        lease_s=lease_s,
        base_url=base_url,
        ledger_retry_s=window,
        processes=processes,
    )
    code, summary = _run_async(lambda: run_manifest(options))
    _emit(summary, as_json)
    if summary.get("run", {}).get("stop_reason") == "interrupted":
        _interrupted()
    _leave(code)


@main.command("run-part", hidden=True)
@click.option("--ledger", "ledger_url", envvar="IDEOBATCH_LEDGER", required=True)
@click.option("--manifest-name", required=True)
@click.option("--lease-s", type=float, default=DEFAULT_LEASE_S)
@click.option("--ledger-retry-s", type=float, default=None)
@logging_options
def run_part(ledger_url: str, manifest_name: str, lease_s: float, ledger_retry_s: float | None) -> None:
    """One further process of `run --processes N` (started by it): its report is a JSON line.

    It loads, then waits for ``go`` on stdin (the plan is complete); without
    it (stdin closed: the run stopped first) it ends at once, having done nothing.
    """
    importlib.import_module("pipeline.running")  # loaded while the run plans, not after
    from pipeline.parts import run_part as work

    if sys.stdin.readline().strip() != "go":
        click.echo(json.dumps({"tally": {}}))
        _leave(0)
        return

    code, report = _run_async(
        lambda: work(ledger_url, manifest_name, lease_s=lease_s, ledger_retry_s=ledger_retry_s)
    )
    click.echo(json.dumps(report))
    _leave(code)


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@logging_options
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
    "--budget",
    "budget_usd",
    type=FiniteRange(0, MAX_BUDGET_USD),
    help="With --save: the budget workers share.",
)
@logging_options
def plan(manifest: str, ledger_url: str | None, as_json: bool, save: bool, budget_usd: float | None) -> None:
    """Validate and expand MANIFEST without calling the API: jobs, what is done, estimated cost."""
    from pipeline.planning import plan_report, render_plan, save_plan

    place = _ledger_place(manifest, ledger_url, must_exist=False)
    if save:
        _run_async(lambda: save_plan(manifest, place.url, budget_usd))
    report = _run_async(lambda: plan_report(manifest, place.url, where=place.describe()))
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
    else:
        click.echo(render_plan(report))


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@ledger_option
@click.option(
    "--base-url",
    callback=_base_url,
    help="API base URL (overrides provider.base_url; e.g. a fake server).",
)
@json_option
@logging_options
def doctor(manifest: str, ledger_url: str | None, base_url: str | None, as_json: bool) -> None:
    """Preflight MANIFEST, spending nothing: manifest, key, ledger, output folder, disk room, provider host.

    One line per check; exit 0 only if all pass (else 2: manifest or key, 5: ledger, output
    folder or disk, 1: the provider's host does not resolve). Nothing is sent, no ledger made.
    """
    from pipeline import doctor as preflight

    place = _ledger_place(manifest, ledger_url, must_exist=False)
    checks = _run_async(lambda: preflight.diagnose(manifest, place, base_url=base_url))
    if as_json:
        click.echo(json.dumps(preflight.as_json(checks), sort_keys=True))
    else:
        for check in checks:
            click.echo(check.line())
    sys.exit(preflight.exit_code(checks))


@main.command()
@click.argument("manifest", required=False)
@ledger_option
@json_option
@click.option(
    "--in-doubt",
    "in_doubt",
    is_flag=True,
    help="List the attempts in doubt (may have been billed twice): job, op, prompt, time, why.",
)
@logging_options
def status(manifest: str | None, ledger_url: str | None, as_json: bool, in_doubt: bool) -> None:
    """Counts per state, spend, in-doubt attempts, failures by reason, runs and workers."""
    from pipeline.reporting import in_doubt_report, render_in_doubt, status_summary

    ledger_url = _ledger_place(manifest, ledger_url, must_exist=True).url
    if in_doubt:
        report = _run_async(lambda: in_doubt_report(ledger_url, manifest))
        click.echo(json.dumps(report, sort_keys=True) if as_json else render_in_doubt(report))
        return
    summary = _run_async(lambda: status_summary(ledger_url, manifest))
    _emit(summary, as_json)


@main.command()
@click.argument("manifest", required=False)
@ledger_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl", "hf"]),
    default="csv",
    show_default=True,
    help="csv, jsonl, or hf: metadata.jsonl beside the images for datasets' imagefolder.",
)
@click.option(
    "--kind",
    type=click.Choice(["images", "descriptions"]),
    default="images",
    show_default=True,
    help="Rows of images (generate, remix, upscale) or of descriptions (describe).",
)
@click.option(
    "--state",
    type=click.Choice(["succeeded", "failed", "all"]),
    default="succeeded",
    show_default=True,
    help="Results of succeeded jobs, one row per failed job (reason, message), or both.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(),
    help="Write to FILE instead of stdout (hf: the folder for metadata.jsonl; default: the images' folder).",
)
@click.option("--picked", is_flag=True, help="Only the images picked in `ideobatch serve`.")
@logging_options
def export(
    manifest: str | None,
    ledger_url: str | None,
    fmt: str,
    kind: str,
    state: str,
    out_path: str | None,
    picked: bool,
) -> None:
    """One row per image (or description): request fields, prompts, seed, path, sha256, size, cost..."""
    from pipeline.export import export as export_rows
    from pipeline.export import export_hf

    ledger_url = _ledger_place(manifest, ledger_url, must_exist=True).url

    if fmt == "hf":
        if kind != "images" or state != "succeeded":
            _say("error: --format hf lists image files: it takes neither --kind descriptions nor --state")
            sys.exit(EXIT_USAGE)
        written = _run_async(lambda: export_hf(ledger_url, manifest, out_path, picked=picked))
        if written.missing:
            _say(
                f"warning: {written.missing} image file(s) the ledger lists are gone: left out",
                event="missing_files",
                level=logging.WARNING,
            )
        folder = written.metadata.parent
        _say(
            f"{written.images} image(s) listed in {written.metadata}; load them with "
            f'datasets.load_dataset("imagefolder", data_dir={str(folder)!r})',
            event="exported",
            level=logging.INFO,
        )
        return
    if out_path is None:
        try:
            _run_async(
                lambda: export_rows(
                    ledger_url, manifest, sys.stdout, fmt=fmt, kind=kind, state=state, picked=picked
                )
            )
        except BrokenPipeError:
            # the reader stopped reading (`| head`): not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    try:
        handle = open(out_path, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed below)
    except OSError as exc:
        _say(f"error: cannot write {out_path}: {exc.strerror or exc}")
        sys.exit(EXIT_UNUSABLE)
    with handle:
        count = _run_async(
            lambda: export_rows(ledger_url, manifest, handle, fmt=fmt, kind=kind, state=state, picked=picked)
        )
    _say(f"{count} row(s) written to {out_path}", event="exported", level=logging.INFO)


@main.command()
@click.argument("manifest", required=False)
@ledger_option
@click.option("--failed", is_flag=True, help="Every failed job.")
@click.option("--reason", help="Only failed jobs of this reason (unsafe, url_expired, http_503, ...).")
@logging_options
def retry(manifest: str | None, ledger_url: str | None, failed: bool, reason: str | None) -> None:
    """Put failed jobs back to pending (the next run or worker picks them up)."""
    from pipeline.reporting import retry_jobs

    ledger_url = _ledger_place(manifest, ledger_url, must_exist=True).url

    count = _run_async(lambda: retry_jobs(ledger_url, manifest, failed=failed, reason=reason))
    click.echo(f"{count} job(s) put back to pending")


@main.command()
@click.argument("manifest", required=False)
@ledger_option
@click.option(
    "--out", "out_file", type=click.Path(dir_okay=False), help="HTML file (default: OUTPUT_DIR/gallery.html)."
)
@logging_options
def gallery(manifest: str | None, ledger_url: str | None, out_file: str | None) -> None:
    """A self-contained HTML contact sheet of the produced images (opens without a server)."""
    from pipeline.gallery import build_gallery

    ledger_url = _ledger_place(manifest, ledger_url, must_exist=True).url

    page, pictures, failed = _run_async(lambda: build_gallery(ledger_url, manifest, out_file))
    click.echo(f"{page}  ({pictures} picture(s), {failed} failed job(s))")


@main.command()
@click.argument("manifest")
@ledger_option
@click.option("--rejected", is_flag=True, help="A new job for each image rejected in `ideobatch serve`.")
@logging_options
def reroll(manifest: str, ledger_url: str | None, rejected: bool) -> None:
    """Plan new jobs for rejected images: same request, a new seed, the next replica (paid as usual)."""
    from pipeline.errors import UsageError
    from pipeline.reroll import check_selection, reroll_rejected

    try:
        check_selection(rejected)
    except UsageError as exc:
        _say(f"error: {exc}")
        sys.exit(EXIT_USAGE)
    ledger_url = _ledger_place(manifest, ledger_url, must_exist=True).url

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
@logging_options
def serve(
    ledger_url: str | None,
    host: str,
    port: int,
    allow_actions: bool,
    token: str | None,
    thumbs_dir: str | None,
) -> None:
    """A live web view of the ledger: progress, gallery, picks, failures, /metrics."""
    from pipeline.review.app import ReviewOptions, serve_forever
    from pipeline.review.security import check_bind

    if (problem := check_bind(host, token or None)) is not None:
        _say(f"error: {problem}")
        sys.exit(EXIT_USAGE)
    ledger_url = _ledger_place(None, ledger_url, must_exist=True).url
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
@click.option(
    "--base-url",
    callback=_base_url,
    help="API base URL for every manifest (overrides provider.base_url; e.g. a fake server).",
)
@lease_option
@ledger_retry_option
@logging_options
def worker(
    ledger_url: str | None,
    follow: bool,
    base_url: str | None,
    quiet: bool,
    lease_s: float,
    ledger_retry: str | None,
) -> None:
    """Claim and execute pending jobs of every planned manifest (many machines, one ledger).

    Exit codes as `run`: 0 every job it ran succeeded, 1 some failed, 3 a
    manifest was aborted (key, budget) or the worker interrupted, 5 a ledger
    or output folder could not be used. With --follow a ledger that stops
    answering is waited for as long as it takes.
    """
    from pipeline.running import run_worker

    url = _ledger_place(None, ledger_url, must_exist=False).url
    window = _window(ledger_retry)
    if follow and window is None:
        window = float("inf")
    outcome = _run_async(
        lambda: run_worker(
            url,
            follow=follow,
            quiet=quiet,
            lease_s=lease_s,
            ledger_retry_s=window,
            base_url=base_url,
        )
    )
    if outcome.interrupted:
        _interrupted()
    sys.exit(outcome.code)


@main.group()
def db() -> None:
    """Ledger schema maintenance."""


@db.command("upgrade")
@ledger_option
@logging_options
def db_upgrade(ledger_url: str | None) -> None:
    """Apply the ledger's Alembic migrations (PostgreSQL needs this once per release)."""
    from pipeline.ledger.repository import Ledger

    url = _ledger_place(None, ledger_url, must_exist=False).url

    async def upgrade() -> None:
        ledger = await Ledger.open(url, upgrade=True)
        await ledger.close()

    _run_async(upgrade)
    click.echo(f"ledger {url.split('@')[-1]} is at the newest schema")


@main.command()
@click.option(
    "--dir",
    "folder",
    default="ideobatch-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the demo writes its images, gallery and ledger.",
)
@logging_options
def demo(folder: str, quiet: bool) -> None:
    """Start the fake server in-process and run jobs/demo.yaml against it."""
    from pipeline.demo import run_demo

    code, lines = _run_async(lambda: run_demo(os.path.abspath(folder), quiet=quiet))
    for line in lines:
        click.echo(line)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
