"""tsam analyze: pair labels, statistics pinned on hand-checkable inputs, Proposition 1's algebra, recorded maps,
and each command end to end on tiny models."""
import json
import math

import numpy as np
import pytest
import torch

from tsam_diffusion.analysis.pairs import BOUND, UNBOUND_ATTRIBUTE, UNBOUND_OBJECTS, label_pairs, pair_value, word_pairs
from tsam_diffusion.analysis.proposition import measured_cosine, predicted_cosine
from tsam_diffusion.analysis.stats import auc, cluster_ci, ks, pearson, ranks, spearman
from tsam_diffusion.attention import CrossAttentionRecorder
from tsam_diffusion.bench.db import RunDB
from tsam_diffusion.bench.run import parse_methods, run_benchmark
from tsam_diffusion.bench.suites import Prompt, load_suite
from tsam_diffusion.cli import main
from tsam_diffusion.functional import map_cosine, smooth_maps


# ----------------------------------------------------------------------------- pairs and statistics

def test_pair_labels_by_hand():
    assert label_pairs([["black", "car"], ["white", "clock"]]) == [
        (BOUND, (0, 0), (0, 1)), (BOUND, (1, 0), (1, 1)), (UNBOUND_OBJECTS, (0, 1), (1, 1)),
        (UNBOUND_ATTRIBUTE, (0, 0), (1, 1)), (UNBOUND_ATTRIBUTE, (1, 0), (0, 1))]
    assert label_pairs([["cat"], ["dog"]]) == [(UNBOUND_OBJECTS, (0, 0), (1, 0))]
    assert label_pairs([["big", "red", "car"]]) == [(BOUND, (0, 0), (0, 2)), (BOUND, (0, 1), (0, 2))]
    # located among tokens: a word of two pieces ("turt", "##le") takes both; rows are the later word
    tokens = ["a", "black", "turt", "##le", "and", "a", "white", "clock"]
    pieces = {"black": ["black"], "turtle": ["turt", "##le"], "white": ["white"], "clock": ["clock"]}
    pairs = word_pairs([["black", "turtle"], ["white", "clock"]], pieces.__getitem__, tokens, "a black turtle ...")
    bound = pairs[0]
    assert (bound.label, bound.first, bound.second, bound.rows, bound.cols) == (BOUND, "black", "turtle", (2, 3), (1,))
    attr = [p for p in pairs if p.label == UNBOUND_ATTRIBUTE]
    assert [(p.first, p.second, p.rows, p.cols) for p in attr] == [("black", "clock", (7,), (1,)),
                                                                  ("turtle", "white", (6,), (2, 3))]
    m = np.arange(64.0).reshape(8, 8)
    assert pair_value(m, bound) == (m[2, 1] + m[3, 1]) / 2
    with pytest.raises(ValueError, match="not in the prompt"):
        word_pairs([["green", "car"]], lambda w: [w], tokens, "a black turtle")


def test_auc_ks_correlations_on_known_cases():
    assert auc([3, 4], [1, 2]) == 1.0 and auc([1, 2], [3, 4]) == 0.0
    assert auc([1, 2, 3], [2]) == 0.5  # 0 + 1/2 (tie) + 1 over 3 comparisons
    assert auc([2, 2], [2]) == 0.5 and math.isnan(auc([], [1]))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=40), rng.normal(size=30)
    plain = np.mean([(a > b) + 0.5 * (a == b) for a in x for b in y])
    assert auc(x, y) == pytest.approx(plain, abs=1e-12)
    assert ks([1, 2, 3], [4, 5]) == 1.0 and ks([1, 2], [1, 2]) == 0.0
    assert ks([1, 2, 3, 4], [3, 4, 5, 6]) == 0.5  # the CDFs differ most at 2: 1/2 vs 0
    assert list(ranks([10, 20, 20, 5])) == [2.0, 3.5, 3.5, 1.0]
    assert pearson(x[:30], y) == pytest.approx(np.corrcoef(x[:30], y)[0, 1])
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotone, not linear
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    lo, hi = cluster_ci(lambda i: float(np.mean(np.r_[0.0, 1.0, 2.0, 3.0][i])), ["a", "a", "b", "b"], n=200)
    assert 0.5 <= lo <= hi <= 2.5 and {lo, hi} <= {0.5, 1.5, 2.5}  # each resample: a twice, a+b, b twice


