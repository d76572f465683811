"""Where tsam-mini's cross-attention looks: does a word's map sit on the object it names?

``tsam mini probe`` renders ShapesWorld scenes (their object masks known exactly), noises each to
several levels of the model's own schedule, runs one conditional denoiser pass per batch, and reads
the cross-attention maps of the layers T-SAM reads (eq. 6: heads and layers averaged, the layers
of the model's preset's ``M``). Per word that names an object (its shape word, and its colour word
where the caption names one):

- *localisation*: the share of the word's (spatially normalised) map that falls on its object,
  divided by the object's share of the image, ``sum_m a_m c_m / mean_m c_m`` with ``a`` the map
  normalised to sum 1 and ``c`` the object's coverage of each map cell. A uniform map scores 1.0;
  a map that is exactly a binary mask scores ``1 / area``; it cannot exceed ``1 / area``;
- *cosines* between raw maps: the shape words of different objects (``shape/shape``; low is
  separated), a colour word and its own shape word (``colour/own``; high is bound), a colour word
  and another object's shape word (``colour/other``).

Results per noise level and template, as a table and as JSON. This is the figure that tells
whether attention control can act on a model at all: on SD the maps outline their objects; on a
model whose maps are uniform no method that steers them can show an effect.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .world import TEMPLATES, Scene, coverage, render, sample_example

if TYPE_CHECKING:  # torch is imported where it is used: the CLI reads LEVELS without it
    import torch

LEVELS: tuple[float, ...] = (0.9, 0.7, 0.5, 0.3)
"""Noise levels as fractions of the training schedule (t = level * (T - 1)); T-SAM updates in the first half."""
MEASURES = ("loc/shape", "loc/colour", "loc/all", "cos/shape-shape", "cos/colour-own", "cos/colour-other")


def localisation(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``sum_m a_m c_m / mean_m c_m`` over the last dim: ``maps`` non-negative ``[..., M]`` (normalised
    here to sum 1), ``masks`` the object's coverage ``[..., M]`` in [0, 1]. Uniform maps give 1."""
    a = maps.float() / maps.float().sum(-1, keepdim=True).clamp_min(1e-12)
    c = masks.float()
    return (a * c).sum(-1) / c.mean(-1).clamp_min(1e-12)


