"""``tsam analyze text``: do text embeddings, or the text encoder's self-attention, know which words bind?

The paper's Figures 2b, 2c, 6a and 6b on any supported model and templated suite. Per prompt:

- ``E``: the cosine similarity of the content tokens' text embeddings: by default the states the
  denoiser's cross-attention keys are made from (``Conditioning.cond``; SDXL: both encoders'
  concatenated), or with ``embeddings="encoder-output"`` the text encoder's last hidden states
  (the same for CLIP in SD 1.x and T5 in PixArt; not for tsam-mini v2, whose UNet reads MiniLM's input
  embeddings);
- ``T'``: eq. 2-3's self-attention matrix (layers and heads averaged, special tokens and padding
  removed, rows re-normalised; appendix B.2's ``tril((T' + T'^T) / 2)`` for bidirectional encoders);
- the attention sink: the self-attention (layers and heads averaged) that content tokens give to the
  sink token, the first position that is not a content token (CLIP's ``<|startoftext|>``, BERT's
  ``[CLS]``; T5 adds no BOS, so its ``</s>``), against what they give each other token they can see
  (padding and, for causal encoders, later positions excluded).

Labelled word pairs (``analysis.pairs``) give the distributions of ``E`` and ``T'`` per label and
their separation (AUC of bound against unbound with a prompt-resampled 95% interval, KS).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bench.stats import bootstrap_ci
from ..bench.subjects import token_groups
from ..bench.suites import Prompt
from ..functional import text_attention_matrix
from . import output
from .pairs import BOUND, LABELS, pair_value, word_pairs
from .stats import separation


@dataclass
class Encoded:
    """One prompt through the text encoder."""

    tokens: list[str]
    E: np.ndarray  # [n, n] cosine similarity of the content tokens' embeddings
    T: np.ndarray  # [n, n] T' (eq. 2-3, gamma 1)
    sink: str  # which position is the sink, for the report
    sink_probs: np.ndarray  # [n] attention of each content token to the sink
    other_probs: np.ndarray  # attention of content tokens to every other position each can see


EMBEDDINGS = ("denoiser", "encoder-output")


@torch.no_grad()
def encode(adapter: Any, prompts: list[str], embeddings: str = "denoiser") -> list[Encoded]:
    """``E``, ``T'`` and the sink attention of each prompt (one encoder pass for the batch)."""
    if embeddings not in EMBEDDINGS:
        raise ValueError(f"embeddings must be one of {', '.join(EMBEDDINGS)}, got {embeddings!r}")
    texts = adapter.text_attention(prompts)
    cond = adapter.encode_prompt(prompts, None, 1, 1.0).cond.float() if embeddings == "denoiser" else None
    out = []
    for p, text in enumerate(texts):
        states = cond[p] if cond is not None else text.hidden.float()
        e = torch.nn.functional.normalize(states[text.keep.to(states.device)], dim=-1)
        T = text_attention_matrix(text.attentions, text.keep.to(text.attentions.device), bidirectional=adapter.bidirectional)
        a = text.attentions.float().mean(dim=(0, 1)).cpu()  # [N, N], layers and heads averaged
        rows = text.keep.cpu()
        content = set(rows.tolist())
        sink = next(k for k in range(a.shape[0]) if k not in content)
        visible = a[rows] > 0  # masked padding and (causal encoders) later positions get exactly 0
        if not adapter.bidirectional:
            visible = torch.arange(a.shape[0])[None, :] <= rows[:, None]
        visible[:, sink] = False
        out.append(Encoded(text.tokens, (e @ e.T).cpu().numpy(), T.float().cpu().numpy(),
                           _token_name(adapter, prompts[p], sink), a[rows, sink].numpy(), a[rows][visible].numpy()))
    return out


def _token_name(adapter: Any, prompt: str, position: int) -> str:
    """``<|startoftext|>`` / ``[CLS]`` / ``</s>``: the tokenizer's piece at ``position`` of the prompt."""
    tokenizer = getattr(adapter.pipe, "tokenizer", None)
    try:
        return f"{tokenizer.convert_ids_to_tokens(tokenizer(prompt)['input_ids'][position])} (position {position})"
    except (AttributeError, IndexError, TypeError, KeyError):
        return f"position {position}"


