"""`ben2-worker endpoint test`: against `ben2-worker serve` on loopback (the self-hosted service,
BEN2 stand-in), and against a scripted stand-in of RunPod's hosted queue API on loopback for what
a local box cannot show (platform timings and stuck jobs, s3_url outputs, a wrong key)."""

from __future__ import annotations

import base64
import io
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, subject_photo
from PIL import Image
from typer.testing import CliRunner

from ben2_worker.cli.endpoint import endpoint_app
from ben2_worker.ops.endpoint import prices
from ben2_worker.ops.endpoint.cases import CASE_NAMES, InputImage, build_cases, find_workflows_dir, load_image
from ben2_worker.ops.endpoint.client import EndpointClient, EndpointError, endpoint_url
from ben2_worker.ops.endpoint.report import build_report, percentile, render_markdown, summarize, utc_now
from ben2_worker.ops.endpoint.runner import EndpointTester, RunConfig

WORKFLOWS = ROOT / "workflows"


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def small_photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "subject.png"
    path.write_bytes(png_bytes(subject_photo(320, 240)))
    return path


# ------------------------------------------------------------------ prices, percentiles, URLs


@pytest.mark.parametrize(
    ("name", "pool"),
    [("ADA_24", "ADA_24"), ("ada_24", "ADA_24"), ("RTX 4090", "ADA_24"), ("NVIDIA GeForce RTX 4090", "ADA_24"),
     ("L4", "AMPERE_24"), ("NVIDIA RTX A4000", "AMPERE_16"), ("H100", "ADA_80_PRO"), ("NVIDIA H200", "HOPPER_141"),
     ("A40", "AMPERE_48"), ("L40S", "ADA_48_PRO")],
)
def test_gpu_names_and_pools_find_their_price(name, pool):
    assert prices.find_price(name).pool == pool


def test_price_table_is_dated_sourced_and_sane():
    assert prices.PRICES_AS_OF and "runpod" in prices.PRICE_SOURCE.lower()
    pools = [p.pool for p in prices.PRICES if p.pool]
    assert len(pools) == len(set(pools))
    for p in prices.PRICES:
        assert 0.00005 < p.per_second < 0.01, p  # dollars per second, not per hour
    assert prices.find_price(prices.DEFAULT_GPU).per_second == pytest.approx(0.00031)
    assert prices.cost_per_1000(2.0, prices.find_price("ADA_24")) == pytest.approx(0.62)
    with pytest.raises(KeyError, match="ADA_24"):
        prices.find_price("Voodoo 3")


