"""The benchmark report (tsam_diffusion.bench.report) on a small fake run, and in a real headless browser."""
from __future__ import annotations

import base64
import html
import io
import math
import re
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tsam_diffusion.bench.db import BenchError, DB_NAME, IMAGE_COLUMNS, RunDB
from tsam_diffusion.bench.report import (
    MIN_PROMPTS,
    ELEMENTS_PNG,
    bootstrap_ci,
    build_report,
    element_accuracy,
    join_scores,
    make_report,
    paired_differences,
)
from tsam_diffusion.bench.report_text import TABLE1_HEADING, TABLE2_HEADING, paper_methods, paper_table1, paper_table2

SUITE = "tifa-v1"
PROMPTS = [  # (prompt_id, text, source); the second text checks escaping
    ("tifa-v1:coco_1", "a red cat and a blue dog", "coco"),
    ("tifa-v1:drawbench_2", 'two apples <on> a "table" & co | x', "drawbench"),
]
SEEDS = [0, 1, 2]
# per method: {prompt index: [value at seed 0, 1, 2]}
CLIP_FULL = {
    "vanilla": {0: [0.30, 0.31, 0.32], 1: [0.25, 0.26, 0.27]},
    "tsam": {0: [0.33, 0.31, 0.35], 1: [0.26, 0.30, 0.27]},
}
TIFA_SCORE = {
    "vanilla": {0: [0.50, 0.75, 0.50], 1: [1.00, 0.50, 0.50]},
    "tsam": {0: [0.75, 1.00, 0.75], 1: [1.00, 1.00, 0.50]},
}
# correct answers (object, color, counting) per image; every image has questions object 2, color 1, counting 1
TIFA_CORRECT = {
    "vanilla": {0: [(2, 0, 0), (2, 1, 0), (1, 1, 0)], 1: [(2, 1, 1), (2, 0, 0), (1, 0, 1)]},
    "tsam": {0: [(2, 1, 0), (2, 1, 1), (2, 0, 1)], 1: [(2, 1, 1), (2, 1, 1), (1, 1, 0)]},
}
QUESTIONS = (2, 1, 1)
ELEMENTS = ("object", "color", "counting")
METHOD_CONFIGS = {"vanilla": {"guidance": None}, "tsam": {"lr": 20.0, "steps": [0, 25], "loss": "tsam"}}
# the configurations bench/run.py stores: T-SAM and vanilla under "tsam", the baselines under "guidance"
PAPER_CONFIGS = {
    "vanilla": {"tsam": None},
    "tsam:sd-ae": {"tsam": {"method": "tsam", "name": "sd-ae", "alpha": 20.0}},
    "attend-excite": {"guidance": {"method": "attend-excite", "name": "attend-excite", "alpha": 20.0}},
    "syngen": {"guidance": {"method": "syngen", "name": "syngen", "alpha": 20.0}},
    "conform": {"guidance": {"method": "conform", "name": "conform", "alpha": 20.0}},
}
PAPER_METHODS = tuple(PAPER_CONFIGS)
# the same methods as the paper's tables order them
PAPER_ROWS = [("no guidance", "none", "vanilla"), ("LB (SynGen)", "parser", "syngen"),
              ("CONFORM", "token groups", "conform"), ("A&E", "object tokens", "attend-excite"),
              ("T-SAM (tsam:sd-ae)", "none", "tsam:sd-ae")]
VERSIONS = {"tsam_diffusion": "0.1.0", "torch": "2.4.0", "diffusers": "0.30.0"}


