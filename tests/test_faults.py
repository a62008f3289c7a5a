"""Injected faults: the BEN2 model broken at load and at run time, a stage that never returns,
a job that runs out of time mid-stage, a full disk for outputs, S3 and presigned-PUT uploads
that fail or stall. Each time the worker reports the fault, recycles itself where a thread is
stuck (``refresh_worker``), and serves the next job.

The safety stages' faults (each model missing / corrupt at start, raising, answering garbage
or hanging at run time: nothing is ever released) are in tests/test_full_pipeline.py, which
builds the full test models once; this file adds a stage that never returns at all (slow).

What is real: the stand-in BEN2 model and onnxruntime, the loading path (``build_engines``),
moto's S3 server and loopback HTTP servers on 127.0.0.1, a real file-size limit (RLIMIT_FSIZE)
in a subprocess for the full disk. What is injected: an exception or a block inside the real
model's ``predict`` (a crash or a hang of a loaded model cannot be provoked on demand)."""

from __future__ import annotations

import base64
import dataclasses
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import subject_photo
from fuzz_targets import valid_workflow
from PIL import Image

from ben2_worker.api.delivery import Delivery, S3Config
from ben2_worker.api.jobs import JobProcessor
from ben2_worker.api.safe_http import FetchPolicy
from ben2_worker.config import Settings
from ben2_worker.cutout import CutoutEngine
from ben2_worker.engines import Engines, load_cutout_engine
from ben2_worker.errors import GpuUnavailableError, ModelError
from ben2_worker.handler import build_engines
from ben2_worker.imaging import encode_image

PNG = encode_image(subject_photo(80, 60), "png")
B64 = base64.b64encode(PNG).decode()
UPLOAD = "photo.png"


def simple_job(**output) -> dict:
    return {"id": "fault", "input": {"image": B64, "output": output}}


def comfy_job() -> dict:
    return {"id": "fault", "input": {"workflow": valid_workflow(UPLOAD), "images": [{"name": UPLOAD, "image": B64}]}}


def settings_for(models_dir: Path) -> Settings:
    return Settings(models_dir=models_dir, allow_custom_models=True, threads=1)


@pytest.fixture(scope="module")
def engines(models_dir) -> Engines:
    settings = settings_for(models_dir)
    return Engines(cutout=load_cutout_engine(settings), settings=settings)


def serves(worker) -> None:
    for job in (simple_job(), comfy_job()):
        out = worker(job)
        assert "error" not in out and out["images"], out


# ---------------------------------------------------------------------------- BEN2 at load


def _copy_models(models_dir: Path, dst: Path) -> Path:
    (dst / "ben2_onnx").mkdir(parents=True)
    (dst / "ben2_onnx" / "BEN2_Base.onnx").write_bytes((models_dir / "ben2_onnx" / "BEN2_Base.onnx").read_bytes())
    return dst


