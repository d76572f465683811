"""The grounding loss used to train tsam-mini 2: targets from ShapesWorld scenes, the loss against a
plain reference, and training with it (the maps it supervises do move onto their objects)."""
import numpy as np
import pytest
import torch

from tsam_diffusion.mini.grounding import grounding_loss, grounding_targets
from tsam_diffusion.mini.probe import object_masks
from tsam_diffusion.mini.world import Obj, Scene


def scene() -> Scene:
    return Scene((Obj("circle", "red", 8, 8, 10), Obj("square", "blue", 23, 22, 12)), 32)


SPEC = (("circle", "red"), ("square", "blue"))
TOKENS = ["a", "red", "circle", "and", "a", "blue", "square"]


def test_targets_put_each_object_mask_on_its_words_columns():
    coverage, weight = grounding_targets([scene(), None], [SPEC, SPEC], [TOKENS, TOKENS], (16, 16), 10)
    masks = object_masks(scene(), (16, 16)).numpy()
    assert coverage.shape == (2, 256, 10) and weight.shape == (2, 10)
    # column 0 is [CLS]; "red" is content token 1 -> column 2, "circle" 3, "blue" 6, "square" 7
    assert weight[0].tolist() == [0, 0, 1, 1, 0, 0, 1, 1, 0, 0]
    for column, obj in ((2, 0), (3, 0), (6, 1), (7, 1)):
        np.testing.assert_array_equal(coverage[0, :, column], masks[obj])
    assert coverage[0, :, [0, 1, 4, 5, 8, 9]].sum() == 0
    assert weight[1].sum() == 0 and coverage[1].sum() == 0  # a dropped caption supervises nothing
    # an unnamed colour ("a circle and a square") supervises the shape words only
    _, w = grounding_targets([scene()], [(("circle", None), ("square", None))], [["a", "circle", "and", "a", "square"]], (16, 16), 8)
    assert w[0].tolist() == [0, 0, 1, 0, 0, 1, 0, 0]


def test_loss_against_a_plain_reference():
    g = torch.Generator().manual_seed(0)
    A = torch.rand(3, 16, 6, generator=g)
    coverage = (torch.rand(3, 16, 6, generator=g) > 0.6).float() * torch.rand(3, 16, 6, generator=g)
    weight = (torch.rand(3, 6, generator=g) > 0.4).float()
    total, count = 0.0, 0
    for b in range(3):
        for j in range(6):
            if weight[b, j]:
                a = A[b, :, j] / A[b, :, j].sum()
                total += float((1 - sum(a[m] * coverage[b, m, j] for m in range(16))) ** 2)
                count += 1
    assert float(grounding_loss(A, coverage, weight)) == pytest.approx(total / count, rel=1e-5)


def test_loss_is_zero_on_the_mask_and_known_for_a_uniform_map():
    mask = torch.zeros(1, 16, 1)
    mask[0, :4, 0] = 1
    one = torch.ones(1, 1)
    assert float(grounding_loss(mask * 0.3, mask, one)) == pytest.approx(0.0, abs=1e-7)  # all mass on the object
    assert float(grounding_loss(torch.ones(1, 16, 1), mask, one)) == pytest.approx((1 - 4 / 16) ** 2)
    assert float(grounding_loss(torch.ones(1, 16, 1), mask, torch.zeros(1, 1))) == 0.0  # nothing supervised


def test_training_with_grounding_moves_the_supervised_maps_onto_their_objects(tmp_path):
    """Same seed, same scenes: a few steps with a heavy grounding weight put more of the object words'
    maps on their objects (the probe's localisation, at half noise) than the same steps without it."""
    from tsam_diffusion.mini.model import TSAMMiniPipeline
    from tsam_diffusion.mini.probe import run_probe
    from tsam_diffusion.mini.train import TrainConfig, train

    loc = {}
    for weight in (0.0, 20.0):
        cfg = TrainConfig(steps=10, batch_size=8, warmup=1, lr=2e-3, ema_decay=0.0, grounding=weight, log_every=5)
        pipe = TSAMMiniPipeline.from_pretrained(train(tmp_path / str(weight), cfg, progress=False))
        log = (tmp_path / str(weight) / "train_log.csv").read_text().splitlines()
        assert log[0] == "step,loss,lr,seconds" + (",grounding" if weight else "") and len(log) == 3
        loc[weight] = run_probe(pipe, levels=(0.5,), templates=("two-attr",), per_template=8)["summary"]["update_levels"]["loc/all"]
    assert loc[20.0] > loc[0.0] + 0.2, loc