def test_map_cosine_is_the_plain_cosine_of_smoothed_maps():
    A = torch.rand(2, 16, 3)
    C = map_cosine(A, 4, 4)
    maps = smooth_maps(A.transpose(1, 2).reshape(2, 3, 4, 4), sigma=0.5, kernel_size=3).reshape(2, 3, 16)
    for b in range(2):
        for i in range(3):
            for j in range(3):
                ref = torch.dot(maps[b, i], maps[b, j]) / (maps[b, i].norm() * maps[b, j].norm())
                assert C[b, i, j] == pytest.approx(float(ref), abs=1e-6)


# ----------------------------------------------------------------------------- Proposition 1

def test_proposition_quadratic_form_is_the_variance_of_the_logit_gap():
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=12, cross_attention_dim=10, heads=3, dim_head=4).eval()
    q, k = torch.randn(500, 12), torch.randn(5, 10)
    i, j = torch.tensor([1, 2, 4]), torch.tensor([0, 1, 3])
    pred = predicted_cosine(attn, q, k, i, j)
    with torch.no_grad():
        logits = (attn.to_q(q).view(500, 3, 4).transpose(0, 1) @ attn.to_k(k).view(5, 3, 4).permute(1, 2, 0)) * attn.scale
    gap = logits[:, :, i] - logits[:, :, j]  # [H, Nq, P]: Omega_ai - Omega_aj
    assert torch.allclose(pred, torch.exp(-0.5 * gap.double().var(1)).float(), atol=1e-6)
    probs = logits.softmax(-1)
    meas = measured_cosine(probs, i, j)
    ref = torch.nn.functional.cosine_similarity(probs[:, :, i], probs[:, :, j], dim=1)
    assert torch.allclose(meas, ref, atol=1e-6)


