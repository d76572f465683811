"""How many CPU threads torch should use, given what else is running.

torch splits each CPU operation over ``torch.get_num_threads()`` threads (one per core) that meet
at a barrier when it ends. When other processes are busy on the same cores, one of those threads
is often waiting for a time slice while the others spin at the barrier, and every one of the
thousands of small operations of a sampling step pays for it: on 2 cores with 4 busy processes
beside it, ``tsam generate`` on tsam-mini took 14x as long with 2 threads as alone, and 2.8x (about
its fair share of the machine) with 1 thread (``benchmarks/under_load.py``, docs/performance.md).

``threads="auto"`` (the CLI's default) therefore uses the cores that no other process is running
on at that moment (at least one), and the long commands look again now and then (``Threads.adapt``);
an integer fixes the number.
"""
from __future__ import annotations

import os
import time

RECHECK_S = 10.0
SAMPLES = 5  # readings of the load, SAMPLE_GAP_S apart: other load must show in each
SAMPLE_GAP_S = 0.01


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _own_runnable() -> int:
    """Runnable threads of this process (the caller, and torch's workers still spinning after an operation)."""
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat", encoding="ascii", errors="replace") as f:
                count += f.read().rpartition(")")[2].split()[0] == "R"
        except (OSError, IndexError):
            pass
    return max(1, count)


def _other_runnable_once() -> int:
    with open("/proc/loadavg", encoding="ascii") as f:
        running = int(f.read().split()[3].split("/")[0])
    return max(0, running - _own_runnable())


def other_runnable(readings: int = SAMPLES, gap_s: float = SAMPLE_GAP_S) -> float:
    """Runnable threads of other processes now (Linux: ``/proc/loadavg`` less this process's own
    runnable threads, the least of ``readings`` readings ``gap_s`` apart; elsewhere the 1-minute load
    average).

    One reading is not enough: one of torch's workers that stops spinning between the two files is
    counted as another process's thread, and so is a command that runs for a few milliseconds. On 2
    otherwise idle cores, a ShapesBench run with ``--threads auto`` ran stretches at 1 thread; load
    that lasts shows in every reading."""
    try:
        least = _other_runnable_once()
        for _ in range(readings - 1):
            if least == 0:
                break
            time.sleep(gap_s)
            least = min(least, _other_runnable_once())
        return least
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0


def auto_threads() -> int:
    """The cores no other process is using now, at least 1."""
    return max(1, cores() - int(round(other_runnable())))


def parse_threads(value: str | int) -> int | None:
    """``"auto"`` -> None (adaptive), a positive integer (or its text) -> itself; else ValueError."""
    if str(value).strip().lower() == "auto":
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"--threads must be a positive integer or auto, got {value!r}")
    return n


class Threads:
    """Sets ``torch.set_num_threads``: a fixed count, one that follows the machine's load (``"auto"``),
    or (``None``) nothing: torch's own settings are left alone. With a count or ``"auto"`` it also
    flushes subnormal numbers (``flush_denormals``), as soon as it is made: the commands make it
    before torch's first parallel operation."""

    def __init__(self, value: str | int | None = "auto") -> None:
        self.enabled = value is not None
        self.fixed = parse_threads(value) if self.enabled else None
        if self.enabled:
            flush_denormals()
        self.checked = -float("inf")
        self.current = 0

    def adapt(self) -> int:
        """Apply the fixed count once, or re-evaluate ``auto`` if ``RECHECK_S`` seconds have passed;
        returns torch's thread count."""
        import torch

        now = time.monotonic()
        if not self.enabled:
            return torch.get_num_threads()
        if self.current and (self.fixed is not None or now - self.checked < RECHECK_S):
            return self.current

        self.checked = now
        n = self.fixed or auto_threads()
        if n != self.current:
            torch.set_num_threads(n)
            self.current = n
        return n


def flush_denormals() -> bool:
    """Treat subnormal floats (below about 1.2e-38 in float32) as zero on the CPU, in this thread and
    in every thread started after it; returns whether the CPU supports it (x86 with SSE3 does).

    A saturated guidance loss sends gradients of 1e-30 and less back through the denoiser
    (Attend-and-Excite's ``softmax(100 A)`` on tsam-mini: subject maxima of 1e-30), and on x86 each
    arithmetic operation on a subnormal number takes about a hundred times as long: one A&E batch
    of "a blue cross" took 63.6x as long as vanilla sampling instead of 3.6x (docs/performance.md).
    Flushing changes only numbers that small. Threads copy the floating-point mode of the thread
    that starts them, so call this before torch's first parallel operation (the ``tsam`` commands
    do, through ``Threads``); called later, torch's worker threads already running keep subnormals.
    """
    import torch

    return bool(torch.set_flush_denormal(True))
