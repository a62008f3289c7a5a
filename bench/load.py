"""The local server under load: many concurrent clients on loopback for a bounded time, both
request formats (the simple task API and worker-comfyui workflows) mixed with bad requests.

    python bench/load.py                             # 32 clients for 60 s against the default target
    python bench/load.py --clients 64 --seconds 120
    python bench/load.py --target sdk                # the runpod SDK's local API (python -m ben2_worker.handler --rp_serve_api)
    python bench/load.py --target serve              # `ben2-worker serve` (the self-hosted service where it has landed)
    python bench/load.py --url http://127.0.0.1:8000 # a server you started yourself

Every request carries something of its own that its answer must echo: a valid job's image has
a size no other job in the run has (its cut-out must come back at that size, a simple job's
file named after the job id the server answered with), and a bad one names an upload, a node
type or an image index that only it uses (its error must name that). The run counts jobs sent,
answered, lost (no answer: a timeout or a dropped connection), duplicated (a job id answered
twice), mixed up (an answer that is not its own request's) and wrong (a bad request not
refused with an error naming its problem, a valid one that failed), and latency percentiles.

A baseline runs first in the same process: one client, serially, against the same server; the
concurrent figures are printed as ratios to it. The BEN2 model is the stand-in (a test fixture,
not a model: tests/standin_models.py), so latencies say nothing about BEN2's speed; they show
queueing and the worker's own overhead. The project's machine is a shared, loaded 2-core one.
JSON goes to bench/results/load.json."""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import itertools
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from benchlib import commit  # noqa: E402
from PIL import Image  # noqa: E402

SIMPLE_WORKFLOW = ROOT / "workflows" / "BG_remove_BEN2_simple_2nd.api.json"
#: Of every 10 requests: 4 simple, 3 workflow, 3 bad (one of each kind in BAD_KINDS, in turn).
MIX = ("simple",) * 4 + ("comfy",) * 3 + ("bad",) * 3
BAD_KINDS = ("missing_upload", "unknown_node", "bad_image_index", "metadata_url", "wrong_type", "not_json")
OTHER_TOKENS = re.compile(r"absent-\d+\.png|NoSuchNode\d+|input\.images\[\d\]")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_available() -> bool:
    try:
        import ben2_worker.service.app  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------- the server


class LocalServer:
    """The worker's local server as a child process over a models folder of stand-ins."""

    def __init__(self, target: str, models_dir: Path, *, log_path: Path | None = None, start_timeout: float = 180):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "BEN2_WORKER_MODELS": str(models_dir),
            "BEN2_WORKER_ALLOW_CUSTOM_MODELS": "1",
            "BEN2_WORKER_PIPELINES": "simple",
            "BEN2_WORKER_THREADS": "1",
            "BEN2_WORKER_LOG_LEVEL": "WARNING",
            "RUNPOD_LOG_LEVEL": "WARN",
        }
        if target == "sdk":
            cmd = [sys.executable, "-m", "ben2_worker.handler", "--rp_serve_api", "--rp_api_host", "127.0.0.1",
                   "--rp_api_port", str(self.port), "--rp_log_level", "WARN"]
        elif target == "serve":
            # The load measures the server, not its per-client rate limiter (tested on its own).
            env.update({"BEN2_SERVICE_RATE_PER_MINUTE": "1000000", "BEN2_SERVICE_BURST": "100000"})
            cmd = [sys.executable, "-c", "from ben2_worker.cli import main; main()", "serve",
                   "--host", "127.0.0.1", "--port", str(self.port)]
        else:
            raise ValueError(f"unknown target {target!r}")
        self.log_path = log_path or Path(tempfile.mkstemp(prefix=f"ben2-load-{target}-", suffix=".log")[1])
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop(); a pipe would fill up
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        self._wait_ready(start_timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        job = {"input": simple_input(33, 33)}  # a size no load job uses
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log_path.read_text()[-3000:]}")
            try:
                r = httpx.post(f"{self.base}/runsync", json=job, timeout=60)
                if r.status_code == 200 and r.json().get("output", {}).get("images"):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the server was not ready in {timeout:.0f} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


