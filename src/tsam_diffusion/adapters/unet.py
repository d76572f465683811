"""Where a diffusers ``UNet2DConditionModel`` keeps its cross-attention layers (SD 1.x/2.x, SDXL)."""
from __future__ import annotations

import re

from diffusers.models.attention_processor import Attention

from .base import CrossAttentionLayer

_BLOCK = re.compile(r"^(down_blocks\.(\d+)|mid_block|up_blocks\.(\d+))\.")


def unet_cross_attention_layers(unet, latent_height: int, latent_width: int) -> list[CrossAttentionLayer]:
    """The UNet's cross-attention modules, each with its query map size for a latent of this size.

    Every down block but the last halves the resolution (ceil, as a stride-2 conv with padding 1
    does), the mid block runs at the lowest one, and the up blocks climb back the same ladder.
    """
    n = len(unet.down_blocks)
    ladder = [(latent_height, latent_width)]
    for _ in range(n - 1):
        h, w = ladder[-1]
        ladder.append(((h + 1) // 2, (w + 1) // 2))
    layers = []
    for name, module in unet.named_modules():
        if not (isinstance(module, Attention) and module.is_cross_attention):
            continue
        m = _BLOCK.match(name)
        if m is None:
            continue
        level = int(m.group(2)) if m.group(2) is not None else n - 1 if m.group(3) is None else n - 1 - int(m.group(3))
        h, w = ladder[level]
        layers.append(CrossAttentionLayer(name, module, h, w))
    return layers
