"""RunPod's queue API (``/run``, ``/runsync``, ``/status``, ``/cancel``, ``/health``) over stdlib
``urllib``: no dependency beyond the standard library.

Also talks to the runpod SDK's local API (``ben2-worker serve``), which differs from RunPod:

* ``/status/{id}`` is POST only (GET answers 405): the client falls back to POST once and
  remembers it;
* ``/run`` only stores the job: it runs inside the first ``/status`` call, which therefore
  blocks for the job's duration (and the job is forgotten once that call has answered);
* no ``delayTime``/``executionTime``, no ``/cancel``, no ``/health`` (404): callers get
  ``None`` for those.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_BASE_URL = "https://api.runpod.ai/v2"
USER_AGENT = "ben2-worker-endpoint-test"

#: RunPod's payload limits (operation reference): a larger body is refused by the platform.
MAX_RUN_BYTES = 10 * 1024 * 1024
MAX_RUNSYNC_BYTES = 20 * 1024 * 1024

TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})


class EndpointError(Exception):
    """A request to the endpoint did not get a usable answer."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_url(base_url: str, endpoint_id: str | None) -> str:
    """``{base_url}/{endpoint_id}``; with no endpoint id the base URL is the endpoint itself
    (``http://127.0.0.1:8000`` for ``ben2-worker serve``)."""
    base = base_url.rstrip("/")
    if endpoint_id:
        if "/" in endpoint_id or not endpoint_id.strip():
            raise ValueError(f"not an endpoint id: {endpoint_id!r}")
        return f"{base}/{urllib.parse.quote(endpoint_id.strip())}"
    return base


class EndpointClient:
    """One endpoint's queue API. Every method returns the decoded JSON answer or raises
    :class:`EndpointError` with a message fit for a report (never the API key)."""

    def __init__(self, url: str, api_key: str | None = None, *, timeout_s: float = 30.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        if api_key and parts.scheme != "https" and not is_loopback(url):
            raise ValueError(f"refusing to send the API key over plain http to {parts.hostname}")
        self.url = url.rstrip("/")
        self._api_key = api_key
        self.timeout_s = timeout_s
        self._status_method = "GET"
        self.cancel_supported: bool | None = None
        self.health_supported: bool | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"EndpointClient({self.url!r})"

    # ------------------------------------------------------------------ transport

    def _request(self, method: str, path: str, body: dict | None = None, *, timeout_s: float | None = None,
                 data: bytes | None = None) -> Any:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if body is not None or data is not None:
            headers["Content-Type"] = "application/json"
            data = data if data is not None else json.dumps(body).encode()
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        limit = timeout_s or self.timeout_s
        try:
            with urllib.request.urlopen(req, timeout=limit) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            text = _snippet(exc.read())
            hint = " (check the API key and that it may use this endpoint)" if exc.code in (401, 403) else ""
            raise EndpointError(f"HTTP {exc.code} from {method} {path}{hint}: {text}", status=exc.code) from None
        except TimeoutError:
            raise EndpointError(f"no answer to {method} {path} within {limit:g} s") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise EndpointError(f"no answer to {method} {path} within {limit:g} s") from None
            raise EndpointError(f"cannot reach {self.url}: {reason}") from None
        except (ConnectionError, OSError) as exc:
            raise EndpointError(f"connection to {self.url} failed during {method} {path}: {exc}") from None
        try:
            return json.loads(raw) if raw.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EndpointError(f"{method} {path} answered non-JSON: {_snippet(raw)}") from None

    # ------------------------------------------------------------------ operations

    def run(self, payload: bytes) -> dict:
        """POST /run with an encoded ``{"input": ...}`` body; ``{"id", "status"}``."""
        return _expect_job(self._request("POST", "/run", data=payload), "/run")

    def runsync(self, payload: bytes, *, wait_ms: int = 90_000, timeout_s: float | None = None) -> dict:
        """POST /runsync?wait=ms. RunPod answers when the job ends or the wait runs out (then with
        ``IN_QUEUE``/``IN_PROGRESS`` and an id to poll). The local API ignores ``wait``."""
        wait_ms = max(1000, min(300_000, int(wait_ms)))
        return _expect_job(
            self._request("POST", f"/runsync?wait={wait_ms}", data=payload,
                          timeout_s=timeout_s or wait_ms / 1000 + 30),
            "/runsync",
        )

    def status(self, job_id: str, *, timeout_s: float | None = None) -> dict:
        path = f"/status/{urllib.parse.quote(job_id)}"
        try:
            answer = self._request(self._status_method, path, timeout_s=timeout_s)
        except EndpointError as exc:
            if exc.status != 405 or self._status_method == "POST":
                raise
            self._status_method = "POST"  # the SDK's local API serves /status as POST only
            answer = self._request("POST", path, body={}, timeout_s=timeout_s)
        return _expect_job(answer, path)

    def cancel(self, job_id: str) -> dict | None:
        """POST /cancel/{id}; ``None`` where the server has no such operation (the local API)."""
        try:
            answer = self._request("POST", f"/cancel/{urllib.parse.quote(job_id)}", body={})
        except EndpointError as exc:
            if exc.status in (404, 405):
                self.cancel_supported = False
                return None
            raise
        self.cancel_supported = True
        return answer if isinstance(answer, dict) else {"answer": answer}

    def health(self) -> dict | None:
        """GET /health (worker and job counts); ``None`` where unsupported or unreachable."""
        try:
            answer = self._request("GET", "/health", timeout_s=min(self.timeout_s, 15))
        except EndpointError:
            self.health_supported = False
            return None
        self.health_supported = isinstance(answer, dict)
        return answer if isinstance(answer, dict) else None


def ready_workers(health: dict | None) -> int | None:
    """Workers that could take a job at once (idle or ready), from a /health answer."""
    if not health or not isinstance(health.get("workers"), dict):
        return None
    workers = health["workers"]
    return sum(int(workers.get(k) or 0) for k in ("idle", "ready"))


def running_workers(health: dict | None) -> int | None:
    if not health or not isinstance(health.get("workers"), dict):
        return None
    return int(health["workers"].get("running") or 0)


def fetch_url(url: str, *, timeout_s: float = 60.0, max_bytes: int = 256 * 1024 * 1024) -> bytes:
    """GET an output URL (``s3_url`` results: presigned, no auth header)."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise EndpointError(f"not an http(s) URL: {url[:80]}")
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    shown = url.split("?", 1)[0]  # a presigned query string carries credentials
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            data = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise EndpointError(f"HTTP {exc.code} fetching {shown}", status=exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise EndpointError(f"cannot fetch {shown}: {getattr(exc, 'reason', exc)}") from None
    if len(data) > max_bytes:
        raise EndpointError(f"{shown} is larger than {max_bytes} bytes")
    return data


def _expect_job(answer: Any, path: str) -> dict:
    if not isinstance(answer, dict) or "status" not in answer:
        raise EndpointError(f"{path} answered without a job status: {_snippet(json.dumps(answer))}")
    return answer


def _snippet(raw: bytes | str, limit: int = 300) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
