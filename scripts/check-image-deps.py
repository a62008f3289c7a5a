#!/usr/bin/env python3
"""Ask the package registry whether each image's exact dependency set resolves, before a build does.

    python scripts/check-image-deps.py [--image simple|full-cpu|full-cuda|comfyui ...] [--json]

For every image this builds the same requirement and constraint lists as
docker/install-python-deps.sh (pyproject.toml through docker/pyproject-deps.py, the lock, the
CUDA 12 pins) and runs ``pip install --dry-run --report FILE --ignore-installed`` for the image's
interpreter and platform (CPython 3.12, Ubuntu 24.04's glibc 2.39 on x86_64, so every
manylinux_2_17 ... manylinux_2_39 wheel) with ``--only-binary=:all:``, as the image installs
wheels only. Metadata only: nothing is downloaded but the index pages and wheel metadata.

What the images build themselves is left out of the question, said so in the output:
llama-cpp-python (compiled in the llama-build stage; its runtime dependencies are checked in
its place) and, for comfyui, torch (ComfyUI's own). The full image's CPU torch comes from the
PyTorch CPU index; when that index cannot be reached the full-cpu check is skipped, not passed.

Exit 0: every checked image resolves (or the registry cannot be reached, answers too slowly or
drops the connection: that image is skipped, with a message). Exit 1 only for a real conflict:
an image does not resolve, and the conflicting pins are printed. Time is bounded: pip's own
network timeout and retries, and ``--timeout`` seconds per image (all images run at once). The machine's
own pip configuration (local mirrors, constraint files, find-links) is ignored: the question is
what the registry says, as a clean image build sees it."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
#: Seconds one image's question may take (they run at once; a recent pip needs ~2.5 min for all).
DEFAULT_TIMEOUT_S = 480.0
PINS = ROOT / "docker" / "cuda12-pins.txt"
PYPROJECT = ROOT / "pyproject.toml"
PACK_REQUIREMENTS = ROOT / "requirements.txt"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYTHON_VERSION = "3.12"
#: Ubuntu 24.04 (the images' base) ships glibc 2.39: wheels for any manylinux up to that install.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 16, -1)] + ["manylinux2014_x86_64"]
#: llama-cpp-python 0.3.x's runtime dependencies (its pyproject.toml), checked in place of the
#: package, which the images compile from source.
LLAMA_RUNTIME_DEPS = ["typing-extensions>=4.5.0", "numpy>=1.20.0", "diskcache>=5.6.1", "jinja2>=2.11.3"]
#: What onnxruntime-gpu's CUDA provider links (as install-python-deps.sh installs).
ORT_CUDA_LIBS = ["nvidia-cuda-runtime-cu12", "nvidia-cuda-nvrtc-cu12", "nvidia-cublas-cu12", "nvidia-cudnn-cu12",
                 "nvidia-cufft-cu12", "nvidia-curand-cu12"]
#: Environment variables of the machine's pip set-up that would change the answer.
_PIP_ENV_DROPPED = ("PIP_CONSTRAINT", "PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "PIP_REQUIREMENT")


@dataclass
class ImageSet:
    name: str
    requirements: list[str]
    constraints: list[str]
    extra_index: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class ListError(Exception):
    """The image's own list cannot be made (the build would stop at the same step)."""


