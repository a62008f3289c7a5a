"""ben2-worker: BEN2 background removal with a fail-closed safety stack."""

__version__ = "0.1.0"