def analyze_text(adapter: Any, prompts: list[Prompt], out: Path, *, show: int = 3, batch_size: int = 32,
                 model: str = "", bootstrap: int = 1000, embeddings: str = "denoiser") -> dict[str, Any]:
    """Run the text analysis on ``prompts``, write its files to ``out``, return the summary."""
    out.mkdir(parents=True, exist_ok=True)
    labelled = [(p, token_groups(p)) for p in prompts]
    usable = [(p, g) for p, g in labelled if g]
    pair_rows: list[dict[str, Any]] = []
    sink_rows: list[dict[str, Any]] = []
    shown: list[str] = []
    skipped: list[str] = []
    for start in range(0, len(usable), batch_size):
        chunk = usable[start: start + batch_size]
        for (prompt, groups), enc in zip(chunk, encode(adapter, [p.text for p, _ in chunk], embeddings)):
            try:
                pairs = word_pairs(groups, adapter.word_pieces, enc.tokens, prompt.text)
            except ValueError:
                skipped.append(prompt.id)  # a word the tokenizer does not show as such
                continue
            for pair in pairs:
                pair_rows.append({"prompt_id": prompt.id, "prompt": prompt.text, "label": pair.label,
                                  "first": pair.first, "second": pair.second, "distance": pair.rows[0] - pair.cols[-1],
                                  "embedding_cos": pair_value(enc.E, pair), "t_prime": pair_value(enc.T, pair)})
            ratio = float(enc.sink_probs.mean() / max(enc.other_probs.mean(), 1e-12))
            sink_rows.append({"prompt_id": prompt.id, "prompt": prompt.text, "sink": enc.sink,
                              "sink_mean": float(enc.sink_probs.mean()), "other_mean": float(enc.other_probs.mean()),
                              "ratio": ratio, "_sink": enc.sink_probs, "_other": enc.other_probs})
            if len(shown) < show:
                output.save_figure(output.heatmaps([enc.E, enc.T ** 3], enc.tokens, ["text embedding cosine (E)", "T' ** 3 (off-diagonal scale)"],
                                                   prompt.text, off_diagonal_scale=[False, True]), out, f"heatmap_{len(shown)}")
                shown.append(f"heatmap_{len(shown)}")
    if not pair_rows:
        raise ValueError("no prompt of the selection names its objects in a form the analysis can label (a list of "
                         "'[colour] noun' objects, or ShapesBench's spec); choose a templated suite such as cc500, "
                         "ae-animals-objects or shapes-dev")

    labels = np.array([r["label"] for r in pair_rows])
    groups = [r["prompt_id"] for r in pair_rows]
    summary: dict[str, Any] = {"model": model, "adapter": type(adapter).__name__, "embeddings": embeddings,
                               "prompts": len(sink_rows),
                               "prompts_skipped": skipped, "pairs": {k: int((labels == k).sum()) for k in LABELS},
                               "figures": [f"{h}.{ext}" for h in shown for ext in ("png", "svg")]}
    for measure, name, figure_name in (("embedding_cos", "text embedding cosine similarity", "embedding_cos"),
                                       ("t_prime", "self-attention T'_ij", "t_prime")):
        values = np.array([r[measure] for r in pair_rows])
        summary[measure] = {"bound_vs_unbound": separation(values, labels == BOUND, groups, n=bootstrap)}
        for other in LABELS[1:]:
            sel = (labels == BOUND) | (labels == other)
            summary[measure][f"bound_vs_{other}"] = separation(values[sel], labels[sel] == BOUND,
                                                               [g for g, s in zip(groups, sel) if s], n=bootstrap)
        fig = output.histograms({k: values[labels == k] for k in LABELS}, name,
                                f"{name}: AUC bound > unbound {summary[measure]['bound_vs_unbound']['auc']:.3f}")
        summary["figures"] += output.save_figure(fig, out, figure_name)

    ratios = [r["ratio"] for r in sink_rows]
    mean, lo, hi = bootstrap_ci(ratios, n=bootstrap)
    sink_all = np.concatenate([r.pop("_sink") for r in sink_rows])
    other_all = np.concatenate([r.pop("_other") for r in sink_rows])
    summary["sink"] = {"token": sorted({r["sink"] for r in sink_rows}), "ratio_mean": mean, "ratio_ci": [lo, hi],
                       "sink_prob_mean": float(sink_all.mean()), "other_prob_mean": float(other_all.mean())}
    fig = output.histograms({"sink": sink_all, "other": other_all}, "self-attention probability",
                            f"attention to the sink token vs the others: {mean:.1f}x on average", log_x=True)
    summary["figures"] += output.save_figure(fig, out, "sink")

    output.write_csv(out / "pairs.csv", pair_rows)
    output.write_csv(out / "sink.csv", sink_rows)
    output.write_json(out / "summary.json", summary)
    return summary


def report(summary: dict[str, Any]) -> str:
    """Plain-text lines for the terminal."""
    lines = [f"{summary['model']} ({summary['adapter']}), {summary['embeddings']} embeddings: {summary['prompts']} prompts, pairs "
             + ", ".join(f"{k} {v}" for k, v in summary["pairs"].items())]
    for measure in ("embedding_cos", "t_prime"):
        for key, s in summary[measure].items():
            lines.append(f"{measure:14s} {key:32s} AUC {output.fmt_ci(s['auc'], s['auc_ci'])}  KS {s['ks']:.3f}  "
                         f"mean {s['mean_positive']:.4f} vs {s['mean_negative']:.4f}")
    s = summary["sink"]
    lines.append(f"sink ({', '.join(s['token'])}): {output.fmt_ci(s['ratio_mean'], s['ratio_ci'], 1)} times the "
                 f"attention of another token (per-prompt mean ratio)")
    return "\n".join(lines)
