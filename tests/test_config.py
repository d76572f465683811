import pytest

from tsam_diffusion import PRESETS, TSAMConfig


def test_presets_are_the_papers():
    tifa, ae = TSAMConfig.preset("sd-tifa"), TSAMConfig.preset("sd-ae")
    assert (tifa.alpha, tifa.gamma, tifa.update_steps, tifa.refinement_iterations) == (40.0, 4.0, tuple(range(25)), 0)
    assert (ae.alpha, ae.gamma, ae.refinement_steps, ae.refinement_iterations) == (10.0, 2.0, (0, 10, 20), 20)
    assert ae.M == 256 and ae.sigma == 0.5 and ae.kernel_size == 3 and ae.loss == "l1"
    assert set(PRESETS) >= {"sd-tifa", "sd-ae"}


def test_schedule_at_50_steps():
    assert TSAMConfig.preset("sd-tifa").schedule(50) == [1] * 25 + [0] * 25
    ae = TSAMConfig.preset("sd-ae").schedule(50)
    assert sum(ae) == 85  # 25 updates + 3 x 20 refinement iterations
    assert [k for k, n in enumerate(ae) if n == 21] == [0, 10, 20]


def test_schedule_maps_to_the_same_fractions():
    assert TSAMConfig.preset("sd-tifa").schedule(25) == [1] * 13 + [0] * 12
    assert TSAMConfig.preset("sd-tifa").schedule(100) == [1] * 50 + [0] * 50
    ae = TSAMConfig.preset("sd-ae").schedule(25)
    assert [k for k, n in enumerate(ae) if n > 1] == [0, 5, 10]
    assert TSAMConfig.preset("sd-tifa").schedule(1) == [1]


def test_refinement_without_update_step():
    cfg = TSAMConfig(update_steps=(), refinement_steps=(2,), refinement_iterations=3, reference_steps=4)
    assert cfg.schedule(4) == [0, 0, 3, 0]


def test_preset_overrides_and_unknown():
    assert TSAMConfig.preset("sd-ae", alpha=3.0).alpha == 3.0
    with pytest.raises(ValueError, match="sd-tifa"):
        TSAMConfig.preset("nope")


def test_enabled():
    assert TSAMConfig().enabled
    assert not TSAMConfig(alpha=0).enabled
    assert not TSAMConfig(update_steps=()).enabled


@pytest.mark.parametrize(
    "field,value",
    [
        ("alpha", -1.0),
        ("alpha", float("nan")),
        ("gamma", 0.0),
        ("gamma", -2.0),
        ("M", 250),
        ("M", 0),
        ("update_steps", (0, -1)),
        ("refinement_steps", (-3,)),
        ("refinement_iterations", -1),
        ("loss_threshold", -0.1),
        ("kernel_size", 4),
        ("sigma", -1.0),
        ("loss", "l2"),
        ("normalize", "rows"),
        ("step_size_schedule", "cosine"),
        ("reference_steps", 0),
        ("center_maps", "yes"),
    ],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"TSAMConfig.{field}"):
        TSAMConfig(**{field: value})
