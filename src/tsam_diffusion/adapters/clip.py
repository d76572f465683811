"""CLIP text encoders (SD 1.x/2.x, SDXL, SD3): their self-attention over a prompt's content tokens."""
from __future__ import annotations

from typing import Any

import torch

from .base import PromptText, eager_attention, truncated


def clip_text_attention(tok: Any, enc: Any, prompts: list[str], device: torch.device) -> list[PromptText]:
    """A CLIP text encoder's self-attention per prompt (padded to 77 as the pipelines do), content
    tokens without BOS, EOS and padding."""
    batch = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    full_lengths = [len(ids) for ids in tok(prompts, truncation=False).input_ids]
    mask = batch.attention_mask.to(device) if getattr(enc.config, "use_attention_mask", False) else None
    with torch.no_grad(), eager_attention(enc):
        out = enc(batch.input_ids.to(device), attention_mask=mask, output_attentions=True)
    attn = torch.stack(out.attentions, dim=1)  # [P, L, H, N, N]
    texts = []
    for p, ids in enumerate(batch.input_ids.tolist()):
        eos = ids.index(tok.eos_token_id, 1) if tok.eos_token_id in ids[1:] else len(ids)
        keep = torch.arange(1, eos)  # without BOS, EOS and padding
        tokens = [t.replace("</w>", "") for t in tok.convert_ids_to_tokens(ids[1:eos])]
        texts.append(PromptText(tokens, keep, attn[p], truncated(p, full_lengths[p], tok.model_max_length, len(tokens)),
                                out.last_hidden_state[p]))
    return texts


def averaged_clip_attention(encoders: list[tuple[Any, Any]], prompts: list[str], device: torch.device) -> list[PromptText]:
    """Several CLIP encoders reading the same token positions (SDXL, SD3): per prompt, each encoder's
    maps averaged over its layers and heads, then over the encoders (``attentions`` ``[E, 1, N, N]``);
    hidden states concatenated by feature, as the pipelines concatenate the encoders' states."""
    per_encoder = [clip_text_attention(tok, enc, prompts, device) for tok, enc in encoders]
    texts = []
    for p, first in enumerate(per_encoder[0]):
        maps = torch.stack([enc_texts[p].attentions.mean(dim=(0, 1)) for enc_texts in per_encoder])[:, None]
        hidden = [enc_texts[p].hidden for enc_texts in per_encoder]
        texts.append(PromptText(first.tokens, first.keep, maps, first.truncated,
                                torch.cat(hidden, dim=-1) if all(h is not None for h in hidden) else None))
    return texts
