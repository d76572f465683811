"""ShapesWorld (tsam_diffusion.mini): rendering, captions, splits, and the rule-based judge.

The judge must be right on >= 99% of rendered ground truth, overall and per shape and colour.
Pure numpy; the whole file runs in a few seconds.
"""
from __future__ import annotations

import collections
import itertools
from collections import deque

import numpy as np
import pytest

from tsam_diffusion.mini import judge as J
from tsam_diffusion.mini import world as W

N_GT = 10_000  # README and the model card: "100% on 10,000 rendered scenes"


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (edge padding), float32."""
    r = int(3 * sigma) + 1
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    x = np.pad(img.astype(np.float32), ((r, r), (r, r), (0, 0)), mode="edge")
    x = sum(k[i] * x[i : i + img.shape[0]] for i in range(2 * r + 1))
    return sum(k[i] * x[:, i : i + img.shape[1]] for i in range(2 * r + 1))


@pytest.fixture(scope="module")
def ground_truth():
    """N_GT examples over all templates (test split: held-out pairs included), with verdicts."""
    rng = np.random.default_rng(1234)
    names = list(W.TEMPLATES)
    rows = []
    for i in range(N_GT):
        scene, text, spec = W.sample_example(rng, names[i % len(names)], split="test")
        img = W.render(scene)
        dets = J.detect(img)
        rows.append((scene, text, img, J.judge(img, text, dets), J.judge(img, scene, dets)))
    return rows


def _rate(flags) -> float:
    flags = list(flags)
    return sum(flags) / len(flags)


def test_judge_ground_truth_accuracy(ground_truth):
    per = collections.defaultdict(list)
    for scene, _, _, v_text, v_scene in ground_truth:
        for obj, b in zip(scene.objects, v_scene.bound):
            per[obj.shape].append(b)
            per[obj.color].append(b)
    acc = {k: _rate(v) for k, v in per.items()}
    overall = {
        "whole(prompt)": _rate(r[3].whole for r in ground_truth),
        "exact(prompt)": _rate(r[3].exact for r in ground_truth),
        "whole(scene)": _rate(r[4].whole for r in ground_truth),
        "exact(scene)": _rate(r[4].exact for r in ground_truth),
    }
    msg = ", ".join(f"{k}={v:.4f}" for k, v in {**overall, **acc}.items())
    assert set(acc) == set(W.SHAPES) | set(W.COLORS), msg
    assert all(v == 1.0 for v in overall.values()), msg  # exact on rendered scenes, as README and model card say
    assert all(v == 1.0 for v in acc.values()), msg


def test_confusion_on_ground_truth_is_diagonal(ground_truth):
    rows = ground_truth[:300]
    c = J.confusion([r[2] for r in rows], [r[0] for r in rows])
    n_obj = sum(len(r[0].objects) for r in rows)
    assert c.shapes.shape == (4, 5) and c.colors.shape == (7, 8)
    assert c.shapes.sum() == c.colors.sum() == n_obj
    assert np.trace(c.shapes) == n_obj and np.trace(c.colors) == n_obj
    # prompt specs: only named colours count
    c2 = J.confusion([r[2] for r in rows], [r[1] for r in rows])
    assert c2.shapes.sum() == n_obj
    assert c2.colors.sum() == sum(c is not None for r in rows for _, c in J.parse_prompt(r[1]))


def test_judge_robust_to_mild_blur_and_noise():
    rng = np.random.default_rng(7)
    names = list(W.TEMPLATES)
    ok = []
    for i in range(240):
        scene, text, _ = W.sample_example(rng, names[i % len(names)], split="test")
        img = _blur(W.render(scene), 0.7) + rng.normal(0, 10, (32, 32, 3))
        ok.append(J.judge(np.clip(img, 0, 255).astype(np.uint8), scene).whole)
    assert _rate(ok) >= 0.95, _rate(ok)


def test_float_images_accepted():
    rng = np.random.default_rng(3)
    scene, text, _ = W.sample_example(rng, "three-attr")
    img = W.render(scene)
    assert J.judge(img.astype(np.float32) / 255.0, text).exact
    assert J.judge(img.astype(np.float64), text).exact


# --------------------------------------------------------------------------- world


def test_render_deterministic():
    def draw(seed):
        rng = np.random.default_rng(seed)
        return [W.render(W.sample_example(rng, t)[0]).tobytes() for t in W.TEMPLATES]

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)
    img = W.render(W.sample_example(np.random.default_rng(0), "one")[0])
    assert img.dtype == np.uint8 and img.shape == (32, 32, 3)
    assert tuple(img[0, 0]) == W.BACKGROUND


def test_layout_in_bounds_separated_on_grid():
    rng = np.random.default_rng(11)
    for _ in range(300):
        scene = W.sample_scene(rng, n_objects=3)
        assert len({o.shape for o in scene.objects}) == 3
        for o in scene.objects:
            x0, y0, x1, y1 = o.bbox
            assert W.SIZE_RANGE[0] <= o.size <= W.SIZE_RANGE[1] and o.size == int(o.size)
            assert x0 == int(x0) and y0 == int(y0)
            assert x0 >= W.MARGIN and y0 >= W.MARGIN and x1 <= 32 - W.MARGIN and y1 <= 32 - W.MARGIN
        for a, b in itertools.combinations(scene.objects, 2):
            ax0, ay0, ax1, ay1 = a.bbox
            bx0, by0, bx1, by1 = b.bbox
            gap = max(bx0 - ax1, ax0 - bx1, by0 - ay1, ay0 - by1)
            assert gap >= W.GAP


def test_every_shape_and_colour_renders_as_itself():
    for shape, color in itertools.product(W.SHAPES, W.COLORS):
        for size in (8, 11, 14):
            scene = W.Scene((W.Obj(shape, color, 10 + size / 2, 9 + size / 2, float(size)),))
            dets = J.detect(W.render(scene))
            assert [(d.shape, d.color) for d in dets] == [(shape, color)], (shape, color, size)


CAPTIONS = {
    "one": ((("circle", "red"),), "a red circle"),
    "two-attr": ((("circle", "red"), ("square", "blue")), "a red circle and a blue square"),
    "two-plain": ((("circle", None), ("square", None)), "a circle and a square"),
    "with": ((("circle", None), ("square", "blue")), "a circle with a blue square"),
    "attr-plain": ((("square", "blue"), ("circle", None)), "a blue square and a circle"),
    "three-attr": (
        (("circle", "red"), ("square", "blue"), ("cross", "green")),
        "a red circle, a blue square and a green cross",
    ),
}


@pytest.mark.parametrize("template", list(W.TEMPLATES))
def test_caption_templates(template):
    spec, text = CAPTIONS[template]
    assert W.caption(spec, template) == text
    assert J.parse_prompt(text) == spec
    assert J.infer_template(text) == template


def test_caption_articles_and_errors():
    assert W.caption([("circle", "orange")], "one") == "an orange circle"
    assert W.caption([("triangle", "orange"), ("cross", None)], "attr-plain") == (
        "an orange triangle and a cross"
    )
    scene = W.Scene((W.Obj("cross", "white", 8, 8, 10), W.Obj("square", "red", 22, 22, 10)))
    assert W.caption(scene, "with") == "a cross with a red square"
    with pytest.raises(ValueError):
        W.caption([("circle", None)], "one")
    with pytest.raises(ValueError):
        W.caption([("circle", "red")], "two-attr")
    with pytest.raises(ValueError, match="scene of 2 objects"):  # not silently cut to the template's length
        W.caption(scene, "one")


def test_parse_prompt_round_trips_random_specs():
    rng = np.random.default_rng(2)
    for template in W.TEMPLATES:
        for _ in range(50):
            spec = W.sample_spec(rng, template, split="test")
            text = W.caption(spec, template)
            assert J.parse_prompt(text) == spec
            assert J.parse_prompt(text.capitalize() + ".") == spec
            assert J.infer_template(text) == template
    for bad in ["", "a red", "a pink circle", "a circle or a square", "two circles", "red circle"]:
        with pytest.raises(ValueError):
            J.parse_prompt(bad)
    with pytest.raises(ValueError):
        J.infer_template("a circle, a square and a cross")  # parses, but is no template


def test_holdout_pairs_never_in_train_multi_object_scenes():
    rng = np.random.default_rng(9)
    multi = [t for t, named in W.TEMPLATES.items() if len(named) > 1]
    seen_single = set()
    for i in range(3000):
        scene, _, spec = W.sample_example(rng, multi[i % len(multi)], split="train")
        pairs = {(o.color, o.shape) for o in scene.objects}
        assert not pairs & W.HOLDOUT_PAIRS, (scene, spec)
        assert {(c, s) for s, c in spec if c} <= pairs
    for _ in range(600):  # alone, held-out pairs are allowed in training
        scene, _, _ = W.sample_example(rng, "one", split="train")
        seen_single |= {(o.color, o.shape) for o in scene.objects} & W.HOLDOUT_PAIRS
    assert seen_single == W.HOLDOUT_PAIRS
    for _ in range(200):  # the holdout split always names one
        _, _, spec = W.sample_example(rng, "two-attr", split="holdout")
        assert {(c, s) for s, c in spec} & W.HOLDOUT_PAIRS
    test_pairs = set()
    for _ in range(1500):
        _, _, spec = W.sample_example(rng, "three-attr", split="test")
        test_pairs |= {(c, s) for s, c in spec} & W.HOLDOUT_PAIRS
    assert test_pairs == W.HOLDOUT_PAIRS


def test_train_mix_covers_all_templates():
    assert set(W.TRAIN_MIX) == set(W.TEMPLATES) and all(v > 0 for v in W.TRAIN_MIX.values())
    rng = np.random.default_rng(4)
    drawn = collections.Counter(W.sample_template(rng) for _ in range(600))
    assert set(drawn) == set(W.TEMPLATES)
    scene, text, spec = W.sample_training_example(rng)
    assert J.parse_prompt(text) == spec and len(scene.objects) == len(spec)


# --------------------------------------------------------------------------- judge verdicts


def _scene(*objs: tuple[str, str]) -> W.Scene:
    spots = [(4, 4), (18, 4), (4, 18)]
    return W.Scene(tuple(W.Obj(s, c, x + 5, y + 5, 10.0) for (s, c), (x, y) in zip(objs, spots)))


def test_judge_planted_wrong_colour():
    img = W.render(_scene(("circle", "red"), ("square", "blue")))
    v = J.judge(img, "a blue circle and a red square")
    assert v.present == (True, True) and v.bound == (False, False)
    assert not v.whole and not v.exact and v.extra == 0
    v = J.judge(img, "a red circle and a blue square")
    assert v.whole and v.exact
    v = J.judge(img, "a circle with a red square")
    assert v.bound == (None, False) and not v.whole
    c = J.confusion([img], ["a blue circle and a red square"])
    blue, red = W.COLORS.index("blue"), W.COLORS.index("red")
    assert c.colors[blue, red] == 1 and c.colors[red, blue] == 1 and np.trace(c.shapes) == 2


def test_judge_missing_and_extra_objects():
    img = W.render(_scene(("circle", "red")))
    v = J.judge(img, "a red circle and a blue square")
    assert v.present == (True, False) and v.bound == (True, False) and v.extra == 0
    assert not v.whole
    c = J.confusion([img], ["a red circle and a blue square"])
    assert c.shapes[W.SHAPES.index("square"), -1] == 1 and c.colors[W.COLORS.index("blue"), -1] == 1
    img = W.render(_scene(("circle", "red"), ("cross", "white"), ("triangle", "green")))
    v = J.judge(img, "a red circle")
    assert v.whole and not v.exact and v.extra == 2
    v = J.judge(img, [("triangle", None), ("cross", "white")])
    assert v.whole and v.extra == 1 and v.bound == (None, True)
    assert J.judge(np.full((32, 32, 3), W.BACKGROUND, np.uint8), "a circle").present == (False,)


def test_connected_components_match_bfs():
    def bfs(lab):
        out = -np.ones(lab.shape, int)
        k = 0
        for y, x in zip(*np.nonzero(lab >= 0)):
            if out[y, x] >= 0:
                continue
            out[y, x], q = k, deque([(y, x)])
            while q:
                a, b = q.popleft()
                for c, d in itertools.product((a - 1, a, a + 1), (b - 1, b, b + 1)):
                    inside = 0 <= c < lab.shape[0] and 0 <= d < lab.shape[1]
                    if inside and out[c, d] < 0 and lab[c, d] == lab[y, x]:
                        out[c, d] = k
                        q.append((c, d))
            k += 1
        return out

    rng = np.random.default_rng(0)
    for _ in range(100):
        lab = rng.integers(-1, 3, size=tuple(rng.integers(1, 16, 2)))
        a, b = J.connected_components(lab), bfs(lab)
        assert np.array_equal(a >= 0, b >= 0)
        pairs = set(zip(a[a >= 0].tolist(), b[b >= 0].tolist()))
        assert len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})
