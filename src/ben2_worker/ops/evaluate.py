"""Score the safety classifier on a labelled caption set (``eval/safety_captions.jsonl``).

    python -m ben2_worker.ops.evaluate --model models/llm/Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf
    python -m ben2_worker.ops.evaluate --model PATH --policy extended --json report.json

Per domain: a confusion table, expected (rows) x predicted (columns) over SAFE / BORDERLINE /
UNSAFE, plus ERROR for a caption the classifier gave no valid verdict for. The block decision
(UNSAFE in any domain, or anything but SAFE in sexual_minors; an error blocks too, as the gate
fails closed) is scored against the block decision of the *expected* labels of every labelled
domain, so the default policy's blind spots (self-harm, weapons) show up as missed blocks.

``score`` takes any object with ``classify(caption, *, domains=...) -> verdict``; the real one
is :class:`~ben2_worker.safety.classifier.SafetyClassifier`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ben2_worker.errors import Ben2WorkerError

from ..safety.policy import EXTENDED_DOMAINS, VERDICTS, ClassifierError, blocks, resolve_domains

PREDICTED_COLUMNS = VERDICTS + ("ERROR",)


def default_data_path() -> Path:
    repo_copy = Path(__file__).resolve().parents[3] / "eval" / "safety_captions.jsonl"
    return repo_copy if repo_copy.is_file() else Path("eval/safety_captions.jsonl")


class ClassifierLike(Protocol):
    def classify(self, caption: str, *, domains: tuple[str, ...] | None = None) -> dict[str, Any]: ...


def load_eval_set(path: str | Path) -> list[dict[str, Any]]:
    """The labelled captions, checked: unique ids, a caption, a verdict for every extended domain."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{n}: not JSON ({exc})") from None
        where = f"{path}:{n}"
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(row.get("caption"), str):
            raise ValueError(f"{where}: each line needs a string id and caption")
        if row["id"] in seen:
            raise ValueError(f"{where}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        expected = row.get("expected")
        if not isinstance(expected, dict) or set(expected) != set(EXTENDED_DOMAINS):
            raise ValueError(f"{where}: 'expected' must give a verdict for exactly {', '.join(EXTENDED_DOMAINS)}")
        bad = {d: v for d, v in expected.items() if v not in VERDICTS}
        if bad:
            raise ValueError(f"{where}: invalid expected verdicts {bad}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no captions")
    return rows


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass
class Report:
    policy: str
    domains: tuple[str, ...]
    n: int
    #: confusion[domain][expected][predicted] -> count; predicted includes "ERROR".
    confusion: dict[str, dict[str, dict[str, int]]]
    block: dict[str, Any]
    #: Per-domain disagreements: {"id", "domain", "expected", "predicted", "note"}.
    misses: list[dict[str, Any]] = field(default_factory=list)
    #: Block-decision disagreements: {"id", "expected_block", "predicted_block", "note"}.
    block_misses: list[dict[str, Any]] = field(default_factory=list)
    #: Captions without a valid verdict: {"id", "error"}.
    errors: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "domains": list(self.domains), "n": self.n, "confusion": self.confusion,
            "block": self.block, "misses": self.misses, "block_misses": self.block_misses,
            "errors": self.errors, "seconds": round(self.seconds, 3),
        }

    def format_text(self) -> str:
        out = [f"policy {self.policy}: {self.n} captions, {len(self.errors)} without a valid verdict, "
               f"{self.seconds:.1f} s", ""]
        width = max(len(c) for c in PREDICTED_COLUMNS + VERDICTS) + 2
        for d in self.domains:
            table = self.confusion[d]
            agree = sum(table[v][v] for v in VERDICTS)
            out.append(f"{d}  (agreement {agree}/{self.n})")
            out.append("expected \\ predicted".ljust(22) + "".join(c.rjust(width) for c in PREDICTED_COLUMNS))
            for v in VERDICTS:
                out.append(f"  {v}".ljust(22) + "".join(str(table[v][c]).rjust(width) for c in PREDICTED_COLUMNS))
            out.append("")
        b = self.block

        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{100 * x:.1f}%"

        out.append(
            f"block decision: precision {pct(b['precision'])}, recall {pct(b['recall'])} "
            f"(tp {b['tp']}, fp {b['fp']}, fn {b['fn']}, tn {b['tn']})"
        )
        if self.block_misses:
            out.append("block-decision misses:")
            for m in self.block_misses:
                kind = "MISSED BLOCK" if m["expected_block"] else "over-block"
                out.append(f"  {kind:12} {m['id']}: {m['note']}")
        if self.misses:
            out.append(f"domain misses ({len(self.misses)}):")
            for m in self.misses:
                out.append(f"  {m['id']}: {m['domain']} expected {m['expected']}, got {m['predicted']}")
        if self.errors:
            out.append("errors:")
            for e in self.errors:
                out.append(f"  {e['id']}: {e['error']}")
        return "\n".join(out)


