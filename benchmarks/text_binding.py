"""Does a model's T bind attributes to their nouns? The measurement behind SDXL's ``text_attention`` choice.

On CC-500's prompts ("a red car and a blue bench": two colour-noun pairs, located with the model's own
tokenizer, words split into several pieces included), T is eq. 2-3's matrix (gamma 1, causal; BERT
and T5 through appendix B.2's ``tril((T' + T'^T) / 2)``) and, per prompt:

- bound: the mean of ``T[noun_k, colour_k]`` over both pairs (a noun and its own colour);
- unbound: ``T[noun_2, colour_1]`` (the second noun and the first pair's colour, at the same or a
  longer distance);

and prints, for each way the model offers to compute T (SDXL: ``both`` encoders averaged, ``first``,
``second``), the mean of each, their ratio, and the share of prompts where bound > unbound, with
prompt-resampled 95% intervals. The paper's section 3 finding is that bound pairs get more
attention: the choice that separates them more gives T-SAM more to work with.

    python benchmarks/text_binding.py --model tsam-mini                 # MiniLM: real pretrained weights
    python benchmarks/text_binding.py --model stabilityai/stable-diffusion-xl-base-1.0   # needs SDXL's weights
    python benchmarks/text_binding.py --model tiny-sdxl                 # random weights: the tool runs, nothing more

A script that prints figures (``--json`` writes them).
"""
from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from tsam_diffusion import TSAMPipeline
from tsam_diffusion.adapters.sdxl import TEXT_ATTENTION
from tsam_diffusion.bench.suites import load_suite
from tsam_diffusion.bench.subjects import token_groups
from tsam_diffusion.functional import text_attention_matrix
from tsam_diffusion.methods.words import locate_groups


def pairs_of(adapter: Any, prompts: list[str], groups: list[list[list[str]]]) -> list[dict[str, float]]:
    """Bound and unbound T of each prompt whose two (colour, noun) pairs the tokenizer shows."""
    out = []
    for text, prompt, g in zip(adapter.text_attention(prompts), prompts, groups):
        try:
            (c1, n1), (c2, n2) = locate_groups(g, adapter.word_pieces, text.tokens, prompt)
        except ValueError:
            continue  # a word the tokenizer does not show as such (dropped characters): skip the prompt
        T = text_attention_matrix(text.attentions, text.keep.to(text.attentions.device), bidirectional=adapter.bidirectional,
                                  gamma=1.0).float().cpu()
        block = lambda rows, cols: float(T[rows][:, cols].mean())  # noqa: E731  (a word of several pieces: their mean)
        out.append({"bound": (block(n1, c1) + block(n2, c2)) / 2, "unbound": block(n2, c1)})
    return out


def summary(rows: list[dict[str, float]], resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Means, ratio and share bound > unbound, each with a prompt-resampled 95% interval."""
    b = np.array([r["bound"] for r in rows])
    u = np.array([r["unbound"] for r in rows])
    stat = lambda i: (b[i].mean(), u[i].mean(), b[i].mean() / u[i].mean(), (b[i] > u[i]).mean())  # noqa: E731
    rng = np.random.default_rng(seed)
    boot = np.array([stat(rng.integers(0, len(b), len(b))) for _ in range(resamples)])
    names = ("bound", "unbound", "ratio", "bound_wins")
    point = stat(np.arange(len(b)))
    return {"prompts": len(b), **{n: [float(point[k]), *map(float, np.percentile(boot[:, k], [2.5, 97.5]))] for k, n in enumerate(names)}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tsam-mini", help="hub id, local folder or built-in name")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts of CC-500")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    pipe = TSAMPipeline.from_pretrained(args.model).to(args.device)
    suite = [(q.text, token_groups(q)) for q in load_suite("cc500")]
    suite = [(t, g) for t, g in suite if g is not None and len(g) == 2 and all(len(x) == 2 for x in g)][: args.limit]
    prompts, groups = [t for t, _ in suite], [g for _, g in suite]
    if "text_attention" in pipe.adapter.call_options:  # a model with a choice of text encoders (SDXL)
        variants = {c: pipe.adapter.configured(text_attention=c) for c in TEXT_ATTENTION}
    else:
        variants = {"T": pipe.adapter}
    report = {"model": args.model, "adapter": type(pipe.adapter).__name__, "variants": {}}
    print(f"{args.model} ({type(pipe.adapter).__name__}), CC-500, {len(prompts)} prompts; 95% intervals resample prompts")
    print(f"{'T from':<8}{'n':>5}  {'bound':<26}{'unbound':<26}{'bound / unbound':<26}{'share bound > unbound'}")
    for name, adapter in variants.items():
        s = summary(pairs_of(adapter, prompts, groups))
        report["variants"][name] = s
        cell = lambda v: f"{v[0]:.4f} [{v[1]:.4f}, {v[2]:.4f}]"  # noqa: E731
        print(f"{name:<8}{s['prompts']:>5}  {cell(s['bound']):<26}{cell(s['unbound']):<26}{cell(s['ratio']):<26}{cell(s['bound_wins'])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
