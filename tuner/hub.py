"""Is the Hugging Face Hub reachable? Asked once, quickly, before anything would wait on it.

Offline, huggingface_hub and datasets retry their requests for about a minute before failing with a
message about caches. A two-second connection probe lets tuner fail at once with one line that says
what needs the Hub and what to use instead, or go straight to the local cache.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def offline_by_setting() -> bool:
    """True when the user switched the Hub off (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``)."""
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the Hub (``HF_ENDPOINT`` or huggingface.co, port 443) opens
    within ``timeout`` seconds. Behind a proxy the probe cannot tell, so it answers True."""
    if offline_by_setting():
        return False
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return True
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def use_local_cache_only() -> None:
    """Make huggingface_hub and datasets read their local caches without trying the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    for module, attr in (
        ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
        ("datasets.config", "HF_HUB_OFFLINE"),
        ("datasets.config", "HF_DATASETS_OFFLINE"),
    ):
        try:
            mod = __import__(module, fromlist=[attr])
        except ImportError:
            continue
        if hasattr(mod, attr):
            setattr(mod, attr, True)