DAMAGE = {
    "missing": lambda p: p.unlink(),
    "empty": lambda p: p.write_bytes(b""),
    "random-bytes": lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "a-directory": lambda p: (p.unlink(), p.mkdir()),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_broken_ben2_model_stops_a_worker_that_must_serve_it(models_dir, tmp_path, damage):
    models = _copy_models(models_dir, tmp_path / "models")
    model = models / "ben2_onnx" / "BEN2_Base.onnx"
    DAMAGE[damage](model)
    with pytest.raises(ModelError) as caught:
        build_engines(settings_for(models), pipelines="simple")
    assert str(model) in str(caught.value), caught.value
    # Without BEN2_WORKER_PIPELINES it starts, serves nothing, and says so per job.
    engines = build_engines(settings_for(models), pipelines=None)
    assert engines.cutout is None
    out = JobProcessor(engines, delivery=Delivery())(simple_job())
    assert "pipeline 'simple' is not served" in out["error"], out
    out = JobProcessor(engines, delivery=Delivery())(comfy_job())
    assert "not available in this worker" in out["error"] and not out.get("images"), out


def test_worker_process_refuses_to_start_with_a_corrupt_model(models_dir, tmp_path):
    """The real entry point (``python -m ben2_worker.handler``) exits non-zero naming the file."""
    models = _copy_models(models_dir, tmp_path / "models")
    model = models / "ben2_onnx" / "BEN2_Base.onnx"
    DAMAGE["random-bytes"](model)
    env = {**os.environ, "BEN2_WORKER_MODELS": str(models), "BEN2_WORKER_ALLOW_CUSTOM_MODELS": "1",
           "BEN2_WORKER_PIPELINES": "simple", "BEN2_WORKER_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "ben2_worker.handler"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "cannot start" in proc.stderr and str(model) in proc.stderr, proc.stderr[-2000:]


# ---------------------------------------------------------------------------- BEN2 at run time


class FaultyModel:
    """The real stand-in model with a fault injected into ``predict``: ``raise_`` raises, ``block``
    waits on an event (a hang), ``calls`` counts entries."""

    def __init__(self, real, *, raise_: BaseException | None = None, block: threading.Event | None = None):
        self.real, self.raise_, self.block = real, raise_, block
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self.real, name)

    def predict(self, batch):
        self.entered.set()
        if self.block is not None:
            self.block.wait()
        if self.raise_ is not None:
            raise self.raise_
        return self.real.predict(batch)


def faulty(engines: Engines, **fault) -> tuple[Engines, FaultyModel]:
    model = FaultyModel(engines.cutout.model, **fault)
    return dataclasses.replace(engines, cutout=CutoutEngine(model, input_scaling=engines.cutout.input_scaling)), model


@pytest.mark.parametrize("job", [simple_job, comfy_job], ids=["simple", "comfy"])
@pytest.mark.parametrize("exc", [RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : CUDA failure 700"),
                                 MemoryError(), ModelError("BEN2 session lost")], ids=["ort-runtime", "memory", "model"])
def test_ben2_failing_at_run_time_is_reported_and_the_next_job_served(engines, job, exc):
    broken, model = faulty(engines, raise_=exc)
    worker = JobProcessor(broken, delivery=Delivery(), job_timeout_s=30)
    out = worker(job())
    assert model.entered.is_set()
    assert "error" in out and not out.get("images"), out
    assert type(exc).__name__ in out["error"] or str(exc) in out["error"], out
    serves(JobProcessor(engines, delivery=Delivery()))


@pytest.mark.parametrize("job", [simple_job, comfy_job], ids=["simple", "comfy"])
def test_a_stage_that_never_returns_recycles_the_worker(engines, job):
    """The model hangs: the job is answered at its time limit with ``refresh_worker`` (the thread
    cannot be killed from Python), and the same processor serves the next job meanwhile."""
    release = threading.Event()
    broken, model = faulty(engines, block=release)
    worker = JobProcessor(broken, delivery=Delivery(), job_timeout_s=1.5)
    try:
        started = time.monotonic()
        out = worker(job())
        assert time.monotonic() - started < 5
        assert model.entered.is_set()
        assert "1.5 s time limit" in out["error"] and out["refresh_worker"] is True, out
        assert not out.get("images")
        worker.engines.cutout = engines.cutout  # the stuck thread stays stuck; new jobs use a healthy engine
        serves(worker)
    finally:
        release.set()


def test_job_timeout_mid_stage_delivers_nothing_later(engines):
    """A job answered with its timeout must not upload its output when the stuck stage finally
    returns: the caller was told it failed."""
    release = threading.Event()
    broken, model = faulty(engines, block=release)
    uploads: list = []

    class Recording(Delivery):
        def deliver(self, job_id, artifact, **kw):
            uploads.append(artifact.filename)
            return super().deliver(job_id, artifact, **kw)

    worker = JobProcessor(broken, delivery=Recording(), job_timeout_s=1.0)
    for job in (simple_job(), comfy_job()):
        model.entered.clear()
        out = worker(job)
        assert out["refresh_worker"] is True and "time limit" in out["error"], out
    release.set()
    time.sleep(3.0)  # the released threads finish their stage (~0.2 s) and reach delivery
    assert uploads == [], "a timed-out job delivered its output afterwards"


# ---------------------------------------------------------------------------- full disk for outputs


def _fsize_limited(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so write() fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_for_cli_outputs_leaves_no_partial_file(models_dir, tmp_path):
    """A real file-size limit (RLIMIT_FSIZE, as a nearly full disk): the big output fails with
    the OS error named, the small one is written, no half-written file or temp file remains."""
    small = tmp_path / "in" / "small.png"
    big = tmp_path / "in" / "big.png"
    small.parent.mkdir()
    Image.fromarray(subject_photo(32, 24)).save(small)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (700, 900, 3), dtype=np.uint8)).save(big)
    out = tmp_path / "out"
    env = {**os.environ, "BEN2_WORKER_MODELS": str(models_dir), "BEN2_WORKER_ALLOW_CUSTOM_MODELS": "1",
           "BEN2_WORKER_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", "from ben2_worker.cli import app; app()", "remove", str(small), str(big), "-o", str(out)],
                          env=env, capture_output=True, text=True, timeout=180, preexec_fn=_fsize_limited(200_000))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "File too large" in text and "big.png" in text, text
    assert sorted(p.name for p in out.iterdir()) == ["small.png"], list(out.iterdir())
    assert Image.open(out / "small.png").size == (32, 24)


