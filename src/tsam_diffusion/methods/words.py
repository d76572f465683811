"""Which tokens of a prompt a word is: for methods that are told the prompt's objects (A&E, CONFORM).

A word is found as the run of its tokenizer pieces among the prompt's content tokens, so a word the
tokenizer splits (``teardrop`` -> ``tear ##drop``) maps to all its pieces, on CLIP, T5 and BERT
tokenizers alike. Groups are written ``"car,clock"`` (one word each) or ``"black car|white clock"``
(groups of words); in a group the last word is the object (the noun Attend-and-Excite excites).
"""
from __future__ import annotations

from typing import Any, Sequence

TokenGroups = list[list[str]]  # groups of words of one prompt


def parse_groups(spec: str) -> TokenGroups:
    """``"car,clock"`` -> ``[["car"], ["clock"]]``; ``"black car|white clock"`` -> ``[["black", "car"], ["white", "clock"]]``."""
    sep = "|" if "|" in spec else ","
    groups = [part.split() for part in spec.split(sep)]
    if not spec.strip() or any(not g for g in groups):
        raise ValueError(f"bad token groups {spec!r}: give words separated by ',' (one group each) or groups of "
                         "space-separated words separated by '|', e.g. 'car,clock' or 'black car|white clock'")
    return groups


def per_prompt(tokens: Any, n_prompts: int) -> list[TokenGroups] | None:
    """``tokens`` as given to the pipeline -> one ``TokenGroups`` per prompt (or None).

    Accepted: a spec string or ``TokenGroups`` for every prompt, or a list with one of those per prompt.
    """
    if tokens is None:
        return None
    if isinstance(tokens, str) or _is_groups(tokens):
        return [_groups(tokens)] * n_prompts
    if isinstance(tokens, Sequence) and all(isinstance(t, str) or _is_groups(t) for t in tokens):
        if len(tokens) != n_prompts:
            raise ValueError(f"tokens has {len(tokens)} entries for {n_prompts} prompts: give one per prompt, or one for all")
        return [_groups(t) for t in tokens]
    raise TypeError("tokens must be a string like 'car,clock' or 'black car|white clock', a list of groups of words "
                    "([['black', 'car'], ['white', 'clock']]), or a list with one of those per prompt")


def _is_groups(x: Any) -> bool:
    return (isinstance(x, Sequence) and not isinstance(x, str) and len(x) > 0
            and all(isinstance(g, Sequence) and not isinstance(g, str) and all(isinstance(w, str) for w in g) for g in x))


def _groups(x: str | Sequence[Sequence[str]]) -> TokenGroups:
    if isinstance(x, str):
        return parse_groups(x)
    groups = [[w.strip() for w in g] for g in x]
    if any(not g or not all(groups_word for groups_word in g) for g in groups):
        raise ValueError(f"empty group or word in tokens {x!r}")
    return groups


def _norm(piece: str) -> str:
    """A tokenizer piece without its word-boundary marks (CLIP ``</w>``, T5 ``▁``, GPT ``Ġ``, BERT ``##``)."""
    return piece.replace("</w>", "").lstrip("▁Ġ").removeprefix("##").lower()


def _find_run(want: list[str], have: list[str], start: int = 0, taken: set[int] = frozenset()) -> list[int]:
    """Indices of the first run of ``want`` in ``have`` from ``start`` that avoids ``taken``; [] if none."""
    for i in range(start, len(have) - len(want) + 1):
        span = list(range(i, i + len(want)))
        if want and have[i: i + len(want)] == want and not taken.intersection(span):
            return span
    return []


def locate(word: str, pieces: list[str], tokens: list[str], taken: set[int], prompt: str) -> list[int]:
    """Content-token indices of ``word`` (tokenized as ``pieces``) in ``tokens``: the first run not in ``taken``."""
    span = _find_run([p for p in (_norm(x) for x in pieces) if p], [_norm(t) for t in tokens], taken=taken)
    if span:
        return span
    raise ValueError(f"the word {word!r} is not in the prompt {prompt!r} as its text encoder reads it "
                     f"(tokens: {' '.join(tokens)}); name words that appear in the prompt")


def locate_groups(groups: TokenGroups, word_pieces: Any, tokens: list[str], prompt: str) -> list[list[list[int]]]:
    """For each group, for each word, its content-token indices (``word_pieces(word)`` tokenizes a word)."""
    taken: set[int] = set()
    out = []
    for group in groups:
        located = []
        for word in group:
            span = locate(word, word_pieces(word), tokens, taken, prompt)
            taken.update(span)
            located.append(span)
        out.append(located)
    return out


def align_words(words: list[str], word_pieces: Any, tokens: list[str]) -> list[list[int]]:
    """Content-token indices of each of ``words`` (a parser's tokens of the prompt, in order): each word
    takes the next run of its pieces, so a repeated word maps to its own occurrence. A word the
    tokenizer does not show (dropped characters) maps to ``[]``."""
    have = [_norm(t) for t in tokens]
    out, cursor = [], 0
    for word in words:
        span = _find_run([p for p in (_norm(x) for x in word_pieces(word)) if p], have, cursor)
        cursor = span[-1] + 1 if span else cursor
        out.append(span)
    return out
