"""tsam_diffusion.viz: pictures are produced with the documented sizes and files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tsam_diffusion import TSAMConfig, TSAMPipeline
from tsam_diffusion.viz import matrix_heatmap, save_diagnostic_maps, side_by_side, token_maps

PROMPT = "a black car and a white clock"


def _run(pipe, tsam, prompt=PROMPT):
    return pipe(prompt, tsam=tsam, num_inference_steps=4, generator=torch.Generator("cpu").manual_seed(0))


@pytest.fixture(scope="module")
def tiny_pipe():
    pipe = TSAMPipeline.from_pretrained("tiny-sd")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def guided(tiny_pipe):
    return _run(tiny_pipe, TSAMConfig(alpha=100.0, update_steps=(0, 1)))


def test_side_by_side_is_at_least_as_wide_as_its_images():
    images = [Image.new("RGB", (128, 128), c) for c in ("red", "blue")]
    out = side_by_side(images, ["baseline (no guidance)", "T-SAM (sd-tifa, alpha=40, gamma=4)"],
                       title=PROMPT, footer="tiny-sd is a random, untrained model: its images are not meaningful")
    assert out.width >= sum(im.width for im in images)
    assert out.height > 128
    big = [Image.new("RGB", (512, 512)), Image.new("RGB", (512, 384))]
    out = side_by_side(big, ["a", "b"])
    assert out.width >= 1024 and out.height >= 512


def test_side_by_side_checks_labels():
    with pytest.raises(ValueError):
        side_by_side([Image.new("RGB", (8, 8))], ["a", "b"])


@pytest.mark.parametrize("n", [1, 4, 15])
def test_matrix_heatmap(n):
    M = torch.tril(torch.rand(n, n))
    img = matrix_heatmap(M, [f"t{i}" for i in range(n)], "T")
    assert img.width > 0 and img.height > 0
    img = matrix_heatmap(np.random.rand(n, n), [f"t{i}" for i in range(n)], "full S")
    assert img.width > 0 and img.height > 0
    with pytest.raises(ValueError):
        matrix_heatmap(M, ["only one"] * (n + 1), "bad")


def test_token_maps_with_and_without_image():
    A = torch.rand(16 * 16, 3)
    img = token_maps(A, 16, 16, ["a", "cat", "dog"])
    assert img.width > 0 and img.height > 0
    with_image = token_maps(A, 16, 16, ["a", "cat", "dog"], image=Image.new("RGB", (128, 128), "gray"), title="maps")
    assert with_image.width > img.width  # one panel more
    wrapped = token_maps(torch.rand(64, 12), 8, 8, [f"t{i}" for i in range(12)])
    one_row = token_maps(torch.rand(64, 8), 8, 8, [f"t{i}" for i in range(8)])
    assert wrapped.height > one_row.height  # 12 tokens wrap to two rows
    with pytest.raises(ValueError):
        token_maps(A, 8, 8, ["a", "cat", "dog"])


def test_save_diagnostic_maps_writes_all_files(guided, tmp_path):
    d = guided.diagnostics
    assert d.updates and d.A_first is not None
    paths = save_diagnostic_maps(d, 0, tmp_path / "maps", "x", image=guided.images[0])
    names = ["x_T.png", "x_S_first.png", "x_S_last.png", "x_maps_first.png", "x_maps_last.png"]
    assert [p.name for p in paths] == names
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == sorted(names)
    for p in paths:
        with Image.open(p) as im:
            assert im.width > 0 and im.height > 0


def test_save_diagnostic_maps_crops_padded_tokens(tiny_pipe, tmp_path):
    out = tiny_pipe(["a cat", PROMPT], tsam=TSAMConfig(alpha=100.0, update_steps=(0, 1)), num_inference_steps=4,
                    generator=torch.Generator("cpu").manual_seed(0))
    assert out.diagnostics.A_first.shape[-1] == 7  # padded to the longest prompt
    paths = save_diagnostic_maps(out.diagnostics, 0, tmp_path, "short", image=out.images[0])
    assert len(paths) == 5


def test_save_diagnostic_maps_without_updates(tiny_pipe, tmp_path):
    # One content token: T is computed but guidance is a no-op, so there are no updates: only T.
    one_token = _run(tiny_pipe, TSAMConfig(alpha=100.0, update_steps=(0, 1)), prompt="cat")
    assert not one_token.diagnostics.updates and one_token.diagnostics.T
    paths = save_diagnostic_maps(one_token.diagnostics, 0, tmp_path, "one")
    assert [p.name for p in paths] == ["one_T.png"]
    # tsam=None: the pipeline computes no T at all, so there is nothing to write.
    plain = _run(tiny_pipe, None)
    assert save_diagnostic_maps(plain.diagnostics, 0, tmp_path / "none", "plain") == []
    assert not (tmp_path / "none").exists()
