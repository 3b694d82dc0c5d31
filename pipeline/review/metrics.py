"""``/metrics`` in the Prometheus text format, computed from the ledger at each scrape.

Nothing is counted in the server's memory: every value is read from the
ledger when Prometheus asks, so a scrape sees the runs of every process on
the ledger, and a restarted server loses nothing. Per manifest (label
``manifest``):

- ``ideobatch_jobs{state}``, ``ideobatch_images{state}``, ``ideobatch_failed_jobs{reason}``,
  ``ideobatch_picks{verdict}``: gauges of what the ledger holds now;
- ``ideobatch_spend_usd_total``, ``ideobatch_budget_usd``, ``ideobatch_reserved_usd``;
- ``ideobatch_images_in_flight``: images of requests sent and not yet answered;
- ``ideobatch_requests_total{status}`` (finished attempts by HTTP status, ``none`` for a
  connection error or a timeout), ``ideobatch_rate_limited_total`` (429 answers) and
  ``ideobatch_in_doubt_total`` (attempts that may have been billed twice);
- ``ideobatch_request_duration_seconds``: a histogram of answered attempts' duration
  (from the attempt's start to its recorded end).

And ``ideobatch_workers{kind}``: live run and worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.ledger.records import to_usd
from pipeline.ledger.review import LATENCY_BUCKETS_S, ManifestMetrics, WorkerView
from pipeline.review.state import STATE

JOB_STATES = ("pending", "running", "succeeded", "failed", "withdrawn")
IMAGE_STATES = ("downloaded", "withheld", "expired", "failed", "pending")
RATE_LIMITED = 429


class LedgerCollector(Collector):
    """The metric families of one scrape's reading of the ledger."""

    def __init__(self, manifests: Sequence[ManifestMetrics], workers: Sequence[WorkerView]) -> None:
        self.manifests = manifests
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        """Every family, one sample per manifest (and state, reason, status...)."""
        label = ["manifest"]
        jobs = GaugeMetricFamily("ideobatch_jobs", "Jobs by state.", labels=[*label, "state"])
        images = GaugeMetricFamily("ideobatch_images", "Images by state.", labels=[*label, "state"])
        failed = GaugeMetricFamily(
            "ideobatch_failed_jobs", "Failed jobs by reason.", labels=[*label, "reason"]
        )
        picks = GaugeMetricFamily("ideobatch_picks", "Images judged, by verdict.", labels=[*label, "verdict"])
        spend = CounterMetricFamily("ideobatch_spend_usd", "Money spent (USD).", labels=label)
        budget = GaugeMetricFamily("ideobatch_budget_usd", "The manifest's budget (USD).", labels=label)
        reserved = GaugeMetricFamily(
            "ideobatch_reserved_usd", "Money reserved by jobs being worked on (USD).", labels=label
        )
        in_flight = GaugeMetricFamily(
            "ideobatch_images_in_flight", "Images of requests sent and not answered yet.", labels=label
        )
        requests = CounterMetricFamily(
            "ideobatch_requests", "Finished API attempts by HTTP status.", labels=[*label, "status"]
        )
        limited = CounterMetricFamily("ideobatch_rate_limited", "Attempts answered 429.", labels=label)
        doubt = CounterMetricFamily(
            "ideobatch_in_doubt", "Attempts that may have been billed twice.", labels=label
        )
        latency = HistogramMetricFamily(
            "ideobatch_request_duration_seconds", "Duration of answered API attempts.", labels=label
        )
        for metrics in self.manifests:
            progress = metrics.progress
            name = [progress.name]
            for state in JOB_STATES:
                jobs.add_metric([*name, state], progress.jobs.get(state, 0))
            for state in IMAGE_STATES:
                images.add_metric([*name, state], progress.images.get(state, 0))
            for reason, count in sorted(progress.failures.items()):
                failed.add_metric([*name, reason], count)
            for verdict, count in sorted(progress.picks.items()):
                picks.add_metric([*name, verdict], count)
            spend.add_metric(name, to_usd(progress.spent_micros))
            if progress.budget_micros is not None:
                budget.add_metric(name, to_usd(progress.budget_micros))
            reserved.add_metric(name, to_usd(progress.reserved_micros))
            in_flight.add_metric(name, progress.in_flight_images)
            for status, count in sorted(metrics.requests.items()):
                requests.add_metric([*name, str(status) if status else "none"], count)
            limited.add_metric(name, metrics.requests.get(RATE_LIMITED, 0))
            doubt.add_metric(name, metrics.in_doubt)
            buckets = [
                (f"{bound:g}", count)
                for bound, count in zip(LATENCY_BUCKETS_S, metrics.latency_buckets, strict=True)
            ]
            buckets.append(("+Inf", metrics.latency_count))
            latency.add_metric(name, buckets, metrics.latency_sum_s)
        workers = GaugeMetricFamily("ideobatch_workers", "Live run and worker processes.", labels=["kind"])
        kinds: dict[str, int] = {}
        for worker in self.workers:
            kinds[worker.kind] = kinds.get(worker.kind, 0) + 1
        for kind, count in sorted(kinds.items()):
            workers.add_metric([kind], count)
        yield from (jobs, images, failed, picks, spend, budget, reserved, in_flight)
        yield from (requests, limited, doubt, latency, workers)


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: the ledger's counters in the Prometheus text format."""
    state = request.app[STATE]
    found = await state.ledger.metrics()
    overview = await state.overview()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(found, overview.workers))
    response = web.Response(body=generate_latest(registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    response.headers["Cache-Control"] = "no-store"
    return response
