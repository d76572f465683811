"""ShapesBench: the shipped suites are what make_suite gives, and the shapes metric is exact."""
import numpy as np
from PIL import Image

from tsam_diffusion.bench.metrics import create_metric
from tsam_diffusion.bench.suites import load_suite
from tsam_diffusion.mini.shapesbench import PER_TEMPLATE, make_suite
from tsam_diffusion.mini.world import Obj, Scene, render


def test_shipped_suites_are_reproducible_and_disjoint():
    dev, test = load_suite("shapes-dev"), load_suite("shapes-test")
    want_dev = make_suite("shapes-dev")
    want_test = make_suite("shapes-test", exclude={r["prompt"] for r in want_dev})
    assert [p.text for p in dev] == [r["prompt"] for r in want_dev]
    assert [p.text for p in test] == [r["prompt"] for r in want_test]
    assert not {p.text for p in dev} & {p.text for p in test}
    assert test[0].id == "shapes-test:one-1" and test[0].meta["template"] == "one"
    for suite in (dev, test):
        counts = {t: sum(p.meta["template"] == t for p in suite) for t in PER_TEMPLATE}
        assert counts == PER_TEMPLATE


def test_shapes_metric_on_rendered_truth_and_a_wrong_colour():
    metric = create_metric("shapes")
    right = Scene((Obj("circle", "red", 8, 8, 10), Obj("square", "blue", 22, 22, 10)), 32)
    wrong = Scene((Obj("circle", "blue", 8, 8, 10), Obj("square", "red", 22, 22, 10)), 32)
    prompt = "a red circle and a blue square"
    a, b = metric.score([Image.fromarray(render(right)), Image.fromarray(render(wrong))], [prompt] * 2, [{}, {}])
    assert a == {"presence": 1.0, "whole": 1.0, "exact": 1.0, "binding": 1.0, "presence@two-attr": 1.0,
                 "whole@two-attr": 1.0, "exact@two-attr": 1.0, "binding@two-attr": 1.0}
    assert b["presence"] == 1.0 and b["binding"] == 0.0 and b["whole"] == 0.0
    (c,) = metric.score([Image.fromarray(render(Scene((Obj("circle", "red", 8, 8, 10),), 32)))],
                        ["a circle and a square"], [{"template": "two-plain"}])
    assert c["presence"] == 0.5 and "binding" not in c and c["whole@two-plain"] == 0.0
