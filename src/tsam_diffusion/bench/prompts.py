"""A prompt with a stable id: what suites and user files are made of (ids: see ``bench.suites``' docstring).

This module is pure Python: it imports neither torch nor diffusers.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable

__all__ = ["Prompt", "build_prompts", "content_key", "text_lines"]

_KEY_HEX_DIGITS = 10


@dataclass(frozen=True)
class Prompt:
    """One prompt of a suite. ``meta`` holds the source's extra fields (see each suite)."""

    id: str
    text: str
    suite: str
    meta: dict = field(default_factory=dict, hash=False)


# --------------------------------------------------------------------------------------------
# ids


def content_key(text: str) -> str:
    """The content-hash key of a prompt: SHA-1 of ``text.strip().lower()``, first 10 hex digits."""
    return hashlib.sha1(text.strip().lower().encode("utf-8")).hexdigest()[:_KEY_HEX_DIGITS]


def build_prompts(suite: str, records: Iterable[tuple[str | None, str, dict]]) -> list[Prompt]:
    """Make prompts from ``(explicit_key_or_None, text, meta)`` records, in order.

    Explicit keys must already be unique (callers report duplicates with file and line).
    """
    records = list(records)
    used = {key for key, _, _ in records if key is not None}
    seen: dict[str, int] = {}  # content hash -> how many prompts carried it so far
    out = []
    for key, text, meta in records:
        if key is None:
            base = content_key(text)
            n = seen.get(base, 0) + 1
            key = base if n == 1 else f"{base}-{n}"
            while key in used:
                n += 1
                key = f"{base}-{n}"
            seen[base] = n
            used.add(key)
        out.append(Prompt(id=f"{suite}:{key}", text=text, suite=suite, meta=meta))
    return out


def text_lines(text: str) -> list[str]:
    """Split on LF, CRLF or CR only (``str.splitlines`` also splits on U+2028 and friends)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
