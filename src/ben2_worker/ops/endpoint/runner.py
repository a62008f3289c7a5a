"""Send the cases, follow each job to its end, and check what came back.

Each request is an :class:`Attempt`: how it was sent (``run`` = ``/run`` + ``/status`` polling,
``runsync``), whether it was the first after idle (``cold``) or not (``warm``), RunPod's
``delayTime``/``executionTime`` where the server reports them, the client's own wall time,
and every returned image decoded. Nothing here raises for a bad answer: a failure is an
attempt with ``ok=False`` and a message, so one broken pipeline never hides the others.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .cases import Case
from .client import (
    MAX_RUN_BYTES,
    MAX_RUNSYNC_BYTES,
    TERMINAL_STATES,
    EndpointClient,
    EndpointError,
    fetch_url,
    ready_workers,
    running_workers,
)

MODES = ("run", "runsync")


@dataclass
class RunConfig:
    runs: int = 3
    modes: tuple[str, ...] = MODES
    #: A job still IN_QUEUE this long after submission is stuck (cold starts included).
    queue_timeout_s: float = 600.0
    #: A job IN_PROGRESS this long is stuck (the worker's own limit is BEN2_WORKER_JOB_TIMEOUT, 300 s).
    job_timeout_s: float = 360.0
    poll_interval_s: float = 1.0
    runsync_wait_ms: int = 90_000
    cancel_stuck: bool = True
    #: Seconds to wait before each case so the endpoint scales to zero (0: only the first request is cold).
    idle_wait_s: float = 0.0
    #: Keep the first decoded output of each case here (None: keep none).
    images_dir: Path | None = None


@dataclass
class ImageCheck:
    filename: str
    type: str
    ok: bool
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    bytes: int | None = None
    problem: str | None = None
    warning: str | None = None
    role: str = "image"  # image | mask


@dataclass
class Attempt:
    seq: int
    case: str
    pipeline: str
    api: str
    mode: str
    repeat: int
    phase: str  # cold | warm
    request_bytes: int
    job_id: str | None = None
    status: str = "NOT_SENT"
    ok: bool = False
    latency_s: float | None = None
    delay_ms: float | None = None
    execution_ms: float | None = None
    worker_ms: float | None = None
    images: list[ImageCheck] = field(default_factory=list)
    error: str | None = None
    stuck: str | None = None  # IN_QUEUE | IN_PROGRESS when the limit ran out
    cancel: str | None = None  # what /cancel answered, "unsupported", or an error
    workers_ready_before: int | None = None
    workers_running_before: int | None = None
    safety: dict | None = None
    transitions: list[list] = field(default_factory=list)  # [seconds since submit, status]
    started_at: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


ProgressFn = Callable[[Attempt, str], None]


class EndpointTester:
    def __init__(self, client: EndpointClient, cases: list[Case], config: RunConfig,
                 progress: ProgressFn | None = None, sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.cases = cases
        self.config = config
        self._progress = progress or (lambda attempt, text: None)
        self._sleep = sleep
        self._kept: set[str] = set()

    def planned(self) -> int:
        return len(self.cases) * len(self.config.modes) * self.config.runs

    def run(self) -> list[Attempt]:
        attempts: list[Attempt] = []
        seq = 0
        for ci, case in enumerate(self.cases):
            after_idle = ci == 0
            if ci > 0 and self.config.idle_wait_s > 0:
                self._progress(Attempt(seq, case.name, case.pipeline, case.api, "-", 0, "cold", 0),
                               f"waiting {self.config.idle_wait_s:g} s for the endpoint to go idle")
                self._sleep(self.config.idle_wait_s)
                after_idle = True
            for mode in self.config.modes:
                for repeat in range(1, self.config.runs + 1):
                    seq += 1
                    attempts.append(self._attempt(seq, case, mode, repeat, after_idle))
                    after_idle = False
        return attempts

    # ------------------------------------------------------------------ one request

    def _attempt(self, seq: int, case: Case, mode: str, repeat: int, after_idle: bool) -> Attempt:
        body = case.body()
        attempt = Attempt(seq, case.name, case.pipeline, case.api, mode, repeat, "warm", len(body))
        if after_idle:
            health = self.client.health()
            attempt.workers_ready_before = ready_workers(health)
            attempt.workers_running_before = running_workers(health)
            # A worker already up takes the job at once: that is a warm run, whatever the order.
            attempt.phase = "warm" if (attempt.workers_ready_before or 0) > 0 else "cold"
        self._send(attempt, case, body)
        self._progress(attempt, f"done {attempt.status}")
        return attempt

    def _send(self, attempt: Attempt, case: Case, body: bytes) -> None:
        mode = attempt.mode
        limit = MAX_RUN_BYTES if mode == "run" else MAX_RUNSYNC_BYTES
        if len(body) > limit:
            attempt.error = (f"request is {len(body) / 2**20:.1f} MB; RunPod's /{mode} takes at most "
                             f"{limit // 2**20} MB (use a smaller --image)")
            return
        self._progress(attempt, "submitting")
        attempt.started_at = time.time()
        t0 = time.perf_counter()
        try:
            if mode == "run":
                answer = self.client.run(body)
            else:
                answer = self.client.runsync(body, wait_ms=self.config.runsync_wait_ms,
                                             timeout_s=self.config.runsync_wait_ms / 1000 + self.config.job_timeout_s)
            attempt.job_id = answer.get("id")
            self._note(attempt, t0, answer)
            if answer.get("status") not in TERMINAL_STATES:
                answer = self._poll(attempt, t0, answer)
        except EndpointError as exc:
            attempt.latency_s = time.perf_counter() - t0
            attempt.status = "HTTP_ERROR" if exc.status else "NO_ANSWER"
            attempt.error = str(exc)
            return
        attempt.latency_s = time.perf_counter() - t0
        if answer is not None:
            self._finish(attempt, case, answer)

    def _note(self, attempt: Attempt, t0: float, answer: dict) -> None:
        status = str(answer.get("status"))
        if not attempt.transitions or attempt.transitions[-1][1] != status:
            attempt.transitions.append([round(time.perf_counter() - t0, 3), status])
            self._progress(attempt, status)

    def _poll(self, attempt: Attempt, t0: float, answer: dict) -> dict | None:
        cfg = self.config
        if not attempt.job_id:
            raise EndpointError(f"/{attempt.mode} answered {answer.get('status')} without a job id")
        in_progress_since: float | None = None
        failures = 0
        interval = min(0.05, cfg.poll_interval_s)
        while True:
            status = answer.get("status")
            now = time.perf_counter()
            if status in ("IN_PROGRESS", "RUNNING") and in_progress_since is None:
                in_progress_since = now
            if status == "IN_QUEUE" and now - t0 > cfg.queue_timeout_s:
                return self._stuck(attempt, "IN_QUEUE", now - t0)
            if in_progress_since is not None and now - in_progress_since > cfg.job_timeout_s:
                return self._stuck(attempt, "IN_PROGRESS", now - in_progress_since)
            self._sleep(interval)
            interval = min(cfg.poll_interval_s, interval * 2)
            try:
                # The local API runs the job inside this call: give it the whole job's time.
                answer = self.client.status(attempt.job_id, timeout_s=cfg.job_timeout_s + 30)
                failures = 0
            except EndpointError as exc:
                failures += 1
                if failures >= 3 or (exc.status is not None and exc.status in (401, 403, 404)):
                    raise
                continue
            self._note(attempt, t0, answer)
            if answer.get("status") in TERMINAL_STATES:
                return answer

    def _stuck(self, attempt: Attempt, state: str, seconds: float) -> None:
        attempt.stuck = state
        attempt.status = f"STUCK_{state}"
        attempt.error = f"job {attempt.job_id} still {state} after {seconds:.0f} s"
        if self.config.cancel_stuck:
            try:
                answer = self.client.cancel(attempt.job_id)
                attempt.cancel = "unsupported" if answer is None else str(answer.get("status", answer))
            except EndpointError as exc:
                attempt.cancel = f"failed: {exc}"
            attempt.error += f"; cancel: {attempt.cancel}"

    # ------------------------------------------------------------------ checking the answer

    def _finish(self, attempt: Attempt, case: Case, answer: dict) -> None:
        attempt.status = str(answer.get("status"))
        attempt.delay_ms = _number(answer.get("delayTime"))
        attempt.execution_ms = _number(answer.get("executionTime"))
        if attempt.status != "COMPLETED":
            attempt.error = _error_text(answer) or f"job ended {attempt.status}"
            return
        output = answer.get("output")
        if not isinstance(output, dict):
            attempt.error = f"COMPLETED without an output object (got {type(output).__name__})"
            return
        if output.get("error"):
            attempt.status = "FAILED"
            attempt.error = _error_text(output)
            return
        attempt.worker_ms = _worker_ms(output)
        attempt.safety = _safety(output)
        entries = [e for e in output.get("images") or [] if isinstance(e, dict)]
        if output.get("status") == "blocked" or (entries and all(e.get("status") == "blocked" for e in entries)):
            reasons = (attempt.safety or {}).get("reasons")
            attempt.error = "blocked by the safety gate" + (f": {reasons}" if reasons else "")
            return
        if not entries:
            attempt.error = f"no images returned (status {output.get('status', 'missing')!r})"
            return
        for entry in entries:
            if entry.get("status") == "blocked":
                attempt.images.append(ImageCheck(str(entry.get("filename")), "blocked", False, problem="blocked"))
                continue
            attempt.images.append(self._check_image(entry, case))
            if isinstance(entry.get("mask"), dict):
                mask = self._check_image(entry["mask"], case, alpha=False)
                mask.role = "mask"
                attempt.images.append(mask)
        problems = [f"{c.filename}: {c.problem}" for c in attempt.images if not c.ok]
        if output.get("errors"):
            problems += [str(e) for e in output["errors"]]
        if problems:
            attempt.error = "; ".join(problems)
            return
        attempt.ok = True
        self._keep(attempt, entries[0], case)

    def _check_image(self, entry: dict, case: Case, alpha: bool | None = None) -> ImageCheck:
        from PIL import Image

        check = ImageCheck(str(entry.get("filename") or "?"), str(entry.get("type") or "?"), False)
        try:
            data = _image_bytes(entry)
        except (EndpointError, ValueError) as exc:
            check.problem = str(exc)
            return check
        check.bytes = len(data)
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                check.width, check.height, check.mode = img.width, img.height, img.mode
                extrema = img.getchannel("A").getextrema() if "A" in img.getbands() else None
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for a bad file
            check.problem = f"does not decode as an image ({type(exc).__name__}: {exc})"
            return check
        if (check.width, check.height) != (case.expect_width, case.expect_height):
            check.problem = (f"{check.width}x{check.height}, expected the input's full resolution "
                             f"{case.expect_width}x{case.expect_height}")
            return check
        want_alpha = case.expect_alpha if alpha is None else alpha
        if want_alpha and extrema is None:
            check.problem = f"no alpha channel (mode {check.mode}) in a transparent cut-out"
            return check
        if extrema is not None and extrema[0] == extrema[1]:
            check.warning = f"alpha is uniform ({extrema[0]}): nothing was cut out"
        check.ok = True
        return check

    def _keep(self, attempt: Attempt, entry: dict, case: Case) -> None:
        folder = self.config.images_dir
        if folder is None or case.name in self._kept:
            return
        try:
            data = _image_bytes(entry)
        except (EndpointError, ValueError):
            return
        folder.mkdir(parents=True, exist_ok=True)
        suffix = Path(str(entry.get("filename") or "out.png")).suffix or ".png"
        (folder / f"{case.name}{suffix}").write_bytes(data)
        self._kept.add(case.name)


def _image_bytes(entry: dict) -> bytes:
    kind, data = entry.get("type"), entry.get("data")
    if not isinstance(data, str) or not data:
        raise ValueError("no data")
    if kind == "base64":
        text = data.split(",", 1)[1] if data.startswith("data:") else data
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"not valid base64 ({exc})") from None
    if kind == "s3_url" or data.startswith(("https://", "http://")):
        return fetch_url(data)
    raise ValueError(f"unknown output type {kind!r}")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _error_text(answer: dict) -> str | None:
    error = answer.get("error")
    if error is None:
        return None
    text = error if isinstance(error, str) else str(error)
    details = answer.get("details")
    if details:
        text += f" ({'; '.join(map(str, details)) if isinstance(details, list) else details})"
    return " ".join(text.split())[:1000]


def _worker_ms(output: dict) -> float | None:
    """The worker's own processing time: worker-comfyui responses carry ``timings.total``; the
    simple API carries per-image stage timings (summed)."""
    timings = output.get("timings")
    if isinstance(timings, dict) and isinstance(timings.get("total"), (int, float)):
        return float(timings["total"])
    total = 0.0
    found = False
    for entry in output.get("images") or []:
        if isinstance(entry, dict) and isinstance(entry.get("timings"), dict):
            total += sum(v for v in entry["timings"].values() if isinstance(v, (int, float)))
            found = True
    return total if found else None


def _safety(output: dict) -> dict | None:
    """What the full pipeline said: verdicts and captions (simple API) or ShowText texts (workflows)."""
    found: dict[str, Any] = {}
    verdicts = [e["verdict"] for e in output.get("images") or [] if isinstance(e, dict) and e.get("verdict")]
    if output.get("verdict"):
        verdicts.append(output["verdict"])
    if verdicts:
        found["verdicts"] = verdicts
        reasons = [r for v in verdicts if isinstance(v, dict) for r in (v.get("reasons") or [])]
        if reasons:
            found["reasons"] = reasons
    captions = [e["caption"] for e in output.get("images") or [] if isinstance(e, dict) and e.get("caption")]
    if captions:
        found["captions"] = captions
    texts = [t.get("text") for t in output.get("text") or [] if isinstance(t, dict)]
    if texts:
        found["texts"] = texts
    return found or None