def map_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of two maps over the last dim."""
    import torch
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-12)


def object_masks(scene: Scene, map_size: tuple[int, int]) -> torch.Tensor:
    """Each object's pixel coverage averaged over the cells of a ``map_size`` grid: ``[objects, M]``."""
    import torch
    h, w = map_size
    if scene.width % h or scene.width % w:
        raise ValueError(f"map size {map_size} does not divide the {scene.width}px image")
    out = [coverage(o, scene.width).reshape(h, scene.width // h, w, scene.width // w).mean((1, 3)).ravel()
           for o in scene.objects]
    return torch.from_numpy(np.stack(out))


@dataclass(frozen=True)
class ProbeScene:
    """A rendered scene, its caption, and which caption word names which object."""

    template: str
    scene: Scene
    caption: str
    spec: tuple[tuple[str, str | None], ...]


def probe_scenes(templates: Sequence[str], per_template: int, seed: int = 0) -> list[ProbeScene]:
    """``per_template`` test-split scenes of each template, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for template in templates:
        if template not in TEMPLATES:
            raise ValueError(f"unknown template {template!r}; valid: {', '.join(TEMPLATES)}")
        for _ in range(per_template):
            scene, text, spec = sample_example(rng, template, split="test")
            out.append(ProbeScene(template, scene, text, tuple(spec)))
    return out


def word_positions(tokens: list[str], spec: Sequence[tuple[str, str | None]]) -> list[tuple[int | None, int | None]]:
    """Per object ``(index of its shape word, index of its colour word or None)`` among ``tokens``
    (the content tokens T-SAM sees); ``None`` where the word is not one token of its own."""
    def find(word: str | None) -> int | None:
        hits = [i for i, tok in enumerate(tokens) if tok == word]
        return hits[0] if word is not None and len(hits) == 1 else None

    return [(find(shape), find(colour)) for shape, colour in spec]


def scene_measures(A: torch.Tensor, masks: torch.Tensor, words: list[tuple[int | None, int | None]]) -> dict[str, list[float]]:
    """The probe's values for one scene: ``A`` ``[M, n]`` maps of its content tokens, ``masks``
    ``[objects, M]``, ``words`` from ``word_positions``."""
    values: dict[str, list[float]] = {k: [] for k in MEASURES}
    for k, (shape, colour) in enumerate(words):
        for kind, j in (("shape", shape), ("colour", colour)):
            if j is not None:
                loc = float(localisation(A[:, j], masks[k]))
                values[f"loc/{kind}"].append(loc)
                values["loc/all"].append(loc)
        if shape is not None and colour is not None:
            values["cos/colour-own"].append(float(map_cosine(A[:, colour], A[:, shape])))
        for other, (other_shape, _) in enumerate(words):
            if other == k or other_shape is None:
                continue
            if shape is not None and other < k:
                values["cos/shape-shape"].append(float(map_cosine(A[:, shape], A[:, other_shape])))
            if colour is not None:
                values["cos/colour-other"].append(float(map_cosine(A[:, colour], A[:, other_shape])))
    return values


def cross_attention_maps(adapter: Any, layers: dict[str, Any], x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
    """``A`` of eq. 6 (``[B, M, s]``, float32) from one conditional pass of the denoiser on ``x`` at ``t``."""
    import torch

    from ..attention import CrossAttentionRecorder

    recorder = CrossAttentionRecorder(layers)
    with torch.no_grad(), recorder.install(), recorder.capture():
        recorder.run(lambda: adapter.forward_cond(x, t, cond))
        return recorder.mean()


def run_probe(
    pipe: Any,
    *,
    levels: Sequence[float] = LEVELS,
    templates: Sequence[str] = tuple(TEMPLATES),
    per_template: int = 16,
    seed: int = 0,
    maps: Callable[..., "torch.Tensor"] = cross_attention_maps,
) -> dict[str, Any]:
    """The probe on a ``TSAMPipeline`` (or a pipeline it wraps); see the module docstring.

    Returns ``{"levels", "templates", "layers", "map_size", "rows": [{level, t, template, scenes,
    <measure>: mean, <measure>/n: count}], "summary": {...}}``; ``summary`` averages each measure
    over the levels T-SAM updates at (>= 0.5) and over all templates.
    """
    import torch

    from ..config import TSAMConfig
    from ..guidance import select_layers
    from ..pipeline import TSAMPipeline

    if not levels or any(not 0 < lv <= 1 for lv in levels):
        raise ValueError(f"noise levels must be in (0, 1], got {list(levels)}")
    if per_template < 1:
        raise ValueError(f"scenes per template must be >= 1, got {per_template}")
    tp = pipe if isinstance(pipe, TSAMPipeline) else TSAMPipeline(pipe)
    adapter = tp.adapter
    height, width = adapter.default_size()
    config = TSAMConfig.preset(adapter.default_preset)
    chosen = select_layers(adapter.cross_attention_layers(height, width), config)
    map_size = (chosen[0].height, chosen[0].width)
    layers = {layer.name: layer.module for layer in chosen}
    scheduler = tp.pipe.scheduler
    steps = scheduler.config.num_train_timesteps
    scenes = probe_scenes(templates, per_template, seed)
    generator = torch.Generator().manual_seed(seed)

    rows = []
    for template in templates:
        batch = [s for s in scenes if s.template == template]
        captions = [s.caption for s in batch]
        texts = adapter.text_attention(captions)
        cond = adapter.encode_prompt(captions, None, 1, 1.0)
        x0 = torch.from_numpy(np.stack([render(s.scene) for s in batch])).permute(0, 3, 1, 2).float() / 127.5 - 1
        x0 = x0.to(adapter.device, adapter.dtype)
        masks = [object_masks(s.scene, map_size) for s in batch]
        words = [word_positions(text.tokens, s.spec) for text, s in zip(texts, batch)]
        for level in levels:
            t = torch.tensor(int(round(level * (steps - 1))), device=adapter.device)
            noise = torch.randn(x0.shape, generator=generator).to(x0)
            A = maps(adapter, layers, scheduler.add_noise(x0, noise, t), t, cond).float().cpu()
            values: dict[str, list[float]] = {k: [] for k in MEASURES}
            for b, text in enumerate(texts):
                content = A[b][:, text.keep]  # [M, n]: the content tokens' maps
                for k, v in scene_measures(content, masks[b], words[b]).items():
                    values[k] += v
            row: dict[str, Any] = {"level": level, "t": int(t), "template": template, "scenes": len(batch)}
            for k, v in values.items():
                row[k] = float(np.mean(v)) if v else None
                row[f"{k}/n"] = len(v)
            rows.append(row)
    return {"levels": list(levels), "templates": list(templates), "per_template": per_template, "seed": seed,
            "layers": list(layers), "map_size": list(map_size), "rows": rows, "summary": summarise(rows)}


def summarise(rows: list[dict[str, Any]], min_level: float = 0.5) -> dict[str, Any]:
    """Each measure averaged (weighted by its counts) over the rows at levels >= ``min_level`` (where
    T-SAM updates), and per level over all templates."""
    def mean(selected: list[dict[str, Any]], k: str) -> float | None:
        pairs = [(r[k], r[f"{k}/n"]) for r in selected if r[k] is not None]
        total = sum(n for _, n in pairs)
        return sum(v * n for v, n in pairs) / total if total else None

    levels = sorted({r["level"] for r in rows}, reverse=True)
    early = [r for r in rows if r["level"] >= min_level]
    return {"update_levels": {k: mean(early, k) for k in MEASURES},
            "per_level": {str(lv): {k: mean([r for r in rows if r["level"] == lv], k) for k in MEASURES} for lv in levels}}


def format_table(result: dict[str, Any]) -> str:
    """The probe as a text table: one row per (level, template), then the per-level means."""
    def f(x: float | None) -> str:
        return "   n/a" if x is None or not math.isfinite(x) else f"{x:6.3f}"

    head = f"{'level':>5} {'t':>4} {'template':<11}" + "".join(f" {k:>16}" for k in MEASURES)
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        lines.append(f"{r['level']:>5.2f} {r['t']:>4} {r['template']:<11}" + "".join(f" {f(r[k]):>16}" for k in MEASURES))
    lines.append("-" * len(head))
    for level, values in result["summary"]["per_level"].items():
        lines.append(f"{float(level):>5.2f} {'':>4} {'all':<11}" + "".join(f" {f(values[k]):>16}" for k in MEASURES))
    values = result["summary"]["update_levels"]
    lines.append(f"{'>=0.5':>5} {'':>4} {'all':<11}" + "".join(f" {f(values[k]):>16}" for k in MEASURES))
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    from ..files import write_text

    return write_text(path, json.dumps(result, indent=2) + "\n")
