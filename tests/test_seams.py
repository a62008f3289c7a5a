"""The engines fit the typed seams (ben2_worker.seams) the pipelines and nodes call them
through, and the error types say what happened."""

from __future__ import annotations

import pytest

from ben2_worker import seams
from ben2_worker.cutout import CutoutEngine
from ben2_worker.errors import (
    BlockedError,
    EngineUnavailableError,
    InputError,
    NodeFailedError,
    StageTimeoutError,
)
from ben2_worker.pipelines import StageTimeout
from ben2_worker.workflow import ContentBlockedError, WorkflowExecutionError


def test_the_cutout_engine_fits_its_seam(engine):
    assert issubclass(CutoutEngine, seams.CutoutSteps)
    assert isinstance(engine, seams.CutoutSteps)


@pytest.mark.parametrize(("module", "name", "seam"), [
    ("ben2_worker.safety.caption", "Captioner", seams.CaptionEngine),
    ("ben2_worker.safety.nudity", "NudityDetector", seams.NudityEngine),
    ("ben2_worker.safety.classifier", "SafetyClassifier", seams.ClassifierEngine),
])
def test_the_safety_engines_fit_their_seams(module, name, seam):
    import importlib

    assert issubclass(getattr(importlib.import_module(module), name), seam)


def test_errors_say_what_happened():
    assert issubclass(ContentBlockedError, BlockedError) and not issubclass(ContentBlockedError, InputError)
    assert StageTimeout is StageTimeoutError and not issubclass(StageTimeoutError, EngineUnavailableError)
    assert issubclass(WorkflowExecutionError, NodeFailedError)
