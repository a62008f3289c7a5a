"""Stand-in for ComfyUI's ``comfy.model_management`` (tests only): records what the node pack
calls, with ComfyUI's signatures (``soft_empty_cache(force=False)``, ``unload_all_models()``,
``throw_exception_if_processing_interrupted()``)."""

from __future__ import annotations

calls: list[tuple] = []
interrupted = False


class InterruptProcessingException(Exception):
    pass


def soft_empty_cache(force: bool = False) -> None:
    calls.append(("soft_empty_cache", force))


def unload_all_models() -> None:
    calls.append(("unload_all_models",))


def throw_exception_if_processing_interrupted() -> None:
    global interrupted
    if interrupted:
        interrupted = False
        raise InterruptProcessingException()
