"""Real HTTP against `ben2-worker serve` (the self-hosted service) on loopback, and S3 delivery
through a real S3-compatible server (moto in server mode). Only RunPod's cloud is absent."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, subject_photo
from PIL import Image

WORKFLOWS = ROOT / "workflows"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 120) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def get(url: str, timeout: float = 30) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


class Server:
    def __init__(self, models_dir: Path, extra_env: dict | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "BEN2_WORKER_MODELS": str(models_dir),
            "BEN2_WORKER_ALLOW_CUSTOM_MODELS": "1",
            "BEN2_WORKER_THREADS": "1",
            **(extra_env or {}),
        }
        exe = Path(sys.executable).with_name("ben2-worker")
        # Logs go to a file: an unread pipe fills up and blocks the server mid-request.
        self.log = tempfile.NamedTemporaryFile("w+", prefix="ben2-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [str(exe), "serve", "--port", str(self.port)], env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {Path(self.log.name).read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not start in 90 s")

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        text = Path(self.log.name).read_text()
        os.unlink(self.log.name)
        return text


@pytest.fixture(scope="module")
def server(models_dir):
    srv = Server(models_dir)
    yield srv
    srv.stop()


def photo_b64(w=2400, h=1600, fmt="PNG") -> tuple[np.ndarray, str]:
    img = subject_photo(w, h)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt)
    return img, base64.b64encode(buf.getvalue()).decode()


def comfy_job(workflow_file: str, b64: str) -> dict:
    workflow = json.loads((WORKFLOWS / workflow_file).read_text())
    if "nodes" in workflow:
        name = next(n for n in workflow["nodes"] if n["type"] == "LoadImage")["widgets_values"][0]
    else:
        name = next(n for n in workflow.values() if n["class_type"] == "LoadImage")["inputs"]["image"]
    return {"input": {"workflow": workflow, "images": [{"name": name, "image": b64}]}}


def check_cutout(entry: dict, img: np.ndarray) -> None:
    cut = np.asarray(Image.open(io.BytesIO(base64.b64decode(entry["data"]))))
    h, w = img.shape[:2]
    assert cut.shape == (h, w, 4)
    opaque = cut[..., 3] == 255
    assert opaque[h // 2, w // 2] and cut[: h // 8, :, 3].max() == 0
    assert np.array_equal(cut[..., :3][opaque], img[opaque])


@pytest.mark.parametrize("workflow_file", ["BG_remove_BEN2_simple_2nd.json", "BG_remove_BEN2_simple_2nd.api.json"])
def test_runsync_users_simple_workflow(server, workflow_file):
    img, b64 = photo_b64()
    uri = "data:image/png;base64," + b64 if workflow_file.endswith(".api.json") else b64
    res = post(server.base + "/runsync", comfy_job(workflow_file, uri))
    assert res["status"] == "COMPLETED", res
    check_cutout(res["output"]["images"][0], img)


def test_run_then_status(server):
    img, b64 = photo_b64(800, 600, "JPEG")
    started = post(server.base + "/run", {"input": {"image": b64, "output": {"mask": True}}})
    job_id = started["id"]
    deadline = time.time() + 60
    while True:
        status = get_status(server, job_id)
        if status["status"] in ("COMPLETED", "FAILED") or time.time() > deadline:
            break
        time.sleep(0.2)
    assert status["status"] == "COMPLETED", status
    entry = status["output"]["images"][0]
    assert entry["width"] == 800 and "mask" in entry


def get_status(server, job_id: str) -> dict:
    req = urllib.request.Request(server.base + f"/status/{job_id}", data=b"{}", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def test_errors_over_http(server):
    res = post(server.base + "/runsync", {"input": {"workflow": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}})
    assert res["status"] == "FAILED" and "NoSuchNode" in res["error"]
    res = post(server.base + "/runsync", {"input": {"image": "x", "colour": "red"}})
    assert res["status"] == "FAILED" and "input.colour" in res["error"]
    # and it keeps serving
    img, b64 = photo_b64(320, 240)
    res = post(server.base + "/runsync", {"input": {"image": b64}})
    assert res["status"] == "COMPLETED"


def test_s3_delivery_through_the_server(models_dir):
    from moto.server import ThreadedMotoServer

    import boto3

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        creds = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
        boto3.client("s3", endpoint_url=endpoint, **creds).create_bucket(Bucket="cutouts")
        srv = Server(models_dir, {
            "BUCKET_ENDPOINT_URL": f"{endpoint}/cutouts",
            "BUCKET_ACCESS_KEY_ID": "test",
            "BUCKET_SECRET_ACCESS_KEY": "test",
        })
        try:
            img, b64 = photo_b64(640, 480)
            res = post(srv.base + "/runsync", comfy_job("BG_remove_BEN2_simple_2nd.api.json", b64))
        finally:
            log = srv.stop()
        assert res["status"] == "COMPLETED", (res, log[-2000:])
        entry = res["output"]["images"][0]
        assert entry["type"] == "s3_url"
        with urllib.request.urlopen(entry["data"], timeout=30) as resp:
            cut = np.asarray(Image.open(io.BytesIO(resp.read())))
        assert cut.shape == (480, 640, 4)
    finally:
        moto.stop()
