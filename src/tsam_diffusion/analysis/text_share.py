"""Joint attention (SD3, Flux): does renormalising over the text keys change the maps' cosines?

``A`` for a joint-attention model is each image query's softmax over the text keys only, i.e. the
joint probabilities ``P_ai = m_a A_ai`` divided by the query's text share ``m_a = sum_i P_ai``
(``adapters.joint``, ``docs/design/mmdit.md``). Where ``m_a`` is nearly constant over image positions,
the renormalisation changes no cosine between token maps; where it is not, the raw maps mix text
relevance with how much a position looks at text at all. ``text_share_rows`` measures both, at the
first denoising step of each prompt and seed, for every block guidance reads: the text share's mean
and coefficient of variation over image positions, and the content-token pairs' map cosines (eq. 7's
``C``) from the renormalised and from the raw maps. The design note's open question is answered by
these numbers on real weights (``tsam analyze attention --text-share``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..attention import CrossAttentionRecorder
from ..bench.suites import Prompt
from ..functional import map_cosine
from ..guidance import select_layers
from ..methods import resolve_method
from .pairs import token_pairs
from .stats import mean_or_nan


@torch.no_grad()
def text_share_rows(pipeline: Any, prompt: Prompt, seeds: Sequence[int], num_inference_steps: int) -> list[dict[str, Any]]:
    """One row per (seed, block read): text share mean / CV and the pairs' renormalised vs raw map cosines."""
    adapter = pipeline.adapter
    height, width = adapter.sampling_size(*adapter.default_size())
    layers = [layer for layer in select_layers(adapter.cross_attention_layers(height, width),
                                               resolve_method("default", adapter.default_preset), adapter.default_layers)
              if layer.recording is not None]
    if not layers:
        return []
    text = adapter.text_attention([prompt.text])[0]
    keep = text.keep.to(adapter.device)
    ii, jj = token_pairs(len(keep))
    cond = adapter.encode_prompt([prompt.text] * len(seeds), None, 1, 1.0, (height, width))
    timesteps, _ = adapter.timesteps(num_inference_steps, height, width)
    latents = adapter.prepare_latents(len(seeds), height, width, [torch.Generator("cpu").manual_seed(s) for s in seeds], None)
    recorder = CrossAttentionRecorder.of(layers, keep_heads=True)
    recorder.extra_wanted = {"text_share"}
    with recorder.install(), recorder.capture():
        adapter.before_loop()
        recorder.run(lambda: adapter.forward_cond(latents, timesteps[0], cond))
    rows = []
    h, w = layers[0].height, layers[0].width
    for layer, A, m in zip(layers, recorder.maps, recorder.extras["text_share"]):  # [B, H, Ni, Nt], [B, H, Ni]
        renorm = A.float().mean(1)[..., keep]  # eq. 6 as guidance reads it, content tokens
        raw = (A.float() * m.float()[..., None]).mean(1)[..., keep]  # the joint probabilities themselves
        c_renorm, c_raw = map_cosine(renorm, h, w).cpu(), map_cosine(raw, h, w).cpu()
        share = m.float().mean(1).cpu()  # [B, Ni], heads averaged
        for b, seed in enumerate(seeds):
            a, r = c_renorm[b, ii, jj].numpy(), c_raw[b, ii, jj].numpy()
            rows.append({"prompt_id": prompt.id, "seed": seed, "layer": layer.name,
                         "text_share_mean": float(share[b].mean()),
                         "text_share_cv": float(share[b].std() / share[b].mean().clamp_min(1e-12)),
                         "pairs": len(a), "cos_renormalised": mean_or_nan(a), "cos_raw": mean_or_nan(r),
                         "cos_abs_diff_mean": mean_or_nan(np.abs(a - r)),
                         "cos_abs_diff_max": float(np.abs(a - r).max()) if len(a) else float("nan")})
    return rows


def text_share_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per block read: means over prompts and seeds; overall: the largest cosine change seen."""
    if not rows:
        return {"note": "no joint-attention layer read: the text share is defined for SD3 and Flux"}
    per_layer = {}
    for name in dict.fromkeys(r["layer"] for r in rows):
        sel = [r for r in rows if r["layer"] == name]
        per_layer[name] = {k: mean_or_nan([r[k] for r in sel]) for k in
                           ("text_share_mean", "text_share_cv", "cos_renormalised", "cos_raw", "cos_abs_diff_mean")}
    return {"per_layer": per_layer, "cos_abs_diff_max": max(r["cos_abs_diff_max"] for r in rows),
            "cos_abs_diff_mean": mean_or_nan([r["cos_abs_diff_mean"] for r in rows])}


def text_share_report(summary: dict[str, Any]) -> list[str]:
    if "per_layer" not in summary:
        return [f"text share: {summary['note']}"]
    lines = [f"text share (step 1): renormalising over the text keys changes the pairs' map cosines by "
             f"{summary['cos_abs_diff_mean']:.3f} on average, at most {summary['cos_abs_diff_max']:.3f}"]
    lines += [f"  {name}: share {v['text_share_mean']:.3f} (CV {v['text_share_cv']:.2f}), cos {v['cos_renormalised']:.3f} "
              f"renormalised vs {v['cos_raw']:.3f} raw" for name, v in summary["per_layer"].items()]
    return lines
