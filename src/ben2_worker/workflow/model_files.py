"""Model widgets written on another machine, resolved by file name inside our models folder.

A workflow saved on Windows carries ``C:/Users/.../models/llm/Meta-Llama-3.1-8B-Instruct-Q5_K_M.gguf``;
the worker has the same file under ``<models_dir>/llm/``. The lookup is the one every door uses
(:class:`ben2_worker.models.locate.ModelFolders`); this module gives the workflow validator its
``LookupError`` (reported as a node's ``value_not_in_list``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelMissingError
from ..models.locate import LLM_DIRS, ModelFolders, base_name

__all__ = ["LLM_DIRS", "base_name", "resolve_florence", "resolve_gguf"]


def resolve_gguf(value: str, models_dir: Path) -> Path:
    """The local GGUF with the same file name as ``value``; LookupError listing what is there."""
    try:
        return ModelFolders.under(models_dir).gguf(value)
    except ModelMissingError as exc:
        raise LookupError(str(exc)) from None


def resolve_florence(value: str, models_dir: Path) -> Path:
    """The local Florence-2 folder with the same name as ``value`` (``microsoft/Florence-2-base``
    matches ``LLM/Florence-2-base``); LookupError listing what is there."""
    try:
        return ModelFolders.under(models_dir).florence(value)
    except ModelMissingError as exc:
        raise LookupError(str(exc)) from None