# ----------------------------------------------------------------------------- requests


def size_for(n: int) -> tuple[int, int]:
    """A (width, height) that no other request number within 4,096 of ``n`` has (far more than
    are ever in flight together), between 40 and 103 pixels a side."""
    return 40 + n % 64, 40 + (n // 64) % 64


def png_b64(width: int, height: int) -> str:
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[height // 4: 3 * height // 4, width // 4: 3 * width // 4, 0] = 255  # the stand-in keeps red
    rgb[..., 1] = (np.arange(width) * 7 % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def simple_input(width: int, height: int) -> dict:
    return {"image": png_b64(width, height)}


_WORKFLOW = json.loads(SIMPLE_WORKFLOW.read_text()) if SIMPLE_WORKFLOW.exists() else None


def comfy_input(width: int, height: int, name: str) -> dict:
    workflow = json.loads(json.dumps(_WORKFLOW))
    for node in workflow.values():
        if node["class_type"] == "LoadImage":
            node["inputs"]["image"] = name
    return {"workflow": workflow, "images": [{"name": name, "image": png_b64(width, height)}]}


@dataclass
class Request:
    """One request and what its answer must show."""

    n: int
    kind: str  # simple, comfy, or bad:<BAD_KINDS entry>
    body: bytes
    size: tuple[int, int] | None = None  # valid jobs: the output size
    token: str | None = None  # bad ones: what the error must name


def make_request(n: int, kind: str) -> Request:
    w, h = size_for(n)
    if kind == "simple":
        return Request(n, kind, json.dumps({"input": simple_input(w, h)}).encode(), size=(w, h))
    if kind == "comfy":
        return Request(n, kind, json.dumps({"input": comfy_input(w, h, f"upload-{n}.png")}).encode(), size=(w, h))
    bad = kind.split(":", 1)[1]
    small = png_b64(8, 8)
    if bad == "missing_upload":  # the workflow reads an image that was not sent: the error names it
        job = comfy_input(8, 8, f"sent-{n}.png")
        for node in job["workflow"].values():
            if node["class_type"] == "LoadImage":
                node["inputs"]["image"] = f"absent-{n}.png"
        return Request(n, kind, json.dumps({"input": job}).encode(), token=f"absent-{n}.png")
    if bad == "unknown_node":
        job = comfy_input(8, 8, f"u-{n}.png")
        job["workflow"]["999"] = {"class_type": f"NoSuchNode{n}", "inputs": {}}
        return Request(n, kind, json.dumps({"input": job}).encode(), token=f"NoSuchNode{n}")
    if bad == "bad_image_index":  # one broken image among valid ones: the error names its index
        k = n % 4
        images = [{"image": small} for _ in range(4)]
        images[k] = {"image": "data:image/png;base64,@@not-base64@@"}
        return Request(n, kind, json.dumps({"input": {"images": images}}).encode(), token=f"input.images[{k}]")
    if bad == "metadata_url":  # a cloud-metadata address: refused before any connection
        body = {"input": {"image": f"https://169.254.169.254/latest/meta-data/{n}"}}
        return Request(n, kind, json.dumps(body).encode(), token="input.image")
    if bad == "wrong_type":
        return Request(n, kind, json.dumps({"input": {"image": n}}).encode(), token="input.image")
    if bad == "not_json":
        return Request(n, kind, b'{"input": {"image": "' + str(n).encode(), token="")
    raise ValueError(bad)


def request_stream(seed: int):
    """Request kinds in MIX proportions, shuffled per block of 10; bad kinds in turn."""
    rng = random.Random(seed)
    bad = itertools.cycle(BAD_KINDS)
    while True:
        block = list(MIX)
        rng.shuffle(block)
        for kind in block:
            yield f"bad:{next(bad)}" if kind == "bad" else kind


# ----------------------------------------------------------------------------- judging


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    lost: list = field(default_factory=list)
    duplicated: int = 0
    mixed_up: list = field(default_factory=list)
    wrong: list = field(default_factory=list)
    by_kind: dict = field(default_factory=dict)
    latency: dict = field(default_factory=dict)  # kind -> seconds
    job_ids: set = field(default_factory=set)

    def summary(self, seconds: float, clients: int) -> dict:
        every = [s for v in self.latency.values() for s in v]
        valid = self.latency.get("simple", []) + self.latency.get("comfy", [])
        return {
            "clients": clients, "seconds": round(seconds, 1), "sent": self.sent, "answered": self.answered,
            "lost": len(self.lost), "duplicated": self.duplicated, "mixed_up": len(self.mixed_up),
            "wrong": len(self.wrong), "by_kind": dict(sorted(self.by_kind.items())),
            "jobs_per_s": round(self.answered / seconds, 2) if seconds else None,
            "latency_ms": {"all": percentiles(every), "valid": percentiles(valid),
                           **{k: percentiles(v) for k, v in sorted(self.latency.items())}},
            "problems": [str(p)[:300] for p in (self.lost + self.mixed_up + self.wrong)[:20]],
        }


def percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {}
    ms = np.asarray(seconds) * 1000
    return {"n": len(ms), "p50": round(float(np.percentile(ms, 50)), 1), "p95": round(float(np.percentile(ms, 95)), 1),
            "max": round(float(ms.max()), 1)}


def judge(req: Request, status: int, text: str, tally: Tally) -> None:
    """Is this answer its own request's, and the right one?"""
    tally.answered += 1
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if req.kind == "bad:not_json":  # refused by the server's own request parsing
        if not 400 <= status < 500:
            tally.wrong.append((req.n, req.kind, status, text[:200]))
        return
    if status != 200 or not isinstance(answer, dict):
        tally.wrong.append((req.n, req.kind, status, text[:200]))
        return
    job_id = answer.get("id")
    if job_id in tally.job_ids:
        tally.duplicated += 1
    tally.job_ids.add(job_id)
    output = answer.get("output")
    error = answer.get("error") or (output.get("error") if isinstance(output, dict) else None)
    if req.kind.startswith("bad:"):
        if not error:
            tally.wrong.append((req.n, req.kind, "no error", text[:200]))
        elif req.token not in str(error):  # naming another request's upload, node or index: mixed up
            (tally.mixed_up if OTHER_TOKENS.search(str(error)) else tally.wrong).append(
                (req.n, req.kind, f"error does not name {req.token!r}", str(error)[:200]))
        elif "internal error" in str(error):
            tally.wrong.append((req.n, req.kind, "internal error", str(error)[:200]))
        return
    if error or not isinstance(output, dict) or not output.get("images"):
        tally.wrong.append((req.n, req.kind, "failed", text[:300]))
        return
    entry = output["images"][0]
    got = Image.open(io.BytesIO(base64.b64decode(entry["data"]))).size
    if got != req.size:
        tally.mixed_up.append((req.n, req.kind, f"answer is {got}, request was {req.size}"))
    elif req.kind == "simple" and job_id and not entry.get("filename", "").startswith(str(job_id)):
        tally.mixed_up.append((req.n, req.kind, f"file {entry.get('filename')!r} is not job {job_id}'s"))


# ----------------------------------------------------------------------------- the run


async def _client(http: httpx.AsyncClient, base: str, numbers, kinds, deadline: float, tally: Tally,
                  timeout: float) -> None:
    while time.perf_counter() < deadline:
        n, kind = next(numbers), next(kinds)
        req = make_request(n, kind)
        tally.sent += 1
        tally.by_kind[kind] = tally.by_kind.get(kind, 0) + 1
        t0 = time.perf_counter()
        try:
            r = await http.post(f"{base}/runsync", content=req.body, headers={"Content-Type": "application/json"},
                                timeout=timeout)
        except httpx.HTTPError as exc:
            tally.lost.append((n, kind, f"{type(exc).__name__}: {exc}"))
            continue
        tally.latency.setdefault(kind.split(":")[0], []).append(time.perf_counter() - t0)
        judge(req, r.status_code, r.text, tally)


async def run_load(base: str, *, clients: int, seconds: float, seed: int = 0, first_number: int = 0,
                   timeout: float = 120.0) -> dict:
    """``clients`` concurrent clients, each sending one request after another for ``seconds``
    (a request under way at the deadline is still answered and counted)."""
    tally = Tally()
    numbers = itertools.count(first_number)
    kinds = request_stream(seed)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    start = time.perf_counter()
    async with httpx.AsyncClient(limits=limits) as http:
        await asyncio.gather(*(_client(http, base, numbers, kinds, start + seconds, tally, timeout)
                               for _ in range(clients)))
    return tally.summary(time.perf_counter() - start, clients)


def print_summary(label: str, s: dict) -> None:
    lat = s["latency_ms"]
    print(f"load: {label}: {s['clients']} clients, {s['seconds']} s: sent {s['sent']}, answered {s['answered']}, "
          f"lost {s['lost']}, duplicated {s['duplicated']}, mixed up {s['mixed_up']}, wrong {s['wrong']}; "
          f"{s['jobs_per_s']} jobs/s; latency all p50 {lat['all'].get('p50')} ms p95 {lat['all'].get('p95')} ms, "
          f"valid jobs p50 {lat['valid'].get('p50')} ms p95 {lat['valid'].get('p95')} ms", flush=True)
    for problem in s["problems"]:
        print("load: problem:", problem)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("auto", "sdk", "serve"), default="auto",
                        help="auto: `ben2-worker serve` where the service has landed, else the SDK's local API")
    parser.add_argument("--url", help="load a server already running there instead of starting one")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--baseline-seconds", type=float, default=10.0, help="the one-client baseline (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = parser.parse_args(argv)

    target = args.target if args.target != "auto" else ("serve" if service_available() else "sdk")
    server = None
    tmp = tempfile.TemporaryDirectory(prefix="ben2-load-")
    try:
        if args.url:
            base, target = args.url.rstrip("/"), f"url {args.url}"
        else:
            from standin_models import build_models_dir

            models = build_models_dir(Path(tmp.name) / "models")
            t0 = time.perf_counter()
            server = LocalServer(target, models)
            base = server.base
            print(f"load: target {target} at {base}, ready in {time.perf_counter() - t0:.1f} s (log {server.log_path})")
        baseline = None
        if args.baseline_seconds > 0:
            baseline = asyncio.run(run_load(base, clients=1, seconds=args.baseline_seconds, seed=args.seed + 1))
            print_summary("baseline", baseline)
        result = asyncio.run(run_load(base, clients=args.clients, seconds=args.seconds, seed=args.seed))
        print_summary("load", result)
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()
    ratios = {}
    if baseline and baseline["latency_ms"]["valid"] and result["latency_ms"]["valid"]:
        ratios = {
            "throughput": round(result["jobs_per_s"] / baseline["jobs_per_s"], 2),
            "valid_p50": round(result["latency_ms"]["valid"]["p50"] / baseline["latency_ms"]["valid"]["p50"], 2),
            "valid_p95": round(result["latency_ms"]["valid"]["p95"] / baseline["latency_ms"]["valid"]["p95"], 2),
        }
        print(f"load: against the one-client baseline: throughput x{ratios['throughput']}, "
              f"valid p50 x{ratios['valid_p50']}, p95 x{ratios['valid_p95']}")
    report = {"target": target, "load": result, "baseline": baseline, "ratios": ratios, "commit": commit(),
              "note": "BEN2 stand-in (a test fixture, not the model): latencies show queueing and overhead only; "
                      "a shared, loaded 2-core machine"}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"load: written to {args.json}")
    bad = result["lost"] or result["duplicated"] or result["mixed_up"] or result["wrong"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
