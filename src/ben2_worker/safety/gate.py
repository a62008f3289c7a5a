"""The HybridSafetyGate decision: NudeNet's verdict + the LLM classifier's verdict -> allowed
or blocked. Pure functions, no I/O, and **fail closed**: anything that is not a well-formed,
positive "this is fine" from *both* checks blocks.

Rules (docs/safety.md has the table and the verdict schema):

* NudeNet ``is_nsfw`` -> blocked by ``nudenet``, whatever the classifier says.
* A classifier domain ``UNSAFE`` (when ``block_unsafe``) or ``BORDERLINE`` (when
  ``block_borderline``) -> blocked by ``classifier``. Domains in ``always_block``
  (``sexual_minors``) block on ``UNSAFE`` or ``BORDERLINE`` whatever the flags.
* A check that is missing (``None``), raised (an exception object), or answered something
  malformed (not JSON, not an object, an ``error`` key, a missing domain, an unknown verdict
  word, a confidence that is not a number in 0..1, an ``is_nsfw`` that is not a boolean, ...)
  -> blocked by ``error``, with a reason naming the check.
* ``nudenet_overrides_llama`` is accepted and recorded but changes nothing. In the user's
  node, True (their default) makes NudeNet the *only* judge of sexual content: the LLM's
  ``sexual`` verdict is ignored, so an LLM ``sexual: UNSAFE`` passes when NudeNet is clean;
  False also counts the LLM's ``sexual`` verdict. In neither case can the LLM clear a NudeNet
  positive. We always apply both checks (False's semantics): NudeNet misses plenty (covered,
  partial or drawn nudity, minors), so ignoring the LLM's sexual verdict could only let
  content through, never stop it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ben2_worker.errors import Ben2WorkerError
from ben2_worker.safety.policy import ALWAYS_BLOCK_DOMAINS, DEFAULT_DOMAINS, VERDICTS

__all__ = [
    "ALWAYS_BLOCK",
    "CHECKS",
    "GateInputError",
    "REQUIRED_DOMAINS",
    "VERDICTS",
    "Verdict",
    "decide",
    "parse_classifier_json",
    "parse_nudenet_json",
]

#: The classifier domains every verdict must carry: the user's MultiDomainSafetyClassifier's
#: five. Extra domains (``policy.EXTENDED_DOMAINS``) are welcome.
REQUIRED_DOMAINS = DEFAULT_DOMAINS
#: Domains that block on BORDERLINE or UNSAFE regardless of the flags.
ALWAYS_BLOCK = ALWAYS_BLOCK_DOMAINS
#: Names a verdict's ``blocked_by`` may hold, in the order they are listed.
CHECKS = ("nudenet", "classifier", "error")

ALLOWED_TEXT = "ALLOWED: all checks passed"
#: Allowed although the classifier flagged a domain that the settings do not block.
ALLOWED_FLAGGED_TEXT = "ALLOWED with flagged content let through: "


class GateInputError(Ben2WorkerError):
    """A check's verdict is missing, malformed or reports an error: the gate cannot decide
    on it, so it blocks."""


# --------------------------------------------------------------------------- parsing


def _load_object(value: object, what: str) -> dict[str, Any]:
    if isinstance(value, (bytes, bytearray)):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GateInputError(f"{what} verdict is not UTF-8 text: {exc}") from None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise GateInputError(f"{what} verdict is not valid JSON ({exc})") from None
    if not isinstance(value, Mapping):
        raise GateInputError(f"{what} verdict is not a JSON object (got {type(value).__name__})")
    data = dict(value)
    if data.get("error"):
        raise GateInputError(f"{what} check reported an error: {data['error']}")
    return data


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _unit_number(data: Mapping[str, Any], key: str, what: str) -> float:
    if key not in data:
        raise GateInputError(f"{what} verdict has no {key!r}")
    value = data[key]
    if not _is_number(value) or not 0 <= value <= 1:
        raise GateInputError(f"{what} verdict's {key!r} must be a number from 0 to 1, got {value!r}")
    return float(value)


def parse_nudenet_json(value: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    """Validate a NudeNetSafetyChecker verdict (JSON text or an already-parsed object).

    Requires a boolean ``is_nsfw``, ``max_score`` in 0..1 and a ``detections`` list of
    ``{label: str, score: 0..1, ...}`` objects that agrees with ``is_nsfw`` (the list holds the
    detections at or above threshold, so it is non-empty exactly when ``is_nsfw``). ``threshold``
    must be in 0..1 when present. An ``error`` key (the user's node's failure shape) is refused.
    Returns a copy with the same keys; raises :class:`GateInputError` otherwise."""
    what = "nudenet"
    data = _load_object(value, what)
    if "is_nsfw" not in data:
        raise GateInputError(f"{what} verdict has no 'is_nsfw'")
    if not isinstance(data["is_nsfw"], bool):
        raise GateInputError(f"{what} verdict's 'is_nsfw' must be true or false, got {data['is_nsfw']!r}")
    _unit_number(data, "max_score", what)
    if "threshold" in data:
        _unit_number(data, "threshold", what)
    detections = data.get("detections")
    if not isinstance(detections, list):
        raise GateInputError(f"{what} verdict's 'detections' must be a list, got {detections!r}")
    for i, det in enumerate(detections):
        if not isinstance(det, Mapping) or not isinstance(det.get("label"), str) or not det["label"]:
            raise GateInputError(f"{what} verdict's detection {i} has no label: {det!r}")
        if not _is_number(det.get("score")) or not 0 <= det["score"] <= 1:
            raise GateInputError(f"{what} verdict's detection {i} ({det['label']}) has no score in 0..1: {det.get('score')!r}")
    if bool(detections) != data["is_nsfw"]:
        raise GateInputError(
            f"{what} verdict contradicts itself: is_nsfw is {data['is_nsfw']} with {len(detections)} NSFW detection(s)"
        )
    return data


def parse_classifier_json(value: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    """Validate a MultiDomainSafetyClassifier verdict (JSON text or an already-parsed object).

    Requires ``classification`` mapping every domain of :data:`REQUIRED_DOMAINS` (more, such as
    ``sexual_minors``, are welcome) to SAFE, BORDERLINE or UNSAFE (case and surrounding space
    are forgiven; nothing else is), ``reasons`` a list of strings and ``confidence`` a number in
    0..1. Returns a copy with domain names lower-cased and verdicts upper-cased; raises
    :class:`GateInputError` otherwise."""
    what = "classifier"
    data = _load_object(value, what)
    raw = data.get("classification")
    if not isinstance(raw, Mapping):
        raise GateInputError(f"{what} verdict has no 'classification' object (got {raw!r})")
    if not raw:
        raise GateInputError(f"{what} verdict's classification is empty")
    classification: dict[str, str] = {}
    for domain, verdict in raw.items():
        name = domain.strip().lower() if isinstance(domain, str) else ""
        if not name:
            raise GateInputError(f"{what} verdict has a domain with no name: {domain!r}")
        if name in classification:
            raise GateInputError(f"{what} verdict names domain {name!r} twice")
        word = verdict.strip().upper() if isinstance(verdict, str) else verdict
        if word not in VERDICTS:
            raise GateInputError(
                f"{what} verdict for {name!r} is {verdict!r}; expected one of {', '.join(VERDICTS)}"
            )
        classification[name] = word
    missing = [d for d in REQUIRED_DOMAINS if d not in classification]
    if missing:
        raise GateInputError(f"{what} verdict is missing domain(s): {', '.join(missing)}")
    reasons = data.get("reasons")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise GateInputError(f"{what} verdict's 'reasons' must be a list of strings, got {reasons!r}")
    confidence = _unit_number(data, "confidence", what)
    return {**data, "classification": classification, "reasons": list(reasons), "confidence": confidence}


# --------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    status: str  # "allowed" | "blocked"
    blocked_by: tuple[str, ...]  # subset of CHECKS, in that order
    domains: dict[str, str]  # classifier domain -> SAFE|BORDERLINE|UNSAFE; empty if unavailable
    reasons: tuple[str, ...]  # why it is blocked; empty when allowed
    nudenet: dict | None  # the parsed NudeNet verdict, None if unavailable
    classifier: dict | None  # the parsed classifier verdict, None if unavailable
    #: The gate settings the decision was made with (recorded, for audits).
    settings: dict = field(default_factory=dict)
    #: Flagged domains the settings let through ("violence=UNSAFE (block_unsafe=false)").
    let_through: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The documented verdict schema (docs/safety.md); JSON-serialisable."""
        return {
            "allowed": self.allowed,
            "status": self.status,
            "status_text": self.status_text(),
            "blocked_by": list(self.blocked_by),
            "domains": dict(self.domains),
            "reasons": list(self.reasons),
            "nudenet": self.nudenet,
            "classifier": self.classifier,
            "settings": dict(self.settings),
            "let_through": list(self.let_through),
        }

    def status_text(self) -> str:
        """One line for the node's STRING output."""
        if self.allowed:
            return ALLOWED_FLAGGED_TEXT + "; ".join(self.let_through) if self.let_through else ALLOWED_TEXT
        return "BLOCKED by " + "; ".join(" ".join(r.split()) for r in self.reasons)


