"""Run a ComfyUI workflow natively: validate everything, then execute each needed node once."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from ..budget import Budget, JobBudget
from ..errors import Ben2WorkerError, EngineUnavailableError, NodeFailedError
from .convert import is_ui_workflow, ui_to_api
from .errors import ContentBlockedError, WorkflowExecutionError, WorkflowValidationError, error_entry
from .nodes import ENGINE_HELP, NODE_TYPES, RunContext, find_upload, missing_upload_error
from .results import WorkflowResult
from .validate import Link, Plan, validate

log = logging.getLogger(__name__)


class WorkflowRunner:
    """Validates and runs API- or UI-format workflows over one process's engines.

    ``check_models``: whether model widgets (Florence-2 folder, GGUF path) must resolve to files
    in the models folder at validation. ``None`` (default): only for nodes whose engine this
    worker serves — a node whose engine is absent fails with EngineUnavailableError instead.
    Safe to share between threads: all per-run state lives in the run."""

    def __init__(self, engines, *, check_models: bool | None = None):
        self.engines = engines
        self.check_models = check_models

    # ------------------------------------------------------------------ validation

    def plan(self, workflow: Any) -> Plan:
        if not isinstance(workflow, dict):
            raise WorkflowValidationError(error_entry(
                "invalid_prompt", "Invalid prompt", f"the workflow must be a JSON object, got {type(workflow).__name__}"))
        ui = is_ui_workflow(workflow)
        Budget.from_settings(self.engines.settings).check_nodes(len(workflow["nodes"] if ui else workflow))
        api = ui_to_api(workflow) if ui else workflow
        return validate(api, models_dir=self.engines.settings.models_dir, engines=self.engines, check_models=self.check_models)

    def prepare(self, workflow: dict) -> Plan:
        """The validated plan (UI format is converted first) that :meth:`run` executes as is:
        a workflow is validated once. ``plan.graph`` is the normalised API-format graph.
        Raises :class:`WorkflowValidationError` with ComfyUI's error records."""
        return self.plan(workflow)

    # ------------------------------------------------------------------ execution

    def _preflight(self, plan: Plan, images: dict[str, bytes]) -> None:
        """Everything that can fail before the first node runs: engines and uploaded images."""
        missing: dict[str, list[str]] = {}
        for nid in plan.order:
            spec = NODE_TYPES[plan.graph[nid]["class_type"]]
            if spec.engine and getattr(self.engines, spec.engine, None) is None:
                missing.setdefault(spec.engine, []).append(f"{nid} {spec.class_type}")
        if missing:
            parts = [f"{ENGINE_HELP[e][0]} (needed by node {', node '.join(nodes)}; {ENGINE_HELP[e][1]})"
                     for e, nodes in missing.items()]
            raise EngineUnavailableError(
                "this workflow needs engines that are not available in this worker: " + "; ".join(parts)
            )
        for nid in plan.order:
            if plan.graph[nid]["class_type"] == "LoadImage":
                name = plan.inputs[nid]["image"]
                if find_upload(images, name) is None:
                    raise missing_upload_error(nid, name, images)

    def run(self, workflow: Plan | dict, images: dict[str, bytes], *,
            progress: Callable[[str], None] | None = None, budget: JobBudget | None = None) -> WorkflowResult:
        """Run a plan from :meth:`prepare` (or a workflow, which is planned first); ``budget``:
        the job's running tally (default: a fresh one from the settings)."""
        start = time.perf_counter()
        plan = workflow if isinstance(workflow, Plan) else self.plan(workflow)
        timings: dict[str, float] = {"validate": time.perf_counter() - start}
        images = dict(images or {})
        self._preflight(plan, images)

        ctx = RunContext(engines=self.engines, images=images, resolved=plan.resolved,
                         budget=budget or JobBudget(Budget.from_settings(self.engines.settings)))
        # How many consumers still need each node's outputs, to free big images early.
        uses: dict[str, int] = {nid: 0 for nid in plan.order}
        for nid in plan.order:
            for value in plan.inputs[nid].values():
                if isinstance(value, Link):
                    uses[value.node_id] += 1
        results: dict[str, tuple] = {}
        total = len(plan.order)
        for i, nid in enumerate(plan.order, 1):
            class_type = plan.graph[nid]["class_type"]
            spec = NODE_TYPES[class_type]
            kwargs = {}
            for name, value in plan.inputs[nid].items():
                kwargs[name] = results[value.node_id][value.slot] if isinstance(value, Link) else value
            if progress is not None:
                progress(f"node {nid} {class_type} ({i}/{total})")
            t0 = time.perf_counter()
            try:
                out = spec.fn(ctx, nid, **kwargs)
            except (ContentBlockedError, NodeFailedError):
                raise
            except Ben2WorkerError as exc:  # named for the node, the original kept as the cause
                named = str(exc) if str(exc).startswith(f"node {nid} ") else f"node {nid} ({class_type}): {exc}"
                raise NodeFailedError(named, node_id=nid, class_type=class_type) from exc
            except Exception as exc:
                log.exception("node %s (%s) failed", nid, class_type)
                raise WorkflowExecutionError(f"node {nid} ({class_type}) failed: {type(exc).__name__}: {exc}",
                                             node_id=nid, class_type=class_type) from exc
            timings[f"{nid}:{class_type}"] = time.perf_counter() - t0
            results[nid] = out
            for value in plan.inputs[nid].values():
                if isinstance(value, Link):
                    uses[value.node_id] -= 1
                    if uses[value.node_id] == 0:
                        results.pop(value.node_id, None)
        timings["total"] = time.perf_counter() - start
        return WorkflowResult(images=ctx.out_images, texts=ctx.out_texts, timings=timings)
