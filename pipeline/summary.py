"""The summary shared by `run --json` and `status --json` (SPEC §7), and its text form."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline.exit_codes import EXIT_ABORTED, EXIT_FAILED_JOBS, EXIT_OK, EXIT_UNUSABLE
from pipeline.ledger.records import to_usd
from pipeline.ledger.reports import LedgerStatus

if TYPE_CHECKING:
    from pipeline.worker import RunResult

#: job states as the summary counts them; ``withdrawn``: taken out of the manifest, never run
JOB_STATES = ("pending", "running", "succeeded", "failed", "withdrawn")
#: the states that are work of the manifest (a withdrawn job is not)
WORK_STATES = JOB_STATES[:4]
IMAGE_STATES = ("downloaded", "withheld", "expired")


def iso_time(timestamp: float | None) -> str | None:
    """A unix time as ISO 8601 with its date and UTC offset (``2025-06-01T02:15:07+00:00``)."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")


def _timed(run: dict[str, Any]) -> dict[str, Any]:
    return {**run, "started_at": iso_time(run["started_at"]), "ended_at": iso_time(run["ended_at"])}


def build_summary(status: LedgerStatus, run: RunResult | None = None) -> dict[str, Any]:
    """The one JSON shape of `status` and `run`: ledger-wide counts, plus this run's if any."""
    summary: dict[str, Any] = {
        "manifest": status.manifest,
        "jobs": {state: status.jobs.get(state, 0) for state in JOB_STATES},
        "by_op": {
            op: {s: states.get(s, 0) for s in JOB_STATES} for op, states in sorted(status.by_op.items())
        },
        "images": {state: status.images.get(state, 0) for state in (*IMAGE_STATES, "failed", "pending")},
        "descriptions": status.descriptions,
        "spend_usd": round(to_usd(status.spent_micros), 6),
        "budget_usd": None if status.budget_micros is None else round(to_usd(status.budget_micros), 6),
        "in_doubt": status.in_doubt,
        "in_doubt_usd": round(to_usd(status.in_doubt_micros), 6),
        "failures": {reason: count for reason, (count, _example) in sorted(status.failures.items())},
        "failure_examples": {
            reason: example for reason, (_count, example) in sorted(status.failures.items())
        },
        "duration_s": None,
        "runs": [_timed(r) for r in status.runs],
        "workers": [_timed(w) for w in status.workers],
        "accounts": status.accounts,
    }
    if status.runs:
        summary["duration_s"] = status.runs[0]["duration_s"]
    if run is not None:
        tally = run.tally
        summary["duration_s"] = round(run.duration_s, 3)
        summary["run"] = {
            "succeeded": tally.succeeded,
            "failed": tally.failed,
            "retried": tally.retried,
            "in_doubt": tally.in_doubt,
            "images": tally.images,
            "withheld": tally.withheld,
            "expired": tally.expired,
            "spend_usd": round(to_usd(tally.spend_micros), 6),
            "failures": dict(sorted(tally.failures.items())),
            "stop_reason": run.stop_reason,
            "message": run.message,
            "peak_images_in_flight": run.peak_images_in_flight,
            "kept_answers": list(run.kept_answers),
        }
    return summary


def exit_code(summary: dict[str, Any], run: RunResult) -> int:
    """0 all succeeded, 1 some failed, 3 aborted (auth, budget, interrupted, error), 5 ledger/output."""
    if run.stop_reason in ("ledger", "output"):
        return EXIT_UNUSABLE
    if run.stop_reason in ("fatal", "budget", "interrupted"):
        return EXIT_ABORTED
    if summary["jobs"]["failed"]:
        return EXIT_FAILED_JOBS
    return EXIT_OK


