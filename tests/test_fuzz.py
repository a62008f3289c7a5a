"""Fuzzing the handler (both request formats) and the image decoder, plus the regression corpus.

Every case must be answered with a dict whose ``error`` names the problem (never ``internal
error: ...``), within a time and memory bound, with a bounded error size, and the next valid
job must still succeed. Engines are real (the BEN2 stand-in from tests/standin_models.py: a
test fixture, not a model); only RunPod's cloud is absent.

Default suite: a fixed, derandomised slice (profile ``default-suite`` in conftest.py).
Longer: ``python -m pytest tests/test_fuzz.py --hypothesis-profile=long`` or
``python bench/fuzz.py`` (prints cases tried, crashes, hangs). Any input that ever failed is
kept under tests/corpus/ and replayed by the ``test_corpus_*`` tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import subject_photo
from fuzz_targets import (
    CaseFailed,
    b64,
    bomb_files,
    deep,
    graphs,
    judge_answer,
    judge_decode,
    jpeg_scan_bomb,
    load_case,
    json_values,
    mutated_image,
    seed_files,
    simple_requests,
    valid_workflow,
)
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ben2_worker.api.delivery import Delivery
from ben2_worker.api.jobs import JobProcessor
from ben2_worker.config import BudgetSettings, Settings
from ben2_worker.engines import Engines, load_cutout_engine
from ben2_worker.errors import InputError
from ben2_worker.imaging import encode_image

CORPUS = Path(__file__).parent / "corpus"
SEEDS = seed_files()
UPLOAD = "photo.png"
PHOTO_PNG = encode_image(subject_photo(96, 64), "png")
SLOW_OK = hsettings(suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def worker(models_dir):
    # A small pixel limit keeps "huge" cheap to try; everything else is the product's default.
    settings = Settings(models_dir=models_dir, allow_custom_models=True, threads=1, max_pixels=4_000_000,
                        budget=BudgetSettings(max_job_pixels=12_000_000))
    engines = Engines(cutout=load_cutout_engine(settings), settings=settings)
    return JobProcessor(engines, delivery=Delivery(), job_timeout_s=60)


def valid_jobs():
    return [
        {"id": "ok-simple", "input": {"image": b64(PHOTO_PNG)}},
        {"id": "ok-comfy", "input": {"workflow": valid_workflow(UPLOAD), "images": [{"name": UPLOAD, "image": b64(PHOTO_PNG)}]}},
    ]


def still_serves(worker) -> None:
    for job in valid_jobs():
        out = worker(job)
        assert "error" not in out, out
        assert out["images"], out


# ---------------------------------------------------------------------------- decoder


def test_every_seed_format_decodes():
    """The seeds are valid files of every accepted format (else the mutations prove little)."""
    for name, data in SEEDS.items():
        img = judge_decode(name, data)
        assert not isinstance(img, InputError), (name, img)
    assert {"png", "jpeg", "webp_lossy", "gif", "bmp", "tiff"} <= set(SEEDS)


@given(case=mutated_image(SEEDS))
@SLOW_OK
def test_decoder_fuzz(case):
    what, data = case
    judge_decode(what, data)


@pytest.mark.parametrize("name", sorted(bomb_files()))
def test_decompression_bombs_refused_cheaply(name):
    data, needle = bomb_files()[name]
    assert len(data) < 2**20, "a bomb is a small file"
    result = judge_decode(name, data)
    if needle:
        assert isinstance(result, InputError) and needle in str(result), (name, result)


# ---------------------------------------------------------------------------- handler


@given(value=json_values)
@SLOW_OK
def test_any_json_as_input(worker, value):
    judge_answer("input", repr(value)[:80], worker, {"id": "f", "input": value})


@given(text=st.text(max_size=60) | st.sampled_from(["{", "[]", "null", '{"workflow": 1}', '"x"', "1e999"]))
@SLOW_OK
def test_any_text_as_input_string(worker, text):
    judge_answer("input-string", text[:80], worker, {"id": "f", "input": text})


@given(request=simple_requests(b64(PHOTO_PNG)))
@SLOW_OK
def test_simple_api_fuzz(worker, request):
    judge_answer("simple", json.dumps(request)[:200], worker, {"id": "f", "input": request})


@given(graph=graphs(UPLOAD))
@SLOW_OK
def test_workflow_graph_fuzz(worker, graph):
    job = {"id": "f", "input": {"workflow": graph, "images": [{"name": UPLOAD, "image": b64(PHOTO_PNG)}]}}
    judge_answer("graph", json.dumps(graph)[:200], worker, job)


@given(workflow=json_values, images=json_values)
@SLOW_OK
def test_comfy_request_shapes_fuzz(worker, workflow, images):
    judge_answer("comfy-shape", repr((workflow, images))[:120], worker,
                 {"id": "f", "input": {"workflow": workflow, "images": images}})


@given(case=mutated_image(SEEDS), door=st.sampled_from(["simple", "comfy"]))
@SLOW_OK
def test_corrupt_uploads_through_both_doors(worker, case, door):
    what, data = case
    if door == "simple":
        job = {"id": "f", "input": {"image": b64(data)}}
    else:
        job = {"id": "f", "input": {"workflow": valid_workflow(UPLOAD), "images": [{"name": UPLOAD, "image": b64(data)}]}}
    judge_answer(f"upload-{door}", what, worker, job)


def _ui_chain(n: int) -> dict:
    nodes = [{"id": 1, "type": "LoadImage", "mode": 0, "widgets_values": [UPLOAD, "image"],
              "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}]}]
    links = []
    for i in range(2, n + 1):
        nodes.append({"id": i, "type": "FreeVRAMInline", "mode": 2 if i == 2 else 0, "widgets_values": ["soft", False],
                      "inputs": [{"name": "image", "type": "IMAGE", "link": i - 1}]})
        links.append([i - 1, i - 1, 0, i, 0, "IMAGE"])
    nodes.append({"id": n + 1, "type": "PreviewImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": n}]})
    links.append([n, n, 0, n + 1, 0, "IMAGE"])
    return {"last_node_id": n + 1, "nodes": nodes, "links": links, "version": 0.4}


def _api_chain(n: int, *, cycle: bool = False) -> dict:
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": UPLOAD}}}
    for i in range(2, n):
        graph[str(i)] = {"class_type": "FreeVRAMInline", "inputs": {"image": [str(i - 1), 0]}}
    if cycle:
        graph["2"]["inputs"]["image"] = [str(n - 1), 0]
    graph[str(n)] = {"class_type": "PreviewImage", "inputs": {"images": [str(n - 1), 0]}}
    return graph


HUGE_CASES = {
    "10k-node chain": lambda: {"workflow": _api_chain(10_000)},
    "10k-node cycle": lambda: {"workflow": _api_chain(10_000, cycle=True)},
    "10k unknown nodes": lambda: {"workflow": {str(i): {"class_type": f"Nope{i}", "inputs": {}} for i in range(10_000)}},
    "10k-node UI chain with a muted node": lambda: {"workflow": _ui_chain(10_000)},
    "999-node chain": lambda: {"workflow": _api_chain(999)},
    "999 unknown nodes": lambda: {"workflow": {str(i): {"class_type": f"Nope{i}" * 50, "inputs": {}} for i in range(999)}},
    "999 nodes each with a bad input": lambda: {"workflow": {str(i): {"class_type": "PreviewImage", "inputs": {"images": ["x" * 500, 0]}}
                                                            for i in range(999)}},
    "500-node cycle": lambda: {"workflow": _api_chain(500, cycle=True)},
    "999-node UI chain with a muted node": lambda: {"workflow": _ui_chain(998)},
    "10k bad uploads": lambda: {"workflow": valid_workflow(UPLOAD), "images": [{"name": f"{i}.png", "image": "%%"} for i in range(10_000)]},
    "5 MB string value": lambda: {"workflow": {"1": {"class_type": "LoadImage", "inputs": {"image": "x" * 5_000_000}},
                                               "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}},
    "5 MB class_type": lambda: {"workflow": {"1": {"class_type": "N" * 5_000_000, "inputs": {}}}},
    "huge node id": lambda: {"workflow": {"9" * 5000: {"class_type": "LoadImage", "inputs": {"image": UPLOAD}},
                                          "2": {"class_type": "PreviewImage", "inputs": {"images": ["9" * 5000, 0]}}}},
    "unicode digit node id": lambda: {"workflow": {"²": {"class_type": "LoadImage", "inputs": {"image": UPLOAD}},
                                                   "2": {"class_type": "PreviewImage", "inputs": {"images": ["²", 0]}}}},
    "deep dict in an input": lambda: {"workflow": {"1": {"class_type": "LoadImage", "inputs": {"image": deep(5000)}}}},
    "deep list as a link": lambda: {"workflow": {"1": {"class_type": "PreviewImage", "inputs": {"images": deep(5000)}}}},
    "deep JSON string input": lambda: "[" * 100_000 + "]" * 100_000,
    "deep JSON string workflow": lambda: {"workflow": "[" * 100_000 + "]" * 100_000},
    "deep simple request": lambda: {"image": deep(5000)},
    "huge simple batch": lambda: {"images": ["%%"] * 10_000},
    "huge base64 garbage": lambda: {"image": "A" * 4_000_001},
    "1000 previews of one upload": lambda: {"workflow": {
        "1": {"class_type": "LoadImage", "inputs": {"image": UPLOAD}},
        **{str(i): {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}} for i in range(2, 1000)}}},
    "JPEG of 2,000 scans": lambda: {"image": b64(jpeg_scan_bomb())},
    "enlarge to 16384x16384": lambda: {"workflow": {
        "1": {"class_type": "LoadImage", "inputs": {"image": UPLOAD}},
        "2": {"class_type": "RestoreOriginalSize", "inputs": {"image": ["1", 0], "original_width": 16384, "original_height": 16384}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}},
    "100 loads of a flat 4 MP upload": lambda: {"workflow": {
        **{str(i): {"class_type": "LoadImage", "inputs": {"image": "flat.png"}} for i in range(1, 101)},
        **{str(100 + i): {"class_type": "PreviewImage", "inputs": {"images": [str(i), 0]}} for i in range(1, 101)}}},
}


#: The limit each refusal must name.
HUGE_REFUSALS = {
    "10k-node chain": "BEN2_WORKER_MAX_NODES", "10k-node cycle": "BEN2_WORKER_MAX_NODES",
    "10k unknown nodes": "BEN2_WORKER_MAX_NODES", "10k-node UI chain with a muted node": "BEN2_WORKER_MAX_NODES",
    "500-node cycle": "Dependency cycle", "1000 previews of one upload": "BEN2_WORKER_MAX_OUTPUTS",
    "enlarge to 16384x16384": "BEN2_WORKER_MAX_PIXELS", "100 loads of a flat 4 MP upload": "BEN2_WORKER_MAX_JOB_PIXELS",
    "JPEG of 2,000 scans": "BEN2_WORKER_MAX_JPEG_SCANS", "deep JSON string input": "nested too deeply",
    "deep JSON string workflow": "nested too deeply", "huge simple batch": "must hold 1 to 16 images",
    "10k bad uploads": "Failed to upload one or more input images",
}
#: Big but within every limit: these must succeed.
VALID_HUGE = {"999-node chain", "huge node id", "unicode digit node id"}


@pytest.mark.parametrize("name", sorted(HUGE_CASES))
def test_huge_and_deep_requests(worker, name):
    payload = HUGE_CASES[name]()
    if isinstance(payload, dict) and "workflow" in payload and "images" not in payload:
        payload["images"] = [{"name": UPLOAD, "image": b64(PHOTO_PNG)}, {"name": "flat.png", "image": b64(FLAT_4MP)}]
    out = judge_answer("huge", name, worker, {"id": "f", "input": payload})
    if name in VALID_HUGE:
        assert "error" not in out and out["images"], (name, str(out)[:300])
    else:
        assert "error" in out, (name, str(out)[:300])
        assert HUGE_REFUSALS.get(name, "") in out["error"], (name, out["error"][:500])


FLAT_4MP = encode_image(__import__("numpy").zeros((2000, 2000, 3), "uint8"), "png")


def test_worker_still_serves_after_the_fuzzing(worker):
    still_serves(worker)


# ---------------------------------------------------------------------------- regression corpus


def _corpus(kind: str) -> list[Path]:
    return sorted(p for p in (CORPUS / kind).glob("*") if p.suffix not in (".md", ".py") and p.name != "expected.json")


@pytest.mark.parametrize("path", _corpus("decode"), ids=lambda p: p.name)
def test_corpus_decode(path):
    expected = json.loads((CORPUS / "decode" / "expected.json").read_text())
    result = judge_decode(path.name, path.read_bytes())
    needle = expected.get(path.name, "")
    if needle == "ok":
        assert not isinstance(result, InputError), result
    elif needle:
        assert isinstance(result, InputError) and needle in str(result), result


@pytest.mark.parametrize("path", _corpus("jobs"), ids=lambda p: p.name)
def test_corpus_jobs(worker, path):
    case = load_case(path)
    out = judge_answer("corpus", path.name, worker, case["job"])
    for needle in case.get("expect", []):
        assert needle in json.dumps(out), (needle, str(out)[:500])
    still_serves(worker)


def test_judges_catch_what_they_must(worker):
    """The oracle itself: an internal error and an escaped exception both count as failures."""
    with pytest.raises(CaseFailed):
        judge_answer("self-test", "internal", lambda job: {"error": "internal error: KeyError: 'x'"}, {})
    with pytest.raises(CaseFailed):
        judge_answer("self-test", "raise", lambda job: 1 / 0, {})