def _deps(*args: str) -> list[str]:
    proc = subprocess.run([sys.executable, str(ROOT / "docker" / "pyproject-deps.py"), str(PYPROJECT), *args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ListError(f"docker/pyproject-deps.py {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _name(req: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1)).lower()


def _without(reqs: list[str], *names: str) -> list[str]:
    drop = {_name(n) for n in names}
    return [r for r in reqs if _name(r) not in drop]


def image_sets() -> dict[str, ImageSet | str]:
    """The four images' lists, mirroring docker/install-python-deps.sh; a string in place of a
    list says why that list cannot be made (as the image build would fail there)."""
    lock = _lines(LOCK)
    pins = _lines(PINS)
    base = _without(lock, "torch", "onnxruntime")
    ort_gpu = next(p for p in pins if _name(p) == "onnxruntime-gpu")
    cpu_constraints = base + _without(pins, "torch") + [p for p in lock if _name(p) == "torch"]
    cuda_constraints = base + pins
    llama_note = "llama-cpp-python: built from source in the image; its runtime dependencies checked instead"

    def simple() -> ImageSet:
        reqs = _deps("worker", "--without", "onnxruntime", "--without", "nudenet") + ["onnxruntime-gpu"] + ORT_CUDA_LIBS
        return ImageSet("simple", reqs, cpu_constraints)

    def full_reqs() -> list[str]:
        reqs = _without(_deps("worker", "full", "--without", "onnxruntime", "--without", "nudenet"), "llama-cpp-python")
        return reqs + ["onnxruntime-gpu", *ORT_CUDA_LIBS, *LLAMA_RUNTIME_DEPS]

    def comfyui() -> ImageSet:
        constraints = _deps("full", "--without", "torch", "--without", "onnxruntime", "--lock", str(LOCK),
                            "--also", "tokenizers,safetensors,hf-xet,pydantic-core")
        reqs = _lines(PACK_REQUIREMENTS) + _without(_deps("full", "--without", "torch", "--without", "onnxruntime"),
                                                    "llama-cpp-python") + ["onnxruntime-gpu", *LLAMA_RUNTIME_DEPS]
        return ImageSet("comfyui", reqs, _without(constraints, "llama-cpp-python") + [ort_gpu],
                        notes=[llama_note, "torch: ComfyUI's own (not installed by this pack)"])

    builders = {
        "simple": simple,
        "full-cpu": lambda: ImageSet("full-cpu", full_reqs(), _without(cpu_constraints, "llama-cpp-python"),
                                     [TORCH_CPU_INDEX], [llama_note]),
        "full-cuda": lambda: ImageSet("full-cuda", full_reqs(), _without(cuda_constraints, "llama-cpp-python"),
                                      notes=[llama_note]),
        "comfyui": comfyui,
    }
    sets: dict[str, ImageSet | str] = {}
    for name, build in builders.items():
        try:
            sets[name] = build()
        except ListError as exc:
            sets[name] = str(exc)
    return sets


def reachable(url: str, timeout: float = 15.0) -> str | None:
    """None when ``url`` answers; else why not."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        return None if exc.code < 500 else f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return str(getattr(exc, "reason", exc))


#: pip's words for a registry that failed it (not a resolution problem).
_NETWORK_TROUBLE = re.compile(
    r"Could not fetch URL|Connection (?:broken|reset|refused|aborted)|Read timed out|ConnectTimeout|"
    r"NewConnectionError|Max retries exceeded|Temporary failure in name resolution|Name or service not known|"
    r"ReadTimeoutError|SSLError|ProxyError|IncompleteRead|HTTP error 5\d\d|503 Service Unavailable|RemoteDisconnected")
#: pip's own per-request bounds: slow answers fail fast instead of stalling CI.
PIP_NETWORK_ARGS = ("--timeout", "30", "--retries", "2")


def pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PIP_ENV_DROPPED}
    env["PIP_CONFIG_FILE"] = os.devnull  # no machine-wide mirrors, constraints or find-links
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def conflict_lines(stderr: str) -> list[str]:
    """pip's own explanation of a ResolutionImpossible / a missing wheel, without the noise."""
    keep: list[str] = []
    for line in stderr.splitlines():
        text = line.strip()
        if not text or text.startswith(("WARNING: Location", "To fix this", "1. ", "2. ", "Hint:")):
            continue
        if text.startswith(("Collecting", "Downloading", "Using cached", "Would install", "Requirement already")):
            continue
        if ("conflict" in text or "depends on" in text or "requested" in text or text.startswith("ERROR")
                or "No matching distribution" in text or "Could not find a version" in text or "Because " in text):
            keep.append(text)
    return keep or stderr.strip().splitlines()[-15:]


def pip_python() -> str:
    """An interpreter with a recent pip (>= 24): older resolvers backtrack through whole CUDA
    wheels (700 MB each) and took 8.5 minutes here against 2.5. Made once under the cache
    folder; when that fails (offline), this interpreter's own pip is used."""
    def version(python: str) -> tuple[int, ...]:
        try:
            proc = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, env=pip_env(),
                                  timeout=60)
        except (OSError, subprocess.SubprocessError):
            return (0,)
        found = re.match(r"pip (\d+)\.(\d+)", proc.stdout)
        return tuple(int(x) for x in found.groups()) if found else (0,)

    if version(sys.executable) >= (24, 0):
        return sys.executable
    venv = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ben2-worker" / "check-image-deps-venv"
    python = str(venv / "bin" / "python")
    if not Path(python).exists() or version(python) < (24, 0):
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
            subprocess.run([python, "-m", "pip", "install", "--quiet", *PIP_NETWORK_ARGS, "--upgrade", "pip"],
                           check=True, capture_output=True, env=pip_env(), timeout=180)
        except (OSError, subprocess.SubprocessError):
            return sys.executable
    return python


def check(image: ImageSet, *, python: str = sys.executable, timeout: float = DEFAULT_TIMEOUT_S,
          index: str | None = None) -> dict:
    """The registry's answer for one image: ``ok``, ``conflict`` (pins that cannot resolve), or
    ``skipped`` (the registry timed out or failed the connection: nothing was learnt)."""
    try:
        return _check(image, python=python, timeout=timeout, index=index)
    except subprocess.TimeoutExpired:
        return {"image": image.name, "status": "skipped", "notes": image.notes,
                "problems": [f"the registry did not answer the whole question within {timeout:.0f} s"]}


def _check(image: ImageSet, *, python: str, timeout: float, index: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp, "requirements.txt")
        con = Path(tmp, "constraints.txt")
        req.write_text("\n".join(image.requirements) + "\n")
        con.write_text("\n".join(image.constraints) + "\n")
        cmd = [python, "-m", "pip", "install", *PIP_NETWORK_ARGS, "--dry-run", "--report", str(Path(tmp, "report.json")), "--ignore-installed",
               "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", "cp312",
               *[a for p in PLATFORMS for a in ("--platform", p)], "--only-binary=:all:",
               "--target", str(Path(tmp, "target")), "-r", str(req), "-c", str(con)]
        if index:
            cmd += ["--index-url", index]
        for extra in image.extra_index:
            cmd += ["--extra-index-url", extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=pip_env(), timeout=timeout)
        report = json.loads(Path(tmp, "report.json").read_text()) if proc.returncode == 0 else {}
    result = {"image": image.name, "requirements": len(image.requirements), "notes": image.notes}
    if proc.returncode == 0:
        installed = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report.get("install", [])}
        result.update(status="ok", resolved=len(installed),
                      key_pins={k: installed[k] for k in ("onnxruntime-gpu", "torch", "transformers", "numpy") if k in installed})
    elif _NETWORK_TROUBLE.search(proc.stdout + proc.stderr):
        trouble = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if _NETWORK_TROUBLE.search(line)]
        result.update(status="skipped", problems=["the registry failed the connection: " + trouble[0][:300]])
    else:
        result.update(status="conflict", problems=conflict_lines(proc.stdout + "\n" + proc.stderr))
    return result


