"""Ctrl-C and SIGTERM for long commands: stop with a word, lose nothing.

``terminate_as_interrupt()`` makes SIGTERM (``kill``, a cluster scheduler's pre-emption) raise
``KeyboardInterrupt`` like Ctrl-C, so every command stops the same way and says how to continue.
``deferred()`` holds both signals back inside a loop that must stop between steps (training: a
checkpoint is only consistent at a step boundary); the loop polls ``stop["signal"]``.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def terminate_as_interrupt() -> Iterator[dict[str, str]]:
    """Within the block SIGTERM raises ``KeyboardInterrupt``; the yielded dict gets ``signal`` = its name."""
    received: dict[str, str] = {}
    if not _main_thread():  # signal handlers can only be set from the main thread
        yield received
        return

    def handler(signum: int, frame: Any) -> None:
        received["signal"] = signal.Signals(signum).name
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def deferred() -> Iterator[dict[str, str]]:
    """Within the block SIGINT and SIGTERM only set ``stop["signal"]``; the caller stops at a safe point
    and raises ``KeyboardInterrupt`` itself. A second signal while the first waits raises at once."""
    stop: dict[str, str] = {}
    if not _main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop:
            raise KeyboardInterrupt
        stop["signal"] = signal.Signals(signum).name

    old = {s: signal.signal(s, handler) for s in _SIGNALS}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
