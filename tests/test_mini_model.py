"""tsam-mini: pipeline, T-SAM on it (BERT, bidirectional), saving/loading, and resumable training."""
import numpy as np
import pytest
import torch

from tsam_diffusion import TSAMConfig, TSAMPipeline
from tsam_diffusion.mini.model import TSAMMiniPipeline, build_unet, load_text_encoder, sampling_scheduler
from tsam_diffusion.mini.train import TrainConfig, train

PROMPT = "a red circle and a blue square"


@pytest.fixture(scope="module")
def mini():
    tokenizer, text_encoder = load_text_encoder()
    pipe = TSAMMiniPipeline(unet=build_unet().eval(), text_encoder=text_encoder, tokenizer=tokenizer, scheduler=sampling_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_no_guidance_is_bitwise_the_pipeline(mini):
    want = mini([PROMPT, "a green cross"], num_inference_steps=4, num_images_per_prompt=2, generator=gen(), output_type="np").images
    got = TSAMPipeline(mini)([PROMPT, "a green cross"], tsam=None, num_inference_steps=4, guidance_scale=4.0,
                             num_images_per_prompt=2, generator=gen(), output_type="np").images
    assert np.array_equal(got, want) and want.shape == (4, 32, 32, 3)


def test_tsam_on_mini_uses_bert_tokens_and_16x16_maps(mini):
    cfg = TSAMConfig(alpha=50.0, gamma=2.0, update_steps=(0, 1), reference_steps=4)
    out = TSAMPipeline(mini)([PROMPT, "a green cross"], tsam=cfg, num_inference_steps=4, guidance_scale=4.0, generator=gen(),
                             output_type="pt")
    d = out.diagnostics
    assert d.tokens == [["a", "red", "circle", "and", "a", "blue", "square"], ["a", "green", "cross"]]
    assert d.map_size == (16, 16) and len(d.updates) == 2 and torch.isfinite(d.losses).all()
    assert out.images.shape == (2, 3, 32, 32)


def test_text_self_attention_binds_colors_and_has_a_sink(mini):
    """all-MiniLM-L6-v2's self-attention (T', eq. 2): [CLS] sink; a shape attends to its own colour more."""
    from tsam_diffusion.adapters import adapter_for

    prompts = ["a red circle and a blue square", "a green cross and a yellow triangle", "a white square and a purple circle"]
    texts = adapter_for(mini).text_attention(prompts)
    bound, unbound, sink, other = [], [], [], []
    for t in texts:
        T = t.attentions.float().mean(dim=(0, 1))  # [N, N] averaged over layers and heads
        sym = (T + T.T) / 2
        # content positions: 1 a, 2 colour1, 3 shape1, 4 and, 5 a, 6 colour2, 7 shape2
        bound += [sym[3, 2].item(), sym[7, 6].item()]
        unbound += [sym[3, 6].item(), sym[7, 2].item()]
        sink.append(T[1:8, 0].mean().item())
        other.append(T[1:8, 1:8].mean().item())
    assert np.mean(bound) > 1.3 * np.mean(unbound)
    assert np.mean(sink) > 2 * np.mean(other)


def test_save_and_load(mini, tmp_path):
    mini.save_pretrained(tmp_path / "m")
    loaded = TSAMMiniPipeline.from_pretrained(tmp_path / "m")
    loaded.set_progress_bar_config(disable=True)
    a = mini(PROMPT, num_inference_steps=3, generator=gen(), output_type="np").images
    b = loaded(PROMPT, num_inference_steps=3, generator=gen(), output_type="np").images
    assert np.array_equal(a, b)
    assert TSAMPipeline.from_pretrained(str(tmp_path / "m")).adapter.__class__.__name__ == "MiniAdapter"
    with pytest.raises(OSError, match="not a tsam-mini model folder"):
        TSAMMiniPipeline.from_pretrained(tmp_path)


def test_training_resumes_exactly(tmp_path):
    cfg = TrainConfig(steps=4, batch_size=4, warmup=2, checkpoint_every=2, log_every=1)
    straight = train(tmp_path / "a", cfg, progress=False)
    train(tmp_path / "b", cfg, stop_after=2, progress=False)  # "killed" after 2 steps
    resumed = train(tmp_path / "b", cfg, progress=False)
    ua = TSAMMiniPipeline.from_pretrained(straight).unet.state_dict()
    ub = TSAMMiniPipeline.from_pretrained(resumed).unet.state_dict()
    for k in ua:
        torch.testing.assert_close(ua[k], ub[k], rtol=1e-5, atol=1e-6)
    log = (tmp_path / "b" / "train_log.csv").read_text().splitlines()
    assert log[0] == "step,loss,lr,seconds" and [r.split(",")[0] for r in log[1:]] == ["1", "2", "3", "4"]
    with pytest.raises(ValueError, match="resume with the same settings"):
        train(tmp_path / "b", TrainConfig(steps=4, batch_size=8), progress=False)


def test_train_command_stops_after_and_resumes(tmp_path, capsys):
    from tsam_diffusion.cli import main

    args = ["mini", "train", "--out", str(tmp_path), "--steps", "3", "--batch-size", "2"]
    assert main([*args, "--stop-after", "2"]) == 0
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 2
    assert main(args) == 0
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 3
    assert main(["mini", "train", "--out", str(tmp_path), "--steps", "0"]) == 2


def test_bundled_model_is_small_float16_on_disk_and_draws_single_objects():
    """The shipped tsam-mini: <= 20 MB, loads as float32 with its own defaults, and draws the named
    shape in the named colour (judged exactly) for most single-object prompts."""
    from tsam_diffusion.mini.judge import judge
    from tsam_diffusion.mini.model import bundled_dir

    files = [f for f in bundled_dir().rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 20 * 2**20
    tsam = TSAMPipeline.from_pretrained("tsam-mini")
    assert tsam.pipe.unet.dtype == torch.float32
    assert (tsam.adapter.default_preset, tsam.adapter.default_steps, tsam.adapter.default_guidance_scale) == ("mini", 25, 4.0)
    prompts = ["a red circle", "a green square", "a blue triangle", "a yellow cross", "a purple circle", "an orange square",
               "a white triangle"]
    out = tsam(prompts, tsam=None, num_images_per_prompt=2, generator=[gen(s) for s in range(14)], output_type="np")
    images = np.round(out.images * 255).astype(np.uint8)
    whole = [judge(img, prompts[k // 2]).whole for k, img in enumerate(images)]
    assert sum(whole) >= 11, whole
    with pytest.raises(ValueError, match="32x32 images only"):
        tsam("a red circle", height=64, width=64)


def test_long_prompt_is_flagged_truncated(mini):
    from tsam_diffusion.adapters import adapter_for

    with pytest.warns(UserWarning, match="truncated"):
        (long,) = adapter_for(mini).text_attention(["a red circle and " * 8 + "a blue square"])
    (short,) = adapter_for(mini).text_attention([PROMPT])
    assert long.truncated and len(long.tokens) == 22 and not short.truncated


def test_unknown_characters_are_named_in_a_warning(mini, tsam_pipe, recwarn):
    """Emoji and CJK characters are [UNK] to MiniLM's WordPiece vocabulary; the warning names them.
    CLIP's byte-level BPE reads every character, and its unknown token is its end-of-text token:
    no false warning there."""
    with pytest.warns(UserWarning, match=r"does not know '🔴', '形', '✨' and reads it as \[UNK\]"):
        TSAMPipeline(mini)("a 🔴 red circle and a blue 方形 square ✨", tsam=None, num_inference_steps=1)
    recwarn.clear()
    TSAMPipeline(mini)(PROMPT, tsam=None, num_inference_steps=1)
    tsam_pipe("a 🔴 red car", tsam=None, num_inference_steps=1, output_type="latent")
    assert not [w for w in recwarn if "does not know" in str(w.message)]
