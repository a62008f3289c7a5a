"""Prometheus metrics, one registry per app (so two apps in one process, as in tests, never
collide). Labels are bounded sets: pipelines, outcomes, stage names from our own timers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401 - re-exported for the route

#: Stage latencies run from ~1 ms (encode of a small image) to minutes (a slow classifier).
_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
PIPELINE_LABELS = ("simple", "full", "workflow", "unknown")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.jobs = Counter("ben2_jobs_total", "Finished jobs by route, pipeline and outcome",
                            ("route", "pipeline", "outcome"), registry=r)
        self.job_seconds = Histogram("ben2_job_seconds", "Job execution time (queue wait excluded)",
                                     ("pipeline",), buckets=_JOB_BUCKETS, registry=r)
        self.queue_wait = Histogram("ben2_queue_wait_seconds", "Time jobs waited in the queue",
                                    buckets=_JOB_BUCKETS, registry=r)
        self.stage_seconds = Histogram("ben2_stage_seconds", "Per-stage latency reported by the pipeline",
                                       ("stage",), buckets=_STAGE_BUCKETS, registry=r)
        self.queue_depth = Gauge("ben2_queue_depth", "Jobs waiting to run", registry=r)
        self.in_progress = Gauge("ben2_jobs_in_progress", "Jobs running now", registry=r)
        self.model_load = Gauge("ben2_model_load_seconds", "Seconds spent loading the models at start", registry=r)
        self.warmup = Gauge("ben2_warmup_seconds", "Seconds spent on the warm-up jobs at start", registry=r)
        self.ready = Gauge("ben2_ready", "1 once the models are loaded and warmed", registry=r)
        self.refused = Counter("ben2_refused_requests_total", "Requests refused before any work, by reason",
                               ("route", "reason"), registry=r)
        self.webhooks = Counter("ben2_webhook_deliveries_total", "Completion callbacks by outcome",
                                ("outcome",), registry=r)
        self.webhook_attempts = Counter("ben2_webhook_attempts_total", "Callback POST attempts", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def record_timings(self, output: object) -> None:
        """Stage timings (ms) from a job's output: per image (task API) or per node (workflows,
        keyed ``"<node id>:<class>"``; the class is the label)."""
        if not isinstance(output, dict):
            return
        entries = [e.get("timings") for e in output.get("images") or [] if isinstance(e, dict)]
        if not any(entries):
            entries = [output.get("timings")]
        for timings in entries:
            if not isinstance(timings, dict):
                continue
            for stage, ms in timings.items():
                if isinstance(ms, (int, float)) and stage != "total":
                    self.stage_seconds.labels(str(stage).split(":", 1)[-1][:64]).observe(ms / 1000.0)


def pipeline_label(job_input: object) -> str:
    """Which pipeline a job input asks for, as a bounded label."""
    if isinstance(job_input, dict):
        if "workflow" in job_input:
            return "workflow"
        pipeline = job_input.get("pipeline", "simple")
        return pipeline if pipeline in PIPELINE_LABELS else "unknown"
    return "unknown"
