"""The object words of a benchmark prompt, for the methods that need them (A&E, CONFORM; T-SAM needs none).

ShapesBench prompts carry their objects (``meta["spec"]``: shape and colour per object). Other
prompts are read when they are a plain list of objects, as the A&E suites, CC-500 and GenEval's
object prompts are: ``[a photo of] a [colour] noun (and|with|,) a [colour] noun ...``. Each object
becomes a group of words, its noun last (``[["black", "car"], ["white", "clock"]]``); a prompt that
is not such a list (a sentence, a spatial relation) gives None.
"""
from __future__ import annotations

import re

from .suites import Prompt

_ARTICLES = {"a", "an", "the", "one", "two", "three", "four", "five", "six", "some"}
_SPLIT = re.compile(r"\s*,\s*(?:and\s+)?|\s+and\s+|\s+with\s+")


def token_groups(prompt: Prompt) -> list[list[str]] | None:
    """Groups of words, one per object, noun last; None when the prompt is not a plain list of objects."""
    spec = prompt.meta.get("spec") if isinstance(prompt.meta, dict) else None
    if spec:  # ShapesBench: [[shape, colour or None], ...]
        return [[colour, shape] if colour else [shape] for shape, colour in spec]
    text = re.sub(r"^(a photo of|an image of|a picture of)\s+", "", prompt.text.strip().rstrip(".").lower())
    groups = []
    for part in _SPLIT.split(text):
        words = [w for w in part.split() if w not in _ARTICLES]
        if not 1 <= len(words) <= 3 or not all(w.isalpha() for w in words):
            return None
        groups.append(words)
    return groups if len(groups) >= 1 else None
