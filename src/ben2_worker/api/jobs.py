"""One RunPod job, end to end: parse → decode → run → encode → deliver → respond.

Every failure becomes an ``{"error": ...}`` response naming what was wrong; the worker keeps
serving. A job that overruns its time limit is answered with an error and asks RunPod to
recycle the worker (the stuck thread cannot be killed from Python)."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from ..budget import Budget, JobBudget, bounded_error, clip_text
from ..cutout import CutoutOptions, parse_background
from ..engines import Engines
from ..errors import Ben2WorkerError, InputError
from ..imaging import FORMAT_EXTENSIONS, decode_image, encode_image
from ..pipelines import FullResult, SafetyOptions, require_pipeline, run_full, run_simple
from ..timing import StageTimer
from . import schemas

log = logging.getLogger(__name__)

CONTENT_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}

ProgressFn = Callable[[str], None]


class JobProcessor:
    """The handler's logic over injected engines, runner and delivery (all built once)."""

    def __init__(
        self,
        engines: Engines,
        *,
        runner=None,
        delivery=None,
        fetch_policy=None,
        job_timeout_s: float | None = None,
        safety: SafetyOptions | None = None,
        progress: Callable[[dict, str], None] | None = None,
        max_jobs: int = 1,
    ):
        from .delivery import Delivery
        from .safe_http import FetchPolicy

        self.engines = engines
        self._runner = runner
        settings = engines.settings  # read once at start (config.py); nothing here reads the environment
        self.delivery = delivery or Delivery.from_settings(settings)
        self.fetch_policy = fetch_policy or FetchPolicy.from_settings(settings.urls)
        self.job_timeout_s = job_timeout_s or settings.job_timeout_s
        self.safety = safety or SafetyOptions.from_settings(settings)
        self._progress = progress
        # Room for the jobs in flight at once (api/concurrent.py) plus a few stuck past their limit.
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_jobs + 3, thread_name_prefix="job")
        self._job_state = threading.local()

    @property
    def runner(self):
        if self._runner is None:
            from ..workflow import WorkflowRunner

            self._runner = WorkflowRunner(self.engines)
        return self._runner

    # ------------------------------------------------------------------ entry

    def __call__(self, job: dict) -> dict:
        cancelled = threading.Event()
        future = self._pool.submit(self._process_until, job, cancelled)
        try:
            return future.result(timeout=self.job_timeout_s)
        except concurrent.futures.TimeoutError:
            cancelled.set()  # the stuck thread, if it ever returns, must not deliver anything
            log.error("job %s exceeded %.0f s; asking RunPod to recycle this worker", job.get("id"), self.job_timeout_s)
            return {
                "error": f"job exceeded the {self.job_timeout_s:g} s time limit (BEN2_WORKER_JOB_TIMEOUT)",
                "refresh_worker": True,
            }

    def _process_until(self, job: dict, cancelled: threading.Event) -> dict:
        self._job_state.cancelled = cancelled
        return self._process(job)

    def _deliver(self, job_id: str, artifact, **kwargs) -> dict:
        """Deliver one output, unless the job was already answered with its timeout."""
        cancelled = getattr(self._job_state, "cancelled", None)
        if cancelled is not None and cancelled.is_set():
            from .delivery import DeliveryError

            raise DeliveryError(f"job {job_id} already timed out: its outputs are not delivered")
        if kwargs.get("put_url") is not None:
            field = kwargs.pop("field", "put_url")
            return _named(field, self.delivery.deliver, job_id, artifact, **kwargs)
        return self.delivery.deliver(job_id, artifact, **kwargs)

    def _process(self, job: dict) -> dict:
        job_id = str(job.get("id") or uuid.uuid4())
        progress = (lambda msg: self._progress(job, msg)) if self._progress else (lambda msg: None)
        try:
            data = schemas.parse_job_input(job.get("input"))
            if schemas.is_workflow_request(data):
                response = self._workflow_job(job_id, data, progress)
            else:
                response = self._simple_job(job_id, data, progress)
            from .delivery import response_size_check

            if "error" in response:  # e.g. one detail per bad upload: bounded like any error
                response = bounded_error(response, self.engines.settings.budget.max_error_bytes)
            response_size_check(response)
            return response
        except Ben2WorkerError as exc:
            # Bounded, and never the request's data: messages name fields, not their contents.
            log.info("job %s refused: %s", job_id, clip_text(str(exc), 300))
            return bounded_error(_error_response(exc), self.engines.settings.budget.max_error_bytes)
        except Exception as exc:  # a bug: report it, keep serving
            log.exception("job %s failed", job_id)
            return bounded_error({"error": f"internal error: {type(exc).__name__}: {exc}"}, self.engines.settings.budget.max_error_bytes)

    def _budget(self) -> JobBudget:
        from .delivery import RUNSYNC_LIMIT_BYTES

        inline = None if self.delivery.uses_upload else RUNSYNC_LIMIT_BYTES
        return JobBudget(Budget.from_settings(self.engines.settings), response_limit=inline)

    # ------------------------------------------------------------------ worker-comfyui

    def _workflow_job(self, job_id: str, data: dict, progress: ProgressFn) -> dict:
        workflow, image_specs = schemas.parse_comfy_request(data)
        progress("validating workflow")
        plan = self.runner.prepare(workflow)  # everything is checked once, before anything runs
        images: dict[str, bytes] = {}
        problems = []
        for i, spec in enumerate(image_specs):
            try:
                images[spec["name"]] = schemas.decode_base64_image(spec["image"], field=f"images[{i}].image")
            except InputError as exc:
                problems.append(f"{spec['name']}: {exc}")
        if problems:
            return {"error": "Failed to upload one or more input images", "details": problems}
        progress("running workflow")
        from ..workflow import ContentBlockedError

        try:
            result = self.runner.run(plan, images, progress=progress, budget=self._budget())
        except ContentBlockedError as exc:  # not a crash: the gate did its job
            progress("blocked by the safety gate")
            return {"status": "blocked", "images": [],
                    "verdict": exc.verdict or {"status": "blocked", "reasons": exc.reasons},
                    "message": str(exc)}
        progress("delivering outputs")
        from .delivery import Artifact

        out_images, errors = [], []
        for img in result.images:
            try:
                out_images.append(self._deliver(job_id, Artifact(img.filename, img.data, "image/png")))
            except Ben2WorkerError as exc:
                errors.append(f"{img.filename}: {exc}")
        response: dict[str, Any] = {"images": out_images}
        if result.texts:
            response["text"] = [{"node_id": t.node_id, "class_type": t.class_type, "text": t.text} for t in result.texts]
        response["timings"] = {k: round(v * 1000, 2) for k, v in result.timings.items()}
        if errors:
            response["errors"] = errors
        if not out_images:
            if errors:
                return {"error": "Failed to deliver the output images", "details": errors}
            response["status"] = "success_no_images"
        return response

    # ------------------------------------------------------------------ simple task API

    def _simple_job(self, job_id: str, data: dict, progress: ProgressFn) -> dict:
        from .delivery import Artifact
        from .safe_http import check_url, fetch_url

        request = schemas.parse_simple_request(data)
        require_pipeline(self.engines, request.pipeline)  # before any download or decode
        options = _cutout_options(request.output)
        fmt = options.output_format  # ``auto`` resolved from the options
        items = request.items()
        for i, item in enumerate(items):  # refuse a bad upload target before doing the work
            for name in ("put_url", "mask_put_url"):
                if getattr(item, name):
                    _named(_put_field(request, i, name), check_url, getattr(item, name), self.fetch_policy)
        timers = [StageTimer() for _ in items]
        budget = self._budget()
        decoded = []
        for i, (item, t) in enumerate(zip(items, timers)):
            field = "input.image" if request.image is not None else f"input.images[{i}]"
            progress(f"reading image {i + 1}/{len(items)}")
            with t("fetch"):
                if item.image.startswith(("https://", "http://")):
                    raw = _named(field, fetch_url, item.image, self.fetch_policy)
                else:
                    raw = schemas.decode_base64_image(item.image, field=field)
            with t("decode"):
                budget.decode(field, raw)
                decoded.append(decode_image(raw, max_pixels=self.engines.settings.max_pixels, name=field).rgb)
        for i, rgb in enumerate(decoded):  # every output counted before any is computed
            for kind in ("cut-out", "mask")[: 2 if request.output.return_mask else 1]:
                budget.output(f"image {i} {kind}", rgb.shape[1], rgb.shape[0])
        if request.pipeline == "full":
            progress(f"checking {len(decoded)} image(s): caption, NudeNet, classifier, gate")
            full = run_full(self.engines, decoded, options, self.safety)
        else:
            progress(f"cutting out {len(decoded)} image(s)")
            # The cut-out's own stage timings (inference, matte, upscale, compose) travel with it.
            full = [FullResult(verdict=None, caption=None, cutout=r, timings=r.timings)
                    for r in run_simple(self.engines, decoded, options)]
        if self.engines.settings.log_private:  # BEN2_WORKER_LOG_PRIVATE=1: debugging only
            for i, (item, res) in enumerate(zip(items, full)):
                log.info("job %s image %d: source %s, caption %r, verdict %s", job_id, i, item.image[:200],
                         res.caption, res.verdict.as_dict() if res.verdict is not None else None)
        progress("encoding and delivering")
        out = []
        for i, (item, res, t) in enumerate(zip(items, full, timers)):
            t.merge(res.timings)
            entry: dict[str, Any] = {}
            if res.verdict is not None:
                entry["caption"] = res.caption
                entry["verdict"] = res.verdict.as_dict()
            result = res.cutout
            if result is None:  # blocked by the safety gate: the cut-out is withheld
                entry.update({"status": "blocked", "timings": t.as_ms()})
                out.append(entry)
                continue
            stem = f"{job_id}_{i}" if len(items) > 1 else job_id
            with t("encode"):
                data_bytes = encode_image(result.image, fmt, quality=request.output.quality,
                                          background=options.background or (255, 255, 255))
            budget.encoded(f"image {i}", len(data_bytes), inline=item.put_url is None)
            with t("deliver"):
                entry.update(self._deliver(
                    job_id, Artifact(stem + FORMAT_EXTENSIONS[fmt], data_bytes, CONTENT_TYPES[fmt]),
                    put_url=item.put_url, field=_put_field(request, i, "put_url"),
                ))
            h, w = result.image.shape[:2]
            entry.update({"status": "allowed" if res.verdict is not None else "success", "width": w, "height": h})
            if result.crop_box is not None:
                entry["crop_box"] = list(result.crop_box)
            if request.output.return_mask:
                with t("encode"):
                    mask_png = encode_image(result.alpha, "png")
                budget.encoded(f"image {i} mask", len(mask_png), inline=item.mask_put_url is None)
                with t("deliver"):
                    entry["mask"] = self._deliver(
                        job_id, Artifact(stem + "-mask.png", mask_png, "image/png"),
                        put_url=item.mask_put_url, field=_put_field(request, i, "mask_put_url"),
                    )
            entry["timings"] = t.as_ms()
            out.append(entry)
        response: dict[str, Any] = {"pipeline": request.pipeline, "images": out}
        blocked = sum(1 for e in out if e.get("status") == "blocked")
        if blocked:
            response["status"] = "blocked" if blocked == len(out) else "partially_blocked"
        if any(r.stalled for r in full):
            # A check's thread is stuck past its limit; it cannot be killed, so ask RunPod for a
            # fresh worker (the stuck check already blocked its image).
            response["refresh_worker"] = True
        return response