# ---------------------------------------------------------------------------- S3 and PUT failures


@pytest.fixture(scope="module")
def s3_endpoint():
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x",
                                   aws_secret_access_key="y").create_bucket(Bucket="outputs")
    yield endpoint
    server.stop()


class Stall:
    """A loopback TCP server that accepts connections and never answers (a stalled endpoint)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        self._stop = True
        for conn in self.conns:
            conn.close()
        self.sock.close()


def s3_delivery(endpoint: str, bucket: str = "outputs", put_timeout_s: float = 2.0) -> Delivery:
    return Delivery(S3Config(endpoint, bucket, "test-key", "test-secret"), put_timeout_s=put_timeout_s)


@pytest.mark.parametrize("job", [simple_job, comfy_job], ids=["simple", "comfy"])
def test_s3_bucket_missing_is_reported_and_nothing_half_delivered(engines, s3_endpoint, job):
    worker = JobProcessor(engines, delivery=s3_delivery(s3_endpoint, "no-such-bucket"))
    out = worker(job())
    text = str(out)
    assert "NoSuchBucket" in text and "no-such-bucket" in text, out
    assert not out.get("images"), out
    serves(JobProcessor(engines, delivery=s3_delivery(s3_endpoint)))


@pytest.mark.parametrize("job", [simple_job, comfy_job], ids=["simple", "comfy"])
def test_s3_endpoint_that_stalls_is_bounded_by_the_upload_timeout(engines, job):
    stall = Stall()
    try:
        worker = JobProcessor(engines, delivery=s3_delivery(f"http://127.0.0.1:{stall.port}", put_timeout_s=1.0),
                              job_timeout_s=60)
        started = time.monotonic()
        out = worker(job())
        took = time.monotonic() - started
    finally:
        stall.close()
    assert "S3 failed" in str(out) and not out.get("images"), out
    assert took < 20, f"a stalled S3 endpoint held the job {took:.0f} s"


def test_s3_endpoint_refusing_connections(engines):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = JobProcessor(engines, delivery=s3_delivery(f"http://127.0.0.1:{port}"))(simple_job())
    assert "EndpointConnectionError" in out["error"] and f"127.0.0.1:{port}" in out["error"], out


def test_presigned_put_that_stalls_or_refuses(engines):
    policy = FetchPolicy(allow_http=True, allow_private=True, timeout_s=2.0)
    stall = Stall()
    try:
        worker = JobProcessor(engines, delivery=Delivery(policy=policy, put_timeout_s=1.0), fetch_policy=policy)
        started = time.monotonic()
        out = worker(simple_job(put_url=f"http://127.0.0.1:{stall.port}/o.png?X-Amz-Signature=s3cr3t"))
        assert time.monotonic() - started < 10
    finally:
        stall.close()
    assert "took longer than the 1 s limit" in out["error"] and "s3cr3t" not in str(out), out
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = worker(simple_job(put_url=f"http://127.0.0.1:{port}/o.png"))
    assert "refused the connection" in out["error"], out
    serves(JobProcessor(engines, delivery=Delivery()))


# ---------------------------------------------------------------------------- safety stage that never returns


@pytest.mark.slow
def test_safety_stage_that_never_returns_blocks_and_recycles(tmp_path_factory):
    """NudeNet never returns (blocked forever, not merely slow): the image is blocked, the worker
    asks to be recycled, and the next job with a healthy engine is allowed."""
    full = pytest.importorskip("test_full_pipeline")
    models = full.build_full_models(tmp_path_factory.mktemp("models-faults"), "SAFE")
    engines = build_engines(full.settings_for(models), pipelines="simple,full")
    from ben2_worker.pipelines import SafetyOptions

    release = threading.Event()

    class Never:
        def check(self, *a, **k):
            release.wait()
            raise RuntimeError("released after the test")

    broken = dataclasses.replace(engines, nudenet=Never())
    photo = subject_photo(320, 240)
    job = {"id": "never", "input": {"image": base64.b64encode(encode_image(photo, "png")).decode(), "pipeline": "full"}}
    try:
        out = JobProcessor(broken, delivery=Delivery(), safety=SafetyOptions(stage_timeout_s=1.0))(job)
        assert out["refresh_worker"] is True and out["images"][0]["status"] == "blocked", out
        assert "data" not in out["images"][0]
        ok = JobProcessor(engines, delivery=Delivery())(job)
        assert ok["images"][0]["status"] == "allowed", ok
    finally:
        release.set()


# ---------------------------------------------------------------------------- no silent CPU fallback


def test_gpu_worker_refuses_to_start_without_a_gpu_provider(models_dir):
    """This machine's onnxruntime is the CPU build: the real "GPU provider unavailable" case."""
    import onnxruntime

    assert "CUDAExecutionProvider" not in onnxruntime.get_available_providers()
    for settings in (dataclasses.replace(settings_for(models_dir), device="gpu"),
                     dataclasses.replace(settings_for(models_dir), providers="cuda")):
        for pipelines in ("simple", None):  # refused even when no pipeline is required
            with pytest.raises(GpuUnavailableError) as caught:
                build_engines(settings, pipelines=pipelines)
            message = str(caught.value)
            assert "must use a GPU" in message and "install onnxruntime-gpu" in message, message
            assert ("BEN2_WORKER_DEVICE=gpu" if settings.device == "gpu" else "BEN2_WORKER_PROVIDERS=cuda") in message
    # Naming the CPU as well is consent to fall back; auto never requires a GPU.
    for providers in ("cuda,cpu", "auto"):
        engines = build_engines(dataclasses.replace(settings_for(models_dir), providers=providers), pipelines="simple")
        assert engines.cutout.model.info.providers == ("CPUExecutionProvider",)