def test_percentile_matches_numpy():
    xs = [3.0, 1.0, 7.5, 2.2, 9.9, 4.4, 0.3]
    for q in (0, 50, 95, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert percentile([], 50) is None and percentile([2.0], 95) == 2.0


def test_urls_and_key_handling():
    assert endpoint_url("https://api.runpod.ai/v2/", "abc123") == "https://api.runpod.ai/v2/abc123"
    assert endpoint_url("http://127.0.0.1:8000", None) == "http://127.0.0.1:8000"
    with pytest.raises(ValueError):
        endpoint_url("https://api.runpod.ai/v2", "../x/y")
    with pytest.raises(ValueError, match="plain http"):
        EndpointClient("http://example.com/v2/x", api_key="secret")
    client = EndpointClient("http://127.0.0.1:9/x", api_key="secret")  # loopback over http is fine
    assert "secret" not in repr(client)


def test_cases_use_the_users_workflows_unchanged(small_photo):
    image = load_image(small_photo)
    cases = {c.name: c for c in build_cases(image, find_workflows_dir(WORKFLOWS))}
    assert set(cases) == set(CASE_NAMES)
    simple = json.loads((WORKFLOWS / "BG_remove_BEN2_simple_2nd.api.json").read_text())
    assert cases["comfy-simple"].payload["workflow"] == simple
    assert cases["comfy-simple"].payload["images"][0]["name"] == simple["1"]["inputs"]["image"]
    assert cases["comfy-simple"].payload["images"][0]["image"].startswith("data:image/png;base64,")
    assert cases["api-full"].payload["pipeline"] == "full"
    assert (cases["api-simple"].expect_width, cases["api-simple"].expect_height) == (320, 240)
    assert json.loads(cases["api-simple"].body())["input"]["image"] == image.b64


# ------------------------------------------------------------------ a stand-in for RunPod's hosted API


class FakeRunPod:
    """RunPod's queue API as documented (operation reference): /run answers IN_QUEUE, /status moves
    IN_QUEUE → IN_PROGRESS → COMPLETED with delayTime/executionTime, /runsync, /cancel, /health.
    ``behaviour(job_input, job_index)`` picks what a job does; outputs echo the input's size."""

    KEY = "rp-test-key-0123456789"

    def __init__(self, behaviour=None, idle_workers: int = 0):
        self.behaviour = behaviour or (lambda job_input, index: "ok")
        self.idle_workers = idle_workers
        self.jobs: dict[str, dict] = {}
        self.cancelled: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.files: dict[str, bytes] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body, ctype="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method):
                path = urllib.parse.urlsplit(self.path).path
                fake.requests.append((method, path))
                if path.startswith("/files/"):
                    return self._send(200, fake.files[path[7:]], "image/png")
                if self.headers.get("Authorization") != f"Bearer {FakeRunPod.KEY}":
                    return self._send(401, {"error": "Unauthorized"})
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                parts = path.strip("/").split("/")
                if parts[0] != "ep1":
                    return self._send(404, {"error": "no such endpoint"})
                op = parts[1] if len(parts) > 1 else ""
                if op == "health" and method == "GET":
                    return self._send(200, {"jobs": {"inQueue": 0}, "workers": {"idle": fake.idle_workers, "running": 0}})
                if op in ("run", "runsync") and method == "POST":
                    return self._send(200, fake.submit(body["input"], sync=op == "runsync"))
                if op == "status" and method == "GET":
                    return self._send(200, fake.poll(parts[2]))
                if op == "cancel" and method == "POST":
                    if fake.behaviour_of(parts[2]) == "stuck_no_cancel":
                        return self._send(404, {"error": "not found"})
                    fake.cancelled.append(parts[2])
                    return self._send(200, {"id": parts[2], "status": "CANCELLED"})
                return self._send(405 if op == "status" else 404, {"error": "no route"})

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def behaviour_of(self, job_id):
        return self.jobs[job_id]["behaviour"]

    def submit(self, job_input, sync):
        index = len(self.jobs)
        job_id = f"{'sync-' if sync else ''}job-{index}"
        self.jobs[job_id] = {"input": job_input, "polls": 0, "behaviour": self.behaviour(job_input, index), "index": index}
        if sync and self.jobs[job_id]["behaviour"] not in ("slow_sync", "stuck", "stuck_no_cancel", "queued_forever"):
            return self.finish(job_id)
        return {"id": job_id, "status": "IN_QUEUE" if not sync else "IN_PROGRESS"}

    def poll(self, job_id):
        job = self.jobs[job_id]
        job["polls"] += 1
        b = job["behaviour"]
        if b == "queued_forever" or (b == "stuck_no_cancel"):
            return {"id": job_id, "status": "IN_QUEUE"}
        if b == "stuck":
            return {"id": job_id, "status": "IN_PROGRESS", "delayTime": 900}
        if job["polls"] == 1:
            return {"id": job_id, "status": "IN_QUEUE"}
        if job["polls"] == 2:
            return {"id": job_id, "status": "IN_PROGRESS", "delayTime": 900}
        return self.finish(job_id)

    def finish(self, job_id):
        job = self.jobs[job_id]
        b, inp = job["behaviour"], job["input"]
        delay = 20_000 if job["index"] == 0 else 500
        base = {"id": job_id, "status": "COMPLETED", "delayTime": delay, "executionTime": 2000 + 100 * job["index"]}
        if b == "worker_error":
            return {**base, "status": "FAILED", "error": "pipeline 'full' is not served by this worker"}
        if b == "no_images":
            return {**base, "output": {"status": "success_no_images", "images": []}}
        if b == "blocked":
            return {**base, "output": {"pipeline": "full", "status": "blocked", "images": [
                {"status": "blocked", "verdict": {"status": "blocked", "reasons": ["nudenet: FEMALE_BREAST_EXPOSED 0.91"]}}]}}
        raw = inp["images"][0]["image"] if "workflow" in inp else inp["image"]
        src = Image.open(io.BytesIO(base64.b64decode(raw.split(",", 1)[-1])))
        w, h = src.size
        if b == "half_size":
            w, h = w // 2, h // 2
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
        if b == "no_alpha":
            data = png_bytes(rgba[..., :3])
        else:
            data = png_bytes(rgba)
        if b == "bad_base64":
            entry = {"filename": "out.png", "type": "base64", "data": "%%% not base64"}
        elif inp.get("pipeline") == "full" or b == "s3":
            name = f"{job_id}.png"
            self.files[name] = data
            entry = {"filename": name, "type": "s3_url", "data": f"{self.base}/files/{name}?X-Amz-Signature=abc"}
        else:
            entry = {"filename": "ComfyUI_temp_00001_.png", "type": "base64", "data": base64.b64encode(data).decode()}
        if "workflow" in inp:
            output = {"images": [entry], "timings": {"total": 1500.0}}
        else:
            entry.update({"status": "allowed" if inp.get("pipeline") == "full" else "success", "width": w, "height": h,
                          "timings": {"decode": 10.0, "inference": 900.0}})
            if inp.get("pipeline") == "full":
                entry.update({"caption": "an astronaut in a white suit", "verdict": {"status": "allowed", "reasons": []}})
            output = {"pipeline": inp.get("pipeline", "simple"), "images": [entry]}
        return {**base, "output": output}


@pytest.fixture
def fake():
    srv = FakeRunPod()
    yield srv
    srv.close()


def make_tester(fake_srv: FakeRunPod, photo: Path, names=CASE_NAMES, **config) -> EndpointTester:
    client = EndpointClient(endpoint_url(fake_srv.base, "ep1"), FakeRunPod.KEY, timeout_s=10)
    cases = build_cases(load_image(photo), WORKFLOWS, tuple(names))
    cfg = RunConfig(**{"runs": 2, "poll_interval_s": 0.05, "job_timeout_s": 5, "queue_timeout_s": 5, **config})
    return EndpointTester(client, cases, cfg)


def test_hosted_api_timings_cold_warm_and_cost(fake, small_photo, tmp_path):
    tester = make_tester(fake, small_photo, images_dir=tmp_path / "images")
    attempts = tester.run()
    assert len(attempts) == tester.planned() == 16
    assert all(a.ok for a in attempts), [(a.case, a.mode, a.error) for a in attempts if not a.ok]
    # /run went IN_QUEUE → IN_PROGRESS → COMPLETED via GET /status; /runsync answered at once
    first = attempts[0]
    assert [t[1] for t in first.transitions] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert ("GET", "/ep1/status/job-0") in fake.requests and ("GET", "/ep1/health") in fake.requests
    assert first.phase == "cold" and first.workers_ready_before == 0
    assert all(a.phase == "warm" for a in attempts[1:])
    assert first.delay_ms == 20_000 and attempts[1].delay_ms == 500
    # full-pipeline outputs came back as s3_url and were fetched and decoded
    full = [a for a in attempts if a.case == "api-full"]
    assert all(c.type == "s3_url" and (c.width, c.height) == (320, 240) for a in full for c in a.images)
    assert full[0].safety["captions"] == ["an astronaut in a white suit"]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [f"{n}.png" for n in sorted(CASE_NAMES)]

    gpu = prices.find_price("ADA_24")
    summary = summarize(attempts, gpu)
    cold = summary["cold_starts"][0]
    assert cold["cold_start_ms"] == pytest.approx(20_000 - 500)
    simple_cost = next(c for c in summary["costs"] if c["pipeline"] == "simple")
    warm_exec = [a.execution_ms / 1000 for a in attempts if a.pipeline == "simple" and a.phase == "warm"]
    assert simple_cost["basis"] == "executionTime"
    assert simple_cost["usd_per_1000_images"] == pytest.approx(np.mean(warm_exec) * 0.00031 * 1000)
    assert simple_cost["usd_per_cold_start"] == pytest.approx(19.5 * 0.00031)
    row = next(r for r in summary["by_case"] if r["case"] == "comfy-simple" and r["mode"] == "run")
    assert row["delay_ms"]["p50"] == pytest.approx(np.percentile([20_000, 500], 50))
    assert row["execution_ms"]["p95"] == pytest.approx(np.percentile([2000, 2100], 95))


def test_warm_worker_means_no_cold_sample(small_photo):
    srv = FakeRunPod(idle_workers=1)
    try:
        attempts = make_tester(srv, small_photo, names=("api-simple",), runs=1).run()
    finally:
        srv.close()
    assert attempts[0].phase == "warm" and attempts[0].workers_ready_before == 1
    report = build_report(attempts, target="t", gpu=prices.find_price("L4"), config={"runs": 1},
                          image={"name": "x", "width": 1, "height": 1, "bytes": 1}, started=utc_now(), finished=utc_now())
    assert "No cold request was observed" in render_markdown(report)


@pytest.mark.parametrize(
    ("behaviour", "status", "needle"),
    [
        ("half_size", "COMPLETED", "expected the input's full resolution 320x240"),
        ("no_alpha", "COMPLETED", "no alpha channel"),
        ("bad_base64", "COMPLETED", "not valid base64"),
        ("no_images", "COMPLETED", "no images returned"),
        ("blocked", "COMPLETED", "blocked by the safety gate"),
        ("worker_error", "FAILED", "not served by this worker"),
    ],
)
def test_bad_outputs_are_failures_not_crashes(small_photo, behaviour, status, needle):
    srv = FakeRunPod(behaviour=lambda inp, i: behaviour)
    try:
        attempts = make_tester(srv, small_photo, names=("api-simple",), runs=1).run()
    finally:
        srv.close()
    assert len(attempts) == 2 and not any(a.ok for a in attempts)
    assert all(a.status == status and needle in a.error for a in attempts), [a.error for a in attempts]


def test_stuck_jobs_are_detected_and_cancelled(small_photo):
    srv = FakeRunPod(behaviour=lambda inp, i: "stuck" if i == 0 else "stuck_no_cancel")
    try:
        attempts = make_tester(srv, small_photo, names=("api-simple",), runs=1, modes=("run",),
                              job_timeout_s=0.4, queue_timeout_s=0.4).run()
        attempts += make_tester(srv, small_photo, names=("api-simple",), runs=1, modes=("run",),
                               job_timeout_s=0.4, queue_timeout_s=0.4).run()
    finally:
        srv.close()
    running, queued = attempts
    assert running.status == "STUCK_IN_PROGRESS" and running.cancel == "CANCELLED" and srv.cancelled == ["job-0"]
    assert queued.status == "STUCK_IN_QUEUE" and queued.cancel == "unsupported"
    summary = summarize(attempts, prices.find_price("ADA_24"))
    assert [s["state"] for s in summary["stuck"]] == ["IN_PROGRESS", "IN_QUEUE"]


def test_runsync_that_outlives_its_wait_is_polled(small_photo):
    srv = FakeRunPod(behaviour=lambda inp, i: "slow_sync")
    try:
        attempts = make_tester(srv, small_photo, names=("comfy-simple",), runs=1, modes=("runsync",)).run()
    finally:
        srv.close()
    assert attempts[0].ok, attempts[0].error
    assert attempts[0].transitions[0][1] == "IN_PROGRESS"
    assert ("GET", "/ep1/status/sync-job-0") in srv.requests


def test_bad_key_and_unreachable_server_are_reported(small_photo):
    srv = FakeRunPod()
    try:
        client = EndpointClient(endpoint_url(srv.base, "ep1"), "wrong-key", timeout_s=5)
        with pytest.raises(EndpointError, match="HTTP 401.*API key"):
            client.run(b'{"input": {}}')
        tester = make_tester(srv, small_photo, names=("api-simple",), runs=1, modes=("runsync",))
        tester.client = client
        attempts = tester.run()
    finally:
        srv.close()
    assert attempts[0].status == "HTTP_ERROR" and "401" in attempts[0].error
    dead = EndpointClient("http://127.0.0.1:9/ep1", None, timeout_s=2)
    with pytest.raises(EndpointError, match="cannot reach"):
        dead.run(b"{}")


def test_cli_against_hosted_api_writes_report_without_the_key(fake, small_photo, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_RP_KEY", FakeRunPod.KEY)
    out = tmp_path / "report"
    result = CliRunner().invoke(endpoint_app, [
        "test", "--endpoint-id", "ep1", "--base-url", fake.base, "--api-key-env", "MY_RP_KEY", "--runs", "1",
        "--out", str(out), "--gpu", "RTX 4090", "--image", str(small_photo), "--workflows", str(WORKFLOWS),
        "--poll-interval", "0.1",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["ok"] == 8 and report["gpu_price"]["pool"] == "ADA_24"
    assert report["config"]["health_supported"] is True
    for path in out.rglob("*"):
        if path.is_file():
            assert FakeRunPod.KEY.encode() not in path.read_bytes()
    assert FakeRunPod.KEY not in result.output


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--endpoint-id", "abc", "--gpu", "Voodoo"], {"RUNPOD_API_KEY": "k"}, "unknown GPU"),
        (["--endpoint-id", "abc"], {}, "RUNPOD_API_KEY is not set"),
        ([], {"RUNPOD_API_KEY": "k"}, "give --endpoint-id"),
        (["--endpoint-id", "abc", "--pipelines", "fast"], {"RUNPOD_API_KEY": "k"}, "--pipelines"),
        (["--base-url", "http://127.0.0.1:9", "--workflows", "/nonexistent"], {}, "workflows"),
    ],
)
def test_cli_refuses_bad_options_before_sending(args, env, needle, monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(endpoint_app, ["test", *args])
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.output.split())


def test_cli_mounted_on_main_app():
    from ben2_worker import cli

    assert cli.LAZY_COMMANDS["endpoint"].target == "ben2_worker.cli.endpoint:endpoint_app", \
        "endpoint_app must be mounted on `ben2-worker` as `endpoint` (imported when run)"
    result = CliRunner().invoke(cli.app, ["endpoint", "test", "--help"])
    assert result.exit_code == 0 and "--endpoint-id" in result.output


# ------------------------------------------------------------------ against `ben2-worker serve` (the self-hosted service) on loopback


@pytest.fixture(scope="module")
def local_server(models_dir):
    from test_server_http import Server

    import time
    import urllib.error
    import urllib.request

    srv = Server(models_dir)
    deadline = time.time() + 120  # the service answers at once and loads its models in the background
    while True:
        try:
            urllib.request.urlopen(srv.base + "/health", timeout=10).close()  # noqa: S310 - loopback
            break
        except urllib.error.HTTPError as exc:  # 503 until ready
            assert exc.code == 503 and time.time() < deadline, f"the service is not ready: {exc}"
            time.sleep(0.2)
    yield srv
    srv.stop()


def test_local_server_simple_passes_and_full_is_reported_as_failure(local_server, small_photo, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(endpoint_app, [
        "test", "--base-url", local_server.base, "--runs", "2", "--out", str(out),
        "--image", str(small_photo), "--workflows", str(WORKFLOWS), "--job-timeout", "120",
    ])
    # the full pipeline is not served by a simple-only worker: failures, exit 1, no crash
    assert result.exit_code == 1, result.output
    report = json.loads((out / "report.json").read_text())
    s = report["summary"]
    assert s["requests"] == 16 and s["ok"] == 8 and s["failed"] == 8
    by = {(r["case"], r["mode"]): r for r in s["by_case"]}
    for case in ("comfy-simple", "api-simple"):
        for mode in ("run", "runsync"):
            assert by[(case, mode)]["ok"] == 2
    for case in ("comfy-full", "api-full"):
        assert by[(case, "run")]["ok"] == 0 and by[(case, "runsync")]["ok"] == 0
    errors = {g["case"]: g["error"] for g in s["failure_groups"]}
    assert "not available in this worker" in errors["comfy-full"]
    assert "not served by this worker" in errors["api-full"]

    # the service (docs/service.md) reports delayTime/executionTime and /health as RunPod does
    assert s["timing_fields_reported"] is True
    ok = [a for a in report["attempts"] if a["ok"]]
    assert all(a["delay_ms"] is not None and a["execution_ms"] is not None and a["latency_s"] > 0 for a in ok)
    assert all(a["worker_ms"] is not None for a in ok)
    # /run answered with the job queued (or already running) and /status followed it to COMPLETED
    run_ok = [a for a in ok if a["mode"] == "run"]
    assert run_ok and all(a["transitions"][0][1] in ("IN_QUEUE", "IN_PROGRESS") and a["transitions"][-1][1] == "COMPLETED"
                          for a in run_ok)
    # every image decoded at the input's full resolution, with alpha
    for a in ok:
        assert [(c["width"], c["height"], c["mode"]) for c in a["images"]] == [(320, 240, "RGBA")]
    assert report["config"]["health_supported"] is True
    simple_cost = next(c for c in s["costs"] if c["pipeline"] == "simple")
    assert simple_cost["basis"] == "executionTime" and simple_cost["usd_per_1000_images"] > 0

    md = (out / "report.md").read_text()
    for heading in ("## Latency by request", "## Cold vs warm", "## Cost per 1,000 images", "## Failures", "## Every request"):
        assert heading in md
    cut = np.asarray(Image.open(out / "images" / "comfy-simple.png"))
    assert cut.shape == (240, 320, 4) and cut[120, 160, 3] == 255 and cut[5, 5, 3] == 0


def test_local_server_simple_only_exits_zero(local_server, small_photo, tmp_path):
    result = CliRunner().invoke(endpoint_app, [
        "test", "--base-url", local_server.base, "--runs", "1", "--pipelines", "simple", "--modes", "runsync",
        "--out", str(tmp_path / "r"), "--image", str(small_photo), "--workflows", str(WORKFLOWS),
    ])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "report.json").read_text())["summary"]["ok"] == 2


def test_synthetic_image_when_no_photo():
    from ben2_worker.ops.endpoint.cases import synthetic_image

    img = synthetic_image(64, 48)
    assert isinstance(img, InputImage) and (img.width, img.height) == (64, 48)
    assert Image.open(io.BytesIO(img.data)).size == (64, 48)