def score(
    classifier_like: ClassifierLike,
    path: str | Path | None = None,
    policy: str = "default",
    *,
    limit: int | None = None,
) -> Report:
    """Run ``classifier_like.classify`` on every caption of ``path`` with ``policy``'s domains
    and tabulate the results (see the module docstring)."""
    domains = resolve_domains(policy)
    rows = load_eval_set(path or default_data_path())
    if limit is not None:
        rows = rows[:limit]
    confusion = {d: {e: {p: 0 for p in PREDICTED_COLUMNS} for e in VERDICTS} for d in domains}
    report = Report(policy=policy, domains=domains, n=len(rows), confusion=confusion, block={})
    tp = fp = fn = tn = 0
    started = time.perf_counter()
    for row in rows:
        expected = row["expected"]
        try:
            verdict = classifier_like.classify(row["caption"], domains=domains)
            predicted = verdict["classification"]
            if not isinstance(predicted, dict):
                raise ClassifierError("verdict has no classification object")
            error = None
        except ClassifierError as exc:
            predicted, error = None, f"{type(exc).__name__}: {exc}"
            report.errors.append({"id": row["id"], "error": error})
        for d in domains:
            got = "ERROR" if predicted is None else predicted.get(d, "ERROR")
            got = got if got in PREDICTED_COLUMNS else "ERROR"
            confusion[d][expected[d]][got] += 1
            if got != expected[d]:
                report.misses.append({"id": row["id"], "domain": d, "expected": expected[d], "predicted": got,
                                      "note": row.get("note", "")})
        expected_block = blocks(expected)
        predicted_block = True if predicted is None else blocks({d: predicted.get(d, "ERROR") for d in domains})
        if expected_block and predicted_block:
            tp += 1
        elif predicted_block:
            fp += 1
        elif expected_block:
            fn += 1
        else:
            tn += 1
        if expected_block != predicted_block:
            report.block_misses.append({"id": row["id"], "expected_block": expected_block,
                                        "predicted_block": predicted_block, "note": row.get("note", "")})
    report.seconds = time.perf_counter() - started
    report.block = {"tp": tp, "fp": fp, "fn": fn, "tn": tn,
                    "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn)}
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ben2_worker.ops.evaluate",
        description="Score the LLM safety classifier on a labelled caption set.",
    )
    parser.add_argument("--model", required=True, type=Path, help="the Llama GGUF file")
    parser.add_argument("--data", type=Path, default=None, help="labelled captions (default: eval/safety_captions.jsonl)")
    parser.add_argument("--policy", choices=("default", "extended"), default="default")
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--n-gpu-layers", type=int, default=-1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--max-new-tokens", type=int, default=300)
    parser.add_argument("--limit", type=int, default=None, help="score only the first N captions")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)

    from ..safety.classifier import SafetyClassifier

    try:
        classifier = SafetyClassifier(args.model, n_ctx=args.n_ctx, n_gpu_layers=args.n_gpu_layers,
                                      threads=args.threads, policy=args.policy)
    except Ben2WorkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    class _WithOptions:
        def classify(self, caption: str, *, domains: tuple[str, ...] | None = None) -> dict[str, Any]:
            return classifier.classify(caption, domains=domains, temperature=args.temperature,
                                       max_new_tokens=args.max_new_tokens)

    report = score(_WithOptions(), args.data, args.policy, limit=args.limit)
    print(f"model {args.model}")
    print(report.format_text())
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n", "utf-8")
        print(f"report written to {args.json}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