def test_gpu_worker_process_exits_naming_the_cause(models_dir):
    env = {**os.environ, "BEN2_WORKER_MODELS": str(models_dir), "BEN2_WORKER_ALLOW_CUSTOM_MODELS": "1",
           "BEN2_WORKER_PIPELINES": "simple", "BEN2_WORKER_THREADS": "1", "BEN2_WORKER_DEVICE": "gpu"}
    proc = subprocess.run([sys.executable, "-m", "ben2_worker.handler"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "cannot start" in proc.stderr and "has no GPU provider" in proc.stderr, proc.stderr[-2000:]


def test_gpu_requirement_and_causes(tmp_path):
    from ben2_worker.runtime import gpu_required, gpu_unavailable_cause, require_gpu_providers

    assert gpu_required("auto", "gpu") and gpu_required("cuda", "auto") and gpu_required("tensorrt,cuda", "auto")
    assert not gpu_required("auto", "auto") and not gpu_required("cuda,cpu", "auto") and not gpu_required("cpu", "auto")
    # On a GPU provider it returns True (the caller then warms the model up); on CPU, if allowed, False.
    assert require_gpu_providers("auto", "gpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) is True
    assert require_gpu_providers("auto", "auto", ["CPUExecutionProvider"]) is False
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert "no NVIDIA device is visible" in gpu_unavailable_cause(cuda, dev=tmp_path)
    (tmp_path / "nvidia0").touch()
    cause = gpu_unavailable_cause(cuda, dev=tmp_path)
    assert "libcuda.so.1" in cause or "CUDA provider failed to load" in cause
    with pytest.raises(ValueError, match="BEN2_WORKER_DEVICE"):
        Settings.from_env({"BEN2_WORKER_DEVICE": "tpu"})
    assert Settings.from_env({"BEN2_WORKER_DEVICE": "GPU"}).device == "gpu"
