"""One quick network probe, so offline machines fail in seconds instead of retrying for minutes."""

from __future__ import annotations

import socket


def reachable(host: str, port: int, timeout_s: float = 3.0) -> bool:
    """True if a TCP connection to host:port opens within ``timeout_s``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