def render_text(summary: dict[str, Any]) -> str:
    """The summary for people."""
    jobs = summary["jobs"]
    images = summary["images"]
    lines = [f"manifest {summary['manifest']}" if summary["manifest"] else "all manifests"]
    if summary.get("ledger_unavailable"):
        lines.append(f"ledger: {summary['ledger_unavailable']}")
        lines.append("(the ledger could not be read: the counts below are this run's only)")
    work = sum(jobs[s] for s in WORK_STATES)
    lines.append("jobs:   " + ", ".join(f"{jobs[s]} {s}" for s in WORK_STATES) + f"  (total {work})")
    if jobs["withdrawn"]:
        lines.append(f"        {jobs['withdrawn']} withdrawn: no longer in the manifest, never run")
    width = max([9, *(len(op) for op in summary["by_op"])])
    for op, states in summary["by_op"].items():
        lines.append(f"  {op:<{width}} " + ", ".join(f"{states[s]} {s}" for s in JOB_STATES if states[s]))
    lines.append(
        f"images: {images['downloaded']} downloaded, {images['withheld']} withheld, "
        f"{images['expired']} expired"
        + (f", {images['failed']} failed" if images["failed"] else "")
        + (f"; {summary['descriptions']} descriptions" if summary["descriptions"] else "")
    )
    budget = f" of ${summary['budget_usd']:.2f} budget" if summary["budget_usd"] is not None else ""
    lines.append(f"spend:  ${summary['spend_usd']:.2f}{budget}")
    doubt = summary["in_doubt"]
    lines.append(
        f"in doubt: {doubt} attempt(s) may have been billed twice"
        + (f" (up to ${summary['in_doubt_usd']:.2f}; `status --in-doubt` lists them)" if doubt else "")
    )
    if summary["failures"]:
        lines.append("failures:")
        for reason, count in summary["failures"].items():
            example = summary["failure_examples"].get(reason, "")
            lines.append(f"  {reason:<18} {count:>6}   e.g. {example[:120]}")
    run = summary.get("run")
    if run is not None:
        lines.append(
            f"this run: {run['succeeded']} succeeded, {run['failed']} failed, {run['retried']} retried, "
            f"{run['in_doubt']} in doubt, ${run['spend_usd']:.2f} in {summary['duration_s']:.1f}s"
        )
        if run["stop_reason"] == "interrupted":
            left = summary["jobs"]["pending"] + summary["jobs"]["running"]
            lines.append(f"{run['message'] or 'interrupted'}: {left} job(s) left for the next run")
        elif run["stop_reason"]:
            lines.append(f"stopped: {run['message'] or run['stop_reason']}")
        if run.get("kept_answers"):
            lines.append(
                f"kept {len(run['kept_answers'])} paid answer(s) on disk (under "
                f"{_common_folder(run['kept_answers'])}): the next run records them without paying again"
            )
    elif summary["runs"]:
        last = summary["runs"][0]
        lines.append(
            f"last run: {last['kind']} on {last['host']} pid {last['pid']}, {last['duration_s']:.1f}s, "
            f"{last['outcome'] or 'still running'}"
        )
    if summary["workers"]:
        lines.append("workers:")
        for worker in summary["workers"]:
            age = worker["heartbeat_age_s"]
            lines.append(f"  {worker['host']} pid {worker['pid']} ({worker['kind']}), heartbeat {age}s ago")
    for account in summary.get("accounts", []):
        learned = account["learned_cap"]
        cap = f"cap {account['cap']}" + (f", learned {learned} from 429s" if learned is not None else "")
        flying = sum(account["in_flight"].values())
        lines.append(
            f"account {account['base_url']} ({account['key_env']}): {cap}; "
            f"{flying} image(s) in flight, {account['waiting']} call(s) waiting"
        )
        for owner, images in sorted(account["in_flight"].items()):
            lines.append(f"  {owner}: {images} in flight")
    return "\n".join(lines)


def _common_folder(paths: list[str]) -> str:
    import os

    return os.path.dirname(os.path.commonpath(paths)) if len(paths) == 1 else os.path.commonpath(paths)
