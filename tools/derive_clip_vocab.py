"""Derive transformers' CLIPTokenizer files (vocab.json, merges.txt) from OpenAI's CLIP BPE file.

The BPE file `bpe_simple_vocab_16e6.txt.gz` (MIT, OpenAI) ships inside the `open_clip_torch` and
`clip-anytorch` wheels. The derivation follows CLIP's own `SimpleTokenizer`: 256 byte symbols, the same
with the end-of-word marker, the 48,894 merges, then <|startoftext|> and <|endoftext|> (49,408 tokens).

    python tools/derive_clip_vocab.py path/to/bpe_simple_vocab_16e6.txt.gz src/tsam_diffusion/data/clip_tokenizer
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def derive(bpe_path: Path, out: Path) -> None:
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")


if __name__ == "__main__":
    derive(Path(sys.argv[1]), Path(sys.argv[2]))