def main(argv: list[str] | None = None) -> int:
    sets = image_sets()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", action="append", choices=sorted(sets), help="check only these (default: all)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--index", default=os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/"),
                        help="the registry to probe first (default: PIP_INDEX_URL or PyPI)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per image (default %(default)s)")
    args = parser.parse_args(argv)
    why = reachable(args.index)
    if why is not None:
        print(f"check-image-deps: skipped: the package registry {args.index} cannot be reached ({why}); "
              "nothing was checked")
        return 0
    import concurrent.futures

    python = pip_python()
    results = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)  # each check waits on the network
    for name in args.image or list(sets):
        image = sets[name]
        if isinstance(image, str):
            results.append({"image": name, "status": "conflict", "problems": [image]})
            continue
        if image.extra_index:
            missing = [i for i in image.extra_index if reachable(i + "/") is not None]
            if missing:
                results.append({"image": name, "status": "skipped",
                                "problems": [f"index {', '.join(missing)} cannot be reached from here"]})
                continue
        results.append(pool.submit(check, image, python=python, timeout=args.timeout, index=args.index))
    results = [r.result() if isinstance(r, concurrent.futures.Future) else r for r in results]
    if args.json:
        print(json.dumps(results, indent=2))
    for r in results:
        if r["status"] == "ok":
            pins = ", ".join(f"{k} {v}" for k, v in r["key_pins"].items())
            print(f"check-image-deps: {r['image']}: resolves ({r['resolved']} distributions; {pins})")
        else:
            print(f"check-image-deps: {r['image']}: {r['status'].upper()}")
            for line in r.get("problems", []):
                print(f"    {line}")
        for note in r.get("notes", []):
            print(f"    note: {note}")
    return 1 if any(r["status"] == "conflict" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
