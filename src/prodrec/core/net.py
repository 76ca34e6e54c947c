"""Quick, bounded checks for network access, so that offline machines fall back instead of hanging."""

from __future__ import annotations

import functools
import os
import socket


def offline_forced() -> bool:
    return os.environ.get("PRODREC_OFFLINE", "") not in ("", "0") or os.environ.get("HF_HUB_OFFLINE", "") not in (
        "",
        "0",
    )


@functools.lru_cache(maxsize=None)
def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """True when a TCP connection to ``host:port`` opens within ``timeout`` seconds (cached per process)."""
    if offline_forced():
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
