#!/usr/bin/env python3
"""Print the requirements of pyproject.toml's [project] (core deps plus the named extras), one a line.

The images install dependencies in a layer that must not change when only the code changes,
so they cannot `pip install .`; this reads the list instead. Standard library only (3.11+).

    python3 pyproject-deps.py PYPROJECT [EXTRA...] [--without NAME]... [--lock LOCK [--also NAME,...]]

``--without NAME`` drops a requirement by distribution name (e.g. ``onnxruntime``, replaced by
``onnxruntime-gpu`` in the images). ``--lock LOCK`` prints, instead of the requirements, the
lines of the lock file (``name==version``) that pin those requirements and the ``--also``
names: constraints for installing into an environment someone else owns (ComfyUI's venv),
where the whole lock would move packages that are not ours. Exit 2 with a message for an
unknown extra or a requirement the lock does not pin.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    if not match:
        raise ValueError(f"cannot read a distribution name from requirement {req!r}")
    return canonical(match.group(1))


def requirements(pyproject: Path, extras: list[str], without: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text("utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        known = ", ".join(sorted(optional)) or "none"
        raise KeyError(f"unknown extra(s) {', '.join(unknown)} in {pyproject}; known extras: {known}")
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        reqs.extend(optional[extra])
    drop = {canonical(n) for n in without}
    out: list[str] = []
    seen: set[str] = set()
    for req in reqs:
        req = req.split("#", 1)[0].strip()
        if not req or req in seen or requirement_name(req) in drop:
            continue
        seen.add(req)
        out.append(req)
    return out


def lock_pins(lock: Path, names: list[str]) -> list[str]:
    """The ``name==version`` lines of ``lock`` for ``names`` (canonical comparison), in lock order."""
    wanted = {canonical(n) for n in names}
    found: dict[str, str] = {}
    for raw in lock.read_text("utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if "==" not in line:
            continue
        name = canonical(line.split("==", 1)[0])
        if name in wanted:
            found[name] = line
    missing = sorted(wanted - set(found))
    if missing:
        raise KeyError(f"{lock} pins no version of {', '.join(missing)}")
    return list(found.values())


def _take(args: list[str], flag: str) -> list[str]:
    values: list[str] = []
    while flag in args:
        i = args.index(flag)
        if i + 1 >= len(args):
            raise ValueError(f"{flag} needs a value")
        values.append(args[i + 1])
        del args[i : i + 2]
    return values


def main(argv: list[str]) -> int:
    args = list(argv)
    try:
        without = _take(args, "--without")
        locks = _take(args, "--lock")
        also = [n for v in _take(args, "--also") for n in v.split(",") if n.strip()]
        if not args or len(locks) > 1 or (also and not locks):
            raise ValueError("usage: pyproject-deps.py PYPROJECT [EXTRA...] [--without NAME]... [--lock LOCK [--also NAME,...]]")
        reqs = requirements(Path(args[0]), args[1:], without)
        lines = lock_pins(Path(locks[0]), [requirement_name(r) for r in reqs] + also) if locks else reqs
    except (KeyError, OSError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
