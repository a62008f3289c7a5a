"""Testing a deployed RunPod serverless endpoint (``ben2-worker endpoint test``).

The spec's "Deployment Testing" checklist as a command: both pipelines through both request
formats, via ``/run`` + ``/status`` and ``/runsync``; cold vs warm runs from RunPod's
``delayTime``/``executionTime``; stuck jobs detected and cancelled; every returned image
decoded; a markdown + JSON report with latency percentiles and cost per 1,000 images.

* :mod:`.client`  — the RunPod queue API over stdlib ``urllib`` (no extra dependency);
* :mod:`.cases`   — the requests sent (the user's workflows, the simple task API);
* :mod:`.runner`  — submit, poll, detect stuck jobs, verify outputs;
* :mod:`.report`  — percentiles, cold vs warm, cost, markdown and JSON;
* :mod:`.prices`  — the one GPU price table (per second, dated, with its source).
"""
