"""tsam_diffusion.viz: pictures with the documented sizes and files, and what they show: the figures'
data, labels and token columns are read back from the matplotlib figures before rasterisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tsam_diffusion import TSAMConfig, TSAMPipeline
from tsam_diffusion import viz
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


def test_save_diagnostic_maps_crops_padded_tokens(tiny_pipe, tmp_path, monkeypatch):
    """A 2-token prompt in a batch padded to 7 tokens: T, S and the maps show its 2 tokens only, with
    its own values (the first 2 columns of its maps), and the image beside them."""
    out = tiny_pipe(["a cat", PROMPT], tsam=TSAMConfig(alpha=100.0, update_steps=(0, 1)), num_inference_steps=4,
                    generator=torch.Generator("cpu").manual_seed(0))
    d = out.diagnostics
    assert d.A_first.shape[-1] == 7  # padded to the longest prompt
    calls = []
    monkeypatch.setattr(viz, "matrix_heatmap", lambda M, tokens, title: calls.append(("matrix", M, tokens, title)) or Image.new("RGB", (4, 4)))
    monkeypatch.setattr(viz, "token_maps", lambda A, h, w, tokens, image=None, title=None: calls.append(("maps", A, tokens, image)) or Image.new("RGB", (4, 4)))
    paths = save_diagnostic_maps(d, 0, tmp_path, "short", image=out.images[0])
    assert [p.name for p in paths] == ["short_T.png", "short_S_first.png", "short_S_last.png", "short_maps_first.png", "short_maps_last.png"]
    assert all(c[2] == ["a", "cat"] for c in calls) and len(calls) == 5
    torch.testing.assert_close(calls[0][1], d.T[0][:2, :2])
    torch.testing.assert_close(calls[1][1], d.S_of(0, 0))
    assert calls[1][1].shape == (2, 2) and "first update (step 0)" in calls[1][3] and "last update" in calls[2][3]
    assert f"loss {float(d.updates[0].loss[0]):.3f}" in calls[1][3]
    torch.testing.assert_close(calls[3][1], d.A_first[0, :, :2])
    torch.testing.assert_close(calls[4][1], d.A_last[0, :, :2])
    assert calls[3][3] is out.images[0]


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures viz draws, kept for inspection."""
    kept = []
    real = viz._figure_to_image
    monkeypatch.setattr(viz, "_figure_to_image", lambda fig: kept.append(fig) or real(fig))
    return kept


def test_token_maps_show_each_tokens_own_map_under_its_label(figures):
    A = torch.zeros(8 * 8, 3)
    for j in range(3):
        A[j * 8 + 2 * j, j] = 1.0  # token j: one hot cell at row j, column 2j
    token_maps(A, 8, 8, ["a", "cat", "dog"])
    (fig,) = figures
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["a", "cat", "dog"]
    for j, ax in enumerate(panels):
        shown = np.asarray(ax.images[-1].get_array())
        assert shown.shape == (8, 8) and shown[j, 2 * j] == 1.0 and shown.sum() == 1.0


def test_matrix_heatmap_shows_the_matrix_and_its_tokens(figures):
    M = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.5, 0.2, 0.3]])
    matrix_heatmap(M, ["black", "car", "clock"], "T")
    (fig,) = figures
    ax = fig.axes[0]
    assert ax.get_title() == "T"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["black", "car", "clock"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["black", "car", "clock"]
    shown = ax.images[0].get_array()
    assert np.allclose(shown.filled(np.nan)[np.tril_indices(3)], M.numpy()[np.tril_indices(3)])
    assert shown.mask[0, 1] and shown.mask[0, 2] and shown.mask[1, 2]  # causal: the upper triangle is blank
    assert [t.get_text() for t in ax.texts] == ["1.00", "0.25", "0.75", "0.50", "0.20", "0.30"]


def test_side_by_side_pastes_the_images_unchanged_in_order():
    red = Image.new("RGB", (128, 128), (255, 0, 0))
    blue = Image.new("RGB", (128, 128), (0, 0, 255))
    out = np.asarray(side_by_side([red, blue], ["baseline", "T-SAM"], title="a red thing"))
    is_red = (out == (255, 0, 0)).all(-1)
    is_blue = (out == (0, 0, 255)).all(-1)
    assert is_red.sum() == is_blue.sum() == 256 * 256  # enlarged 2x to min_width 256, nearest neighbour
    assert np.nonzero(is_red)[1].max() < np.nonzero(is_blue)[1].min()  # red left of blue
    assert np.nonzero(is_red)[0].min() > 20  # below the title and labels


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