def make_run(run_dir, methods=("vanilla", "tsam"), drop=(), configs=METHOD_CONFIGS, metrics=("clip", "tifa"), vqa=None):
    """A run with ``methods`` x PROMPTS x SEEDS images (less the (method, prompt index, seed) in ``drop``),
    scored by ``metrics`` (of clip, clip-text, tifa). A method without values of its own gets tsam's,
    its CLIP values shifted by 0.01 per place in ``methods``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    db = RunDB(run_dir)
    db.claim_settings({"model": "tiny-sd", "steps": 50, "guidance_scale": 7.5})
    for m in methods:
        db.claim_method(m, configs[m])
    rows, clip, tifa, clip_text = [], {}, {}, {}
    for mi, method in enumerate(methods):
        for pi, (pid, text, source) in enumerate(PROMPTS):
            for si, seed in enumerate(SEEDS):
                if (method, pi, seed) in drop:
                    continue
                job = f"{method}-{pi}-{seed}"
                rel = f"images/{method}/{job}.png"
                (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                size = (300, 200) if method == "tsam" else (64, 64)  # tsam images get scaled down
                Image.new("RGB", size, (40 * mi + 60, 80 * pi + 40, 70 * si + 30)).save(run_dir / rel)
                row = dict(job_id=job, suite=SUITE, prompt_id=pid, prompt=text, prompt_meta={"source": source},
                           seed=seed, method=method, config=configs[method], image=rel, model="tiny-sd",
                           versions=VERSIONS, seconds=1.0 + mi, created=0.0, loss_first=None, loss_last=None,
                           updates=0, skipped=0, diagnostics=None)
                assert set(row) == set(IMAGE_COLUMNS)
                rows.append(row)
                own = method in CLIP_FULL
                values = method if own else "tsam"
                full = CLIP_FULL[values][pi][si] + (0.0 if own else 0.01 * mi)
                clip[job] = {"full": full, "min": full - 0.05}
                clip_text[job] = {"score": full + 0.4}
                tifa[job] = {"score": TIFA_SCORE[values][pi][si]} | ({f"vqa:{vqa(pi)}": 1.0} if vqa else {})
                for etype, c, q in zip(ELEMENTS, TIFA_CORRECT[values][pi][si], QUESTIONS):
                    tifa[job] |= {f"correct:{etype}": c, f"questions:{etype}": q}
    db.add_images(rows)
    for name, scores in (("clip", clip), ("clip-text", clip_text), ("tifa", tifa)):
        if name in metrics:
            db.add_scores(name, scores)
    return run_dir


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path / "run")


def _rows(run_dir):
    db = RunDB(run_dir)
    return join_scores(db.images(), db.scores())


# --------------------------------------------------------------------------- statistics


def test_bootstrap_ci_small_input():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    mean, lo, hi = bootstrap_ci(values)
    assert mean == 3.0
    assert 1.0 <= lo < mean < hi <= 5.0
    assert bootstrap_ci(values) == (mean, lo, hi)  # deterministic by seed
    assert bootstrap_ci(values, seed=0, n=2000) == (mean, lo, hi)
    # a narrower level gives a narrower interval
    _, lo90, hi90 = bootstrap_ci(values, alpha=0.10)
    assert lo <= lo90 and hi90 <= hi


def test_bootstrap_ci_is_an_interval_of_the_mean():
    # 0..99: mean 49.5, standard error 28.87 / 10 -> normal 95% interval about [43.8, 55.2]
    mean, lo, hi = bootstrap_ci(list(range(100)))
    assert mean == 49.5
    assert abs(lo - 43.84) < 1.5 and abs(hi - 55.16) < 1.5
    assert bootstrap_ci(list(range(100)), seed=1) != (mean, lo, hi)  # the seed matters


def test_bootstrap_ci_is_a_95_percent_interval_not_a_90_percent_one():
    """0..99: the bootstrap distribution of the mean is close to normal with sd = (population sd) / 10,
    so a 95% interval is 2 * 1.960 sd wide (11.32) and a 90% one 2 * 1.645 sd (9.50)."""
    sd = float(np.std(np.arange(100))) / 10
    for seed in range(3):
        _, lo, hi = bootstrap_ci(list(range(100)), seed=seed)
        assert hi - lo == pytest.approx(2 * 1.95996 * sd, abs=0.5)
        assert (lo + hi) / 2 == pytest.approx(49.5, abs=0.4)
    _, lo90, hi90 = bootstrap_ci(list(range(100)), alpha=0.10)
    assert hi90 - lo90 == pytest.approx(2 * 1.64485 * sd, abs=0.5)


def _prompt_effect_values(prompts: int = 12, seeds: int = 16) -> tuple[list[float], list[str], float]:
    """Values that depend on the prompt only (every seed of a prompt scores the same), their prompt
    labels, and the standard error of the mean when prompts are the resampled unit."""
    effects = np.linspace(0.0, 1.0, prompts)
    values = [float(e) for e in effects for _ in range(seeds)]
    groups = [f"p{k}" for k in range(prompts) for _ in range(seeds)]
    return values, groups, float(np.std(effects)) / math.sqrt(prompts)


def test_bootstrap_ci_resamples_whole_prompts():
    """With 16 identical seeds per prompt the information is in the 12 prompts: resampling prompts gives
    the prompt-level width; resampling images would be 4x (sqrt(16)) too narrow."""
    values, groups, se = _prompt_effect_values()
    _, lo, hi = bootstrap_ci(values, groups=groups)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    _, lo_i, hi_i = bootstrap_ci(values)
    assert (hi_i - lo_i) == pytest.approx((hi - lo) / 4, rel=0.25)


def test_report_intervals_resample_prompts(tmp_path):
    """The report's intervals are the prompt-grouped ones (README: "resampling prompts")."""
    values, groups, se = _prompt_effect_values(prompts=12, seeds=4)
    db = RunDB(tmp_path)
    db.claim_settings({"model": "tiny-sd", "steps": 50, "guidance_scale": 7.5})
    db.claim_method("vanilla", METHOD_CONFIGS["vanilla"])
    rows, scores = [], {}
    for k, (v, g) in enumerate(zip(values, groups)):
        job = f"vanilla-{k}"
        rows.append(dict(job_id=job, suite=SUITE, prompt_id=g, prompt=g, prompt_meta={}, seed=k % 4, method="vanilla",
                         config=METHOD_CONFIGS["vanilla"], image=f"images/{job}.png", model="tiny-sd", versions=VERSIONS,
                         seconds=1.0, created=0.0, loss_first=None, loss_last=None, updates=0, skipped=0, diagnostics=None))
        scores[job] = {"full": v}
    db.add_images(rows)
    db.add_scores("clip", scores)
    (row,) = [r for r in build_report(tmp_path).measures if r["measure"] == "clip/full"]
    assert (row["mean"], row["lo"], row["hi"]) == pytest.approx(bootstrap_ci(values, groups=groups, min_units=MIN_PROMPTS))
    _, lo_i, hi_i = bootstrap_ci(values)
    assert row["hi"] - row["lo"] > 1.6 * (hi_i - lo_i)


