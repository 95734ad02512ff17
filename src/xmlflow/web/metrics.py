"""``GET /metrics``: Prometheus text format, one registry per app (so per process).

Two sources, each chosen for what it can answer truthfully:

- **The store, read at scrape time**: jobs by status and the queue depth. The store
  is shared by every process (SQLite file or Redis), so these gauges are the same
  whichever process is scraped.
- **Events appended in this process**: step durations, finished jobs, their
  duration and bytes. The runner appends them where the job runs, so these are
  counters of the work *this* process did; sum them over processes in PromQL. A job
  cancelled while still queued never ran, and is not counted here.
- **Open SSE streams** of this process, counted by the stream's body (:func:`open_streams`),
  and the event log's listener registrations (embedded mode), read at scrape time.
- **Webhook tries** this process made, by outcome (``delivered``, ``failed`` and to be
  retried, ``dropped``); with the deliveries still pending in the shared outbox, read
  at scrape time. In Redis mode workers deliver too: their tries are in their logs.

Events are observed as the service appends them (:meth:`Service.add_observer`): the
runner, the store and the stream stay unaware of metrics, and a failing metric can
never fail a job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ..models import Event, EventType, JobStatus
from ..service import Service

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)
EXTENSION = "xmlflow.metrics"
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    """The metrics of one app, in their own registry."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.registry.register(StoreCollector(service))
        r = self.registry
        self.step_duration = Histogram(
            "xmlflow_step_duration_seconds", "Time steps took, by step id and outcome.",
            ["step", "status"], buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.job_duration = Histogram(
            "xmlflow_job_duration_seconds", "Time from start to end of jobs run here.",
            ["pipeline", "status"], buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.jobs_finished = Counter(
            "xmlflow_jobs_finished", "Jobs that ended in this process.",
            ["pipeline", "status"], registry=r,
        )  # fmt: skip
        self.bytes_processed = Counter(
            "xmlflow_processed_bytes", "Uploaded bytes of the jobs that ended here.",
            ["status"], registry=r,
        )  # fmt: skip
        self.open_streams = Gauge(
            "xmlflow_open_streams", "Event streams this process is serving now.", registry=r
        )
        listeners = getattr(service.backend.events, "listeners", None)  # the embedded log's
        if listeners is not None:
            Gauge(
                "xmlflow_event_listeners", "Listener registrations this process's event log "
                "holds now (0 when no stream is open: none leaks).", registry=r,
            ).set_function(listeners)  # fmt: skip
        self.webhook_deliveries = Counter(
            "xmlflow_webhook_deliveries", "Webhook tries made by this process, by outcome.",
            ["outcome"], registry=r,
        )  # fmt: skip

    def observe(self, event: Event) -> None:
        """Count one event appended in this process; never raises."""
        try:
            if event.type is EventType.STEP:
                self._observe_step(event.data)
            elif event.type is EventType.END:
                self._observe_end(event)
        except Exception:
            log.exception("metrics: could not count event %s of job %s", event.id, event.job_id)

    def _observe_step(self, data: dict[str, Any]) -> None:
        if data.get("status") != "running" and data.get("elapsed") is not None:
            self.step_duration.labels(data["id"], data["status"]).observe(data["elapsed"])

    def _observe_end(self, event: Event) -> None:
        job = self.service.store.get(event.job_id)
        if job is None:
            return
        status = str(event.data.get("status"))
        self.jobs_finished.labels(job.pipeline_name, status).inc()
        self.bytes_processed.labels(status).inc(job.size)
        if job.started_at is not None and job.ended_at is not None:
            duration = max(job.ended_at - job.started_at, 0.0)
            self.job_duration.labels(job.pipeline_name, status).observe(duration)


class StoreCollector(Collector):
    """Gauges read from the shared store when Prometheus scrapes."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("xmlflow_store_up", "1 when the job store answered this scrape.")
        try:
            jobs, depth = self._read()
        except Exception:
            log.warning("metrics: the job store did not answer", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield jobs
        yield GaugeMetricFamily("xmlflow_queue_depth", "Jobs waiting to run.", value=depth)
        outbox = self.service.backend.outbox
        if outbox is not None:
            try:
                pending = outbox.pending()
            except Exception:
                log.warning("metrics: the webhook outbox did not answer", exc_info=True)
                return
            yield GaugeMetricFamily(
                "xmlflow_webhooks_pending", "Webhook deliveries not yet done.", value=pending
            )

    def _read(self) -> tuple[GaugeMetricFamily, int]:
        store = self.service.store
        jobs = GaugeMetricFamily("xmlflow_jobs", "Jobs in the store, by status.", labels=["status"])
        for status in JobStatus:
            _, total = store.list_jobs(status=status, limit=1)
            jobs.add_metric([str(status)], total)
        return jobs, int(store.count_queued())


def init_app(app: Flask, service: Service) -> Metrics:
    """Create the app's metrics, watch its events and streams, add ``/metrics``."""
    metrics = Metrics(service)
    app.extensions[EXTENSION] = metrics
    service.add_observer(metrics.observe)
    if service.webhooks is not None:
        deliveries = metrics.webhook_deliveries
        service.webhooks.on_outcome = lambda outcome: deliveries.labels(outcome).inc()
    app.register_blueprint(bp)
    return metrics


def open_streams() -> Gauge | None:
    """The current app's gauge of open streams, which the stream's body keeps itself.

    The body's own generator increments it when it starts and decrements it when it
    is closed or dropped (end or disconnect), see ``web.stream``; a wrapping generator
    would cost a Python frame per event on every stream.
    """
    metrics: Metrics | None = current_app.extensions.get(EXTENSION)
    return metrics.open_streams if metrics is not None else None


@bp.get("/metrics")
def metrics_view() -> Response:
    registry = current_app.extensions[EXTENSION].registry
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