def _named(field: str, fn, *args, **kwargs):
    """``fn(*args, field=field, **kwargs)``, its InputError message made to name ``field``."""
    try:
        return fn(*args, field=field, **kwargs)
    except InputError as exc:
        if field in str(exc):
            raise
        raise InputError(f"{field}: {exc}", field=field) from None


def _put_field(request: schemas.SimpleRequest, index: int, name: str) -> str:
    return f"input.output.{name}" if request.image is not None else f"input.images[{index}].{name}"


def _cutout_options(output: schemas.OutputOptions) -> CutoutOptions:
    try:
        parse_background(output.background)
    except InputError as exc:
        raise InputError(f"input.output.background: {exc}", field="output.background") from None
    return CutoutOptions.from_values(output.model_dump())


def _error_response(exc: Ben2WorkerError) -> dict:
    response: dict[str, Any] = {"error": str(exc)}
    details = getattr(exc, "node_errors", None)
    if details:
        response["details"] = details
    return response


def runpod_progress(job: dict, message: str, *, on_platform: bool = False) -> None:
    """progress_update on RunPod (``settings.runpod.on_platform``); a log line everywhere."""
    if on_platform:
        import runpod

        runpod.serverless.progress_update(job, message)
    log.info("job %s: %s", job.get("id"), message)