def test_proposition_holds_under_its_assumptions():
    """Gaussian queries and a strong sink key (the paper's assumptions ii and iii): prediction close to the maps."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(1)
    attn = Attention(query_dim=8, cross_attention_dim=8, heads=1, dim_head=8, bias=False).eval()
    with torch.no_grad():
        attn.to_q.weight.copy_(torch.eye(8))
        attn.to_k.weight.copy_(torch.eye(8))
    q = torch.randn(20000, 8) * 0.3 + torch.tensor([3.0] + [0.0] * 7)  # mean along the sink key
    k = torch.cat([torch.tensor([[8.0] + [0.0] * 7]), torch.randn(6, 8) * 0.8])  # key 0: the sink
    i, j = torch.tril_indices(7, 7, -1)
    keep = (i > 0) & (j > 0)
    i, j = i[keep], j[keep]
    with torch.no_grad():
        probs = ((attn.to_q(q) @ attn.to_k(k).T) * attn.scale).softmax(-1)[None]
    pred, meas = predicted_cosine(attn, q, k, i, j)[0], measured_cosine(probs, i, j)[0]
    assert pearson(pred, meas) > 0.95 and float((pred - meas).abs().mean()) < 0.05


# ----------------------------------------------------------------------------- recorded maps

def test_record_maps_leaves_images_alone_and_reads_the_conditional_pass(tsam_pipe):
    g = lambda: [torch.Generator().manual_seed(s) for s in (0, 1)]  # noqa: E731
    kw = dict(num_inference_steps=3, output_type="pt", num_images_per_prompt=2)
    plain = tsam_pipe("a black car and a white clock", method=None, generator=g(), **kw)
    rec = tsam_pipe("a black car and a white clock", method=None, generator=g(), record_maps=[0, 2], **kw)
    assert torch.equal(plain.images, rec.images)
    d = rec.diagnostics
    assert sorted(d.maps) == [0, 2] and d.maps[0].shape == (2, d.map_size[0] * d.map_size[1], len(d.tokens[0]))
    # step 0's maps: one conditional pass on the initial noise, the same layers, the content tokens
    adapter = tsam_pipe.adapter
    cond = adapter.encode_prompt(["a black car and a white clock"], None, 2, 1.0)
    latents = adapter.prepare_latents(2, *adapter.default_size(), g(), None)
    tsam_pipe.pipe.scheduler.set_timesteps(3)
    layers = {name: dict(tsam_pipe.pipe.unet.named_modules())[name] for name in d.layers}
    recorder = CrossAttentionRecorder(layers)
    with torch.no_grad(), recorder.install(), recorder.capture():
        recorder.run(lambda: adapter.forward_cond(latents, tsam_pipe.pipe.scheduler.timesteps[0], cond))
    keep = adapter.text_attention(["a black car and a white clock"])[0].keep
    assert torch.allclose(d.maps[0], recorder.mean()[:, :, keep], atol=1e-6)
    # with guidance reading the same layers: the images still unchanged, and step 0's maps are after its update
    guided = tsam_pipe("a black car and a white clock", method="tsam", generator=g(), **kw)
    both = tsam_pipe("a black car and a white clock", method="tsam", generator=g(), record_maps=[0], **kw)
    assert torch.equal(guided.images, both.images) and both.diagnostics.updates
    assert not torch.allclose(both.diagnostics.maps[0], both.diagnostics.A_first)  # A_first: before the update
    with pytest.raises(ValueError, match="0-3"):  # PNDM: 4 loop steps for 3
        tsam_pipe("a cat", method=None, num_inference_steps=3, record_maps=[4])


# ----------------------------------------------------------------------------- the commands

def test_analyze_text_on_minilm(mini_pipe, tmp_path):
    from tsam_diffusion.analysis.text import analyze_text, encode
    from tsam_diffusion.functional import text_attention_matrix

    prompts = load_suite("cc500")[:6]
    s = analyze_text(mini_pipe.adapter, prompts, tmp_path, show=2, model="tsam-mini", bootstrap=50)
    assert s["pairs"] == {BOUND: 12, UNBOUND_OBJECTS: 6, UNBOUND_ATTRIBUTE: 12}  # 2 objects with a colour each
    for name in ("pairs.csv", "sink.csv", "summary.json", "t_prime.svg", "embedding_cos.png", "sink.png",
                 "heatmap_0.png", "heatmap_1.svg"):
        assert (tmp_path / name).exists(), name
    assert not (tmp_path / "heatmap_2.png").exists()
    # one prompt by hand: T' from a plain reference, the sink ratio from the raw attentions
    enc = encode(mini_pipe.adapter, [prompts[0].text])[0]
    text = mini_pipe.adapter.text_attention([prompts[0].text])[0]
    assert np.allclose(enc.T, text_attention_matrix(text.attentions, text.keep, bidirectional=True).numpy())
    assert np.allclose(np.diag(enc.E), 1.0, atol=1e-5)
    # encoder-output: MiniLM's last hidden states (tsam-mini v2's UNet reads its input embeddings instead)
    out = encode(mini_pipe.adapter, [prompts[0].text], "encoder-output")[0]
    last = torch.nn.functional.normalize(text.hidden[text.keep].float(), dim=-1)
    assert np.allclose(out.E, (last @ last.T).numpy(), atol=1e-5) and not np.allclose(out.E, enc.E, atol=1e-2)
    a = text.attentions.float().mean((0, 1))
    rows = text.keep
    others = [float(a[i, j]) for i in rows for j in range(a.shape[1]) if j != 0 and a[i, j] > 0]
    assert enc.sink_probs.mean() / enc.other_probs.mean() == pytest.approx(float(a[rows, 0].mean()) / np.mean(others),
                                                                           rel=1e-5)
    assert json.loads((tmp_path / "summary.json").read_text())["sink"]["token"] == ["[CLS] (position 0)"]
    lines = (tmp_path / "pairs.csv").read_text().splitlines()
    assert lines[0].startswith("prompt_id,prompt,label,first,second,distance,embedding_cos,t_prime") and len(lines) == 31


def test_analyze_text_on_t5_finds_its_sink_after_the_content(tmp_path):
    """PixArt's T5 (bidirectional, no BOS): T' through appendix B.2, the sink is </s>, padding never counted."""
    from tsam_diffusion import TSAMPipeline
    from tsam_diffusion.analysis.text import analyze_text, encode

    pipe = TSAMPipeline.from_pretrained("tiny-pixart")
    s = analyze_text(pipe.adapter, load_suite("cc500")[:3], tmp_path, show=0, bootstrap=20)
    assert s["sink"]["token"] == ["</s> (position 7)"] and s["pairs"][BOUND] == 6
    enc = encode(pipe.adapter, ["a red car and a blue bench", "a cat"])[1]  # padded to the first prompt's length
    assert len(enc.tokens) == 2 and len(enc.other_probs) == 2 * 2  # each content token sees the other and itself
    assert np.allclose(np.triu(enc.T, 1), 0) and np.allclose(enc.T.sum(1), 1, atol=1e-5)
    # PixArt's denoiser reads T5's last hidden states: both kinds of embeddings agree
    assert np.allclose(encode(pipe.adapter, ["a red car"], "encoder-output")[0].E, encode(pipe.adapter, ["a red car"])[0].E,
                       atol=1e-5)


def test_analyze_attention_end_to_end(tsam_pipe, tmp_path):
    from tsam_diffusion.analysis.attention import analyze_attention

    prompts = [Prompt("p0", "a black car and a white clock", "x"), Prompt("p1", "a cat and a dog", "x")]
    s = analyze_attention(tsam_pipe, prompts, tmp_path, steps=(1, 3), seeds=(0, 1), num_inference_steps=3, show=1,
                          proposition=True, bootstrap=50, progress=False)
    assert set(s["per_step"]) == {"1", "3"} and s["per_step"]["1"]["n"] == 2 * (21 + 10)  # seeds x C(7,2) + C(5,2)
    assert "pearson" in s["proposition"] and -1 <= s["proposition"]["pearson"] <= 1
    assert (tmp_path / "maps_0_s0_step3.svg").exists() and not (tmp_path / "maps_1_s0_step1.png").exists()
    assert (tmp_path / "proposition.csv").exists() and (tmp_path / "scatter_step1.svg").exists()
    with pytest.raises(ValueError, match="between 1 and the number of denoising steps"):
        analyze_attention(tsam_pipe, prompts, tmp_path, steps=(0,), num_inference_steps=3, progress=False)


@pytest.fixture()
def scored_run(tsam_pipe, tmp_path):
    """A tiny-sd run of two CC-500 prompts x 3 seeds, scored by hand as ShapesJudge would store it."""
    run = tmp_path / "run"
    run_benchmark(load_suite("cc500")[:2], parse_methods("vanilla"), [0, 1, 2], run, model="tiny-sd",
                  num_inference_steps=3, batch_size=2, progress=False, pipeline=tsam_pipe)
    db = RunDB(run)
    verdict = {0: (1.0, 1.0), 1: (0.5, None), 2: (1.0, 0.5)}
    db.add_scores("shapes", {r["job_id"]: {k: v for k, v in zip(("presence", "binding"), verdict[r["seed"]]) if v is not None}
                             for r in db.images()})
    return run


def test_outcome_verdicts_from_shapes_and_tifa_scores():
    from tsam_diffusion.analysis.outcomes import verdicts

    assert verdicts({"shapes/presence": 1.0, "shapes/binding": 0.5}) == (True, False)
    assert verdicts({"shapes/presence": 0.5}) == (False, None)
    tifa = {"tifa/correct:object": 2.0, "tifa/questions:object": 2.0, "tifa/correct:color": 1.0, "tifa/questions:color": 2.0}
    assert verdicts(tifa) == (True, False)
    assert verdicts({"tifa/correct:object": 1.0, "tifa/questions:object": 2.0}) == (False, None)
    assert verdicts({"clip/full": 0.3}) == (None, None)


def test_analyze_outcomes_replays_exactly_and_resumes(tsam_pipe, scored_run, tmp_path):
    from tsam_diffusion.analysis.outcomes import analyze_outcomes

    out = tmp_path / "out"
    s = analyze_outcomes(lambda: tsam_pipe, scored_run, out, step=2, bootstrap=50, progress=False)
    assert s["images"] == 6 and s["replay_max_diff"] <= 1  # the run batched seeds 0+1, then 2; the replay 0+1+2
    assert (s["presence"]["n_correct"], s["presence"]["n_incorrect"]) == (4, 2)  # seed 1 misses an object
    assert (s["binding"]["n_correct"], s["binding"]["n_incorrect"]) == (2, 2)  # seed 1 not judged for binding
    assert s["per_method"]["vanilla"]["images"] == 6 and s["per_method"]["vanilla"]["present"] == pytest.approx(4 / 6)
    assert s["per_method"]["vanilla"]["bound"] == pytest.approx(2 / 4)  # of the 4 with every object present
    table = (out / "images.csv").read_text().splitlines()
    assert len(table) == 7 and (out / "presence.svg").exists() and (out / "binding.png").exists()

    def must_not_load():
        raise AssertionError("everything is cached: the model must not load")

    again = analyze_outcomes(must_not_load, scored_run, out, step=2, bootstrap=50, progress=False)
    assert again["presence"] == s["presence"]
    with pytest.raises(ValueError, match="holds maps of step 2, not 3"):
        analyze_outcomes(must_not_load, scored_run, out, step=3, progress=False)
    with pytest.raises(ValueError, match="not in the run"):
        analyze_outcomes(must_not_load, scored_run, tmp_path / "o2", methods=["tsam"], progress=False)


def test_analyze_sweep_grid(tsam_pipe, tmp_path):
    from tsam_diffusion.analysis.sweep import overrides, sweep

    run = tmp_path / "run"
    methods = "vanilla,tsam[alpha=1;gamma=2],tsam[alpha=2;gamma=2],tsam[alpha=1;gamma=4]"
    run_benchmark([Prompt("p0", "a cat and a dog", "x"), Prompt("p1", "a red car", "x")], parse_methods(methods), [0],
                  run, model="tiny-sd", num_inference_steps=1, batch_size=1, progress=False, pipeline=tsam_pipe)
    db = RunDB(run)
    value = {"vanilla": 0.5, "tsam[alpha=1;gamma=2]": 1.0, "tsam[alpha=2;gamma=2]": 0.0, "tsam[alpha=1;gamma=4]": 0.75}
    db.add_scores("shapes", {r["job_id"]: {"whole": value[r["method"]] + (0.1 if r["prompt_id"] == "p1" else 0.0)}
                             for r in db.images()})
    assert overrides("tsam:mini[alpha=10;gamma=4]") == {"alpha": "10", "gamma": "4"} and overrides("vanilla") == {}
    s = sweep(run, tmp_path / "sw", metric="shapes/whole", bootstrap=100)
    assert s["varied"] == ["alpha", "gamma"]
    assert s["grid"]["row_values"] == ["1", "2"] and s["grid"]["column_values"] == ["2", "4"]
    assert s["grid"]["mean"][0] == pytest.approx([1.05, 0.8]) and s["grid"]["mean"][1][0] == pytest.approx(0.05)
    assert s["grid"]["mean"][1][1] is None
    row = next(e for e in s["table"] if e["method"] == "tsam[alpha=2;gamma=2]")
    assert row["diff"] == pytest.approx(-0.5)
    assert (tmp_path / "sw" / "sweep.svg").exists() and "| 1 | 1.050 | 0.800 |" in (tmp_path / "sw" / "sweep.md").read_text()
    with pytest.raises(ValueError, match="no scores named"):
        sweep(run, tmp_path / "sw", metric="tifa/score")


def test_analyze_cli(tmp_path, capsys):
    assert main(["analyze", "text", "--model", "tsam-mini", "--suite", "cc500", "--limit", "3", "--show", "1",
                 "--out", str(tmp_path / "t")]) == 0
    printed = capsys.readouterr().out
    assert "t_prime" in printed and "sink ([CLS] (position 0))" in printed
    assert main(["analyze", "attention", "--model", "tiny-sd", "--suite", "cc500", "--limit", "1", "--steps", "1,x",
                 "--out", str(tmp_path / "a")]) == 2
    assert "--steps takes comma-separated" in capsys.readouterr().err
    assert main(["analyze", "outcomes", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) in (1, 2)
    assert main(["analyze", "sweep", "--help"]) == 0