def test_bootstrap_ci_too_few_units_gives_no_interval():
    """One value, one prompt, or fewer prompts than ``min_units``: the mean, and NaN bounds (no interval)."""
    for args, kwargs in [(([0.25],), {}), (([0.0, 1.0], ), {"groups": ["p", "p"]}),
                         (([0.0, 1.0, 1.0],), {"groups": ["p", "q", "r"], "min_units": 4})]:
        mean, lo, hi = bootstrap_ci(*args, **kwargs)
        assert mean == pytest.approx(np.mean(args[0])) and math.isnan(lo) and math.isnan(hi)
    assert not any(map(math.isnan, bootstrap_ci([0.0, 1.0, 1.0], groups=["p", "q", "r"], min_units=3)))
    assert all(math.isnan(x) for x in bootstrap_ci([]))


def test_paired_differences_exact(run):
    rows = _rows(run)
    # pairs in (suite, prompt_id, seed) order: coco_1 seeds 0-2, then drawbench_2 seeds 0-2
    assert paired_differences(rows, "clip/full", "tsam") == pytest.approx([0.03, 0.00, 0.03, 0.01, 0.04, 0.00])
    assert paired_differences(rows, "tifa/score", "tsam", baseline="vanilla") == pytest.approx(
        [0.25, 0.25, 0.25, 0.0, 0.5, 0.0])
    assert paired_differences(rows, "clip/full", "vanilla") == pytest.approx([0.0] * 6)
    assert paired_differences(rows, "no/such", "tsam") == []


