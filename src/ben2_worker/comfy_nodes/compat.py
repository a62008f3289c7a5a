"""Which third-party node types the pack provides itself (docs/comfyui.md, "Third-party nodes").

The user's full workflow also uses ``Florence2ModelLoader``/``Florence2Run`` (kijai's
ComfyUI-Florence2) and ``ShowText|pysssss`` (pysssss' ComfyUI-Custom-Scripts). The pack carries
compatible versions over the worker's engines for installs without those packs (e.g. the
worker-comfyui image), but registers them **only when no installed pack provides them**:

* ComfyUI loads custom node folders in ``os.listdir`` order (alphabetical on NTFS, arbitrary on
  ext4) and the last registration of a name wins, so load order cannot be relied on either way;
* so, at import, a group (kijai's two classes together, or pysssss' one) is left out when
  another pack already registered one of its names (``nodes.NODE_CLASS_MAPPINGS``), or when a
  pack folder in any ``custom_nodes`` path (not ``.disabled``, not this pack) mentions one of
  its names in its Python files — that pack will provide it, whenever it loads.

``BEN2_COMFY_COMPAT_NODES=never`` never registers them, ``always`` always does (``auto``, the
default, decides as above). The same scan warns when another pack defines one of *our* node
names (e.g. the user's original pack, still installed): ComfyUI would keep whichever loads last."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from . import engines

log = logging.getLogger("ben2_worker.comfy")

#: Third-party pack -> the node types we can stand in for (registered all or none).
GROUPS = {
    "kijai/ComfyUI-Florence2": ("Florence2ModelLoader", "Florence2Run"),
    "pysssss/ComfyUI-Custom-Scripts": ("ShowText|pysssss",),
}
_SKIP_DIRS = {".git", "__pycache__", "node_modules", "web", "js", "docs", "tests", "test", "venv", ".venv"}
_MAX_FILES, _MAX_BYTES = 400, 2_000_000


@dataclass(frozen=True)
class Decision:
    group: str
    register: bool
    reason: str


def _mode() -> str:
    """``BEN2_COMFY_COMPAT_NODES`` (auto, always, never), as config.py read it."""
    return engines.settings().comfy_compat_nodes


def _custom_node_dirs() -> list[Path]:
    try:
        import folder_paths
    except ImportError:
        return []
    try:
        return [Path(p) for p in folder_paths.get_folder_paths("custom_nodes")]
    except (KeyError, AttributeError):
        return []


def _is_ours(pack: Path) -> bool:
    return (pack / "src" / "ben2_worker" / "comfy_nodes").is_dir()


def _python_files(pack: Path):
    if pack.is_file():
        if pack.suffix == ".py":
            yield pack
        return
    count = 0
    for top in sorted(pack.iterdir()):
        if top.is_file() and top.suffix == ".py":
            count += 1
            yield top
        elif top.is_dir() and top.name not in _SKIP_DIRS and not top.name.startswith("."):
            for sub in sorted(top.glob("*.py")):
                count += 1
                yield sub
                if count >= _MAX_FILES:
                    return
        if count >= _MAX_FILES:
            return


def scan_packs(names: set[str]) -> dict[str, list[Path]]:
    """name -> the other installed packs whose Python files mention it as a string literal."""
    needles = {n: (f'"{n}"'.encode(), f"'{n}'".encode()) for n in names}
    found: dict[str, list[Path]] = {n: [] for n in names}
    for base in _custom_node_dirs():
        try:
            entries = sorted(base.iterdir())
        except OSError:
            continue
        for pack in entries:
            if pack.name.startswith((".", "__")) or pack.name.endswith(".disabled") or _is_ours(pack):
                continue
            try:
                files = list(_python_files(pack))
            except OSError:
                continue
            hits: set[str] = set()
            for f in files:
                try:
                    if f.stat().st_size > _MAX_BYTES:
                        continue
                    data = f.read_bytes()
                except OSError:
                    continue
                hits.update(n for n, (a, b) in needles.items() if a in data or b in data)
            for n in hits:
                found[n].append(pack)
    return found


def _registered_elsewhere(names: tuple[str, ...], ours: dict) -> list[str]:
    nodes = sys.modules.get("nodes")
    mapping = getattr(nodes, "NODE_CLASS_MAPPINGS", None)
    if not isinstance(mapping, dict):
        return []
    return [n for n in names if n in mapping and mapping[n] is not ours.get(n)]


def decide(ours: dict, pack_names: tuple[str, ...] = ()) -> list[Decision]:
    """One decision per third-party group; also warns about other packs defining ``pack_names``."""
    mode = _mode()
    wanted = {n for group in GROUPS.values() for n in group} | set(pack_names)
    scanned = scan_packs(wanted) if mode == "auto" or pack_names else {n: [] for n in wanted}
    for name in pack_names:
        if scanned.get(name):
            log.warning("node type %s is also defined by %s; ComfyUI keeps whichever pack loads last: disable the "
                        "other pack (see docs/comfyui.md)", name, ", ".join(str(p) for p in scanned[name]))
    decisions = []
    for group, names in GROUPS.items():
        if mode == "never":
            decisions.append(Decision(group, False, "BEN2_COMFY_COMPAT_NODES=never"))
            continue
        if mode == "always":
            decisions.append(Decision(group, True, "BEN2_COMFY_COMPAT_NODES=always"))
            continue
        already = _registered_elsewhere(names, ours)
        if already:
            decisions.append(Decision(group, False, f"{', '.join(already)} already registered by another pack"))
            continue
        packs = sorted({str(p) for n in names for p in scanned.get(n, [])})
        if packs:
            decisions.append(Decision(group, False, f"provided by {', '.join(packs)}"))
            continue
        decisions.append(Decision(group, True, f"no installed pack provides {', '.join(names)}"))
    for d in decisions:
        log.info("%s nodes (%s): %s", d.group, ", ".join(GROUPS[d.group]),
                 ("provided by ben2-worker: " if d.register else "left to the real pack: ") + d.reason)
    return decisions
