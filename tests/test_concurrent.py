"""Several jobs at once on one worker (api/concurrent.py, the async handler): no job lost, each
response belongs to its job, errors stay with their job. The real JobProcessor on the cheap
BEN2 stand-in; the runpod SDK's own job loop cannot run here (it needs RunPod's job queue), so
the tests drive the async handler from an asyncio loop the way the SDK does — many awaited
calls in one loop."""

from __future__ import annotations

import asyncio
import base64
import io
import threading

import numpy as np
import pytest
from conftest import subject_photo
from PIL import Image

from ben2_worker import handler as worker_handler
from ben2_worker.api.concurrent import ConcurrentJobs, default_concurrency
from ben2_worker.api.delivery import Delivery
from ben2_worker.api.jobs import JobProcessor
from ben2_worker.config import Settings
from ben2_worker.engines import Engines, load_cutout_engine


@pytest.fixture(scope="module")
def engines(models_dir) -> Engines:
    settings = Settings(models_dir=models_dir, allow_custom_models=True, threads=1)
    return Engines(cutout=load_cutout_engine(settings), settings=settings)


def jpeg_b64(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.fromarray(subject_photo(width, height)).save(buf, "JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode()


def job(i: int) -> dict:
    """Job ``i``: a photo of its own size, or (every third) an input that is not an image."""
    image = base64.b64encode(b"not an image %d" % i).decode() if i % 3 == 2 else jpeg_b64(320 + 16 * i, 240 + 8 * i)
    return {"id": f"job-{i}", "input": {"image": image}}


class Tracked:
    """The processor, counting how many jobs are inside it at once."""

    def __init__(self, process):
        self.process, self.active, self.most = process, 0, 0
        self._lock = threading.Lock()

    def __call__(self, job: dict) -> dict:
        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            return self.process(job)
        finally:
            with self._lock:
                self.active -= 1


async def run_all(handle, jobs: list[dict]) -> list[dict]:
    return await asyncio.gather(*(handle(j) for j in jobs))


def test_concurrent_jobs_each_get_their_own_response_and_errors_stay_with_their_job(engines):
    tracked = Tracked(JobProcessor(engines, delivery=Delivery(), max_jobs=4))
    jobs = ConcurrentJobs(tracked, concurrency=4)
    try:
        responses = asyncio.run(run_all(jobs, [job(i) for i in range(12)]))
    finally:
        jobs.close()
    assert len(responses) == 12  # no job lost
    assert tracked.most > 1  # they really were in flight together
    for i, response in enumerate(responses):
        if i % 3 == 2:
            assert "not a recognised image format" in response["error"], response
            continue
        assert "error" not in response, response
        (entry,) = response["images"]
        assert entry["filename"] == f"job-{i}.png"  # named for its own job...
        assert (entry["width"], entry["height"]) == (320 + 16 * i, 240 + 8 * i)  # ...and cut from its own photo
        png = Image.open(io.BytesIO(base64.b64decode(entry["data"])))
        assert png.size == (320 + 16 * i, 240 + 8 * i) and png.mode == "RGBA"


def test_a_failure_outside_the_processor_is_answered_for_that_job_alone():
    def process(job: dict) -> dict:
        if job["id"] == "boom":
            raise RuntimeError("a bug")
        return {"id": job["id"]}

    jobs = ConcurrentJobs(process, concurrency=2)
    try:
        responses = asyncio.run(run_all(jobs, [{"id": "a"}, {"id": "boom"}, {"id": "b"}]))
    finally:
        jobs.close()
    assert responses[0] == {"id": "a"} and responses[2] == {"id": "b"}
    assert responses[1] == {"error": "internal error: RuntimeError: a bug"}


def test_default_concurrency_is_one_on_cpu_a_few_on_gpu_and_the_setting_wins():
    assert default_concurrency(None, ("CPUExecutionProvider",)) == 1
    assert default_concurrency(None, ("CUDAExecutionProvider", "CPUExecutionProvider")) == 4
    assert default_concurrency(3, ("CPUExecutionProvider",)) == 3
    assert Settings.from_env({"BEN2_WORKER_CONCURRENCY": "6"}).concurrency == 6
    with pytest.raises(ValueError):
        ConcurrentJobs(lambda j: j, concurrency=0)


def test_the_handler_module_serves_the_async_handler_with_its_concurrency(engines, models_dir):
    settings = Settings(models_dir=models_dir, allow_custom_models=True, threads=1, concurrency=3)
    worker_handler.start_processor(Engines(cutout=engines.cutout, settings=settings))
    assert worker_handler.concurrency_modifier(1) == 3
    responses = asyncio.run(run_all(worker_handler.async_handler, [job(0), job(1), job(2)]))
    assert [r["images"][0]["filename"] for r in responses[:2]] == ["job-0.png", "job-1.png"]
    assert "error" in responses[2]
