"""Deciding, in well under a second and before any download or retry, whether weights can be had."""
from __future__ import annotations

import socket
import time

import pytest
from huggingface_hub import constants

from tsam_diffusion import hub
from tsam_diffusion.hub import WeightsNotFound, first_line, locate


@pytest.fixture
def online(monkeypatch):
    """HF_HUB_OFFLINE unset and the one-probe-per-process cache cleared (before and after)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    hub._probe.cache_clear()
    yield monkeypatch
    hub._probe.cache_clear()


@pytest.fixture
def listening():
    """A local TCP server that accepts connections: a hub (or a proxy) that answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_local_folders(tmp_path):
    assert locate(str(tmp_path)) == {}
    with pytest.raises(WeightsNotFound, match="does not exist"):
        locate(str(tmp_path / "missing"))
    with pytest.raises(WeightsNotFound, match="does not exist"):
        locate("./no-such-folder")


def test_offline_decides_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFound, match="not in the Hugging Face cache, and HF_HUB_OFFLINE is set"):
        locate("someone/some-model")
    assert time.perf_counter() - t0 < 0.2


def test_cached_repo_loads_from_the_cache_alone_when_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    (tmp_path / "models--someone--some-model" / "snapshots" / "abc123").mkdir(parents=True)
    assert locate("someone/some-model") == {"local_files_only": True}
    assert hub.cached("someone/some-model") and not hub.cached("someone/other")


def test_unreachable_hub_is_found_out_quickly(online, tmp_path):
    online.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    online.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFound, match="cannot be reached .*TSAM_HUB_TIMEOUT"):
        locate("someone/some-model")
    assert time.perf_counter() - t0 < 1.0


def test_reachable_hub_and_proxy(online, listening, tmp_path):
    online.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    online.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{listening}")
    assert hub.hub_reachable() and locate("someone/some-model") == {}  # download allowed
    hub._probe.cache_clear()
    # the hub itself is out of reach, but the proxy the environment names answers (loopback only)
    online.setattr(constants, "ENDPOINT", f"https://127.0.0.1:{closed_port()}")
    online.setenv("HTTPS_PROXY", f"http://127.0.0.1:{listening}")
    for name in ("NO_PROXY", "no_proxy"):
        online.delenv(name, raising=False)
    assert hub.hub_reachable()
    hub._probe.cache_clear()
    online.delenv("HTTPS_PROXY")
    assert not hub.hub_reachable()


def test_first_line_cuts_at_a_word():
    assert first_line(OSError("short\nsecond line")) == "short"
    long = ValueError("word " * 100)
    cut = first_line(long, limit=50)
    assert cut.endswith(" ...") and len(cut) <= 54 and cut.removesuffix(" ...").split()[-1] == "word"
    assert first_line(ValueError("")) == "ValueError"
