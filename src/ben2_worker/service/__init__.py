"""The self-hosted HTTP service (``ben2-worker serve``): one FastAPI app over the same job
processor the RunPod worker uses.

Doors, each a thin adapter (docs/service.md):

* RunPod-style queue routes (``/run``, ``/runsync``, ``/status/{id}`` …, also under
  ``/v2/{endpoint_id}``) so the runpod SDK's own client works with its base URL changed;
* a remove.bg-compatible ``POST /v1.0/removebg`` (parameter map in :mod:`.removebg_params`);
* the playground page at ``/`` (static files in ``static/``, controls generated from the
  task API's JSON schema);
* ``/health`` and ``/metrics``.

Needs the ``service`` extra (FastAPI, uvicorn, python-multipart, prometheus-client); the
production worker image does not install it."""
