"""What the benchmarks share: the commit their results belong to, and writing those results."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commit() -> str:
    """The short commit the results belong to (their JSON is kept per commit)."""
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(report: dict, prefix: str, path: Path | None = None) -> Path:
    """Write ``report`` as JSON to ``path``, or to bench/results/<prefix>-<commit>.json (kept per
    commit so runs can be compared), and say where."""
    out = path or ROOT / "bench" / "results" / f"{prefix}-{report['commit']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"JSON: {out}")
    return out
