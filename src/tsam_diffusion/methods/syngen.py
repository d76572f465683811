"""Linguistic Binding, "SynGen" (Rassin, Hirsch, Glickman, Ravfogel, Goldberg, Chechik, NeurIPS 2023).

A dependency parse of the prompt gives its entity-nouns with their modifiers (``red`` -> ``car``).
Each modifier's cross-attention map is pulled towards its noun's and both are pushed away from the
maps of the prompt's other tokens, with ``dist`` the symmetric KL divergence of the maps taken as
distributions over pixels (the raw 16x16 maps, unsmoothed):

    L = sum_S sum_{m in S} [ dist(m, n_S) - (1/2|U_S|) sum_{u in U_S} (dist(m, u) + dist(n_S, u)) ]

over the parse's subtrees ``S`` (modifiers, noun ``n_S`` last), ``U_S`` the content tokens outside
``S``; a word of several tokens takes the maximum over its tokens. One update at each of steps
0..24 of 50 with a constant step size 20 (the authors' code). The parse needs spaCy and an English
model (``pip install spacy; python -m spacy download en_core_web_sm``); groups given as
``tokens=`` ("red car|blue bench") replace the parse.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..diagnostics import Diagnostics
from .base import ContentTokens, GuidanceConfig
from .words import align_words, locate_groups

MODIFIERS = {"amod", "nmod", "compound", "npadvmod", "advmod", "acomp"}
_NOUNS = {"NOUN", "PROPN"}


def _collect(heads: list[Any], follow: set[str], skip_pos: set[str]) -> list[Any]:
    """Depth-first (last child first) from ``heads``' children: tokens whose dependency is in ``follow``
    or ``conj``, except parts of speech in ``skip_pos``, which are walked through but not kept."""
    found, stack = [], list(heads)
    while stack:
        node = stack.pop()
        if node.dep_ in follow or node.dep_ == "conj":
            if node.pos_ not in skip_pos:
                found.append(node)
            stack.extend(node.children)
    return found


def extract_subtrees(doc: Any) -> list[list[int]]:
    """SynGen's modifier subtrees of a parsed prompt (``spacy.tokens.Doc``), token indices, noun last.

    Three rules, as the authors' code: (1) a noun (not itself a modifier) with its modifier children
    and, below them, further modifiers and conjuncts ("a red and blue table"); (2) an auxiliary verb
    whose children are a noun and a modifier ("the dog is red"); (3) a noun with a relative clause
    ("a dog that is red"), walking through its verbs.
    """
    subtrees: list[list[int]] = []
    for w in doc:  # rule 1
        if w.pos_ in _NOUNS and w.dep_ not in MODIFIERS:
            first = [c for c in w.children if c.dep_ in MODIFIERS]
            found = first + _collect([g for c in first for g in c.children], MODIFIERS, set())
            if found:
                subtrees.append([t.i for t in found] + [w.i])
    for w in doc:  # rule 2
        if w.pos_ == "AUX" and w.dep_ not in MODIFIERS:
            first = [c for c in w.children if (c.dep_ in MODIFIERS or c.pos_ in _NOUNS) and c.pos_ not in ("AUX", "VERB")]
            if len(first) >= 2:
                found = first + _collect([g for c in first for g in c.children], MODIFIERS, {"AUX"})
                subtrees.append([t.i for t in found])
    relcl = MODIFIERS | {"relcl"}
    for w in doc:  # rule 3
        if w.pos_ in _NOUNS and w.dep_ not in MODIFIERS:
            kids = [c for c in w.children if c.dep_ in relcl]
            found = [c for c in kids if c.pos_ not in ("AUX", "VERB")]
            found += _collect([g for c in kids for g in c.children], relcl, {"AUX", "VERB"})
            if found:
                subtrees.append([t.i for t in found] + [w.i])
    return subtrees


def merge_subtrees(subtrees: list[list[list[int]]]) -> list[list[list[int]]]:
    """The authors' ``unify_lists``: subtrees (lists of words, a word a list of token indices) that
    share a token are merged, ``first + [w for w in other if w not in first]``, until none do."""
    merged = [list(s) for s in subtrees if s]
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                a = {t for w in merged[i] for t in w}
                if a.intersection(t for w in merged[j] for t in w):
                    merged[i] = merged[i] + [w for w in merged[j] if w not in merged[i]]
                    del merged[j]
                    changed = True
                    break
            if changed:
                break
    return merged


def symmetric_kl(maps: torch.Tensor) -> torch.Tensor:
    """``[..., n, M]`` maps (any positive scale) -> ``[..., n, n]`` symmetric KL between them as
    distributions over the ``M`` pixels, as ``torch.distributions.kl_divergence`` of ``Categorical``s."""
    p = maps.float() / maps.float().sum(-1, keepdim=True)
    eps = torch.finfo(p.dtype).eps
    logp = p.clamp(eps, 1 - eps).log()  # Categorical's logits
    kl = (p * logp).sum(-1)[..., :, None] - p @ logp.transpose(-1, -2)  # KL(p_i || p_j)
    return (kl + kl.transpose(-1, -2)) / 2


def syngen_loss(maps: torch.Tensor, words: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """SynGen's loss from precomputed coefficients; ``[B]``.

    Args:
        maps: ``[B, n, M]`` the content tokens' maps.
        words: ``[B, W, n]`` bool, the tokens of each word of the subtrees.
        positive: ``[B, W, W]`` how often ``dist(word_a, word_b)`` is added (modifier, noun pairs).
        negative: ``[B, W, n]`` the weight of ``dist(word, token)`` (``-1 / (2 |U_S|)`` summed over pairs).
    """
    D = symmetric_kl(maps)  # [B, n, n]
    neg_inf = torch.finfo(D.dtype).min
    Dw = D[:, None, :, :].masked_fill(~words[..., None], neg_inf).amax(2)  # [B, W, n]: max over a word's tokens
    Dww = Dw[:, :, None, :].masked_fill(~words[:, None, :, :], neg_inf).amax(-1)  # [B, W, W]
    Dw, Dww = Dw.clamp_min(0), Dww.clamp_min(0)  # a padded word (no tokens) gives 0, with a 0 coefficient
    return (positive * Dww).sum((-1, -2)) + (negative * Dw).sum((-1, -2))


def coefficients(subtrees: list[list[list[int]]], n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``words [W, n]``, ``positive [W, W]``, ``negative [W, n]`` of one prompt's subtrees (noun last)."""
    flat = [w for s in subtrees for w in s]
    words = torch.zeros(len(flat), n, dtype=torch.bool)
    positive = torch.zeros(len(flat), len(flat))
    negative = torch.zeros(len(flat), n)
    k = 0
    for s in subtrees:
        ids = list(range(k, k + len(s)))
        k += len(s)
        inside = {t for w in s for t in w}
        outside = [u for u in range(n) if u not in inside]
        noun = ids[-1]
        for w, word in zip(ids, s):
            words[w, word] = True
        for m in ids[:-1]:
            positive[m, noun] += 1
            if outside:
                negative[m, outside] -= 1 / (2 * len(outside))
                negative[noun, outside] -= 1 / (2 * len(outside))
    return words, positive, negative


