"""The service's RunPod-style routes over real HTTP on loopback: the worker's request and
response formats at the root and under /v2/{endpoint_id}, the runpod SDK's own
``runpod.Endpoint`` client and ``ben2-worker endpoint test`` with only their base URL changed,
the job queue (cancel, purge, results), /health while loading, and /metrics."""

from __future__ import annotations

import base64
import json
import threading
import time

import httpx
import numpy as np
import pytest
from service_harness import KEY, LiveService, b64, decode, engines_loader, keyed, photo_bytes
from typer.testing import CliRunner

from ben2_worker.config import ServiceSettings


@pytest.fixture(scope="module")
def svc(models_dir):
    live = LiveService(keyed(), models_dir=models_dir)
    yield live
    live.stop()


def check_cutout(entry: dict, img: np.ndarray) -> None:
    cut = decode(base64.b64decode(entry["data"]))
    h, w = img.shape[:2]
    assert cut.shape == (h, w, 4)
    opaque = cut[..., 3] == 255
    assert opaque[h // 2, w // 2] and cut[: h // 8, :, 3].max() == 0
    assert np.array_equal(cut[..., :3][opaque], img[opaque])


@pytest.mark.parametrize("prefix", ["", "/v2/my-endpoint"])
def test_runsync_answers_the_workers_response(svc, prefix):
    img, png = photo_bytes()
    with svc.client(KEY) as c:
        r = c.post(prefix + "/runsync", json={"input": {"image": b64(png), "output": {"mask": True}}})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "COMPLETED" and set(body) >= {"id", "output", "delayTime", "executionTime"}
    entry = body["output"]["images"][0]
    check_cutout(entry, img)
    assert entry["width"] == 320 and "mask" in entry and entry["timings"]["decode"] >= 0


def test_worker_errors_fail_the_job_and_it_keeps_serving(svc):
    with svc.client(KEY) as c:
        bad = c.post("/runsync", json={"input": {"image": "x", "colour": "red"}}).json()
        assert bad["status"] == "FAILED" and "input.colour: unknown field" in bad["error"]
        wf = c.post("/runsync", json={"input": {"workflow": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}}).json()
        assert wf["status"] == "FAILED" and "NoSuchNode" in wf["error"]
        empty = c.post("/runsync", json={"input": {}}).json()
        assert empty == {**empty, "status": "FAILED", "error": "Please provide input"}
        assert c.post("/runsync", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
        assert c.post("/run", json={"no_input": 1}).json()["error"].endswith("with an 'input' field")
        missing = c.get("/status/no-such-job")
        assert missing.status_code == 404 and "not found" in missing.json()["error"]
        _, png = photo_bytes(64, 48)
        assert c.post("/runsync", json={"input": {"image": b64(png)}}).json()["status"] == "COMPLETED"


def test_run_then_status_by_get_and_post(svc):
    img, png = photo_bytes(200, 150, "JPEG")
    with svc.client(KEY) as c:
        started = c.post("/run", json={"input": {"image": b64(png)}}).json()
        assert set(started) == {"id", "status"} and started["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
        deadline = time.time() + 60
        while (status := c.get(f"/status/{started['id']}").json())["status"] not in ("COMPLETED", "FAILED"):
            assert time.time() < deadline
            time.sleep(0.1)
        assert status["status"] == "COMPLETED"
        assert status["output"]["images"][0]["width"] == 200
        assert c.post(f"/status/{started['id']}", json={}).json() == status  # the SDK local server's POST
        streamed = c.get(f"/stream/{started['id']}").json()
        assert streamed["stream"] == [{"output": status["output"]}]


def test_runsync_that_outlives_its_wait_answers_an_id_to_poll(models_dir):
    gate = threading.Event()

    def slow_load(settings):
        gate.wait(60)
        return engines_loader(models_dir)(settings)

    live = LiveService(load_engines=slow_load, wait_ready=False)
    try:
        with live.client() as c:
            health = c.get("/health")
            assert health.status_code == 503 and health.json()["status"] == "loading"
            assert c.get("/v2/x/health").json()["workers"]["initializing"] == 1
            _, png = photo_bytes(64, 48)
            r = c.post("/runsync?wait=1000", json={"input": {"image": b64(png)}}).json()
            assert r["status"] == "IN_QUEUE" and "output" not in r
            queued = [c.post("/v2/x/run", json={"input": {"image": b64(png)}}).json()["id"] for _ in range(3)]
            assert c.get("/v2/x/health").json()["jobs"]["inQueue"] == 4
            cancelled = c.post(f"/v2/x/cancel/{queued[0]}").json()
            assert cancelled == {"id": queued[0], "status": "CANCELLED"}
            assert c.post("/v2/x/purge-queue").json()["removed"] == 3  # the runsync job and two /run jobs
            gate.set()
            live.wait_ready()
            assert c.get(f"/status/{r['id']}").json()["status"] == "CANCELLED"
            done = c.post("/runsync", json={"input": {"image": b64(png)}}).json()
            assert done["status"] == "COMPLETED"
            metrics = c.get("/metrics").text
        assert 'ben2_jobs_total{outcome="cancelled",pipeline="simple",route="run"} 3.0' in metrics
        assert 'ben2_jobs_total{outcome="completed",pipeline="simple",route="runsync"} 1.0' in metrics
        assert "ben2_model_load_seconds" in metrics and "ben2_ready 1.0" in metrics
        assert 'ben2_stage_seconds_count{stage="decode"}' in metrics
        assert "ben2_queue_depth 0.0" in metrics
    finally:
        gate.set()
        live.stop()


def test_a_service_that_cannot_load_says_so_and_fails_jobs(tmp_path):
    live = LiveService(load_engines=engines_loader(tmp_path / "empty"), wait_ready=False)
    try:
        with live.client() as c:
            deadline = time.time() + 30
            while (h := c.get("/health")).json()["status"] == "loading":
                assert time.time() < deadline
                time.sleep(0.05)
            assert h.status_code == 503 and h.json()["status"] == "failed"
            job = c.post("/runsync", json={"input": {"image": "x"}}).json()
            assert job["status"] == "FAILED" and "could not load its models" in job["error"]
    finally:
        live.stop()


def test_runpod_sdk_endpoint_client_unchanged_but_its_base_url(svc, monkeypatch):
    """runpod.Endpoint as its users call it; only runpod.endpoint_url_base points here."""
    import runpod

    monkeypatch.setattr(runpod, "endpoint_url_base", svc.base + "/v2")
    monkeypatch.setattr(runpod, "api_key", KEY)
    img, png = photo_bytes(160, 120)
    endpoint = runpod.Endpoint("self-hosted")
    output = endpoint.run_sync({"input": {"image": b64(png)}}, timeout=120)
    check_cutout(output["images"][0], img)
    job = endpoint.run({"image": b64(png)})  # the SDK wraps a bare input itself
    assert job.output(timeout=60)["images"][0]["height"] == 120
    assert job.status() == "COMPLETED"
    health = endpoint.health()
    assert health["workers"]["idle"] == 1 and health["jobs"]["completed"] >= 2
    monkeypatch.setattr(runpod, "api_key", "wrong-key-0123456789abcdef")
    with pytest.raises(RuntimeError, match="Unauthorized"):
        runpod.Endpoint("self-hosted").run_sync({"input": {"image": b64(png)}})


def test_endpoint_test_command_against_the_service(svc, tmp_path, monkeypatch):
    from ben2_worker.cli import app

    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    out = tmp_path / "report"
    result = CliRunner().invoke(app, [
        "endpoint", "test", "--base-url", svc.base + "/v2", "--endpoint-id", "self-hosted", "--pipelines", "simple",
        "--runs", "1", "--out", str(out), "--poll-interval", "0.2", "--gpu", "L4",
    ])
    report = json.loads((out / "report.json").read_text())
    assert result.exit_code == 0, result.output
    assert report["attempts"] and all(a["ok"] for a in report["attempts"]), report["attempts"]
    assert report["config"]["health_supported"] is True
    assert KEY not in (out / "report.json").read_text() + (out / "report.md").read_text()


def test_no_keys_on_loopback_ignores_a_key_header(models_dir):
    live = LiveService(ServiceSettings(port=__import__("service_harness").free_port()), models_dir=models_dir, warm=False)
    try:
        _, png = photo_bytes(64, 48)
        r = httpx.post(live.base + "/runsync", json={"input": {"image": b64(png)}},
                       headers={"Authorization": "Bearer whatever"}, timeout=60)
        assert r.status_code == 200 and r.json()["status"] == "COMPLETED"
    finally:
        live.stop()
