"""One photo, one set of options, every door: the same alpha, byte for byte, and the same pixels
into the safety checks.

The doors are the RunPod handler with both request formats (the simple task API and a
worker-comfyui workflow), the native workflow runner and the CLI here; the ComfyUI node pack
(run as ComfyUI runs it) is compared with the task API in
test_comfy_nodes.test_the_node_pack_gives_the_task_apis_alpha. All of them map their parameters onto the cut-out
engine's preprocess / forward / postprocess steps, so nothing may differ. The BEN2 model is the
stand-in (tests/standin_models.py); the safety engines are the real loading path's test models
(test_full_pipeline), wrapped in a recorder that keeps what each check was given."""

from __future__ import annotations

import base64
import dataclasses
import io
import shutil

import numpy as np
import pytest
from conftest import subject_photo
from PIL import Image
from test_handler import SIMPLE_API, load, loadimage_name, png_b64
from typer.testing import CliRunner

from ben2_worker.api.delivery import Delivery
from ben2_worker.api.jobs import JobProcessor
from ben2_worker.cli import app
from ben2_worker.config import Settings
from ben2_worker.engines import Engines, load_cutout_engine
from ben2_worker.workflow import WorkflowRunner

W, H = 1600, 1200  # > 1 MP: SmartResizeForModel really shrinks it, the matte is enlarged once
#: The user's BEN2 node settings in their workflows, as task-API / CLI options.
OPTIONS = {"sensitivity": 0.7, "mask_blur": 0, "mask_offset": -1, "background": "none"}


def alpha_of(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.mode == "RGBA", image.mode
    return np.asarray(image)[..., 3]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return subject_photo(W, H, box=(0.2, 0.3, 0.7, 0.8))


@pytest.fixture(scope="module")
def settings(models_dir) -> Settings:
    return Settings(models_dir=models_dir, allow_custom_models=True, threads=1)


@pytest.fixture(scope="module")
def engines(settings) -> Engines:
    return Engines(cutout=load_cutout_engine(settings), settings=settings)


@pytest.fixture(scope="module")
def alphas(engines, settings, photo, tmp_path_factory, monkeypatch_module) -> dict[str, np.ndarray]:
    """door -> the alpha it returned for :func:`photo` with :data:`OPTIONS`."""
    out: dict[str, np.ndarray] = {}
    worker = JobProcessor(engines, delivery=Delivery())
    b64 = png_b64(photo)

    simple = worker({"id": "simple", "input": {"image": b64, "output": dict(OPTIONS)}})
    assert "error" not in simple, simple
    out["handler: task API"] = alpha_of(base64.b64decode(simple["images"][0]["data"]))

    workflow = load(SIMPLE_API)  # the user's simple workflow: sensitivity 0.7, offset -1, no background
    name = loadimage_name(workflow)
    comfy = worker({"id": "comfy", "input": {"workflow": workflow, "images": [{"name": name, "image": b64}]}})
    assert "error" not in comfy, comfy
    (shown,) = comfy["images"]  # the workflow's PreviewImage of RestoreOriginalSize's output
    out["handler: worker-comfyui"] = alpha_of(base64.b64decode(shown["data"]))

    runner = WorkflowRunner(engines)
    plan = runner.prepare(workflow)
    result = runner.run(plan, {name: base64.b64decode(b64)})
    (shown,) = result.images
    out["workflow runner"] = alpha_of(shown.data)

    src = tmp_path_factory.mktemp("cli-in") / "photo.png"
    src.write_bytes(base64.b64decode(b64))
    dest = tmp_path_factory.mktemp("cli-out")
    monkeypatch_module.setenv("BEN2_WORKER_MODELS", str(settings.models_dir))
    monkeypatch_module.setenv("BEN2_WORKER_ALLOW_CUSTOM_MODELS", "1")
    monkeypatch_module.setenv("BEN2_WORKER_THREADS", "1")
    cli = CliRunner().invoke(app, ["remove", str(src), "-o", str(dest), "--sensitivity", "0.7",
                                   "--mask-offset", "-1", "--mask-blur", "0", "--background", "none"])
    assert cli.exit_code == 0, cli.output
    out["CLI"] = alpha_of((dest / "photo.png").read_bytes())
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_every_door_gives_the_same_alpha(alphas, engines, photo):
    direct = engines.cutout.cut_out([photo], _options())[0].alpha
    assert direct.shape == (H, W)
    assert 0 < int((direct == 255).sum()) < W * H  # a real matte, neither empty nor full
    for door, alpha in alphas.items():
        assert alpha.shape == (H, W), door
        assert np.array_equal(alpha, direct), f"{door}: {int((alpha != direct).sum())} pixels differ"


def _options():
    """:data:`OPTIONS` as the engine receives them from every door."""
    from ben2_worker.cutout import CutoutOptions
    from ben2_worker.options import OUTPUT_OPTIONS

    return CutoutOptions.from_values({**{o.name: o.default for o in OUTPUT_OPTIONS}, **OPTIONS})


# ----------------------------------------------------------------------------- safety checks


class Recorder:
    """A real engine, with what each call was given kept (a spy, not a mock: the engine runs)."""

    def __init__(self, engine, method: str):
        self._engine, self._method, self.seen = engine, method, []

    def __getattr__(self, name):
        attr = getattr(self._engine, name)
        if name != self._method:
            return attr

        def call(rgb, *args, **kwargs):
            self.seen.append(np.array(rgb, copy=True))
            return attr(rgb, *args, **kwargs)

        return call


def test_the_safety_checks_see_the_same_pixels_from_the_api_and_the_workflow(tmp_path_factory, photo):
    pytest.importorskip("nudenet")
    pytest.importorskip("llama_cpp")
    pytest.importorskip("transformers")
    from test_full_pipeline import FULL_API, build_full_models, settings_for

    from ben2_worker.handler import build_engines

    root = build_full_models(tmp_path_factory.mktemp("models-doors"), "SAFE")
    base = build_engines(settings_for(root), pipelines="simple,full")
    seen = {}
    for door in ("api", "workflow"):
        eng = dataclasses.replace(base, nudenet=Recorder(base.nudenet, "check"), caption=Recorder(base.caption, "caption"))
        worker = JobProcessor(eng, delivery=Delivery())
        b64 = png_b64(photo)
        if door == "api":
            job = {"id": door, "input": {"image": b64, "pipeline": "full", "output": dict(OPTIONS)}}
        else:
            workflow = load(FULL_API)
            job = {"id": door, "input": {"workflow": workflow, "images": [{"name": loadimage_name(workflow), "image": b64}]}}
        answer = worker(job)
        assert "error" not in answer, answer
        seen[door] = (eng.nudenet.seen, eng.caption.seen)
    (api_nn, api_cap), (wf_nn, wf_cap) = seen["api"], seen["workflow"]
    assert len(api_nn) == len(wf_nn) == 1 and len(api_cap) == len(wf_cap) == 1
    assert api_nn[0].shape[:2] != (H, W)  # the ~1 MP working copy, not the original
    assert np.array_equal(api_nn[0], wf_nn[0])
    assert np.array_equal(api_cap[0], wf_cap[0])
    assert np.array_equal(api_nn[0], api_cap[0])
    shutil.rmtree(root, ignore_errors=True)
