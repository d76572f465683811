"""``tsam analyze attention``: do similar text embeddings make similar cross-attention maps?

The paper's Figures 2a, 3 and 5 (and, with ``proposition=True``, a check of Proposition 1; with
``text_share=True``, for joint-attention models, ``analysis.text_share``'s measurement). Each
prompt is generated for the seeds with the chosen method (default none), the content tokens' maps
(eq. 6) recorded at the chosen steps (``record_maps``; the images are unchanged). For every pair
of content tokens: the cosine similarity of their text embeddings (``analysis.text.encode``) and
``C``, the cosine similarity of their Gaussian-smoothed maps (eq. 7 before normalising). Per step,
Pearson and Spearman correlation with prompt-resampled 95% intervals, and a scatter plot.

Steps are 1-based here, as in the paper's figures (``t = 1, 21, 50``: step 1 is the first).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..attention import CrossAttentionRecorder
from ..bench.subjects import token_groups
from ..bench.suites import Prompt
from ..functional import map_cosine
from ..guidance import select_layers
from ..methods import resolve_method
from ..viz import token_maps_figure
from . import output
from .pairs import token_pairs
from .proposition import checkable, measured_cosine, predicted_cosine, projection_inputs
from .stats import correlation
from .text import encode
from .text_share import text_share_report, text_share_rows, text_share_summary


def analyze_attention(pipeline: Any, prompts: list[Prompt], out: Path, *, steps: Sequence[int] = (1, 21, 50),
                      seeds: Sequence[int] = (0,), method: Any = None, num_inference_steps: int | None = None,
                      guidance_scale: float | None = None, show: int = 2, proposition: bool = False, text_share: bool = False, model: str = "",
                      bootstrap: int = 1000, progress: bool = True) -> dict[str, Any]:
    """Generate, record maps at ``steps`` (1-based), relate embedding and map similarity; write files to ``out``."""
    from tqdm.auto import tqdm

    adapter = pipeline.adapter
    n_steps, scale = adapter.sampling_settings(num_inference_steps, guidance_scale)
    bad = [s for s in steps if not 1 <= s <= n_steps]
    if bad or not steps:
        raise ValueError(f"--steps must be between 1 and the number of denoising steps ({n_steps}), got "
                         f"{list(steps) or 'none'}")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    prop_rows: list[dict[str, Any]] = []
    share_rows: list[dict[str, Any]] = []
    figures: list[str] = []
    pipeline.set_progress_bar_config(disable=True)
    config = resolve_method(method, adapter.default_preset)
    for k, prompt in enumerate(tqdm(prompts, desc="prompts", unit="prompt", disable=not progress)):
        tokens = token_groups(prompt) if config is not None and config.uses_tokens else None  # A&E, CONFORM: the objects
        result = pipeline(prompt.text, method=config, tokens=tokens, num_inference_steps=n_steps, guidance_scale=scale,
                          num_images_per_prompt=len(seeds), record_maps=[s - 1 for s in steps],
                          generator=[torch.Generator("cpu").manual_seed(s) for s in seeds])
        d = result.diagnostics
        enc = encode(adapter, [prompt.text])[0]
        h, w = d.map_size
        ii, jj = token_pairs(len(enc.tokens))
        for step in steps:
            A = d.maps[step - 1][:, :, : len(enc.tokens)]
            C = map_cosine(A, h, w).numpy()  # [B, n, n]
            for b, seed in enumerate(seeds):
                rows += [{"prompt_id": prompt.id, "seed": seed, "step": step, "token_i": enc.tokens[i],
                          "token_j": enc.tokens[j], "i": int(i), "j": int(j), "embedding_cos": float(enc.E[i, j]),
                          "map_cos": float(C[b, i, j])} for i, j in zip(ii, jj)]
        if k < show:
            for b, seed in enumerate(seeds[:1]):
                for step in steps:
                    fig = token_maps_figure(d.maps[step - 1][b, :, : len(enc.tokens)], h, w, enc.tokens,
                                            image=result.images[b], title=f"{prompt.text} (seed {seed}, step {step})")
                    figures += output.save_figure(fig, out, f"maps_{k}_s{seed}_step{step}")
        if proposition:
            prop_rows += proposition_rows(pipeline, prompt, seeds, n_steps)
        if text_share:
            share_rows += text_share_rows(pipeline, prompt, seeds, n_steps)
    if not rows:
        raise ValueError("no token pairs: every prompt has a single content token")

    summary: dict[str, Any] = {"model": model, "adapter": type(adapter).__name__, "prompts": len(prompts),
                               "seeds": list(seeds), "steps": list(steps), "num_inference_steps": n_steps,
                               "method": None if method is None else str(method), "per_step": {}}
    for step in steps:
        sel = [r for r in rows if r["step"] == step]
        x, y = [r["embedding_cos"] for r in sel], [r["map_cos"] for r in sel]
        stats = correlation(x, y, [r["prompt_id"] for r in sel], n=bootstrap)
        summary["per_step"][str(step)] = stats
        figures += output.save_figure(
            output.scatter(x, y, "text embedding cosine similarity", "cross-attention map cosine similarity C",
                           f"step {step}: Pearson {stats['pearson']:.2f}, Spearman {stats['spearman']:.2f}"),
            out, f"scatter_step{step}")
    output.write_csv(out / "pairs.csv", rows)
    if text_share:
        summary["text_share"] = text_share_summary(share_rows)
        output.write_csv(out / "text_share.csv", share_rows)
    if proposition:
        summary["proposition"] = _proposition_summary(prop_rows, bootstrap)
        output.write_csv(out / "proposition.csv", prop_rows)
        if prop_rows:
            figures += output.save_figure(
                output.scatter([r["predicted"] for r in prop_rows], [r["measured"] for r in prop_rows],
                               "Proposition 1: exp(-(k_i-k_j)^T W^2 (k_i-k_j) / 2)", "measured cos(A_i, A_j)",
                               "step 1, per layer and head"), out, "proposition")
    summary["figures"] = figures
    output.write_json(out / "summary.json", summary)
    return summary


@torch.no_grad()
def proposition_rows(pipeline: Any, prompt: Prompt, seeds: Sequence[int], num_inference_steps: int) -> list[dict[str, Any]]:
    """Measured and predicted map cosine of every content-token pair, per layer and head, at the first step."""
    adapter = pipeline.adapter
    height, width = adapter.sampling_size(*adapter.default_size())
    layers = select_layers(adapter.cross_attention_layers(height, width),
                           resolve_method("default", adapter.default_preset), adapter.default_layers)
    layers = [layer for layer in layers if layer.recording is None and checkable(layer.module)]  # plain cross-attention
    if not layers:
        return []
    text = adapter.text_attention([prompt.text])[0]
    keep = text.keep.cpu()
    ii, jj = token_pairs(len(keep))
    if not len(ii):
        return []
    i, j = keep[torch.as_tensor(ii)], keep[torch.as_tensor(jj)]
    cond = adapter.encode_prompt([prompt.text] * len(seeds), None, 1, 1.0, (height, width))
    timesteps, _ = adapter.timesteps(num_inference_steps, height, width)
    latents = adapter.prepare_latents(len(seeds), height, width,
                                      [torch.Generator("cpu").manual_seed(s) for s in seeds], None)
    modules = {layer.name: layer.module for layer in layers}
    recorder = CrossAttentionRecorder.of(layers, keep_heads=True)
    with torch.no_grad(), recorder.install(), projection_inputs(modules) as inputs, recorder.capture():
        adapter.before_loop()
        recorder.run(lambda: adapter.forward_cond(latents, timesteps[0], cond))
    rows = []
    for layer, probs in zip(layers, recorder.maps):
        q, k = inputs[layer.name]["q"], inputs[layer.name]["k"]
        for b, seed in enumerate(seeds):
            pred = predicted_cosine(layer.module, q[b], k[b], i, j)
            meas = measured_cosine(probs[b].cpu(), i, j)
            for h in range(pred.shape[0]):
                rows += [{"prompt_id": prompt.id, "seed": seed, "layer": layer.name, "head": h,
                          "token_i": text.tokens[a], "token_j": text.tokens[c], "predicted": float(p), "measured": float(m)}
                         for a, c, p, m in zip(ii, jj, pred[h].tolist(), meas[h].tolist())]
    return rows


def _proposition_summary(rows: list[dict[str, Any]], bootstrap: int) -> dict[str, Any]:
    if not rows:
        return {"note": "no layer to check: every layer read normalises queries or keys, or is joint attention "
                        "(SD3, Flux: Proposition 1 is stated for plain cross-attention)"}
    pred = np.array([r["predicted"] for r in rows])
    meas = np.array([r["measured"] for r in rows])
    stats = correlation(pred, meas, [r["prompt_id"] for r in rows], n=bootstrap)
    stats["mean_abs_error"] = float(np.abs(pred - meas).mean())
    stats["mean_predicted"], stats["mean_measured"] = float(pred.mean()), float(meas.mean())
    return stats


def report(summary: dict[str, Any]) -> str:
    lines = [f"{summary['model']} ({summary['adapter']}): {summary['prompts']} prompts x {len(summary['seeds'])} seeds, "
             f"{summary['num_inference_steps']} steps"]
    for step, s in summary["per_step"].items():
        lines.append(f"step {step:>3s}: {s['n']} token pairs, Pearson {output.fmt_ci(s['pearson'], s['pearson_ci'])}, "
                     f"Spearman {output.fmt_ci(s['spearman'], s['spearman_ci'])}")
    p = summary.get("proposition")
    if p and "pearson" in p:
        lines.append(f"Proposition 1 at step 1: Pearson {output.fmt_ci(p['pearson'], p['pearson_ci'])}, mean |error| "
                     f"{p['mean_abs_error']:.3f} (predicted {p['mean_predicted']:.3f}, measured {p['mean_measured']:.3f})")
    elif p:
        lines.append(f"Proposition 1: {p['note']}")
    if "text_share" in summary:
        lines += text_share_report(summary["text_share"])
    return "\n".join(lines)