@dataclass(frozen=True)
class SynGenConfig(GuidanceConfig):
    """Linguistic Binding settings: the shared schedule (``methods.base``) and these.

    Attributes:
        parser: the spaCy model that parses the prompt (``en_core_web_sm``; the authors used
            ``en_core_web_trf``), loaded by name.
    """

    method = "syngen"
    presets = {"syngen": {}}  # the authors' code: steps 0..24 of 50, constant step size 20
    default_preset = "syngen"

    alpha: float = 20.0
    step_size_schedule: Literal["sqrt-decay", "constant"] = "constant"
    parser: str = "en_core_web_sm"

    @property
    def uses_tokens(self) -> bool:
        return True

    def check_without_tokens(self) -> None:
        load_parser(self.parser)  # without groups, the prompt is parsed

    def objective(self, adapter, prompts, prompt_index, tokens, diagnostics) -> "SynGenObjective":
        return SynGenObjective(self, adapter, prompts, prompt_index, tokens, diagnostics)


def load_parser(name: str) -> Any:
    """``spacy.load(name)``, or an error that says how to install what is missing."""
    try:
        import spacy
    except ImportError:
        raise RuntimeError("syngen parses the prompt with spaCy, which is not installed: pip install 'tsam-diffusion[syngen]' "
                           f"and python -m spacy download {name}; or give the groups yourself (--token-groups "
                           "'red car|blue bench')") from None
    try:
        return spacy.load(name)
    except OSError:
        raise RuntimeError(f"syngen needs spaCy's parser model {name!r}, which is not installed: python -m spacy download "
                           f"{name} (spaCy's own command; the en-core-web-* packages on the package index are not "
                           "spaCy's, never pip install them); or give the groups yourself (--token-groups 'red car|blue bench')"
                           ) from None


