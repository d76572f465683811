"""Latent updates of any guidance method, for a whole batch (T-SAM eq. 15, and the baselines').

``Guidance`` is built once per sampling call: it picks the cross-attention layers to read (T-SAM's
eq. 6, A&E's 16x16 maps), owns the recorder on them and the method's ``Objective`` (its loss over
the recorded maps). ``update`` is one gradient step: one conditional denoiser pass with the maps
recorded, the loss, and ``z_t' = z_t - alpha_t * grad_z L`` for the images that take it. ``step``
runs a denoising step's updates, refinement included, stopping each image as its method says.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from .adapters import CrossAttentionLayer, ModelAdapter
from .attention import CrossAttentionRecorder
from .diagnostics import Diagnostics, Skip, UpdateRecord
from .methods.base import GuidanceConfig


def select_layers(layers: list[CrossAttentionLayer], config: GuidanceConfig,
                  default: tuple[int, ...] | None = None) -> list[CrossAttentionLayer]:
    """The layers whose maps are averaged (eq. 6): ``config.layers``, else the model family's
    ``default`` (PixArt: blocks 10-18, appendix B.2), else those with ``M`` queries.

    A layer is named (``"up_blocks.1.attentions.0.transformer_blocks.0.attn2"``) or given by its
    index among the denoiser's cross-attention layers (PixArt's block index). Without a layer of
    exactly ``M`` queries, the nearest resolution is used, with a warning.
    """
    if not layers:
        raise ValueError("the denoiser has no cross-attention layers for guidance to read")
    wanted = config.layers if config.layers is not None else default
    if wanted is not None:
        by_name = {layer.name: layer for layer in layers}
        unknown = [n for n in wanted if (n not in by_name if isinstance(n, str) else not 0 <= n < len(layers))]
        if unknown:
            raise ValueError(f"unknown cross-attention layers {unknown}; available: {list(by_name)} "
                             f"(or their indices 0-{len(layers) - 1})")
        chosen = [by_name[n] if isinstance(n, str) else layers[n] for n in wanted]
        if len({(layer.height, layer.width) for layer in chosen}) > 1:
            raise ValueError(f"{type(config).__name__}.layers must all have the same map size at this image size: "
                             + ", ".join(f"{layer.name} {layer.height}x{layer.width}" for layer in chosen))
        return chosen
    chosen = [layer for layer in layers if layer.queries == config.M]
    if chosen:
        return chosen
    nearest = min({layer.queries for layer in layers}, key=lambda q: abs(math.sqrt(q) - math.sqrt(config.M)))
    chosen = [layer for layer in layers if layer.queries == nearest]
    warnings.warn(
        f"no cross-attention layer has M={config.M} queries at this image size; using the nearest, "
        f"{chosen[0].height}x{chosen[0].width} ({nearest} queries)",
        stacklevel=3,
    )
    return chosen


class Guidance:
    """The method's objective, the layers read and their recorder, for one batch of ``len(prompt_index)`` images."""

    def __init__(
        self,
        adapter: ModelAdapter,
        config: GuidanceConfig,
        prompts: list[str],
        prompt_index: list[int],
        height: int,
        width: int,
        diagnostics: Diagnostics,
        tokens: list[list[list[str]]] | None = None,
    ) -> None:
        self.adapter, self.config, self.diagnostics = adapter, config, diagnostics
        self.objective = config.objective(adapter, prompts, prompt_index, tokens, diagnostics)
        layers = select_layers(adapter.cross_attention_layers(height, width), config, adapter.default_layers)
        self.map_size = (layers[0].height, layers[0].width)
        diagnostics.layers = [layer.name for layer in layers]
        diagnostics.map_size = self.map_size
        self.recorder = CrossAttentionRecorder.of(layers)
        self.grad_scale = 2.0**12  # float16 loss scale for the backward (see _latent_gradient)

    @property
    def any_active(self) -> bool:
        return bool(self.objective.active.any())

    def step(self, latents: torch.Tensor, t: torch.Tensor, cond: Any, step: int, updates: int, step_size: float,
             num_inference_steps: int) -> torch.Tensor:
        """Up to ``updates`` updates at denoising step ``step``; each image stops when its method says so."""
        left = self.objective.active.long() * updates  # an image the method cannot act on takes none
        if hasattr(self.objective, "begin_step"):
            self.objective.begin_step(step)
        iteration = 0
        while bool((left > 0).any()):
            latents, record = self.update(latents, t, cond, step, iteration, step_size, left > 0, num_inference_steps)
            left = torch.where(left > 0, self.config.updates_left(step, iteration, record.loss, left, num_inference_steps), 0)
            iteration += 1
        return latents

    def update(self, latents: torch.Tensor, t: torch.Tensor, cond: Any, step: int, iteration: int, step_size: float,
               taking: torch.Tensor | None = None, num_inference_steps: int | None = None) -> tuple[torch.Tensor, UpdateRecord]:
        """``z_t' = z_t - alpha_t * grad_z L(z_t)`` (eq. 15) for the images of the batch that take it."""
        z = latents.detach().requires_grad_(True)
        with torch.enable_grad(), self.recorder.capture():
            self.recorder.run(lambda: self.adapter.forward_cond(z, t, cond))
            A = self.recorder.mean()  # eq. 6: [B, M, s]
            loss, compared = self.objective.loss(A, self.map_size)
            grad = self._latent_gradient(loss, z)

        finite = torch.isfinite(loss) & torch.isfinite(grad).flatten(1).all(1)
        ok = finite & self.objective.active & self.config.should_update(step, iteration, loss, num_inference_steps or step + 1)
        if taking is not None:
            ok &= taking
        new = latents - step_size * torch.where(ok.view(-1, *[1] * (grad.ndim - 1)), grad, 0).to(latents.dtype)  # eq. 15

        record = UpdateRecord(step, iteration, t.detach(), step_size, loss.detach(), ok,
                              None if compared is None else compared.detach(), finite)
        d = self.diagnostics
        d.updates.append(record)
        maps = self.objective.tokens.content_maps(A).detach()
        d.A_first = maps if d.A_first is None else d.A_first
        d.A_last = maps
        return new, record

    def _latent_gradient(self, loss: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``grad_z sum(loss)``. In float16 the backward runs on a scaled loss so that small gradients
        do not flush to zero, backing off (as AMP's GradScaler does) when that overflows."""
        if z.dtype != torch.float16:
            return torch.autograd.grad(loss.sum(), z)[0]
        loss_ok = torch.isfinite(loss)
        while True:
            (grad,) = torch.autograd.grad(loss.sum() * self.grad_scale, z, retain_graph=self.grad_scale > 1)
            grad = grad.float() / self.grad_scale
            overflow = loss_ok & ~torch.isfinite(grad).flatten(1).all(1)
            if self.grad_scale <= 1 or not bool(overflow.any()):
                return grad
            self.grad_scale = max(1.0, self.grad_scale / 16)

    def finish(self) -> None:
        """After sampling: list the skipped updates (one device sync for the whole run), warn once."""
        d = self.diagnostics
        for r in d.updates:
            for b in (~r.finite).nonzero().flatten().tolist():
                reason = "loss is not finite" if not torch.isfinite(r.loss[b]) else "gradient is not finite"
                d.skipped.append(Skip(r.step, r.iteration, b, reason))
        if d.skipped:
            steps = sorted({s.step for s in d.skipped})
            warnings.warn(f"guidance: non-finite loss or gradient at step(s) {steps}; those updates were skipped for "
                          "the affected images and their latents left unchanged (see diagnostics.skipped)", stacklevel=3)


TSAMGuidance = Guidance  # the name before other methods existed
