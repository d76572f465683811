"""What tsam-mini's cross-attention reads of its frozen text encoder (no torch import: the CLI uses it)."""
from __future__ import annotations

from dataclasses import dataclass

SOURCES = ("last", "embeddings", "layer1", "layer2", "layer3", "layer4", "layer5")


@dataclass(frozen=True)
class TextContext:
    """What the UNet's cross-attention reads of the frozen encoder (the keys and values of every
    cross-attention layer).

    ``source``: ``"last"`` (the last layer's hidden states: every token carries the whole caption;
    the bundled model), ``"embeddings"`` (the encoder's input embeddings, word + position, before any
    self-attention: each token carries only itself) or ``"layerK"`` (the hidden states after layer K
    of 6). ``special_tokens``: whether [CLS] and [SEP] are visible to the cross-attention (an
    attention sink there can absorb the maps); an empty caption keeps [CLS] so that it attends to
    something.
    """

    source: str = "last"
    special_tokens: bool = True

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"TextContext.source must be one of {', '.join(SOURCES)}, got {self.source!r}")

    @property
    def hidden_index(self) -> int:
        """Index into BERT's ``hidden_states`` (0: embeddings, 6: last layer)."""
        if self.source in ("last", "embeddings"):
            return -1 if self.source == "last" else 0
        return int(self.source.removeprefix("layer"))
