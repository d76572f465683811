"""Build the small T5 tokenizer that ``tiny-pixart`` ships with (``src/tsam_diffusion/data/t5_tokenizer``).

T5's real ``spiece.model`` cannot be downloaded here, so the built-in tiny PixArt pipelines use a
sentencepiece unigram model of the same kind (T5's special tokens: ``<pad>`` 0, ``</s>`` 1,
``<unk>`` 2, no BOS), trained on every bundled benchmark prompt, saved as transformers'
``T5Tokenizer`` (a ``tokenizer.json``, loadable without the sentencepiece package). It splits
words as a real T5 tokenizer does (``▁``-prefixed pieces, rare words into several), which is what
the adapter's token handling needs; its vocabulary is not T5's.

    python tools/make_t5_tokenizer.py        # needs the test extra (sentencepiece, protobuf)
"""
from __future__ import annotations

import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "tsam_diffusion" / "data" / "t5_tokenizer"
VOCAB = 2000


def main() -> None:
    import sentencepiece as spm
    from transformers import T5Tokenizer

    from tsam_diffusion.bench.suites import list_suites, load_suite

    texts = sorted({p.text.strip().lower() for name, _, _ in list_suites() for p in load_suite(name)})
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(texts))
        spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(Path(tmp) / "spiece"), vocab_size=VOCAB,
                                       model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
                                       character_coverage=1.0, seed_sentencepiece_size=100_000, num_threads=1)
        tok = T5Tokenizer.from_pretrained(tmp, extra_ids=0, model_max_length=512)
        OUT.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(str(OUT))
    print(f"{len(texts)} prompts -> {OUT} ({len(tok)} tokens)")


if __name__ == "__main__":
    main()