def _flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise GateInputError(f"gate setting {name} must be true or false, got {value!r}")


def _describe_exception(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _load_check(value: object, name: str, parse) -> tuple[dict | None, str | None]:
    """(parsed verdict, None) or (None, reason it cannot be used)."""
    if value is None:
        return None, f"{name}: no verdict (check missing)"
    if isinstance(value, BaseException):
        return None, f"{name}: check failed ({_describe_exception(value)})"
    try:
        return parse(value), None
    except GateInputError as exc:
        return None, f"{name}: {exc}"


def decide(
    nudenet: Mapping[str, Any] | str | BaseException | None,
    classifier: Mapping[str, Any] | str | BaseException | None,
    *,
    block_unsafe: bool = True,
    block_borderline: bool = False,
    nudenet_overrides_llama: bool = True,
    always_block: Iterable[str] = ALWAYS_BLOCK,
) -> Verdict:
    """Decide on one image from its two checks' verdicts (dicts, JSON text, an exception the
    check raised, or None when it did not run). Never raises for a bad verdict: that blocks.
    Raises :class:`GateInputError` only for a malformed *setting* (a flag that is not a bool)."""
    block_unsafe = _flag("block_unsafe", block_unsafe)
    block_borderline = _flag("block_borderline", block_borderline)
    overrides = _flag("nudenet_overrides_llama", nudenet_overrides_llama)
    if isinstance(always_block, str):
        always_block = (always_block,)
    always = tuple(dict.fromkeys(str(d).strip().lower() for d in always_block))
    settings = {
        "block_unsafe": block_unsafe,
        "block_borderline": block_borderline,
        "nudenet_overrides_llama": overrides,
        "always_block": list(always),
    }

    nn, nn_error = _load_check(nudenet, "nudenet", parse_nudenet_json)
    cl, cl_error = _load_check(classifier, "classifier", parse_classifier_json)

    by_check: dict[str, list[str]] = {c: [] for c in CHECKS}
    if nn is not None and nn["is_nsfw"]:
        found = ", ".join(f"{d['label']} {float(d['score']):.2f}" for d in nn["detections"])
        by_check["nudenet"].append(f"nudenet: {found}")
    domains: dict[str, str] = dict(cl["classification"]) if cl is not None else {}
    let_through: list[str] = []
    if cl is not None:
        hits = []
        for domain, verdict in domains.items():
            if domain in always and verdict in ("UNSAFE", "BORDERLINE"):
                hits.append(f"{domain}={verdict} (always blocked)")
            elif (verdict == "UNSAFE" and block_unsafe) or (verdict == "BORDERLINE" and block_borderline):
                hits.append(f"{domain}={verdict}")
            elif verdict != "SAFE":
                flag = "block_unsafe" if verdict == "UNSAFE" else "block_borderline"
                let_through.append(f"classifier {domain}={verdict} ({flag}=false)")
        if hits:
            text = f"classifier: {', '.join(hits)}"
            said = [" ".join(r.split()) for r in cl["reasons"] if r.strip()]
            if said:
                text += " (" + "; ".join(said) + ")"
            by_check["classifier"].append(text)
    for problem in (nn_error, cl_error):
        if problem:
            by_check["error"].append(f"error: {problem}")

    blocked_by = tuple(c for c in CHECKS if by_check[c])
    reasons = tuple(r for c in CHECKS for r in by_check[c])
    allowed = not blocked_by
    return Verdict(
        allowed=allowed,
        status="allowed" if allowed else "blocked",
        blocked_by=blocked_by,
        domains=domains,
        reasons=reasons,
        nudenet=nn,
        classifier=cl,
        settings=settings,
        let_through=tuple(let_through) if allowed else (),
    )
