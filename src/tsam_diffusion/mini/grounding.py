"""Grounding loss for training tsam-mini: each object word's cross-attention map should cover its object.

The token loss of TokenCompose (Wang et al., CVPR 2024), on the maps T-SAM reads (eq. 6: heads and
the layers of the ``mini`` preset averaged). For an object word ``j`` (a shape word, or the colour
word of its object) with coverage mask ``c`` of its object on the map grid and map ``a_j``
normalised over space,

    L_ground = mean_j (1 - sum_m a_jm c_m) ** 2,

zero when the whole map lies on the object. Only words that name an object are supervised; other
tokens (articles, "and", "with", [CLS], [SEP]) keep their maps free, and so does the model's choice
of where to put an object: at high noise the loss can only pull a map towards where the object
will be drawn. The diffusion loss is unchanged; ``TrainConfig.grounding`` weighs this one against it.
Used in training only: sampling and T-SAM never see the masks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

    from .world import Scene


def grounding_targets(scenes: Sequence["Scene | None"], specs: Sequence[Sequence[tuple[str, str | None]]],
                      tokens: Sequence[Sequence[str]], map_size: tuple[int, int], columns: int) -> tuple[np.ndarray, np.ndarray]:
    """``(coverage [B, M, columns], weight [B, columns])`` for a batch of captions.

    ``tokens[b]``: the caption's content tokens (no [CLS]/[SEP]); column ``1 + i`` of the
    cross-attention is content token ``i`` ([CLS] is column 0). ``coverage[b, :, j]`` is the mask of
    the object that word ``j`` names (zeros where it names none); ``weight[b, j]`` is 1 for a
    supervised word. A ``None`` scene (a dropped caption) supervises nothing.
    """
    from .probe import object_masks, word_positions

    m = map_size[0] * map_size[1]
    coverage = np.zeros((len(scenes), m, columns), dtype=np.float32)
    weight = np.zeros((len(scenes), columns), dtype=np.float32)
    for b, (scene, spec, toks) in enumerate(zip(scenes, specs, tokens)):
        if scene is None:
            continue
        masks = object_masks(scene, map_size).numpy()
        for k, words in enumerate(word_positions(list(toks), spec)):
            for i in words:
                if i is not None and 1 + i < columns:
                    coverage[b, :, 1 + i] = masks[k]
                    weight[b, 1 + i] = 1.0
    return coverage, weight


def grounding_loss(A: "torch.Tensor", coverage: "torch.Tensor", weight: "torch.Tensor") -> "torch.Tensor":
    """``mean over supervised words of (1 - mass of the word's map on its object) ** 2``, in float32.

    ``A`` ``[B, M, s]`` cross-attention probabilities (eq. 6), ``coverage`` ``[B, M, s]``, ``weight``
    ``[B, s]``. Zero when nothing is supervised.
    """
    a = A.float()
    a = a / a.sum(1, keepdim=True).clamp_min(1e-12)  # each word's map over space
    inside = (a * coverage).sum(1)  # [B, s]
    return (weight * (1 - inside) ** 2).sum() / weight.sum().clamp_min(1.0)
