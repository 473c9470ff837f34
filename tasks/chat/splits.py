"""The train / held-out split of chat data: one rule for the synthetic world and for users' sources."""

from __future__ import annotations

import hashlib


def is_heldout(key: str, fraction: float) -> bool:
    """Held out when a stable hash of `key` (a question) falls below `fraction`: the same question
    lands on the same side in every run, every source and every data kind, so it never leaks."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return h / 2**64 < fraction
