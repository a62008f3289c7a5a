"""`ben2-worker serve` as an operator runs it: a real process, settings from the environment
(config.py's BEN2_SERVICE_* branch), the keys file, real HTTP on the bound port, stand-in
models through the worker's own loading path."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from service_harness import KEY, b64, free_port, photo_bytes

SRC = Path(__file__).resolve().parents[1] / "src"
SERVE = [sys.executable, "-c", "from ben2_worker.cli import app; app()", "serve"]


def environment(models_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEN2_")}
    env.update(PYTHONPATH=str(SRC), BEN2_WORKER_MODELS=str(models_dir), BEN2_WORKER_ALLOW_CUSTOM_MODELS="1",
               BEN2_WORKER_PIPELINES="simple", BEN2_WORKER_THREADS="1", BEN2_WORKER_LOG_LEVEL="WARNING", **extra)
    return env


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "the service exited"
        try:
            r = httpx.get(base + "/health", timeout=5)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the service was not ready in time")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_serve_refuses_an_open_network_bind_naming_the_setting(models_dir):
    for args, extra in ((["--host", "0.0.0.0"], {}), ([], {"BEN2_SERVICE_HOST": "0.0.0.0"})):
        done = subprocess.run([*SERVE, *args, "--port", str(free_port())], env=environment(models_dir, **extra),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "without API keys" in done.stderr and "BEN2_SERVICE_KEYS_FILE" in done.stderr


def test_serve_refuses_a_bad_keys_file_before_binding(models_dir, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text('[[keys]]\nname = "a"\nkey = "short"\n')
    done = subprocess.run([*SERVE, "--port", str(free_port())],
                          env=environment(models_dir, BEN2_SERVICE_KEYS_FILE=str(keys)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "shorter than 16" in done.stderr, done.stderr


def test_serve_on_loopback_answers_the_worker_format(models_dir):
    port = free_port()
    proc = subprocess.Popen([*SERVE, "--port", str(port)], env=environment(models_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_ready(base, proc)["pipelines"] == ["simple"]
        _, png = photo_bytes(64, 48)
        r = httpx.post(base + "/runsync", json={"input": {"image": b64(png)}}, timeout=120)
        assert r.status_code == 200 and r.json()["status"] == "COMPLETED", r.text
        assert r.json()["output"]["images"][0]["width"] == 64
    finally:
        stop(proc)


@pytest.mark.slow
def test_serve_with_workers_off_loopback_requires_keys_in_every_process(models_dir, tmp_path):
    """--host 0.0.0.0 on the command line (not in the environment) still makes each of the
    uvicorn worker processes, which read their settings afresh, demand a key."""
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[[keys]]\nname = "ops"\nkey = "{KEY}"\n')
    port = free_port()
    proc = subprocess.Popen([*SERVE, "--host", "0.0.0.0", "--port", str(port), "--workers", "2"],
                            env=environment(models_dir, BEN2_SERVICE_KEYS_FILE=str(keys)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        _, png = photo_bytes(64, 48)
        for _ in range(4):  # connections land on either process
            with httpx.Client(base_url=base, timeout=120) as c:
                assert c.post("/v1.0/removebg", files={"image_file": ("p.png", png)}).status_code == 403
                ok = c.post("/v1.0/removebg", files={"image_file": ("p.png", png)}, headers={"X-Api-Key": KEY})
                assert ok.status_code == 200 and ok.headers["X-Width"] == "64", ok.text
    finally:
        stop(proc)
