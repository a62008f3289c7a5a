"""The service's job queue: every door (RunPod routes, remove.bg, playground) submits here, so
concurrency, queue depth and metrics mean one thing. Jobs run in a thread pool through the
worker's own :class:`~ben2_worker.api.jobs.JobProcessor` (called exactly as the RunPod SDK
calls the handler: ``processor({"id", "input"})``); results are kept in RunPod's status shape
for as long as the submitting route asks (``/run``: ``result_ttl_s``; ``/runsync``: a minute, as
RunPod; remove.bg: not at all once answered), and never more than :data:`MAX_KEPT` of them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .metrics import Metrics, pipeline_label

log = logging.getLogger("ben2_worker.service")

IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"
FINAL = frozenset({COMPLETED, FAILED, CANCELLED})

Processor = Callable[[dict], dict]
#: Finished jobs kept for /status at most (their outputs can be megabytes each).
MAX_KEPT = 1000


class QueueFull(Exception):
    pass


@dataclass
class JobRecord:
    id: str
    input: Any
    processor: Processor
    route: str
    webhook: str | None = None
    #: Seconds the finished result stays readable via /status.
    keep_s: float = 1800.0
    status: str = IN_QUEUE
    output: Any = None
    error: str | None = None
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pipeline(self) -> str:
        return pipeline_label(self.input)

    def as_status(self) -> dict:
        """RunPod's job status: ``id``, ``status``, ``output`` or ``error``, ``delayTime`` and
        ``executionTime`` (ms)."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started is not None:
            body["delayTime"] = int((self.started - self.submitted) * 1000)
        if self.finished is not None and self.started is not None:
            body["executionTime"] = int((self.finished - self.started) * 1000)
        if self.status == COMPLETED:
            body["output"] = self.output
        elif self.status == FAILED:
            body["error"] = self.error
        return body


def outcome_of(record: JobRecord) -> str:
    if record.status != COMPLETED:
        return record.status.lower()
    status = record.output.get("status") if isinstance(record.output, dict) else None
    return status if status in ("blocked", "partially_blocked") else "completed"


class JobQueue:
    def __init__(self, *, metrics: Metrics, concurrency: int, limit: int,
                 ready: Callable[[], Awaitable[str | None]],
                 on_finish: Callable[[JobRecord], Awaitable[None]] | None = None):
        self.metrics = metrics
        self.concurrency = concurrency
        self.limit = limit
        self._ready = ready  # awaits model loading; answers an error message if it failed
        self._on_finish = on_finish
        self._jobs: OrderedDict[str, JobRecord] = OrderedDict()
        self._queue: asyncio.Queue[JobRecord] | None = None
        self._workers: list[asyncio.Task] = []
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="service-job")
        self.counts = {"completed": 0, "failed": 0, "retried": 0}

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._workers = [asyncio.create_task(self._work(), name=f"job-worker-{i}") for i in range(self.concurrency)]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ API

    def submit(self, job_input: Any, processor: Processor, *, route: str, keep_s: float,
               webhook: str | None = None) -> JobRecord:
        assert self._queue is not None, "JobQueue.start() was not awaited"
        self._expire()
        if self.waiting >= self.limit:
            raise QueueFull(f"the queue is full ({self.limit} jobs waiting); retry later")
        record = JobRecord(id=str(uuid.uuid4()), input=job_input, processor=processor, route=route, webhook=webhook,
                           keep_s=keep_s)
        self._jobs[record.id] = record
        self._queue.put_nowait(record)
        self.metrics.queue_depth.set(self.waiting)
        return record

    def get(self, job_id: str) -> JobRecord | None:
        self._expire()
        return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a queued job; a running one is marked CANCELLED and its result discarded
        (a thread cannot be stopped from Python; the job's own time limit still applies)."""
        record = self.get(job_id)
        if record is not None and record.status not in FINAL:
            self._finish(record, CANCELLED)
        return record

    def purge(self) -> int:
        waiting = [r for r in self._jobs.values() if r.status == IN_QUEUE]
        for record in waiting:
            self._finish(record, CANCELLED)
        return len(waiting)

    @property
    def waiting(self) -> int:
        return sum(1 for r in self._jobs.values() if r.status == IN_QUEUE)

    @property
    def running(self) -> int:
        return sum(1 for r in self._jobs.values() if r.status == IN_PROGRESS)

    # ------------------------------------------------------------------ internals

    async def _work(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            record = await self._queue.get()
            if record.status != IN_QUEUE:
                continue  # cancelled while waiting
            problem = await self._ready()
            if record.status != IN_QUEUE:
                continue
            record.started = time.time()
            self.metrics.queue_wait.observe(record.started - record.submitted)
            if problem:
                self._finish(record, FAILED, error=f"the service could not load its models: {problem}")
                continue
            record.status = IN_PROGRESS
            self.metrics.queue_depth.set(self.waiting)
            self.metrics.in_progress.set(self.running)
            try:
                result = await loop.run_in_executor(self._pool, record.processor, {"id": record.id, "input": record.input})
            except Exception as exc:  # noqa: BLE001 - the processor never raises; be safe anyway
                log.exception("job %s crashed", record.id)
                result = {"error": f"internal error: {type(exc).__name__}: {exc}"}
            if record.status == CANCELLED:
                continue
            if isinstance(result, dict) and result.pop("refresh_worker", False):
                log.error("job %s asked to recycle the worker (a stage overran its time limit and its thread "
                          "may still be busy); restart the service when convenient", record.id)
            if isinstance(result, dict) and "error" in result:
                self._finish(record, FAILED, error=str(result["error"]))
            else:
                self._finish(record, COMPLETED, output=result)

    def _finish(self, record: JobRecord, status: str, *, output: Any = None, error: str | None = None) -> None:
        record.status, record.output, record.error = status, output, error
        record.finished = time.time()
        if record.started is None:
            record.started = record.finished
        outcome = outcome_of(record)
        self.metrics.jobs.labels(record.route, record.pipeline, outcome).inc()
        if status in (COMPLETED, FAILED):
            self.counts["completed" if status == COMPLETED else "failed"] += 1
            self.metrics.job_seconds.labels(record.pipeline).observe(record.finished - record.started)
        if status == COMPLETED:
            self.metrics.record_timings(output)
        self.metrics.queue_depth.set(self.waiting)
        self.metrics.in_progress.set(self.running)
        record.done.set()
        if self._on_finish is not None and record.webhook and status in (COMPLETED, FAILED):
            asyncio.get_running_loop().create_task(self._on_finish(record))

    def _expire(self) -> None:
        now = time.time()
        finished = [r for r in self._jobs.values() if r.finished is not None]
        for record in finished:
            if now - record.finished > record.keep_s:
                del self._jobs[record.id]
        for record in finished[: max(0, len(finished) - MAX_KEPT)]:  # oldest submissions first
            self._jobs.pop(record.id, None)
