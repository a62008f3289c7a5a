"""The app factory: one FastAPI app, one job queue, one set of engines.

Why FastAPI + uvicorn: both are already installed with the runpod SDK (its local test server
is built on them), so the service adds only python-multipart and prometheus-client; request
models come from the same pydantic declarations the worker validates with, and the OpenAPI
schema the playground reads is generated from them.

The app answers at once; models load (and are warmed with one small job per served pipeline)
in a background thread, and ``/health`` says 503 until that is done. Jobs submitted meanwhile
wait in the queue."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from ..api.jobs import JobProcessor
from ..api.safe_http import FetchPolicy
from ..config import Settings
from ..engines import Engines
from .auth import KeyRing
from .guard import Guard
from .limits import RateLimiter
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .queue import JobQueue, JobRecord
from .keys import with_keys_file
from .webhooks import WebhookSender

log = logging.getLogger("ben2_worker.service")

STATIC = Path(__file__).resolve().parent / "static"
#: Task-API output fields the playground does not offer (delivery targets, and the matte,
#: which it always asks for to show it).
PLAYGROUND_HIDDEN = ("put_url", "mask_put_url", "mask")


LoadEngines = Callable[[Settings], Engines]


def _build_engines(settings: Settings) -> Engines:
    from ..engines import build_engines

    return build_engines(settings)


class Service:
    """What the routes share. ``config`` is the worker's whole settings tree (config.py);
    ``settings`` its service branch, with the keys file read. ``load_engines`` builds the
    engines from ``config`` (default: the worker's one engine factory); the job processors take
    delivery, URL policy and safety options from the engines' settings, as the worker does."""

    def __init__(self, config: Settings, load_engines: LoadEngines = _build_engines, *, warm: bool = True):
        self.config = config
        self.settings = settings = with_keys_file(config.service)
        #: Callbacks go through the operator's URL policy (public https only unless widened).
        self.webhook_policy = dataclasses.replace(FetchPolicy.from_settings(config.urls),
                                                  timeout_s=settings.webhook_timeout_s)
        self.metrics = Metrics()
        self.keyring = KeyRing(settings.keys)
        self.limiter = RateLimiter()
        self._load_engines = load_engines
        self._warm = warm
        self.engines: Engines | None = None
        #: RunPod routes and the playground: the worker's delivery (base64, S3 or PUT URL).
        self.processor: JobProcessor | None = None
        #: remove.bg: the image bytes go back in the response, so always base64 delivery.
        self.direct_processor: JobProcessor | None = None
        self.phase = "loading"  # loading | ready | failed
        self.error: str | None = None
        self.served: tuple[str, ...] = ()
        self.model_load_s: float | None = None
        self.warmup_s: float | None = None
        self._loaded: asyncio.Event | None = None
        self.webhooks = (WebhookSender(settings.webhook_secret, self.webhook_policy,
                                       attempts=settings.webhook_attempts, backoff_s=settings.webhook_backoff_s,
                                       metrics=self.metrics)
                         if settings.webhook_secret else None)
        self.queue = JobQueue(metrics=self.metrics, concurrency=settings.concurrency, limit=settings.queue_limit,
                              ready=self._wait_ready, on_finish=self._callback)

    # ------------------------------------------------------------------ start-up

    async def start(self) -> None:
        self._loaded = asyncio.Event()
        await self.queue.start()
        loop = asyncio.get_running_loop()

        def load() -> None:
            try:
                self._load()
            except Exception as exc:  # noqa: BLE001 - reported by /health and every job
                log.error("the service cannot serve: %s", exc)
                self.phase, self.error = "failed", str(exc)
            loop.call_soon_threadsafe(self._loaded.set)

        threading.Thread(target=load, name="service-load", daemon=True).start()

    def _load(self) -> None:
        from ..api.delivery import Delivery
        from ..pipelines import served_pipelines

        t0 = time.perf_counter()
        engines = self._load_engines(self.config)
        self.model_load_s = time.perf_counter() - t0
        self.metrics.model_load.set(self.model_load_s)
        self.processor = JobProcessor(engines)  # Delivery/FetchPolicy/SafetyOptions.from_settings(engines.settings)
        self.direct_processor = JobProcessor(engines, delivery=Delivery(
            policy=self.processor.fetch_policy, put_timeout_s=engines.settings.put_timeout_s))
        self.engines = engines
        self.served = served_pipelines(engines)
        if not self.served:
            raise RuntimeError("no pipeline can be served: the BEN2 model is not loaded (see the log)")
        t1 = time.perf_counter()
        if self._warm:
            for pipeline in self.served:
                warm_up(self.processor, pipeline)
        self.warmup_s = time.perf_counter() - t1
        self.metrics.warmup.set(self.warmup_s)
        self.metrics.ready.set(1)
        self.phase = "ready"
        log.info("service ready: pipelines %s, models loaded in %.2f s, warmed in %.2f s",
                 ", ".join(self.served), self.model_load_s, self.warmup_s)

    def run_job(self, job: dict) -> dict:
        """A RunPod-route or playground job (the queue calls this once the models are loaded)."""
        return self.processor(job)

    def run_direct(self, job: dict) -> dict:
        """A remove.bg job: outputs come back as base64 whatever delivery is configured."""
        return self.direct_processor(job)

    async def _wait_ready(self) -> str | None:
        assert self._loaded is not None
        await self._loaded.wait()
        return self.error

    async def _callback(self, record: JobRecord) -> None:
        if self.webhooks is not None and record.webhook:
            await self.webhooks.deliver(record.webhook, record.as_status())

    async def stop(self) -> None:
        await self.queue.stop()


def warm_up(processor: JobProcessor, pipeline: str) -> None:
    """One small job through the real path, so the first user request pays no lazy set-up."""
    import numpy as np

    from ..imaging import encode_image

    y, x = np.mgrid[0:96, 0:128]
    rgb = np.stack([(x * 2) % 256, (y * 2) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
    image = base64.b64encode(encode_image(rgb, "png")).decode()
    result = processor({"id": f"warmup-{pipeline}", "input": {"image": image, "pipeline": pipeline}})
    if "error" in result:
        raise RuntimeError(f"the {pipeline} pipeline failed its warm-up job: {result['error']}")


def create_app(config: Settings, load_engines: LoadEngines = _build_engines, *, warm: bool = True) -> FastAPI:
    """The app over ``config`` (``Settings.from_env()`` for the operator's environment)."""
    from . import playground, removebg, runpod_routes

    service = Service(config, load_engines, warm=warm)
    settings = service.settings

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="ben2-worker service", version=_version(), lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # FastAPI's doc pages load their scripts from a CDN
                  description="Background removal with BEN2: RunPod-style, remove.bg-compatible and playground. "
                              "See docs/service.md.")
    app.state.service = service
    app.add_middleware(Guard, settings=settings, keyring=service.keyring, limiter=service.limiter,
                       metrics=service.metrics)

    @app.get("/health", summary="Readiness: 200 once the models are loaded and warmed")
    async def health():
        # RunPod's health fields too, so a client given the root as its endpoint reads them
        body = {"status": service.phase, "pipelines": list(service.served),
                "queue": {"waiting": service.queue.waiting, "running": service.queue.running},
                **runpod_routes.runpod_health(service)}
        if service.model_load_s is not None:
            body["model_load_s"] = round(service.model_load_s, 3)
        if service.warmup_s is not None:
            body["warmup_s"] = round(service.warmup_s, 3)
        if service.error:
            body["error"] = service.error
        return JSONResponse(body, status_code=200 if service.phase == "ready" else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics():
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    runpod_routes.register(app, service)
    removebg.register(app, service)
    playground.register(app, service)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):  # keep serving; never echo the body
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    return app


def create_app_from_env() -> FastAPI:
    """The app over this process's environment: what each uvicorn worker process builds when
    ``ben2-worker serve --workers N`` starts more than one."""
    return create_app(Settings.from_env())


def _version() -> str:
    from .. import __version__

    return __version__