def test_paired_differences_only_common_pairs(tmp_path):
    rows = _rows(make_run(tmp_path / "run", drop={("tsam", 0, 0), ("vanilla", 1, 2)}))
    assert paired_differences(rows, "clip/full", "tsam") == pytest.approx([0.00, 0.03, 0.01, 0.04])


def test_element_accuracy_sums(run):
    rows = _rows(run)
    assert element_accuracy(rows, "vanilla") == {
        "color": (3, 6, pytest.approx(0.5)),
        "counting": (2, 6, pytest.approx(2 / 6)),
        "object": (10, 12, pytest.approx(10 / 12)),
    }
    assert element_accuracy(rows, "tsam") == {
        "color": (5, 6, pytest.approx(5 / 6)),
        "counting": (4, 6, pytest.approx(4 / 6)),
        "object": (11, 12, pytest.approx(11 / 12)),
    }
    assert element_accuracy(rows, "absent") == {}


# --------------------------------------------------------------------------- build_report


def test_build_report_tables(run):
    report = build_report(run)
    assert report.suites == [SUITE]
    assert report.methods == ["vanilla", "tsam"]
    assert report.measure_names == ["clip/full", "clip/min", "tifa/score"]  # counts are no measures
    assert {(c["method"], c["images"]) for c in report.counts} == {("vanilla", 6), ("tsam", 6)}
    m = {(r["method"], r["measure"]): r for r in report.measures}
    assert m[("vanilla", "clip/full")]["mean"] == pytest.approx(1.71 / 6)
    assert m[("tsam", "clip/full")]["mean"] == pytest.approx(1.82 / 6)
    assert m[("tsam", "tifa/score")]["n"] == 6
    p = {(r["method"], r["measure"]): r for r in report.paired}
    assert set(p) == {("tsam", "clip/full"), ("tsam", "clip/min"), ("tsam", "tifa/score")}
    assert p[("tsam", "clip/full")]["pairs"] == 6
    assert p[("tsam", "clip/full")]["mean"] == pytest.approx(0.11 / 6)
    assert p[("tsam", "tifa/score")]["mean"] == pytest.approx(1.25 / 6)
    # two prompts are too few for an interval (MIN_PROMPTS = 10): mean only, NaN bounds
    assert math.isnan(p[("tsam", "tifa/score")]["lo"]) and math.isnan(m[("tsam", "clip/full")]["hi"])
    p2 = {(r["method"], r["measure"]): r for r in build_report(run, min_prompts=2).paired}
    assert 0.0 <= p2[("tsam", "tifa/score")]["lo"] <= p2[("tsam", "tifa/score")]["hi"] <= 0.5
    s = {(r["method"], r["source"]): r for r in report.sources}
    assert s[("vanilla", "coco")]["mean"] == pytest.approx(1.75 / 3)
    assert s[("tsam", "drawbench")]["mean"] == pytest.approx(2.5 / 3)
    (grid,) = report.grids
    assert grid["methods"] == ["vanilla", "tsam"]
    assert [(r["prompt_id"], r["seed"]) for r in grid["rows"]] == [(PROMPTS[0][0], 0), (PROMPTS[1][0], 0)]
    assert report.versions == VERSIONS and report.model == "tiny-sd"
    assert report.method_configs == METHOD_CONFIGS


def test_too_few_prompts_get_no_interval_and_no_bold(run):
    """The issue's case: a difference over few prompts that is the same for all of them (tifa/score on
    drawbench_2 seeds 0 and 2 differ, but clip/full's per-prompt means are both positive) must not be
    marked as excluding 0; the report states the minimum."""
    md, html_path = make_report(run)
    text, page = md.read_text(), html_path.read_text()
    assert f"fewer than {MIN_PROMPTS} prompts gets no interval" in text
    assert f"fewer than {MIN_PROMPTS} prompts gets no interval" in " ".join(page.split())
    assert "[no interval: too few prompts]" in text and "**" not in text.split("## Configuration")[0].replace("**bold**", "")
    assert 'class="num pos"' not in page and 'class="num neg"' not in page
    md2, html2 = make_report(run, min_prompts=2)
    assert 'class="num pos"' in html2.read_text()  # with the minimum lowered, clip/full's interval excludes 0


