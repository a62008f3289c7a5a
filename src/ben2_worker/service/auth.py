"""API keys: who is calling. Keys are compared in constant time, against every configured key,
so neither a key's length nor how much of it matched shows in the response time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from ..config import ApiKey


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent: ``X-Api-Key`` (remove.bg clients) or ``Authorization: Bearer``
    (the runpod SDK); ``Authorization`` without a scheme is accepted as RunPod's API does."""
    key = headers.get("x-api-key")
    if key:
        return key.strip() or None
    auth = (headers.get("authorization") or "").strip()
    if not auth:
        return None
    scheme, _, rest = auth.partition(" ")
    if rest and scheme.lower() == "bearer":
        return rest.strip() or None
    return auth if not rest else None


class KeyRing:
    """The configured keys. ``identify`` answers which key was presented, or None."""

    def __init__(self, keys: tuple[ApiKey, ...]):
        self._keys = [(hashlib.sha256(k.key.encode()).digest(), k) for k in keys]

    def __len__(self) -> int:
        return len(self._keys)

    def identify(self, presented: str | None) -> ApiKey | None:
        if presented is None:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found = None
        for stored, key in self._keys:  # no early exit: every key is compared every time
            if hmac.compare_digest(digest, stored):
                found = key
        return found
