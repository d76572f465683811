"""Guidance methods by name, object words found in CLIP, BERT and T5 tokens, benchmark prompts' objects,
and the step-size schedule spanning ``len(scheduler.timesteps)``."""
from __future__ import annotations

import math

import pytest
import torch

from tsam_diffusion.bench.run import BenchError, check_tokens, parse_methods
from tsam_diffusion.bench.subjects import token_groups
from tsam_diffusion.bench.suites import Prompt, load_suite
from tsam_diffusion.cli import main
from tsam_diffusion.methods import AttendExciteConfig, TSAMConfig, method_names
from tsam_diffusion.methods.words import locate_groups, parse_groups, per_prompt


# ------------------------------------------------------------------ words
def test_parse_groups_and_per_prompt():
    assert parse_groups("car,clock") == [["car"], ["clock"]]
    assert parse_groups("black car|white clock") == [["black", "car"], ["white", "clock"]]
    assert per_prompt("car,clock", 2) == [[["car"], ["clock"]]] * 2
    assert per_prompt([["black", "car"]], 1) == [[["black", "car"]]]
    assert per_prompt(["car", [["cat"], ["hat"]]], 2) == [[["car"]], [["cat"], ["hat"]]]
    assert per_prompt(None, 3) is None
    for bad in ("", "car,,clock", "a| |b"):
        with pytest.raises(ValueError, match="bad token groups"):
            parse_groups(bad)
    with pytest.raises(TypeError, match="tokens must be"):
        per_prompt(3, 1)


def _pieces(tokenizer, strip=lambda t: t):
    return lambda word: [strip(t) for t in tokenizer.tokenize(word)]


def test_locate_on_clip_tokens(tsam_pipe):
    text = tsam_pipe.adapter.text_attention(["a red cube and a red sphere"])[0]
    found = locate_groups([["red", "cube"], ["red", "sphere"]], tsam_pipe.adapter.word_pieces, text.tokens, "p")
    assert found == [[[1], [2]], [[5], [6]]]  # the second "red" is the second occurrence
    with pytest.raises(ValueError, match="the word 'dog' is not in the prompt 'p'"):
        locate_groups([["dog"]], tsam_pipe.adapter.word_pieces, text.tokens, "p")


def test_locate_on_bert_word_pieces(mini_pipe):
    adapter = mini_pipe.adapter
    prompt = "a teardrop plum and a cucumber"
    text = adapter.text_attention([prompt])[0]
    pieces = adapter.word_pieces("teardrop")
    assert len(pieces) > 1  # split into word pieces
    (teardrop, plum), = locate_groups([["teardrop", "plum"]], adapter.word_pieces, text.tokens, prompt)
    assert [text.tokens[i] for i in teardrop] == pieces and len(plum) >= 1


