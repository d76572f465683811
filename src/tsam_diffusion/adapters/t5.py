"""T5 text encoders (PixArt, SD3's third encoder, FLUX.1): their self-attention over a prompt's content tokens."""
from __future__ import annotations

from typing import Any

import torch

from .base import PromptText, eager_attention, truncated


def t5_text_attention(tok: Any, enc: Any, texts: list[str], limit: int, device: torch.device, *, masked: bool = True,
                      offset: int = 0) -> list[PromptText]:
    """A T5 encoder's self-attention per prompt over its real tokens before ``</s>`` (T5 has no BOS).

    ``masked``: the pipeline passes the attention mask (PixArt), so padding to the batch's longest
    prompt leaves the real tokens' attention unchanged; otherwise (SD3, Flux) the encoder sees the
    padding as the pipeline runs it, padded to ``limit``. ``offset``: where the T5 tokens start in
    the denoiser's text sequence (SD3: after the 77 CLIP positions)."""
    padding = dict(padding="longest") if masked else dict(padding="max_length")
    batch = tok(texts, **padding, max_length=limit, truncation=True, add_special_tokens=True, return_tensors="pt")
    full_lengths = [len(ids) for ids in tok(texts, truncation=False).input_ids]
    mask = batch.attention_mask.to(device) if masked else None
    with torch.no_grad(), eager_attention(enc):
        out = enc(batch.input_ids.to(device), attention_mask=mask, output_attentions=True)
    attn = torch.stack(out.attentions, dim=1)  # [P, L, H, N, N]
    result = []
    for p, ids in enumerate(batch.input_ids.tolist()):
        n = int(batch.attention_mask[p].sum())
        end = n - 1 if ids[n - 1] == tok.eos_token_id else n  # without </s> and padding
        tokens = [t.lstrip("▁") or t for t in tok.convert_ids_to_tokens(ids[:end])]
        result.append(PromptText(tokens, torch.arange(end) + offset, attn[p], truncated(p, full_lengths[p], limit, end),
                                 out.last_hidden_state[p]))
    return result
