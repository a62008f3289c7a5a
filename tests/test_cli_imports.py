"""The CLI imports only what a command uses: `ben2-worker remove` (its help, and a real run on
the stand-in model) never loads the workflow runner, the endpoint tester, the self-check, the
service or the safety stack. Each case runs in a fresh interpreter and reads its sys.modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: Packages a cut-out has no use for (docs/performance.md: they cost ~0.8 s of imports).
NOT_FOR_REMOVE = ("ben2_worker.workflow", "ben2_worker.ops", "ben2_worker.service", "ben2_worker.safety",
                  "ben2_worker.comfy_nodes", "ben2_worker.api", "ben2_worker.handler", "ben2_worker.cli.endpoint",
                  "ben2_worker.cli.workflow", "ben2_worker.cli.selfcheck", "ben2_worker.models.cli")

PROBE = """
import json, sys
from ben2_worker.cli import app
try:
    app(sys.argv[1:], prog_name="ben2-worker")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted(m for m in sys.modules if m.startswith("ben2_worker"))}))
"""


def run_cli(*args: str, env: dict[str, str] | None = None) -> dict:
    src = Path(__file__).resolve().parents[1] / "src"
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=full_env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def loaded(result: dict, prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in result["modules"] if m.startswith(prefixes)]


def test_remove_help_imports_no_other_command():
    result = run_cli("remove", "--help")
    assert result["code"] == 0
    assert loaded(result, NOT_FOR_REMOVE) == []


def test_a_remove_run_imports_no_other_command(models_dir, tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.full((300, 400, 3), 120, np.uint8)).save(photo, quality=90)
    env = {"BEN2_WORKER_MODELS": str(models_dir), "BEN2_WORKER_ALLOW_CUSTOM_MODELS": "1", "BEN2_WORKER_THREADS": "1"}
    result = run_cli("remove", str(photo), "-o", str(tmp_path / "out"), env=env)
    assert result["code"] == 0 and (tmp_path / "out" / "photo.png").is_file()
    assert "ben2_worker.cutout" in result["modules"] and "ben2_worker.ben2" in result["modules"]  # it did cut out
    assert loaded(result, NOT_FOR_REMOVE) == []


def test_the_top_level_help_lists_every_command_without_importing_them():
    result = run_cli("--help")
    assert result["code"] == 0
    assert loaded(result, NOT_FOR_REMOVE) == []


@pytest.mark.parametrize(("command", "module"), [("models", "ben2_worker.models.cli"),
                                                 ("workflow", "ben2_worker.cli.workflow"),
                                                 ("endpoint", "ben2_worker.cli.endpoint"),
                                                 ("selfcheck", "ben2_worker.cli.selfcheck")])
def test_a_lazy_command_is_imported_when_run(command, module):
    result = run_cli(command, "--help")
    assert result["code"] == 0 and module in result["modules"]