def test_grid_uses_smallest_common_seed_and_prompt_limit(tmp_path):
    run = make_run(tmp_path / "run", drop={("tsam", 0, 0), ("vanilla", 0, 1)})
    (grid,) = build_report(run).grids
    assert [(r["prompt_id"], r["seed"]) for r in grid["rows"]] == [(PROMPTS[0][0], 2), (PROMPTS[1][0], 0)]
    (grid,) = build_report(run, max_prompts=1).grids
    assert len(grid["rows"]) == 1


def test_no_vanilla_no_paired_section(tmp_path):
    run = make_run(tmp_path / "run", methods=("tsam",))
    report = build_report(run)
    assert report.paired == []
    md, html_path = make_report(run)
    assert "Paired difference" not in md.read_text()
    assert "Paired difference" not in html_path.read_text()


def test_bad_input(tmp_path):
    with pytest.raises(BenchError, match=DB_NAME):
        build_report(tmp_path)
    assert not (tmp_path / DB_NAME).exists()  # nothing created
    with pytest.raises(BenchError, match="no benchmark run"):
        make_report(tmp_path / "absent")
    RunDB(tmp_path)
    with pytest.raises(ValueError, match="no images"):
        make_report(tmp_path)


# --------------------------------------------------------------------------- Markdown and HTML


def test_markdown(run):
    md_path, html_path = make_report(run)
    assert (md_path, html_path) == (run / "report.md", run / "report.html")
    md = md_path.read_text()
    assert "| images | 6 | 6 |" in md
    assert "| `clip/full` | 0.2850 [" in md
    assert "0.3033 [" in md  # tsam clip/full mean
    assert "+0.0183 [" in md and "(n=6)" in md  # paired clip/full
    assert "+0.2083 [" in md  # paired tifa/score
    assert "| object | 83.3% (10/12) | 91.7% (11/12) |" in md
    assert "| color | 50.0% (3/6) | 83.3% (5/6) |" in md
    assert "| coco | 0.5833 [" in md and "| drawbench |" in md
    assert f"![TIFA accuracy per element type]({ELEMENTS_PNG})" in md
    with Image.open(run / ELEMENTS_PNG) as chart:
        assert chart.format == "PNG" and chart.width > 300
    assert md.count('<img src="images/') == 4
    assert "&lt;on&gt;" in md and "<on>" not in md and r"\| x" in md
    assert '"lr": 20.0' in md and '"guidance_scale": 7.5' in md and '"diffusers": "0.30.0"' in md


def test_html_self_contained(run, tmp_path):
    md_path, html_path = make_report(run, out_html=tmp_path / "out" / "r.html")
    assert md_path == tmp_path / "out" / "r.md" and md_path.is_file() and html_path.is_file()
    assert (tmp_path / "out" / ELEMENTS_PNG).is_file()
    doc = html_path.read_text()
    assert doc.startswith("<!DOCTYPE html>") and "<table" in doc
    thumbs = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', doc)
    assert len(thumbs) == 4  # 2 prompts x 2 methods
    for b64 in thumbs:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            assert max(im.size) <= 256
    assert len(re.findall(r'<img class="chart" src="data:image/png;base64,', doc)) == 1  # element chart
    assert "TIFA accuracy per element type" in doc
    assert "0.2850" in doc and "+0.0183" in doc and "83.3%" in doc
    assert "&lt;on&gt;" in doc and "<on>" not in doc and "&quot;table&quot;" in doc
    assert not re.search(r'(src|href)="(https?:)?//', doc)  # nothing external
    assert "&quot;lr&quot;: 20.0" in doc


# --------------------------------------------------------------------------- the paper's table layouts


def _paper_run(tmp_path, metrics=("clip", "clip-text", "tifa")):
    return make_run(tmp_path / "run", methods=PAPER_METHODS, configs=PAPER_CONFIGS, metrics=metrics)


