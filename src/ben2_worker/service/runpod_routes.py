"""RunPod's queue API, self-hosted: ``/run``, ``/runsync``, ``/status/{id}``, ``/stream/{id}``,
``/cancel/{id}``, ``/purge-queue`` at the root (as the runpod SDK's local server, which
``ben2-worker serve`` used to be) and the same under ``/v2/{endpoint_id}`` with ``/health`` (as
RunPod's cloud, which the SDK's ``runpod.Endpoint`` calls). Bodies and answers are RunPod's:
``{"input": ..., "webhook"?}`` in; ``{"id", "status", "output" | "error", "delayTime",
"executionTime"}`` out. ``/status`` answers GET (the cloud, the SDK client) and POST (the
local server)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..api.safe_http import BadURL, TransferFailed
from .queue import FINAL, QueueFull
from .webhooks import check_webhook_url

if TYPE_CHECKING:
    from .app import Service

PREFIXES = ("", "/v2/{endpoint_id}")
#: RunPod's bounds for /runsync?wait= (ms).
WAIT_MIN_MS, WAIT_MAX_MS = 1000, 300_000
#: RunPod keeps a /runsync result for a minute (a client whose wait ran out polls /status).
RUNSYNC_KEEP_S = 60.0


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _Refusal(Exception):
    def __init__(self, status: int, message: str):
        self.response = _error(status, message)


def runpod_health(service: Service) -> dict:
    """RunPod's endpoint health body (``jobs`` and ``workers`` counts) for this one box."""
    q, concurrency = service.queue, service.settings.concurrency
    running = q.running
    workers = {"idle": 0, "running": running, "initializing": 0, "ready": 0, "unhealthy": 0, "throttled": 0}
    if service.phase == "ready":
        workers["idle"] = max(0, concurrency - running)
    elif service.phase == "loading":
        workers["initializing"] = concurrency
    else:
        workers["unhealthy"] = concurrency
    jobs = {"completed": q.counts["completed"], "failed": q.counts["failed"], "inProgress": running,
            "inQueue": q.waiting, "retried": 0}
    return {"jobs": jobs, "workers": workers}


def register(app: FastAPI, service: Service) -> None:
    settings = service.settings

    def check_endpoint(request: Request) -> None:
        wanted = settings.endpoint_id
        given = request.path_params.get("endpoint_id")
        if wanted and given is not None and given != wanted:
            raise _Refusal(404, f"no endpoint {given!r} here")

    async def submit(request: Request, route: str):
        check_endpoint(request)
        try:
            body = json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Refusal(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict) or "input" not in body:
            raise _Refusal(400, "the request body must be a JSON object with an 'input' field")
        webhook = body.get("webhook")
        if webhook is not None:
            if not isinstance(webhook, str) or not webhook.strip():
                raise _Refusal(400, "webhook must be a URL")
            if service.webhooks is None:
                raise _Refusal(400, "webhooks are off on this server: the operator has set no webhook signing secret")
            try:
                await asyncio.to_thread(check_webhook_url, webhook, service.webhook_policy)
            except (BadURL, TransferFailed) as exc:
                raise _Refusal(400, f"webhook refused: {exc}") from None
        try:
            keep = settings.result_ttl_s if route == "run" else RUNSYNC_KEEP_S
            return service.queue.submit(body["input"], service.run_job, route=route, keep_s=keep, webhook=webhook)
        except QueueFull as exc:
            raise _Refusal(429, str(exc)) from None

    def guarded(handler):
        async def endpoint(request: Request):
            try:
                return await handler(request)
            except _Refusal as refusal:
                return refusal.response
        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return endpoint

    async def run(request: Request):
        """Queue a job; answers ``{"id", "status": "IN_QUEUE"}`` at once."""
        record = await submit(request, "run")
        return {"id": record.id, "status": record.status}

    async def runsync(request: Request):
        """Run a job and answer its result, or, after ``?wait=`` ms (default 90 s), its id and
        status to poll."""
        try:
            wait_ms = int(request.query_params.get("wait", settings.runsync_wait_s * 1000))
        except ValueError:
            raise _Refusal(400, "wait must be a whole number of milliseconds") from None
        record = await submit(request, "runsync")
        try:
            await asyncio.wait_for(record.done.wait(), max(WAIT_MIN_MS, min(WAIT_MAX_MS, wait_ms)) / 1000)
        except asyncio.TimeoutError:
            pass
        return JSONResponse(record.as_status())  # a Response: FastAPI's encoder would walk megabytes of base64

    def find(request: Request):
        check_endpoint(request)
        record = service.queue.get(request.path_params["job_id"])
        if record is None:
            raise _Refusal(404, f"job {request.path_params['job_id']} not found (results are kept "
                                f"{settings.result_ttl_s:g} s)")
        return record

    async def status(request: Request):
        """The job's status, with its output once COMPLETED or its error once FAILED."""
        return JSONResponse(find(request).as_status())

    async def stream(request: Request):
        """Our handler is not a generator: the stream is the final output, once."""
        record = find(request)
        body = {"id": record.id, "status": record.status, "stream": []}
        if record.status in FINAL and record.output is not None:
            body["stream"] = [{"output": record.output}]
        if record.error:
            body["error"] = record.error
        return body

    async def cancel(request: Request):
        """Cancel a queued or running job (a running job's result is discarded)."""
        record = find(request)
        service.queue.cancel(record.id)
        return {"id": record.id, "status": record.status}

    async def purge(request: Request):
        """Cancel every job still waiting in the queue."""
        check_endpoint(request)
        return {"removed": service.queue.purge(), "status": "completed"}

    async def health(request: Request):
        """RunPod's endpoint health: job counts and worker states."""
        check_endpoint(request)
        return runpod_health(service)

    for prefix in PREFIXES:
        tag = ["runpod (cloud paths)" if prefix else "runpod (local paths)"]
        show = prefix != ""  # one copy in the OpenAPI schema is enough
        app.add_api_route(prefix + "/run", guarded(run), methods=["POST"], tags=tag, include_in_schema=show)
        app.add_api_route(prefix + "/runsync", guarded(runsync), methods=["POST"], tags=tag, include_in_schema=show)
        app.add_api_route(prefix + "/status/{job_id}", guarded(status), methods=["GET", "POST"], tags=tag,
                          include_in_schema=show)
        app.add_api_route(prefix + "/stream/{job_id}", guarded(stream), methods=["GET", "POST"], tags=tag,
                          include_in_schema=show)
        app.add_api_route(prefix + "/cancel/{job_id}", guarded(cancel), methods=["POST"], tags=tag,
                          include_in_schema=show)
        app.add_api_route(prefix + "/purge-queue", guarded(purge), methods=["POST"], tags=tag, include_in_schema=show)
    app.add_api_route("/v2/{endpoint_id}/health", guarded(health), methods=["GET"], tags=["runpod (cloud paths)"])
