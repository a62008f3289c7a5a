"""What the playground page needs beyond the static files: the task API's JSON schema (from
the same pydantic model the worker validates with), so the page builds its option controls
from the declaration instead of by hand, and the pipelines this server serves."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from ..api import schemas

if TYPE_CHECKING:
    from .app import Service


def options_document(service: Service) -> dict:
    from .app import PLAYGROUND_HIDDEN

    return {
        "task": schemas.SimpleRequest.model_json_schema(),
        "hidden": list(PLAYGROUND_HIDDEN),
        "pipelines": list(service.served),
        "phase": service.phase,
        "keys_required": service.settings.keys_required,
        "max_upload_bytes": service.settings.runsync_body_limit,
    }


def register(app: FastAPI, service: Service) -> None:
    @app.get("/v1/options", tags=["playground"], summary="The task API's schema and what this server serves")
    async def options():
        return options_document(service)