def _ci(row, signed=False):
    """A cell's ``mean [lo, hi]`` written out here, independently of the report's own formatting."""
    f = "{:+.4f}" if signed else "{:.4f}"
    if math.isnan(row["lo"]):
        return f.format(row["mean"]) + " [no interval: too few prompts]"
    return f"{f.format(row['mean'])} [{f.format(row['lo'])}, {f.format(row['hi'])}]"


def _section(text, heading):
    """The text of the section under ``heading`` up to the next heading."""
    start = text.index(heading)
    return text[start:text.index("###", start + 5)]


def test_paper_methods_order_and_labels(tmp_path):
    report = build_report(_paper_run(tmp_path))
    assert report.methods == list(PAPER_METHODS)
    got = paper_methods(report, report.methods)
    assert [(m["label"], m["external"], m["method"]) for m in got] == PAPER_ROWS
    assert [m["family"] for m in got] == ["vanilla", "syngen", "conform", "attend-excite", "tsam"]
    # method names with presets or overrides after the label, unknown families last (in their order),
    # and the family from the name where the configuration does not tell (older runs)
    fake = SimpleNamespace(method_configs={
        "mystery": {"guidance": {"method": "mystery"}}, "tsam": {"tsam": {"alpha": 20.0}},
        "attend-excite[alpha=10]": {"guidance": {"method": "attend-excite"}}, "plain": {"guidance": None},
        "other": {}, "conform": {"guidance": {"method": "conform"}}})
    got = paper_methods(fake, ["mystery", "tsam", "attend-excite[alpha=10]", "plain", "other", "conform", "syngen:x"])
    assert [m["label"] for m in got] == ["no guidance (plain)", "LB (SynGen) (syngen:x)", "CONFORM",
                                         "A&E (attend-excite[alpha=10])", "T-SAM", "mystery", "other"]
    assert [m["external"] for m in got] == ["none", "parser", "token groups", "object tokens", "none", "n/a", "n/a"]


def test_paper_table2_cells_are_the_reports_rows(tmp_path):
    run = _paper_run(tmp_path)
    report = build_report(run, min_prompts=2)
    table = paper_table2(report, SUITE)
    headings = ["CLIP image-text (full prompt)", "CLIP image-text (minimum object)", "text-text (BLIP caption)"]
    assert table["header"] == ["method", "external information", *(h for x in headings for h in (x, f"Δ {x}"))]
    measures = {(r["method"], r["measure"]): r for r in report.measures}
    paired = {(r["method"], r["measure"]): r for r in report.paired}
    names = ["clip/full", "clip/min", "clip-text/score"]
    for (label, external, method), cells in zip(PAPER_ROWS, table["rows"], strict=True):
        assert (cells[0].text, cells[1].text) == (label, external)
        for k, name in enumerate(names):
            mean, diff = cells[2 + 2 * k], cells[3 + 2 * k]
            assert mean.row is measures[(method, name)] and mean.n is None
            if method == "vanilla":
                assert (diff.kind, diff.text) == ("text", "baseline")
            else:
                assert diff.kind == "diff" and diff.row is paired[(method, name)]

    md_path, html_path = make_report(run, min_prompts=2)
    md, page = md_path.read_text(), html_path.read_text()
    suite_md = md.split(f"## Suite `{SUITE}`")[1]
    assert suite_md.index(f"### {TABLE2_HEADING}") < suite_md.index("### Measures")
    section = _section(suite_md, f"### {TABLE2_HEADING}")
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    assert lines[0] == "| method | external information | " + " | ".join(h for x in headings for h in (x, f"Δ {x}")) + " |"
    bold = 0
    for (label, external, method), line in zip(PAPER_ROWS, lines[1:], strict=True):
        cells = [html.escape(label, quote=False), external]
        for name in names:
            cells.append(_ci(measures[(method, name)]))
            if method == "vanilla":
                cells.append("baseline")
                continue
            p = paired[(method, name)]
            significant = p["lo"] > 0 or p["hi"] < 0
            bold += significant
            cells.append(f"**{_ci(p, signed=True)}**" if significant else _ci(p, signed=True))
        assert line == "| " + " | ".join(cells) + " |"
    assert bold > 0  # the baselines' CLIP values are shifted up: their differences exclude 0

    assert html.escape(TABLE2_HEADING) in page
    assert page.index(html.escape(TABLE2_HEADING)) < page.index("<h3>Measures</h3>")
    table_html = page.split('<table class="paper-table2">')[1].split("<tbody>")[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table_html)
    for (label, external, method), row in zip(PAPER_ROWS, rows, strict=True):
        assert row.startswith(f"<th>{html.escape(label)}</th><td>{external}</td>")
        numbers = re.findall(r"[+-]?\d+\.\d{4}", row)
        want = []
        for name in names:
            m = measures[(method, name)]
            want += [f"{m['mean']:.4f}", f"{m['lo']:.4f}", f"{m['hi']:.4f}"]
            if method != "vanilla":
                p = paired[(method, name)]
                want += [f"{p['mean']:+.4f}", f"{p['lo']:+.4f}", f"{p['hi']:+.4f}"]
        assert numbers == want


