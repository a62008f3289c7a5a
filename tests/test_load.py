"""The local server under concurrent load (bench/load.py): every job answered exactly once,
none mixed up, bad requests refused with errors naming their problem. The long run is
`python bench/load.py`; here a short one (slow: a server process and ~10 s of load)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import load  # noqa: E402  bench/load.py

from ben2_worker.api.delivery import Delivery  # noqa: E402
from ben2_worker.api.jobs import JobProcessor  # noqa: E402
from ben2_worker.config import Settings  # noqa: E402
from ben2_worker.engines import Engines, load_cutout_engine  # noqa: E402


@pytest.fixture(scope="module")
def worker(models_dir):
    settings = Settings(models_dir=models_dir, allow_custom_models=True, threads=1)
    return JobProcessor(Engines(cutout=load_cutout_engine(settings), settings=settings), delivery=Delivery())


def _answer(worker, req: load.Request, job_id: str) -> str:
    """The answer the SDK's /runsync gives for ``req``, from the real job processor."""
    output = worker({"id": job_id, "input": json.loads(req.body)["input"]})
    return json.dumps({"id": job_id, "status": "FAILED", "error": output["error"]} if "error" in output
                      else {"id": job_id, "status": "COMPLETED", "output": output})


def test_the_judge_accepts_own_answers_and_catches_swapped_ones(worker):
    kinds = ["simple", "comfy", "bad:missing_upload", "bad:unknown_node", "bad:bad_image_index",
             "bad:metadata_url", "bad:wrong_type"]
    requests = [load.make_request(n, kind) for n, kind in enumerate(kinds)]
    answers = [_answer(worker, req, f"job-{req.n}") for req in requests]
    own = load.Tally()
    for req, text in zip(requests, answers):
        load.judge(req, 200, text, own)
    assert (own.answered, own.mixed_up, own.wrong, own.duplicated) == (len(kinds), [], [], 0)

    swapped = load.Tally()
    load.judge(requests[0], 200, _answer(worker, load.make_request(100, "simple"), "job-x"), swapped)  # another size
    load.judge(requests[1], 200, answers[0], swapped)  # a simple job's answer to a workflow job
    load.judge(requests[2], 200, _answer(worker, load.make_request(102, "bad:missing_upload"), "job-y"), swapped)
    load.judge(requests[0], 200, answers[0], swapped)  # the same job id twice
    assert len(swapped.mixed_up) == 3 and swapped.duplicated == 1
    none_refused = load.Tally()
    load.judge(requests[4], 200, answers[0], none_refused)  # a bad request answered with a cut-out
    assert len(none_refused.wrong) == 1


def test_request_sizes_are_distinct_while_in_flight():
    sizes = [load.size_for(n) for n in range(4096)]
    assert len(set(sizes)) == 4096 and max(max(s) for s in sizes) <= 103


@pytest.mark.slow
def test_32_clients_against_the_local_server(models_dir):
    target = "serve" if load.service_available() else "sdk"
    server = load.LocalServer(target, models_dir)
    try:
        result = asyncio.run(load.run_load(server.base, clients=32, seconds=6, seed=3))
    finally:
        server.stop()
    assert result["sent"] == result["answered"] > 32
    assert (result["lost"], result["duplicated"], result["mixed_up"], result["wrong"]) == (0, 0, 0, 0), result["problems"]
    assert {"simple", "comfy"} <= set(result["by_kind"]) and any(k.startswith("bad:") for k in result["by_kind"])
    assert result["latency_ms"]["valid"]["p95"] >= result["latency_ms"]["valid"]["p50"] > 0
