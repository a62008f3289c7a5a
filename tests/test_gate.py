"""The HybridSafetyGate decision (ben2_worker.safety.gate): every combination of settings and
check outcomes against an independent oracle, the parsers' refusals, and the verdict schema."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from ben2_worker.errors import Ben2WorkerError
from ben2_worker.safety.gate import (
    REQUIRED_DOMAINS,
    GateInputError,
    Verdict,
    decide,
    parse_classifier_json,
    parse_nudenet_json,
)

# --------------------------------------------------------------------------- check outcomes

NUDENET_CLEAN = {"is_nsfw": False, "max_score": 0.31, "threshold": 0.6, "detections": [],
                 "all_detections_count": 2, "model": "nudenet-320n"}
NUDENET_NSFW = {"is_nsfw": True, "max_score": 0.83, "threshold": 0.6,
                "detections": [{"label": "FEMALE_BREAST_EXPOSED", "score": 0.83, "box": [10, 20, 30, 40]}],
                "all_detections_count": 3, "model": "nudenet-320n"}


def classifier(**overrides: str) -> dict:
    return {"classification": {**{d: "SAFE" for d in REQUIRED_DOMAINS}, **overrides},
            "reasons": ["a cup of coffee on a saucer"], "confidence": 0.92}


MISSING_DOMAIN = classifier()
del MISSING_DOMAIN["classification"]["hate"]

NUDENET_CASES = {
    "clean": NUDENET_CLEAN,
    "nsfw": NUDENET_NSFW,
    "error": RuntimeError("onnxruntime: CUDA out of memory"),
    "missing": None,
    "garbage": "is_nsfw: false",
}
CLASSIFIER_CASES = {
    "all_safe": classifier(),
    "borderline": classifier(sexual="BORDERLINE"),
    "unsafe": classifier(sexual="UNSAFE"),
    "minors_borderline": classifier(sexual_minors="BORDERLINE"),
    "error": TimeoutError("llama took too long"),
    "missing": None,
    "garbage": '{"classification": {"sexual": "SAFE", ',
    "missing_domain": MISSING_DOMAIN,
    "bad_word": classifier(violence="PROBABLY_FINE"),
}


def oracle(block_unsafe: bool, block_borderline: bool, overrides: bool, nn: str, cl: str) -> set[str]:
    """Which checks must block, written from the rules, independently of the gate's code.

    ``overrides`` (nudenet_overrides_llama) never matters: both checks always count."""
    blocked_by = set()
    if nn in ("error", "missing", "garbage"):
        blocked_by.add("error")
    if nn == "nsfw":
        blocked_by.add("nudenet")
    if cl in ("error", "missing", "garbage", "missing_domain", "bad_word"):
        blocked_by.add("error")
    if cl == "unsafe" and block_unsafe:
        blocked_by.add("classifier")
    if cl == "borderline" and block_borderline:
        blocked_by.add("classifier")
    if cl == "minors_borderline":  # sexual_minors is always blocked
        blocked_by.add("classifier")
    return blocked_by


def _encode(value, as_text: bool):
    """Feed dict verdicts as the node does (JSON text) or already parsed."""
    return json.dumps(value) if as_text and isinstance(value, dict) else value


COMBINATIONS = list(itertools.product([True, False], [True, False], [True, False], NUDENET_CASES, CLASSIFIER_CASES))


@pytest.mark.parametrize("as_text", [False, True], ids=["dict", "json"])
def test_every_combination_matches_the_oracle(as_text):
    assert len(COMBINATIONS) == 8 * 5 * 9
    for block_unsafe, block_borderline, overrides, nn, cl in COMBINATIONS:
        case = f"block_unsafe={block_unsafe} block_borderline={block_borderline} overrides={overrides} nudenet={nn} classifier={cl}"
        verdict = decide(
            _encode(NUDENET_CASES[nn], as_text),
            _encode(CLASSIFIER_CASES[cl], as_text),
            block_unsafe=block_unsafe,
            block_borderline=block_borderline,
            nudenet_overrides_llama=overrides,
        )
        expected = oracle(block_unsafe, block_borderline, overrides, nn, cl)
        assert set(verdict.blocked_by) == expected, case
        assert verdict.allowed is (not expected), case
        assert verdict.status == ("allowed" if not expected else "blocked"), case
        assert bool(verdict.reasons) is bool(expected), case
        if nn in ("error", "missing", "garbage"):
            assert any(r.startswith("error: nudenet") for r in verdict.reasons), case
            assert verdict.nudenet is None, case
        if cl in ("error", "missing", "garbage", "missing_domain", "bad_word"):
            assert any(r.startswith("error: classifier") for r in verdict.reasons), case
            assert verdict.classifier is None and verdict.domains == {}, case
        else:
            assert set(verdict.domains) >= set(REQUIRED_DOMAINS), case


def test_the_allowed_cases_are_exactly_the_clean_ones():
    allowed = {(bu, bb, nn, cl) for bu, bb, ov, nn, cl in COMBINATIONS
               if decide(NUDENET_CASES[nn], CLASSIFIER_CASES[cl], block_unsafe=bu, block_borderline=bb,
                         nudenet_overrides_llama=ov).allowed}
    assert all(nn == "clean" for _, _, nn, _ in allowed)
    assert {cl for _, _, _, cl in allowed} == {"all_safe", "borderline", "unsafe"}
    # the user's defaults (block_unsafe, not block_borderline): SAFE passes, BORDERLINE passes, UNSAFE blocks
    assert (True, False, "clean", "all_safe") in allowed and (True, False, "clean", "borderline") in allowed
    assert (True, False, "clean", "unsafe") not in allowed


def test_error_reasons_name_the_failing_check_and_the_cause():
    v = decide(RuntimeError("onnxruntime: CUDA out of memory"), None)
    assert v.blocked_by == ("error",)
    assert v.reasons == ("error: nudenet: check failed (RuntimeError: onnxruntime: CUDA out of memory)",
                         "error: classifier: no verdict (check missing)")
    v = decide(NUDENET_CLEAN, MISSING_DOMAIN)
    assert v.reasons == ("error: classifier: classifier verdict is missing domain(s): hate",)


# --------------------------------------------------------------------------- the flags


@pytest.mark.parametrize("overrides", [True, False])
def test_nudenet_positive_blocks_even_when_the_classifier_says_safe_everywhere(overrides):
    v = decide(NUDENET_NSFW, classifier(), nudenet_overrides_llama=overrides, block_unsafe=False)
    assert v.blocked_by == ("nudenet",)


@pytest.mark.parametrize("overrides", [True, False])
def test_llm_sexual_unsafe_blocks_even_when_nudenet_is_clean(overrides):
    # The user's node with nudenet_overrides_llama=True would ignore the LLM's sexual verdict
    # here and let the image through; we never do (docs/safety.md).
    v = decide(NUDENET_CLEAN, classifier(sexual="UNSAFE"), nudenet_overrides_llama=overrides)
    assert v.blocked_by == ("classifier",)
    assert v.settings["nudenet_overrides_llama"] is overrides


@pytest.mark.parametrize("domain", REQUIRED_DOMAINS + ("self_harm", "illicit"))
def test_any_domain_blocks(domain):
    assert decide(NUDENET_CLEAN, classifier(**{domain: "UNSAFE"})).blocked_by == ("classifier",)
    assert decide(NUDENET_CLEAN, classifier(**{domain: "BORDERLINE"})).allowed
    assert decide(NUDENET_CLEAN, classifier(**{domain: "BORDERLINE"}), block_borderline=True).blocked_by == ("classifier",)
    assert decide(NUDENET_CLEAN, classifier(**{domain: "UNSAFE"}), block_unsafe=False).allowed


def test_always_block_domains():
    minors_unsafe = classifier(sexual_minors="UNSAFE")
    for flags in itertools.product([True, False], repeat=2):
        bu, bb = flags
        assert decide(NUDENET_CLEAN, minors_unsafe, block_unsafe=bu, block_borderline=bb).blocked_by == ("classifier",)
    assert decide(NUDENET_CLEAN, classifier(sexual_minors="SAFE")).allowed
    # the list is a setting: another domain can be made absolute, and the default can be dropped
    assert not decide(NUDENET_CLEAN, classifier(violence="BORDERLINE"), always_block=("violence",)).allowed
    assert decide(NUDENET_CLEAN, classifier(sexual_minors="BORDERLINE"), always_block=()).allowed
    assert not decide(NUDENET_CLEAN, classifier(sexual_minors="UNSAFE"), always_block=()).allowed
    assert "always blocked" in decide(NUDENET_CLEAN, minors_unsafe).reasons[0]


@pytest.mark.parametrize("bad", ["yes", None, 2, 0.5])
def test_a_malformed_setting_is_refused(bad):
    with pytest.raises(GateInputError, match="block_borderline"):
        decide(NUDENET_CLEAN, classifier(), block_borderline=bad)


# --------------------------------------------------------------------------- parsers


def test_parse_nudenet_accepts_ours_and_the_users_format():
    assert parse_nudenet_json(json.dumps(NUDENET_NSFW)) == NUDENET_NSFW
    users = dict(NUDENET_CLEAN, model="NudeNet", max_score=0.0)
    assert parse_nudenet_json(json.dumps(users, indent=2)) == users
    assert parse_nudenet_json(json.dumps(users).encode()) == users


@pytest.mark.parametrize(
    "value",
    [
        "",
        "null",
        "[]",
        "not json",
        b"\xff\xfe",
        42,
        # the user's node's failure shape: an error that says is_nsfw false
        {"error": "Error in NudeNetSafetyChecker: boom", "is_nsfw": False, "detections": []},
        {k: v for k, v in NUDENET_CLEAN.items() if k != "is_nsfw"},
        dict(NUDENET_CLEAN, is_nsfw="false"),
        dict(NUDENET_CLEAN, is_nsfw=0),
        {k: v for k, v in NUDENET_CLEAN.items() if k != "max_score"},
        dict(NUDENET_CLEAN, max_score="0.2"),
        dict(NUDENET_CLEAN, max_score=math.nan),
        dict(NUDENET_CLEAN, max_score=True),
        dict(NUDENET_CLEAN, max_score=1.5),
        dict(NUDENET_CLEAN, threshold=-0.1),
        {k: v for k, v in NUDENET_CLEAN.items() if k != "detections"},
        dict(NUDENET_CLEAN, detections="none"),
        dict(NUDENET_CLEAN, detections=NUDENET_NSFW["detections"]),  # is_nsfw false with a hit
        dict(NUDENET_NSFW, detections=[]),  # is_nsfw true with none
        dict(NUDENET_NSFW, detections=[{"label": "FEMALE_BREAST_EXPOSED"}]),
        dict(NUDENET_NSFW, detections=[{"score": 0.9}]),
        dict(NUDENET_NSFW, detections=["FEMALE_BREAST_EXPOSED"]),
    ],
)
def test_parse_nudenet_refuses(value):
    with pytest.raises(GateInputError):
        parse_nudenet_json(value)
    assert decide(value, classifier()).blocked_by == ("error",)


def test_parse_classifier_normalises_and_keeps_extra_domains():
    raw = {"classification": {" Sexual ": "safe", "violence": "Borderline", "hate": "SAFE", "disturbing": "SAFE",
                              "drugs": "SAFE", "sexual_minors": "SAFE"}, "reasons": [], "confidence": 1}
    parsed = parse_classifier_json(json.dumps(raw))
    assert parsed["classification"] == {"sexual": "SAFE", "violence": "BORDERLINE", "hate": "SAFE",
                                        "disturbing": "SAFE", "drugs": "SAFE", "sexual_minors": "SAFE"}
    assert parsed["confidence"] == 1.0 and parsed["reasons"] == []


@pytest.mark.parametrize(
    "value",
    [
        "{}",
        "SAFE",
        '{"classification": "SAFE", "reasons": [], "confidence": 0.9}',
        dict(classifier(), classification={}),
        dict(classifier(), classification=None),
        MISSING_DOMAIN,
        classifier(violence="MAYBE"),
        classifier(violence=None),
        classifier(violence=1),
        classifier(violence=""),
        {"classification": {**classifier()["classification"], "": "SAFE"}, "reasons": [], "confidence": 0.5},
        {"classification": {**classifier()["classification"], "Sexual": "SAFE"}, "reasons": [], "confidence": 0.5},
        {k: v for k, v in classifier().items() if k != "reasons"},
        dict(classifier(), reasons="fine"),
        dict(classifier(), reasons=[1, 2]),
        {k: v for k, v in classifier().items() if k != "confidence"},
        dict(classifier(), confidence="high"),
        dict(classifier(), confidence=True),
        dict(classifier(), confidence=math.inf),
        dict(classifier(), confidence=85),
        dict(classifier(), error="llama failed to load"),
    ],
)
def test_parse_classifier_refuses(value):
    with pytest.raises(GateInputError):
        parse_classifier_json(value)
    assert decide(NUDENET_CLEAN, value).blocked_by == ("error",)


@pytest.mark.parametrize("junk", [0, 1.5, [], [1], (), set(), object(), b"", True, "null", "[]", '"SAFE"', "{", KeyboardInterrupt()])
def test_junk_never_raises_and_always_blocks(junk):
    for v in (decide(junk, classifier()), decide(NUDENET_CLEAN, junk), decide(junk, junk)):
        assert not v.allowed and "error" in v.blocked_by


def test_gate_input_error_is_a_worker_error():
    assert issubclass(GateInputError, Ben2WorkerError)


# --------------------------------------------------------------------------- output


def test_as_dict_schema_and_json():
    v = decide(json.dumps(NUDENET_NSFW), classifier(drugs="UNSAFE"))
    d = v.as_dict()
    assert set(d) == {"allowed", "status", "status_text", "blocked_by", "domains", "reasons",
                      "nudenet", "classifier", "settings", "let_through"}
    assert json.loads(json.dumps(d)) == d
    assert d["allowed"] is False and d["status"] == "blocked"
    assert d["blocked_by"] == ["nudenet", "classifier"]
    assert d["domains"] == {**{k: "SAFE" for k in REQUIRED_DOMAINS}, "drugs": "UNSAFE"}
    assert d["nudenet"] == NUDENET_NSFW
    assert d["classifier"]["confidence"] == 0.92
    assert d["settings"] == {"block_unsafe": True, "block_borderline": False, "nudenet_overrides_llama": True,
                             "always_block": ["sexual_minors"]}
    ok = decide(NUDENET_CLEAN, classifier()).as_dict()
    assert ok["allowed"] is True and ok["status"] == "allowed" and ok["blocked_by"] == [] and ok["reasons"] == []
    err = decide(None, None).as_dict()
    assert err["nudenet"] is None and err["classifier"] is None and err["domains"] == {}
    assert json.loads(json.dumps(err)) == err


def test_status_text():
    assert decide(NUDENET_CLEAN, classifier()).status_text() == "ALLOWED: all checks passed"
    no_reasons = dict(classifier(sexual="UNSAFE"), reasons=[])
    assert decide(NUDENET_NSFW, no_reasons).status_text() == (
        "BLOCKED by nudenet: FEMALE_BREAST_EXPOSED 0.83; classifier: sexual=UNSAFE"
    )
    text = decide(NUDENET_CLEAN, classifier(violence="UNSAFE")).status_text()
    assert text == "BLOCKED by classifier: violence=UNSAFE (a cup of coffee on a saucer)"
    text = decide(ValueError("line one\nline two"), "{").status_text()
    assert "\n" not in text
    assert text.startswith("BLOCKED by error: nudenet: check failed (ValueError: line one line two); error: classifier:")


def test_status_text_says_what_the_settings_let_through():
    v = decide(NUDENET_CLEAN, classifier(violence="UNSAFE", drugs="BORDERLINE"), block_unsafe=False)
    assert v.allowed and "all checks passed" not in v.status_text()
    assert v.let_through == ("classifier violence=UNSAFE (block_unsafe=false)",
                             "classifier drugs=BORDERLINE (block_borderline=false)")
    assert v.status_text() == "ALLOWED with flagged content let through: " + "; ".join(v.let_through)
    assert v.as_dict()["let_through"] == list(v.let_through)
    assert decide(NUDENET_CLEAN, classifier()).let_through == ()
    assert decide(NUDENET_CLEAN, classifier(violence="UNSAFE")).let_through == ()  # blocked: nothing let through


def test_verdict_is_frozen():
    v = decide(NUDENET_CLEAN, classifier())
    assert isinstance(v, Verdict)
    with pytest.raises(AttributeError):
        v.allowed = False  # type: ignore[misc]
