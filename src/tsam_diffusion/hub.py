"""Where pretrained weights come from: a local folder, the Hugging Face cache, or the hub.

``locate(source)`` decides in well under a second, before any download or retry, whether a
``from_pretrained`` of ``source`` can work: a local folder always can; a hub id can when its files
are in the local cache, or when the hub answers (checked once per process, with a short timeout,
and never when ``HF_HUB_OFFLINE`` is set). It returns the keyword arguments to pass to
``from_pretrained`` (``local_files_only=True`` where only the cache can serve), or raises
``WeightsNotFound`` whose message the caller completes with the exact way to fix it.
"""
from __future__ import annotations

import os
import socket
import threading
import urllib.request
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 0.5  # TSAM_HUB_TIMEOUT overrides it (seconds), for slow networks


class ModelLoadError(OSError):
    """A model could not be loaded (missing weights, no network, bad folder)."""


class WeightsNotFound(OSError):
    """Pretrained weights are neither in a local folder nor in the cache, and the hub cannot be reached."""


def looks_like_path(source: str) -> bool:
    """Whether ``source`` is meant as a local path (absolute, ``./``, ``~``, or an existing file or folder)."""
    return os.path.isabs(source) or source.startswith((".", "~")) or os.path.exists(os.path.expanduser(source))


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network access."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "on", "yes", "true")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def cached(repo_id: str) -> bool:
    """Whether the Hugging Face cache holds a snapshot of the model ``repo_id``."""
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    return folder.is_dir() and any(folder.iterdir())


def probe_timeout() -> float:
    """Seconds the hub gets to answer: ``TSAM_HUB_TIMEOUT``, else ``PROBE_TIMEOUT_S``."""
    try:
        return max(0.01, float(os.environ.get("TSAM_HUB_TIMEOUT", PROBE_TIMEOUT_S)))
    except ValueError:
        return PROBE_TIMEOUT_S


def hub_reachable() -> bool:
    """Whether a TCP connection to the hub's endpoint (or to the proxy the environment names for it)
    opens within ``probe_timeout()`` seconds, name lookup included; one probe per process. False at
    once when ``HF_HUB_OFFLINE`` is set."""
    return not offline() and _probe()


@lru_cache(maxsize=1)
def _probe() -> bool:
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    return reachable(host, port, probe_timeout(), url.scheme)


def reachable(host: str, port: int, timeout: float, scheme: str = "https") -> bool:
    """Whether a TCP connection to ``host:port`` (or to the proxy the environment names for
    ``scheme``) opens within ``timeout`` seconds, name lookup included."""
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_url = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_url.hostname or host, proxy_url.port or 8080
    result: list[bool] = []

    def probe() -> None:  # getaddrinfo has no timeout of its own: run it in a thread we stop waiting for
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def locate(source: str) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for ``source`` (a folder or a hub id), or ``WeightsNotFound``.

    A missing local folder raises at once. A hub id in the cache loads from the cache alone when the
    hub cannot be reached (no retries); one that is not cached needs the hub.
    """
    if looks_like_path(source):
        if not os.path.isdir(os.path.expanduser(source)):
            raise WeightsNotFound(f"the folder {source!r} does not exist")
        return {}
    if hub_reachable():
        return {}
    if cached(source):
        return {"local_files_only": True}
    why = ("HF_HUB_OFFLINE is set" if offline() else "the Hugging Face hub cannot be reached from this machine (no "
           f"answer in {probe_timeout():g} s; on a slow network set TSAM_HUB_TIMEOUT=5)")
    raise WeightsNotFound(f"{source!r} is not a local folder, not in the Hugging Face cache, and {why}")


def dtype_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``torch_dtype`` renamed ``dtype`` where diffusers takes that name (0.36 and later
    warn about ``torch_dtype`` on every load)."""
    from diffusers.utils import deprecation_utils

    if "torch_dtype" not in kwargs or not hasattr(deprecation_utils, "_resolve_dtype"):
        return kwargs
    rest = {k: v for k, v in kwargs.items() if k != "torch_dtype"}
    return {**rest, "dtype": kwargs["torch_dtype"]}


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error message, cut at a word boundary to at most ``limit`` characters."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit] + " ..."
