"""The service's front door, as ASGI middleware: API key, rate limit and body size are checked
before any route runs and before the body is read. A refusal is counted and logged with the
method, path, caller and reason — never the body (it may be someone's photo) nor the key.

Each route family answers in its clients' error shape: remove.bg's ``{"errors": [...]}`` with
403 for a bad key, RunPod's ``{"error": ...}`` with 401 (the runpod SDK reports 401 as an
unauthorised key)."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from .auth import KeyRing, presented_key
from .limits import RateLimiter
from .metrics import Metrics
from ..config import ServiceSettings

log = logging.getLogger("ben2_worker.service")

_RUNPOD_SUBMIT = re.compile(r"^(?:/v2/[^/]+)?/(run|runsync)/?$")
_RUNPOD_OTHER = re.compile(r"^(?:/v2/[^/]+)?/(?:(?:status|stream|cancel)/[^/]+|purge-queue)/?$|^/v2/[^/]+/health/?$")
#: Open to anyone: the readiness probe, the playground's static files, the schema it builds
#: its controls from, and the OpenAPI description. None of them carries data or starts work.
_OPEN = re.compile(r"^/(?:health/?|favicon\.ico|static/.*|v1/options/?|openapi\.json|)$")


@dataclass(frozen=True)
class RouteRule:
    family: str  # "removebg" | "runpod" | "api" | "open"
    protected: bool
    limited: bool  # starts work: counts against the caller's rate limit
    body_limit: int


def classify(method: str, path: str, settings: ServiceSettings) -> RouteRule:
    if path.rstrip("/") == "/v1.0/removebg":
        return RouteRule("removebg", True, method == "POST", settings.removebg_body_limit)
    m = _RUNPOD_SUBMIT.match(path)
    if m:
        limit = settings.runsync_body_limit if m.group(1) == "runsync" else settings.run_body_limit
        return RouteRule("runpod", True, method == "POST", limit)
    if _RUNPOD_OTHER.match(path):
        return RouteRule("runpod", True, False, settings.other_body_limit)
    if _OPEN.match(path):
        return RouteRule("open", False, False, settings.other_body_limit)
    return RouteRule("api", True, False, settings.other_body_limit)


def error_body(family: str, message: str, code: str) -> bytes:
    if family == "removebg":
        return json.dumps({"errors": [{"title": message, "code": code}]}).encode()
    return json.dumps({"error": message, "code": code}).encode()


class BodyTooLarge(Exception):
    pass


class Guard:
    def __init__(self, app, *, settings: ServiceSettings, keyring: KeyRing, limiter: RateLimiter, metrics: Metrics):
        self.app = app
        self.settings = settings
        self.keyring = keyring
        self.limiter = limiter
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        rule = classify(method, path, self.settings)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = (scope.get("client") or ("?", 0))[0]

        async def refuse(status: int, message: str, code: str, reason: str, extra: dict | None = None):
            self.metrics.refused.labels(rule.family, reason).inc()
            log.warning("refused %s %s from %s: %s", method, path, client, reason)
            body = error_body(rule.family, message, code)
            hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            hdrs += [(k.encode(), str(v).encode()) for k, v in (extra or {}).items()]
            await send({"type": "http.response.start", "status": status, "headers": hdrs})
            await send({"type": "http.response.body", "body": body})

        key = None
        if rule.protected and self.settings.keys_required:
            presented = presented_key(headers)
            key = self.keyring.identify(presented)
            if key is None:
                status = 403 if rule.family == "removebg" else 401
                what = "missing API key" if presented is None else "invalid API key"
                message = f"{what}: send it as X-Api-Key or Authorization: Bearer"
                extra = {} if rule.family == "removebg" else {"www-authenticate": "Bearer"}
                return await refuse(status, message, "auth_failed", "missing_key" if presented is None else "invalid_key", extra)
        who = f"key:{key.name}" if key else f"addr:{client}"
        scope.setdefault("state", {})["caller"] = key.name if key else None

        if rule.limited:
            rate = (key.rate_per_minute if key and key.rate_per_minute else None) or self.settings.rate_per_minute
            burst = (key.burst if key and key.burst else None) or self.settings.burst
            wait = self.limiter.take(who, rate, burst)
            if wait > 0:
                return await refuse(429, f"rate limit exceeded ({rate:g} requests per minute); retry in {wait:.1f} s",
                                    "rate_limit_exceeded", "rate_limit", {"retry-after": max(1, round(wait + 0.5))})

        declared = headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await refuse(400, "invalid Content-Length header", "invalid_request", "bad_length")
            if size > rule.body_limit:
                return await refuse(413, f"request body of {size} bytes is over the {rule.body_limit} byte limit for {path}",
                                    "file_too_large", "body_too_large")

        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > rule.body_limit:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await refuse(413, f"request body is over the {rule.body_limit} byte limit for {path}",
                         "file_too_large", "body_too_large")
