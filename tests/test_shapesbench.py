"""ShapesBench: the shipped suites are what make_suite gives, and the shapes metric is exact."""
import sys
from pathlib import Path

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
                 "whole@two-attr": 1.0, "exact@two-attr": 1.0, "binding@two-attr": 1.0, "presence@seen-pairs": 1.0,
                 "whole@seen-pairs": 1.0, "exact@seen-pairs": 1.0, "binding@seen-pairs": 1.0}
    assert b["presence"] == 1.0 and b["binding"] == 0.0 and b["whole"] == 0.0
    (c,) = metric.score([Image.fromarray(render(Scene((Obj("circle", "red", 8, 8, 10),), 32)))],
                        ["a circle and a square"], [{"template": "two-plain"}])
    assert c["presence"] == 0.5 and "binding" not in c and c["whole@two-plain"] == 0.0


def test_held_out_pairings_are_reported_separately():
    """Multi-object prompts naming a held-out pairing (red triangle, blue cross, yellow circle) score
    under @held-out, the others under @seen-pairs; single objects under neither."""
    from tsam_diffusion.mini.shapesbench import pairing_group

    assert pairing_group("a red triangle and a blue square") == "held-out"
    assert pairing_group("a circle with a blue cross") == "held-out"
    assert pairing_group("a green square, a yellow circle and a red cross") == "held-out"
    assert pairing_group("a blue triangle and a red cross") == "seen-pairs"  # the colours swapped: not held out
    assert pairing_group("a triangle and a cross") == "seen-pairs"  # no colour named
    assert pairing_group("a red triangle") is None
    suite = load_suite("shapes-test")
    groups = [pairing_group(p.text) for p in suite]
    assert groups.count(None) == PER_TEMPLATE["one"] and groups.count("held-out") > 0 and groups.count("seen-pairs") > 0
    metric = create_metric("shapes")
    scene = Scene((Obj("triangle", "red", 8, 8, 10), Obj("square", "blue", 22, 22, 10)), 32)
    (v,) = metric.score([Image.fromarray(render(scene))], ["a red triangle and a blue square"], [{}])
    assert v["whole@held-out"] == 1.0 and not any(k.endswith("@seen-pairs") for k in v)


def test_shapesbench_subset_end_to_end_on_the_bundled_model(tmp_path):
    """CI's ShapesBench: 8 shapes-test prompts (every template) x 2 seeds, vanilla and T-SAM, through
    ``tsam bench run/score/report``; the judge's values are in [0, 1] and the database, the PNGs
    and the report agree."""
    import json

    from tsam_diffusion.bench.db import RunDB
    from tsam_diffusion.bench.report import build_report
    from tsam_diffusion.cli import main

    suite = load_suite("shapes-test")
    picks = [next(p for p in suite if p.meta["template"] == t) for t in PER_TEMPLATE]
    picks += [p for p in suite if p.meta["template"] in ("two-attr", "three-attr") and p not in picks][:8 - len(picks)]
    prompts = tmp_path / "subset.jsonl"
    prompts.write_text("".join(json.dumps({"id": p.id, "prompt": p.text, "template": p.meta["template"]}) + "\n" for p in picks))
    run = tmp_path / "run"
    assert main(["bench", "run", "--prompts", str(prompts), "--methods", "vanilla,tsam", "--seeds", "0-1",
                 "--out", str(run), "--batch-size", "2"]) == 0
    assert main(["bench", "score", str(run), "--metrics", "shapes"]) == 0
    assert main(["bench", "report", str(run)]) == 0

    db = RunDB(run)
    images = db.images()
    assert len(images) == 8 * 2 * 2
    assert db.settings()["model"] == "tsam-mini"
    assert db.methods()["tsam"]["tsam"]["name"] == "mini"  # the bundled model's own preset
    assert {r["config"]["num_inference_steps"] for r in images} == {25}
    by_job: dict[str, dict[str, float]] = {}
    for s in db.scores():
        assert s["metric"] == "shapes" and 0.0 <= s["value"] <= 1.0
        by_job.setdefault(s["job_id"], {})[s["key"]] = s["value"]
    assert set(by_job) == {r["job_id"] for r in images}
    metric = create_metric("shapes")
    for r in images:  # the stored values are the judge's verdict on the stored PNG
        (want,) = metric.score([Image.open(run / r["image"])], [r["prompt"]], [r["prompt_meta"]])
        assert by_job[r["job_id"]] == want
        assert f"whole@{r['prompt_meta']['template']}" in want
    report = build_report(run)
    for m in report.measures:
        if m["measure"] == "shapes/whole":
            rows = [r for r in images if r["method"] == m["method"]]
            assert m["n"] == len(rows)
            assert abs(m["mean"] - np.mean([by_job[r["job_id"]]["whole"] for r in rows])) < 1e-9
    assert any(p["method"] == "tsam" and p["measure"] == "shapes/whole" for p in report.paired)
    assert (run / "report.html").stat().st_size > 0

    # benchmarks/shapes_table.py: vanilla's mean and T-SAM's paired difference, by hand
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from shapes_table import table

    lines, figures = table(run)
    whole = {(r["method"], r["prompt_id"], r["seed"]): by_job[r["job_id"]]["whole"] for r in images}
    keys = [(p, s) for (m, p, s) in whole if m == "vanilla"]
    assert figures["whole"]["n"] == 16 and abs(figures["whole"]["vanilla"][0] - np.mean([whole["vanilla", *k] for k in keys])) < 1e-9
    diff = np.mean([whole["tsam", *k] - whole["vanilla", *k] for k in keys])
    assert abs(figures["whole"]["tsam"][0] - diff) < 1e-9 and figures["whole"]["tsam"][1] <= diff <= figures["whole"]["tsam"][2]
    assert lines[2].startswith("| all | 16 |") and figures["_run"]["seeds"] == [0, 1]
    _, only_seed_1 = table(run, seeds={1})
    assert only_seed_1["whole"]["n"] == 8


def test_scoring_split_between_processes_covers_every_image_whatever_their_start(tmp_path):
    """Processes scoring one run (RANK/WORLD_SIZE) split ALL images the same way: a process that
    starts after another has scored its share still takes exactly its own (a split of the
    not-yet-scored images left a third of a 8-process run unscored)."""
    from tsam_diffusion.bench.db import RunDB
    from tsam_diffusion.bench.score import score_run

    db = RunDB(tmp_path)
    db.claim_settings({"model": "x"})
    rows = []
    for k in range(10):
        scene = Scene((Obj("circle", "red", 8, 8, 10),), 32)
        rel = f"images/{k}.png"
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.fromarray(render(scene)).save(tmp_path / rel)
        rows.append({"job_id": f"j{k}", "suite": "s", "prompt_id": f"p{k}", "prompt": "a red circle", "prompt_meta": {},
                     "seed": 0, "method": "vanilla", "config": {}, "image": rel, "model": "x", "versions": {}, "seconds": 0.0,
                     "created": 0.0, "loss_first": None, "loss_last": None, "updates": 0, "skipped": 0, "diagnostics": {}})
    db.add_images(rows)
    counts = [score_run(tmp_path, ["shapes"], batch_size=2, rank=r, world_size=3, progress=False)["shapes"] for r in (0, 1, 2)]
    assert counts == [4, 4, 2] and len(db.scored_jobs("shapes")) == 10
    assert score_run(tmp_path, ["shapes"], batch_size=2, progress=False)["shapes"] == 0
