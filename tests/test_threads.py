"""torch's CPU threads: fixed, or following the machine's load."""
from __future__ import annotations

import pytest
import torch

from tsam_diffusion import threads
from tsam_diffusion.threads import Threads, parse_threads


def test_parse_threads():
    assert parse_threads("auto") is None and parse_threads(" AUTO ") is None
    assert parse_threads("3") == 3 and parse_threads(2) == 2
    for bad in ("0", "-1", "many", "1.5"):
        with pytest.raises(ValueError, match="--threads must be a positive integer or auto"):
            parse_threads(bad)


def test_fixed_and_auto(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert Threads(1).adapt() == 1 and torch.get_num_threads() == 1
        assert Threads(None).adapt() == 1  # None leaves torch's setting alone
        monkeypatch.setattr(threads, "cores", lambda: 8)
        monkeypatch.setattr(threads, "other_runnable", lambda: 5.0)
        assert Threads("auto").adapt() == 3 and torch.get_num_threads() == 3
        monkeypatch.setattr(threads, "other_runnable", lambda: 20.0)
        assert threads.auto_threads() == 1  # at least one
        t = Threads("auto")
        assert t.adapt() == 1
        monkeypatch.setattr(threads, "other_runnable", lambda: 0.0)
        assert t.adapt() == 1  # looked at again only after RECHECK_S
        t.checked -= threads.RECHECK_S
        assert t.adapt() == 8
    finally:
        torch.set_num_threads(before)


def test_own_threads_are_not_load(monkeypatch):
    """torch's workers still spinning after an operation belong to this process: they are not other load."""
    x = torch.randn(512, 512)
    x @ x
    own = threads._own_runnable()
    assert own >= 1
    monkeypatch.setattr("builtins.open", _fake_loadavg(running=own, real_open=open))
    assert threads.other_runnable() == 0  # every runnable thread on the machine is ours


def test_passing_load_is_not_load(monkeypatch):
    """A thread that shows in one reading of the load and not the next (one of torch's workers going
    to sleep between two files, a command of a few milliseconds) does not take a core away; load that
    lasts does."""
    readings = iter([2, 1, 0, 1, 1])
    monkeypatch.setattr(threads, "_other_runnable_once", lambda: next(readings))
    assert threads.other_runnable(gap_s=0) == 0
    monkeypatch.setattr(threads, "_other_runnable_once", lambda: 1)
    monkeypatch.setattr(threads, "cores", lambda: 2)
    assert threads.other_runnable(gap_s=0) == 1 and threads.auto_threads() == 1
    calls = []
    monkeypatch.setattr(threads, "_other_runnable_once", lambda: calls.append(1) or 0)
    assert threads.other_runnable(gap_s=0) == 0 and len(calls) == 1  # an idle machine: one reading


def _fake_loadavg(running: int, real_open):
    import io

    def fake(path, *args, **kwargs):
        if path == "/proc/loadavg":
            return io.StringIO(f"0.00 0.00 0.00 {running}/100 12345\n")
        return real_open(path, *args, **kwargs)

    return fake


SUBNORMALS = """
import sys, torch
from tsam_diffusion.threads import Threads
Threads({value!r})
torch.set_num_threads(2)
x = torch.full((1 << 20,), 1e-39)  # a float32 subnormal, a million times: split over both threads
print(int(((x * 3.0) != 0).sum()), int((x + 0.0 != 0).sum()))
"""


@pytest.mark.parametrize("value, kept", [(2, 0), ("auto", 0), (None, 1 << 20)])
def test_threads_flush_subnormals_in_every_worker_thread(value, kept):
    """``Threads`` (every command's) flushes subnormals before torch starts its worker threads, so
    that the workers inherit it (a saturated A&E run was 17.8x slower without); ``None`` leaves torch alone."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", SUBNORMALS.format(value=value)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(kept), str(kept)]