class SynGenObjective:
    """Each prompt's subtrees (from the parse, or the groups given) as loss coefficients."""

    def __init__(self, config: SynGenConfig, adapter: Any, prompts: list[str], prompt_index: list[int],
                 tokens: list[list[list[str]]] | None, diagnostics: Diagnostics) -> None:
        device = adapter.device
        texts = adapter.text_attention(prompts)
        self.tokens = ContentTokens(texts, prompt_index, device, diagnostics)
        parser = load_parser(config.parser) if tokens is None else None
        per_prompt = []
        for p, text in enumerate(texts):
            if tokens is not None:  # given: each group of 2+ words is a subtree (a lone noun has nothing to bind)
                groups = [g for g in tokens[p] if len(g) >= 2]
                subtrees = locate_groups(groups, adapter.word_pieces, text.tokens, prompts[p])
            else:
                doc = parser(prompts[p])
                aligned = align_words([t.text for t in doc], adapter.word_pieces, text.tokens)
                subtrees = [[aligned[i] for i in s if aligned[i]] for s in extract_subtrees(doc)]
            per_prompt.append(merge_subtrees([s for s in subtrees if len(s) >= 2]))
            pairs = "; ".join(" ".join("+".join(text.tokens[t] for t in w) for w in s[:-1]) + " -> "
                              + "+".join(text.tokens[t] for t in s[-1]) for s in per_prompt[-1])
            diagnostics.notes.append(f"syngen pairs of prompt {p}: {pairs or 'none (nothing to bind: no update)'}")
        n = self.tokens.keep.shape[1]
        coefs = [coefficients(s, len(text.tokens)) for s, text in zip(per_prompt, texts)]  # U_S: the prompt's own tokens
        W = max(1, max(c[0].shape[0] for c in coefs))
        words = torch.zeros(len(coefs), W, n, dtype=torch.bool)
        positive, negative = torch.zeros(len(coefs), W, W), torch.zeros(len(coefs), W, n)
        for p, (w, pos, neg) in enumerate(coefs):
            k = w.shape[0]
            m = w.shape[1]
            words[p, :k, :m], positive[p, :k, :k], negative[p, :k, :m] = w, pos, neg
        idx = torch.as_tensor(prompt_index)
        self.words, self.positive, self.negative = words[idx].to(device), positive[idx].to(device), negative[idx].to(device)
        self.active = self.positive.flatten(1).sum(1) > 0

    def loss(self, A: torch.Tensor, map_size: tuple[int, int]) -> tuple[torch.Tensor, None]:
        maps = self.tokens.content_maps(A).transpose(1, 2)  # [B, n, M]; padded tokens: zero maps
        maps = maps + (~self.tokens.mask)[..., None].float()  # padding: uniform maps (finite KL, 0 coefficient)
        return syngen_loss(maps, self.words, self.positive, self.negative), None
