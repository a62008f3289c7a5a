"""RunPod serverless GPU prices, per second — the ONE place they are kept.

Source: RunPod's documentation, ``snippets/serverless-gpu-pricing-table.mdx`` in the public
``runpod/docs`` repository at commit e5571ba1 (2026-06-08, "Add 6000s PRO pricing"), the
table rendered at https://docs.runpod.io/serverless/pricing until 2026-06-29, when RunPod
moved it to https://www.runpod.io/pricing (the authoritative page; check it before trusting
a cost figure). Since 2026-05-13 flex and active workers share one per-second rate
(runpod/docs commit d1accc4b). Pool IDs (what ``.runpod/hub.json``'s ``gpuIds`` takes) are
from ``references/gpu-types.mdx`` in the same repository.

To update: change :data:`PRICES_AS_OF`, :data:`PRICE_SOURCE` and the rows below; nothing else
in the project holds a price.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICES_AS_OF = "2026-06-08"
PRICE_SOURCE = (
    "RunPod docs serverless GPU pricing table (runpod/docs snippets/serverless-gpu-pricing-table.mdx "
    "@ e5571ba1, 2026-06-08; now published at https://www.runpod.io/pricing)"
)
CURRENCY = "USD"


@dataclass(frozen=True)
class GpuPrice:
    #: RunPod's pool ID for ``gpuIds`` (None where the docs list no pool for the tier).
    pool: str | None
    #: The tier as the pricing table names it.
    label: str
    memory_gb: int
    #: Dollars per second of worker time (flex and active share one rate since 2026-05).
    per_second: float
    #: GPU names that fall in this tier (matched case-insensitively by :func:`find_price`).
    gpus: tuple[str, ...]

    @property
    def per_hour(self) -> float:
        return self.per_second * 3600


PRICES: tuple[GpuPrice, ...] = (
    GpuPrice("AMPERE_16", "A4000, A4500, RTX 4000", 16, 0.00016,
             ("RTX A4000", "RTX A4500", "RTX 4000 Ada", "RTX 2000 Ada", "A4000", "A4500", "RTX 4000")),
    GpuPrice("AMPERE_24", "L4, A5000, 3090", 24, 0.00019, ("L4", "RTX A5000", "A5000", "RTX 3090", "3090")),
    GpuPrice("ADA_24", "4090 PRO", 24, 0.00031, ("RTX 4090", "4090", "4090 PRO", "GeForce RTX 4090")),
    GpuPrice("AMPERE_48", "A6000, A40", 48, 0.00034, ("RTX A6000", "A6000", "A40")),
    GpuPrice("ADA_48_PRO", "L40, L40S, 6000 Ada PRO", 48, 0.00053,
             ("L40", "L40S", "RTX 6000 Ada", "6000 Ada", "6000 Ada PRO")),
    GpuPrice("AMPERE_80", "A100", 80, 0.00076, ("A100", "A100 PCIe", "A100 SXM")),
    GpuPrice("ADA_80_PRO", "H100 PRO", 80, 0.00116, ("H100", "H100 PRO", "H100 PCIe", "H100 SXM", "H100 NVL")),
    GpuPrice(None, "6000s PRO", 96, 0.00111, ("6000s PRO", "RTX PRO 6000")),
    GpuPrice("HOPPER_141", "H200 PRO", 141, 0.00155, ("H200", "H200 PRO", "H200 SXM")),
    GpuPrice(None, "B200", 180, 0.00240, ("B200",)),
)

#: What the spec's cost estimate assumes (RTX 4090).
DEFAULT_GPU = "ADA_24"


def _norm(text: str) -> str:
    text = text.strip().lower().replace("nvidia", "").replace("geforce", "")
    return " ".join(text.replace("_", " ").replace("-", " ").split())


def find_price(name: str) -> GpuPrice:
    """The tier for a pool ID (``ADA_24``), a GPU name (``RTX 4090``, ``NVIDIA GeForce RTX 4090``,
    ``H100``) or a tier label (``4090 PRO``); ``KeyError`` naming the choices otherwise."""
    want = _norm(name)
    if not want:
        raise KeyError("empty GPU name")
    for price in PRICES:
        if price.pool and _norm(price.pool) == want:
            return price
    for price in PRICES:
        if want == _norm(price.label) or any(want == _norm(g) for g in price.gpus):
            return price
    choices = ", ".join(p.pool or p.label for p in PRICES)
    raise KeyError(f"unknown GPU {name!r}; use a pool ID or GPU name: {choices}")


def cost_per_1000(seconds_per_image: float, price: GpuPrice) -> float:
    """Dollars for 1,000 images at ``seconds_per_image`` of billed worker time each."""
    return seconds_per_image * price.per_second * 1000