def test_locate_on_t5_tokens(tmp_path):
    """A tiny sentencepiece unigram model, loaded as transformers' T5Tokenizer (no spiece.model ships offline)."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    corpus = tmp_path / "corpus.txt"
    words = "a black car and a white clock on the table near the red cube with blue sphere".split()
    corpus.write_text("\n".join(" ".join(words[i:] + words[:i]) for i in range(len(words))) * 20)
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "spiece"), vocab_size=30, hard_vocab_limit=False, minloglevel=2,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    tok = T5Tokenizer.from_pretrained(str(tmp_path), extra_ids=0)
    prompt = "a black car and a white clock"
    tokens = tok.convert_ids_to_tokens(tok(prompt).input_ids)[:-1]  # without </s>
    found = locate_groups([["black", "car"], ["white", "clock"]], tok.tokenize, tokens, prompt)
    flat = ["".join(tokens[i] for i in span).lstrip("▁") for group in found for span in group]
    assert flat == ["black", "car", "white", "clock"]


# ------------------------------------------------------------------ methods by name
def test_bench_methods_by_name():
    ms = parse_methods("vanilla,tsam,attend-excite,attend-excite[alpha=10;thresholds=0.1+0.5+0.9]")
    assert [m.name for m in ms] == ["vanilla", "tsam", "attend-excite", "attend-excite[alpha=10;thresholds=0.1+0.5+0.9]"]
    assert ms[2].guidance == AttendExciteConfig() and ms[2].needs_tokens and not ms[1].needs_tokens
    assert ms[3].guidance.alpha == 10.0 and ms[3].guidance.thresholds == (0.1, 0.5, 0.9)
    assert ms[2].config() == {"guidance": {"method": "attend-excite", **ms[2].guidance.to_dict()}}
    assert "method" not in ms[1].resolve("mini").config()["tsam"]  # T-SAM's record reads as before
    assert "attend-excite:ae" in method_names() and "tsam:sd-ae" in method_names()
    with pytest.raises(ValueError, match="unknown method 'excite'"):
        parse_methods("excite")
    with pytest.raises(ValueError, match="gamma"):  # a T-SAM field on A&E
        parse_methods("attend-excite[gamma=2]")


def test_benchmark_prompts_objects():
    shapes = load_suite("shapes-test")
    assert token_groups(shapes[0]) == [["white", "circle"]]
    assert token_groups(load_suite("ae-animals-objects")[0]) == [["horse"], ["glasses"]]
    assert token_groups(Prompt("x", "a photo of a blue pizza and a yellow baseball glove", "geneval")) == [
        ["blue", "pizza"], ["yellow", "baseball", "glove"]]
    assert token_groups(Prompt("x", "A yellow apple and red bananas", "cc500")) == [["yellow", "apple"], ["red", "bananas"]]
    assert token_groups(Prompt("x", "a dog right of a teddy bear", "geneval")) is None
    assert all(token_groups(p) for s in ("ae-objects", "ae-animals", "cc500", "shapes-dev") for p in load_suite(s))
    check_tokens(shapes, parse_methods("attend-excite"))  # every ShapesBench prompt lists its objects
    with pytest.raises(BenchError, match="cannot be read from 1 of the 2 prompts"):
        check_tokens([shapes[0], Prompt("t:1", "a surfer walks on a beach at dawn", "t")], parse_methods("tsam,attend-excite"))


def test_bench_run_with_attend_excite(tmp_path, mini_pipe):
    from tsam_diffusion.bench.run import run_benchmark

    prompts = [p for p in load_suite("shapes-dev") if p.meta["template"] == "two-attr"][:1]
    counts = run_benchmark(prompts, parse_methods("vanilla,attend-excite"), [0], tmp_path, model="tsam-mini",
                           num_inference_steps=4, progress=False, pipeline=mini_pipe)
    assert counts["made"] == 2
    from tsam_diffusion.bench.db import RunDB

    rows = {r["method"]: r for r in RunDB(tmp_path).images()}
    assert rows["attend-excite"]["updates"] > 0 and rows["vanilla"]["updates"] == 0
    assert rows["attend-excite"]["diagnostics"]["notes"][-1].startswith("attend-excite subjects: ")


# ------------------------------------------------------------------ the CLI
def test_generate_with_attend_excite(tmp_path, capsys):
    args = ["generate", "a black car and a white clock", "--model", "tiny-sd", "--steps", "3", "--out", str(tmp_path)]
    assert main([*args, "--method", "attend-excite", "--tokens", "car,clock", "--compare", "--save-maps"]) == 0
    names = sorted(p.name.split("_", 1)[1] for p in tmp_path.glob("*.png"))
    assert names == ["seed0_attend-excite.png", "seed0_baseline.png", "seed0_compare.png", "seed0_maps_first.png",
                     "seed0_maps_last.png"]  # A&E has no T or S
    assert main([*args, "--method", "attend-excite"]) == 2
    assert "needs the prompt's object words: add --tokens" in capsys.readouterr().err
    assert main([*args, "--method", "attend-excite", "--tokens", "car,dog"]) == 2
    assert "the word 'dog' is not in the prompt" in capsys.readouterr().err
    assert main([*args, "--method", "nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main([*args, "--method", "attend-excite", "--gamma", "2", "--tokens", "car"]) == 2
    assert "--preset and --gamma are T-SAM's" in capsys.readouterr().err


# ------------------------------------------------------------------ the step-size schedule
def test_step_sizes_span_all_timesteps(tsam_pipe):
    """PNDM makes N + 1 iterations for N steps: the sqrt decay spans them all, as the authors' code and
    diffusers' A&E do (``np.linspace(1, 0.5, len(scheduler.timesteps))``)."""
    cfg = TSAMConfig(alpha=10.0, gamma=2.0, update_steps=(0, 1, 2, 3), reference_steps=4)
    d = tsam_pipe("a black car and a white clock", method=cfg, num_inference_steps=4, generator=torch.Generator().manual_seed(0),
                  output_type="latent").diagnostics
    assert len(tsam_pipe.pipe.scheduler.timesteps) == 5
    want = [10.0 * math.sqrt(1.0 - 0.5 * k / 4) for k in range(4)]  # linspace(1, 0.5, 5)[:4]
    assert [u.step_size for u in d.updates] == pytest.approx(want, rel=1e-12)


def test_bench_refuses_syngen_without_a_parser_before_any_work():
    """SynGen takes the objects of templated prompts; for the others it needs spaCy's parser model,
    which is not installed here: the run is refused at once, saying how to install it."""
    listed = Prompt("s:1", "a red circle and a blue square", "s", {"spec": [["circle", "red"], ["square", "blue"]]})
    check_tokens([listed], parse_methods("syngen"))
    with pytest.raises(BenchError, match="do not list their objects .* python -m spacy download en_core_web_sm"):
        check_tokens([listed, Prompt("t:1", "a surfer walks on a beach at dawn", "t")], parse_methods("syngen"))
