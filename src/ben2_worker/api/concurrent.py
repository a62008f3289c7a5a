"""Several jobs on one worker at once: an ``async`` RunPod handler that offloads each job.

Why: RunPod lets one worker take several jobs (``concurrency_modifier``), but the SDK calls the
handler inside its asyncio loop, so a plain handler runs them one after another
(docs/contracts.md, RunPod). Here each job runs, whole, in a thread of a pool sized to the
concurrency, while the loop only awaits it. The jobs' CPU stages — fetch, decode, resize,
matte, compose, encode, delivery, mostly in numpy/OpenCV/zlib/simplejpeg code that releases the
GIL — then overlap with another job's model run. The model session stays single-flight
(:class:`~ben2_worker.ben2.Ben2Model` serialises its runs): on a GPU one run at a time is as
fast as two interleaved, and on a CPU quota concurrent runs only thrash the cache. The
published BEN2 file has a fixed batch of 1, so concurrent jobs are overlapped, not batched.

A job's failure stays its own: :class:`~ben2_worker.api.jobs.JobProcessor` turns every error
into that job's ``{"error": ...}`` response, and anything that escapes it is answered here for
that job alone. Timings and the default concurrency: docs/performance.md."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Jobs one worker takes at once when BEN2 runs on a GPU and nothing was configured: enough to
#: keep the model busy while other jobs decode and encode (docs/performance.md).
GPU_DEFAULT_CONCURRENCY = 4
#: ... and on a CPU-only worker, where the model already uses every core of the quota.
CPU_DEFAULT_CONCURRENCY = 1
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "DmlExecutionProvider", "ROCMExecutionProvider")


def default_concurrency(configured: int | None, providers: tuple[str, ...] | list[str]) -> int:
    """``configured`` (BEN2_WORKER_CONCURRENCY) when set, else a few jobs on a GPU and one on a CPU."""
    if configured:
        return configured
    return GPU_DEFAULT_CONCURRENCY if any(p in GPU_PROVIDERS for p in providers) else CPU_DEFAULT_CONCURRENCY


class ConcurrentJobs:
    """Runs ``process(job) -> response`` (a JobProcessor) for up to ``concurrency`` jobs at once.

    ``await jobs(job)`` is the async handler; :meth:`modifier` is the SDK's
    ``concurrency_modifier``."""

    def __init__(self, process: Callable[[dict], dict], concurrency: int):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.process = process
        self.concurrency = concurrency
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="job-slot")

    def modifier(self, current: int) -> int:
        """RunPod's ``concurrency_modifier(current) -> int``: the fixed number of jobs at once."""
        return self.concurrency

    async def __call__(self, job: dict) -> dict:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, self.process, job)
        except Exception as exc:  # noqa: BLE001 - a bug in one job must not reach the SDK's loop
            log.exception("job %s failed outside its processor", job.get("id") if isinstance(job, dict) else None)
            return {"error": f"internal error: {type(exc).__name__}: {exc}"}

    def close(self) -> None:
        self._pool.shutdown(wait=True)