def test_paper_table1_cells_are_the_reports_rows(tmp_path):
    run = _paper_run(tmp_path)
    report = build_report(run)
    table = paper_table1(report, SUITE)
    assert table["header"] == ["method", "TIFA score", "color", "counting", "object"]
    measures = {(r["method"], r["measure"]): r for r in report.measures}
    elements = {(r["method"], r["element"]): r for r in report.elements}
    for (label, _, method), cells in zip(PAPER_ROWS, table["rows"], strict=True):
        assert cells[0].text == label and cells[1].row is measures[(method, "tifa/score")]
        assert [c.row for c in cells[2:]] == [elements[(method, e)] for e in ("color", "counting", "object")]

    md_path, html_path = make_report(run)
    md, page = md_path.read_text(), html_path.read_text()
    suite_md = md.split(f"## Suite `{SUITE}`")[1]
    assert suite_md.index(f"### {TABLE2_HEADING}") < suite_md.index(f"### {TABLE1_HEADING}") < suite_md.index("### Measures")
    lines = [line for line in _section(suite_md, f"### {TABLE1_HEADING}").splitlines() if line.startswith("| ")]
    assert lines[0] == "| method | TIFA score | color | counting | object |"
    assert lines[1] == f"| no guidance | {_ci(measures[('vanilla', 'tifa/score')])} | 50.0% (3/6) | 33.3% (2/6) | 83.3% (10/12) |"
    assert lines[5] == (f"| T-SAM (tsam:sd-ae) | {_ci(measures[('tsam:sd-ae', 'tifa/score')])} "
                        "| 83.3% (5/6) | 66.7% (4/6) | 91.7% (11/12) |")
    assert len(lines) == 1 + len(PAPER_ROWS)  # header and rows (the separator is |---|)
    assert html.escape(TABLE1_HEADING) in page
    table_html = page.split('<table class="paper-table1">')[1].split("<tbody>")[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table_html)
    assert [re.match(r"<th>(.*?)</th>", r).group(1) for r in rows] == [html.escape(x[0]) for x in PAPER_ROWS]
    assert "50.0%" in rows[0] and "3/6" in rows[0] and f"{measures[('vanilla', 'tifa/score')]['mean']:.4f}" in rows[0]


