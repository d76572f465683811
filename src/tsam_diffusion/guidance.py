"""One T-SAM update of the latent for a whole batch (eq. 6, 7, 14, 15).

``TSAMGuidance`` is built once per sampling call: it computes ``T`` for every prompt (eq. 2-3),
picks the cross-attention layers to read (eq. 6) and owns the recorder on them. ``update`` is the
whole method in one function: one conditional denoiser pass with the maps recorded, ``S`` from the
maps, the loss against ``T``, and a gradient step on the latent.
"""
from __future__ import annotations

import math
import warnings

import torch

from .adapters import CrossAttentionLayer, ModelAdapter
from .attention import CrossAttentionRecorder
from .config import TSAMConfig
from .diagnostics import Diagnostics, Skip, UpdateRecord
from .functional import similarity_matrix, text_attention_matrix, tsam_loss


def select_layers(layers: list[CrossAttentionLayer], config: TSAMConfig) -> list[CrossAttentionLayer]:
    """The layers whose maps are averaged in eq. 6: ``config.layers`` by name, else those with ``M`` queries.

    Without a layer of exactly ``M`` queries, the nearest resolution is used, with a warning.
    """
    if not layers:
        raise ValueError("the denoiser has no cross-attention layers for T-SAM to read")
    if config.layers is not None:
        by_name = {layer.name: layer for layer in layers}
        unknown = [n for n in config.layers if n not in by_name]
        if unknown:
            raise ValueError(f"unknown cross-attention layers {unknown}; available: {list(by_name)}")
        chosen = [by_name[n] for n in config.layers]
        if len({(layer.height, layer.width) for layer in chosen}) > 1:
            raise ValueError("TSAMConfig.layers must all have the same map size at this image size: "
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


class TSAMGuidance:
    """T, the layers read and their recorder, for one batch of ``len(prompt_index)`` images."""

    def __init__(
        self,
        adapter: ModelAdapter,
        config: TSAMConfig,
        prompts: list[str],
        prompt_index: list[int],
        height: int,
        width: int,
        diagnostics: Diagnostics,
    ) -> None:
        self.adapter, self.config, self.diagnostics = adapter, config, diagnostics
        device = adapter.device
        texts = adapter.text_attention(prompts)
        T = [text_attention_matrix(t.attentions, t.keep.to(device), bidirectional=adapter.bidirectional, gamma=config.gamma)
             for t in texts]  # eq. 2-3, then ^gamma (eq. 14)
        diagnostics.tokens = [t.tokens for t in texts]
        diagnostics.T = [t.detach() for t in T]

        # Prompts have different token counts: pad to the longest, with lengths for the loss.
        n = max(len(t.tokens) for t in texts)
        idx = torch.as_tensor(prompt_index, device=device)
        lengths = torch.tensor([len(t.tokens) for t in texts], device=device)
        padded_T = torch.zeros(len(texts), n, n, device=device)
        keep = torch.zeros(len(texts), n, dtype=torch.long, device=device)
        for p, (t, text) in enumerate(zip(T, texts)):
            padded_T[p, : t.shape[0], : t.shape[0]] = t
            keep[p, : len(text.keep)] = text.keep.to(device)
        self.T, self.lengths, self.keep = padded_T[idx], lengths[idx], keep[idx]
        self.token_mask = torch.arange(n, device=device) < self.lengths[:, None]  # [B, n]
        self.active = self.lengths >= 2  # one content token: nothing to align, a no-op
        for p, text in enumerate(texts):
            if len(text.tokens) < 2:
                diagnostics.notes.append(f"prompt {p} has {len(text.tokens)} content token(s): T-SAM guidance is a no-op for it")
            if text.truncated:
                diagnostics.notes.append(f"prompt {p} was truncated to the text encoder's limit")

        layers = select_layers(adapter.cross_attention_layers(height, width), config)
        self.map_size = (layers[0].height, layers[0].width)
        diagnostics.layers = [layer.name for layer in layers]
        diagnostics.map_size = self.map_size
        self.recorder = CrossAttentionRecorder({layer.name: layer.module for layer in layers})
        self.grad_scale = 2.0**12  # float16 loss scale for the backward (see _latent_gradient)

    @property
    def any_active(self) -> bool:
        return bool(self.active.any())

    def update(self, latents: torch.Tensor, t: torch.Tensor, cond, step: int, iteration: int, step_size: float) -> tuple[torch.Tensor, UpdateRecord]:
        """``z_t' = z_t - alpha_i * grad_z L(z_t)`` (eq. 15) for every image of the batch at once."""
        cfg = self.config
        z = latents.detach().requires_grad_(True)
        with torch.enable_grad(), self.recorder.capture():
            self.recorder.run(lambda: self.adapter.forward_cond(z, t, cond))
            A = self.recorder.mean()  # eq. 6: [B, M, s]
            A = A.gather(-1, self.keep[:, None, :].expand(-1, A.shape[1], -1)) * self.token_mask[:, None, :]
            S = similarity_matrix(A, *self.map_size, sigma=cfg.sigma, kernel_size=cfg.kernel_size, normalize=cfg.normalize,
                                  center=cfg.center_maps)  # eq. 7
            loss = tsam_loss(self.T, S, variant=cfg.loss, lengths=self.lengths)  # eq. 14
            grad = self._latent_gradient(loss, z)

        finite = torch.isfinite(loss) & torch.isfinite(grad).flatten(1).all(1)
        ok = finite & self.active
        if cfg.loss_threshold is not None:
            ok &= loss > cfg.loss_threshold
        new = latents - step_size * torch.where(ok.view(-1, *[1] * (grad.ndim - 1)), grad, 0).to(latents.dtype)  # eq. 15

        record = UpdateRecord(step, iteration, t.detach(), step_size, loss.detach(), ok, S.detach(), finite)
        d = self.diagnostics
        d.updates.append(record)
        d.A_first = A.detach() if d.A_first is None else d.A_first
        d.A_last = A.detach()
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
            warnings.warn(f"T-SAM: non-finite loss or gradient at step(s) {steps}; those updates were skipped for "
                          "the affected images and their latents left unchanged (see diagnostics.skipped)", stacklevel=3)
