"""Word pairs of a templated prompt, labelled by syntax (the paper's section 4), and their values in a matrix.

A prompt's objects come as groups of words, noun last (``[["black", "car"], ["white", "clock"]]``,
``bench.subjects.token_groups``). Pairs of words are labelled:

- ``bound``: (attribute_i, object_i), a word of a group and that group's noun;
- ``unbound-objects``: (object_i, object_j), the nouns of two groups;
- ``unbound-attribute``: (attribute_i, object_j), a word of one group and another group's noun.

A word may be several tokenizer pieces; a pair's value in a token matrix (``T'``, cosine
similarities) is the mean of the block of its pieces, read in the lower triangle (row = the later
word), as ``T'`` is lower-triangular (eq. 2; appendix B.2 for bidirectional encoders).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..methods.words import locate_groups

BOUND, UNBOUND_OBJECTS, UNBOUND_ATTRIBUTE = "bound", "unbound-objects", "unbound-attribute"
LABELS = (BOUND, UNBOUND_OBJECTS, UNBOUND_ATTRIBUTE)


@dataclass(frozen=True)
class WordPair:
    label: str
    first: str  # the words, in prompt order
    second: str
    rows: tuple[int, ...]  # content-token indices of the later word
    cols: tuple[int, ...]  # of the earlier word


def label_pairs(groups: list[list[str]]) -> list[tuple[str, tuple[int, int], tuple[int, int]]]:
    """``(label, (group, word), (group, word))`` for every labelled pair of ``groups`` (noun last).

    >>> label_pairs([["black", "car"], ["white", "clock"]])  # doctest: +NORMALIZE_WHITESPACE
    [('bound', (0, 0), (0, 1)), ('bound', (1, 0), (1, 1)), ('unbound-objects', (0, 1), (1, 1)),
     ('unbound-attribute', (0, 0), (1, 1)), ('unbound-attribute', (1, 0), (0, 1))]
    """
    out = []
    nouns = [(g, len(words) - 1) for g, words in enumerate(groups)]
    for g, words in enumerate(groups):
        out += [(BOUND, (g, w), nouns[g]) for w in range(len(words) - 1)]
    for a in range(len(groups)):
        out += [(UNBOUND_OBJECTS, nouns[a], nouns[b]) for b in range(a + 1, len(groups))]
    for g, words in enumerate(groups):
        out += [(UNBOUND_ATTRIBUTE, (g, w), nouns[h]) for w in range(len(words) - 1) for h in range(len(groups)) if h != g]
    return out


def word_pairs(groups: list[list[str]], word_pieces: Callable[[str], list[str]], tokens: list[str],
               prompt: str) -> list[WordPair]:
    """The labelled pairs located among the prompt's content ``tokens`` (ValueError if a word is not there)."""
    spans = locate_groups(groups, word_pieces, tokens, prompt)
    out = []
    for label, (g1, w1), (g2, w2) in label_pairs(groups):
        a, b = spans[g1][w1], spans[g2][w2]
        (early, e_word), (late, l_word) = sorted([(a, groups[g1][w1]), (b, groups[g2][w2])], key=lambda x: x[0][0])
        out.append(WordPair(label, e_word, l_word, tuple(late), tuple(early)))
    return out


def pair_value(matrix: Any, pair: WordPair) -> float:
    """The mean of ``matrix[rows][:, cols]`` (the later word's pieces x the earlier word's)."""
    m = np.asarray(matrix, dtype=np.float64)
    return float(m[np.ix_(pair.rows, pair.cols)].mean())


def token_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the strictly lower triangle of an ``n x n`` matrix (every token pair once)."""
    return np.tril_indices(n, -1)