def test_paper_tables_absent_without_their_measures(tmp_path):
    def texts(run):
        md, page = make_report(run)
        return md.read_text(), page.read_text()

    md, page = texts(make_run(tmp_path / "tifa", methods=PAPER_METHODS, configs=PAPER_CONFIGS, metrics=("tifa",)))
    assert TABLE2_HEADING not in md and html.escape(TABLE2_HEADING) not in page and "paper-table2" not in page
    assert TABLE1_HEADING in md and html.escape(TABLE1_HEADING) in page

    run = make_run(tmp_path / "clip", methods=PAPER_METHODS, configs=PAPER_CONFIGS, metrics=("clip",))
    md, page = texts(run)
    assert TABLE1_HEADING not in md and html.escape(TABLE1_HEADING) not in page and "paper-table1" not in page
    assert TABLE2_HEADING in md and "text-text (BLIP caption)" not in md  # only the measures present
    assert paper_table1(build_report(run), SUITE) is None

    run = make_run(tmp_path / "text", methods=PAPER_METHODS, configs=PAPER_CONFIGS, metrics=("clip-text",))
    assert paper_table2(build_report(run), SUITE)["header"] == [
        "method", "external information", "text-text (BLIP caption)", "Δ text-text (BLIP caption)"]

    run = make_run(tmp_path / "alone", methods=("tsam",))  # no vanilla: no differences to show
    table = paper_table2(build_report(run), SUITE)
    assert table["header"] == ["method", "external information", "CLIP image-text (full prompt)",
                               "CLIP image-text (minimum object)"]
    assert [c.text for c in table["rows"][0][:2]] == ["T-SAM", "none"]


# --------------------------------------------------------------------------- real browser

_CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.skipif(_CHROMIUM is None, reason="chromium / chromium-browser not on PATH (Debian: apt-get install -y "
                                               "chromium); the headless-browser check of report.html is skipped")
def test_vqa_label_is_named_not_measured(tmp_path):
    """``tifa/vqa:NAME`` says which VQA model answered: shown above the Table 1 layout, never as a measure."""
    one = make_run(tmp_path / "one", vqa=lambda pi: "mplug")
    report = build_report(one)
    assert report.vqa == {SUITE: ["mplug"]} and not any("vqa" in m for m in report.measure_names)
    md_path, html_path = make_report(one)
    assert "TIFA questions answered by mPLUG-large (TIFA's own model, as the paper)." in md_path.read_text()
    assert "TIFA questions answered by mPLUG-large" in html_path.read_text()
    mixed = make_run(tmp_path / "mixed", vqa=lambda pi: "mplug" if pi else "blip")
    assert "this run mixes VQA models" in make_report(mixed)[0].read_text()


def test_html_in_headless_chromium(run, tmp_path):
    _, html_path = make_report(run)
    base = [_CHROMIUM, *_CHROMIUM_ARGS, f"--user-data-dir={tmp_path / 'profile'}"]
    proc = subprocess.run([*base, "--virtual-time-budget=5000", "--dump-dom", html_path.as_uri()],
                          capture_output=True, text=True, timeout=180)
    dom = proc.stdout
    assert "<table" in dom, f"no DOM from chromium (rc {proc.returncode}): {proc.stderr[-2000:]}"
    body = re.search(r"<body[^>]*>", dom).group(0)
    loaded = re.search(r'data-images-loaded="(\d+)"', body)
    total = re.search(r'data-images-total="(\d+)"', body)
    assert loaded and total, f"the load script did not run: {body}"
    assert int(total.group(1)) == 5  # 4 thumbnails + the element chart
    assert int(loaded.group(1)) == int(total.group(1))

    shot = tmp_path / "report.png"
    proc = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1200,2000", html_path.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert shot.is_file(), f"no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    with Image.open(shot) as im:
        assert im.size == (1200, 2000)
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 100  # not blank


def test_bootstrap_ci_resamples_whole_groups():
    """With groups (prompts), images of one prompt move together: 10 prompts x 8 equal seeds give the
    interval of the 10 prompt means, wider than treating the 80 images as independent."""
    means = [0.1 * k for k in range(10)]
    values = [m for m in means for _ in range(8)]
    groups = [f"p{k}" for k in range(10) for _ in range(8)]
    clustered = bootstrap_ci(values, groups=groups)
    assert clustered == pytest.approx(bootstrap_ci(means))
    naive = bootstrap_ci(values)
    assert clustered[2] - clustered[1] > 2 * (naive[2] - naive[1])
    with pytest.raises(ValueError, match="group labels"):
        bootstrap_ci(values, groups=groups[:-1])
