"""tsam study: reproducible draws, answers stored transactionally, results pinned on hand-made answers, the app
(security, resume, forged answers) through its HTTP interface, and 200 participants at once on a real server."""
import math
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tsam_diffusion.bench.db import RunDB
from tsam_diffusion.cli import main
from tsam_diffusion.study.app import serving
from tsam_diffusion.study.results import agreement, shares_ci, study_results
from tsam_diffusion.study.sample import draw, parse_pairs
from tsam_diffusion.study.store import StudyError, StudyStore

METHODS = ("vanilla", "tsam", "tsam:sd-ae")


def make_run(root, prompts=4, seeds=3, methods=METHODS, text="a <b>red</b> cube & a blue sphere {p}"):
    """A run directory with small PNGs and image rows, as `tsam bench run` writes them (no model needed)."""
    root.mkdir(parents=True)
    db = RunDB(root)
    rows = []
    for p in range(prompts):
        for s in range(seeds):
            for k, m in enumerate(methods):
                rel = f"images/{m.replace(':', '_')}/p{p}_s{s}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (40 * p, 60 * k, 20 * s)).save(root / rel)
                rows.append({"job_id": f"p{p}/s{s}/{m}", "suite": "x", "prompt_id": f"p{p}", "prompt": text.format(p=p),
                             "prompt_meta": {}, "seed": s, "method": m, "config": {}, "image": rel, "model": "m",
                             "versions": {}, "seconds": 0.1, "created": time.time(), "loss_first": None,
                             "loss_last": None, "updates": 0, "skipped": 0, "diagnostics": {}})
    db.add_images(rows)
    return root


@pytest.fixture()
def run(tmp_path):
    return make_run(tmp_path / "run")


def create(run, **kw):
    items, settings = draw(run, parse_pairs(kw.pop("pairs", "tsam:vanilla")), **kw)
    StudyStore(run, create=True).replace_items(items, settings)
    return items


def test_draw_is_reproducible_and_mixes_in_attention_checks(run):
    a, _ = draw(run, ["tsam:vanilla", "tsam:sd-ae:vanilla"], prompts=3, seeds=2, sample_seed=7)
    b, _ = draw(run, ["tsam:vanilla", "tsam:sd-ae:vanilla"], prompts=3, seeds=2, sample_seed=7)
    c, _ = draw(run, ["tsam:vanilla", "tsam:sd-ae:vanilla"], prompts=3, seeds=2, sample_seed=8)
    assert a == b and a != c
    pairs = [i for i in a if i["kind"] == "pair"]
    assert len(pairs) == 2 * 3 * 2 and {i["comparison"] for i in a} == {"tsam vs vanilla", "tsam:sd-ae vs vanilla"}
    assert all(i["image_a"].startswith("images/tsam") and i["image_b"].startswith("images/vanilla") for i in pairs)
    checks = [i for i in a if i["kind"] == "check"]
    assert len(checks) == 2  # one per comparison (6 pairs // 10, at least one)
    assert all(f"/{i['prompt_id']}_" not in i["image_b"] for i in checks)  # the other image is of another prompt
    assert [i["item_id"] for i in a] == list(range(1, len(a) + 1))
    with pytest.raises(ValueError, match="two different methods of this run"):
        draw(run, ["tsam:conform"])
    with pytest.raises(ValueError, match="METHOD_A:METHOD_B"):
        parse_pairs("tsam")
    empty = run.parent / "empty"
    empty.mkdir()
    RunDB(empty)
    with pytest.raises(ValueError, match="has no images yet"):
        draw(empty, ["tsam:vanilla"])


def test_answers_map_sides_to_methods_and_refuse_what_was_not_asked(run):
    create(run, prompts=2, seeds=1)
    store = StudyStore(run)
    pid = store.new_participant()
    assert store.serve(pid, 1, "b") == "b" and store.serve(pid, 1, "a") == "b"  # the first side shown stays
    store.answer(pid, 1, "left")
    assert store.answers()[0]["winner"] == "b" and store.answers()[0]["seconds"] >= 0
    for bad, why in (((pid, 1, "left"), "already answered"), ((pid, 2, "left"), "not shown"),
                     (("nobody", 1, "left"), "unknown participant"), ((pid, 1, "up"), "one of left, right, tie")):
        with pytest.raises(StudyError, match=why):
            store.answer(*bad)
    with pytest.raises(StudyError, match="already has answers"):
        store.replace_items([], {})
    with pytest.raises(StudyError, match="no study yet"):
        StudyStore(make_run(run.parent / "other"))


def test_results_by_hand():
    # 4 answers: A, A, B, tie -> 50% / 25% / 25%
    out = shares_ci(np.array([0, 0, 1, 2]), np.array(["p", "q", "p", "q"]), np.array(["x", "x", "y", "y"]), n=500)
    assert [round(s, 6) for s, _, _ in out] == [0.5, 0.25, 0.25]
    assert all(lo <= s <= hi for s, lo, hi in out)
    assert agreement({1: [0, 0, 0], 2: [1, 1]})[:2] == (1.0, 1.0)
    p_bar, kappa, n = agreement({1: [0, 1], 2: [0, 1], 3: [1]})
    assert (p_bar, n) == (0.0, 2) and kappa == pytest.approx(-1.0)  # always disagree
    assert math.isnan(agreement({1: [0]})[0])


def test_results_flag_participants_who_fail_a_check(run):
    items = create(run, prompts=4, seeds=3)  # 12 pairs, 1 check
    store = StudyStore(run)
    check = next(i["item_id"] for i in items if i["kind"] == "check")
    pairs = [i["item_id"] for i in items if i["kind"] == "pair"]
    good, bad = store.new_participant(), store.new_participant()
    for pid, pick in ((good, "a"), (bad, "b")):
        for item in pairs[:4] + [check]:
            store.serve(pid, item, "a")
            store.answer(pid, item, "left" if pick == "a" else "right")
    r = study_results(store, bootstrap=200)
    assert r["flagged"] == {bad: 1} and r["participants"] == 2 and r["answers"] == 10
    main_row, all_row = r["tables"]["excluding flagged"][0], r["tables"]["everyone"][0]
    assert main_row["win"][0] == 1.0 and main_row["answers"] == 4 and main_row["participants"] == 1
    assert all_row["win"][0] == 0.5 and all_row["lose"][0] == 0.5 and all_row["agreement"] == 0.0


def test_app_flow_security_and_resume(run):
    from fastapi.testclient import TestClient

    from tsam_diffusion.study.app import create_app

    items = create(run, prompts=2, seeds=1)  # 2 pairs + 1 check
    client = TestClient(create_app(run, admin_token="s3cret"))
    assert "3 comparisons" in client.get("/").text
    r = client.post("/start", follow_redirects=False)
    assert r.status_code == 303
    url = r.headers["location"]
    pid = url.rsplit("/", 1)[1]
    seen = []
    for k in range(len(items)):
        text = client.get(url).text
        assert "<b>red</b>" not in text and "&lt;b&gt;red&lt;/b&gt;" in text  # prompts are escaped
        assert f"Comparison {k + 1} of 3" in text and pid in text
        item_id = int(text.split('name="item_id" value="')[1].split('"')[0])
        assert item_id not in seen
        seen.append(item_id)
        assert f'name="item_id" value="{item_id}"' in client.get(url).text  # a reload shows the same item
        left = client.get(f"/img/{pid}/{item_id}/left")
        assert left.status_code == 200 and left.headers["content-type"] == "image/png"
        if k == 1:  # stop and come back with the id
            client = TestClient(create_app(run, admin_token="s3cret"))  # a restarted server
            assert client.post("/resume", data={"pid": pid}, follow_redirects=False).headers["location"] == url
        assert client.post(f"{url}/answer", data={"item_id": item_id, "choice": "tie"}, follow_redirects=False).status_code == 303
    assert "Thank you" in client.get(url).text and len(StudyStore(run).answers()) == 3
    # bad input: clear errors, nothing stored
    other = client.post("/start", follow_redirects=False).headers["location"].rsplit("/", 1)[1]
    assert client.post(f"/p/{other}/answer", data={"item_id": seen[0], "choice": "left"}).status_code == 400  # not shown
    assert client.post("/p/deadbeef/answer", data={"item_id": 1, "choice": "left"}).status_code == 400
    assert "unknown participant" in client.get("/p/deadbeef").text
    for bad in (f"/img/{pid}/1/..%2F..%2Frun.sqlite", f"/img/{pid}/1/top", "/img/../run.sqlite"):
        r = client.get(bad)
        assert r.status_code in (400, 404) and b"SQLite" not in r.content
    assert client.get(f"/img/{pid}/999/left").status_code == 400
    assert client.get(f"/img/{other}/{seen[0]}/left").status_code == 400  # never shown to that participant
    assert client.post(f"/p/{pid}/answer", content=b"x" * 5000,
                       headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 413
    assert client.get("/results").status_code == 403 and "tsam vs vanilla" in client.get("/results?token=s3cret").text
    assert len(StudyStore(run).answers()) == 3


def test_images_outside_the_run_are_never_served(run, tmp_path):
    from fastapi.testclient import TestClient

    from tsam_diffusion.study.app import create_app

    create(run, prompts=2, seeds=1)
    (tmp_path / "secret.png").write_bytes(b"not yours")
    with RunDB(run).transaction() as con:  # a tampered database pointing outside the run directory
        con.execute("UPDATE study_items SET image_a = '../secret.png'")
    client = TestClient(create_app(run))
    url = client.post("/start", follow_redirects=False).headers["location"]
    pid = url.rsplit("/", 1)[1]
    item_id = int(client.get(url).text.split('name="item_id" value="')[1].split('"')[0])
    r = client.get(f"/img/{pid}/{item_id}/left"), client.get(f"/img/{pid}/{item_id}/right")
    assert sorted(x.status_code for x in r) == [200, 404] and all(b"not yours" not in x.content for x in r)


_CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_two_hundred_participants_at_once(run):
    """A real server (uvicorn, threads) and 200 concurrent participants: no error, no answer lost."""
    import httpx

    create(run, prompts=4, seeds=3)  # 13 items

    def participant(base):
        with httpx.Client(base_url=base, timeout=120, follow_redirects=True) as c:
            url = c.post("/start").url.path
            for _ in range(3):
                text = c.get(url).text
                item_id = int(text.split('name="item_id" value="')[1].split('"')[0])
                r = c.post(url + "/answer", data={"item_id": item_id, "choice": "left"})
                assert r.status_code == 200, r.text  # followed the redirect to the next page
            return url.rsplit("/", 1)[1]

    with serving(run) as base, ThreadPoolExecutor(max_workers=200) as pool:
        pids = list(pool.map(participant, [base] * 200))
    answers = StudyStore(run).answers()
    assert len(set(pids)) == 200 and len(answers) == 600
    assert {a["pid"] for a in answers} == set(pids)


def test_study_cli(run, capsys):
    assert main(["study", "create", str(run), "--pairs", "tsam:vanilla", "--prompts", "2", "--seeds", "1"]) == 0
    assert "2 comparisons, 1 attention checks" in capsys.readouterr().err
    assert main(["study", "results", str(run)]) == 0
    assert "| tsam vs vanilla | - | - | - | 0 | 0 |" in capsys.readouterr().out
    assert main(["study", "create", str(run), "--pairs", "tsam:nothing"]) == 2
    assert "does not name two different methods" in capsys.readouterr().err
    assert main(["study", "results", str(run.parent / "none")]) in (1, 2)
    assert "holds no benchmark run" in capsys.readouterr().err
    bare = make_run(run.parent / "bare")
    assert main(["study", "serve", str(bare)]) == 2
    assert "has no study yet; draw one with `tsam study create" in capsys.readouterr().err


def test_bench_report_shows_the_study(run):
    from tsam_diffusion.bench.report import make_report

    items = create(run, prompts=2, seeds=1)
    store = StudyStore(run)
    pid = store.new_participant()
    for it in items:
        store.serve(pid, it["item_id"], "a")
        store.answer(pid, it["item_id"], "left")
    md, html_path = make_report(run)
    assert "## Human study" in md.read_text() and "| tsam vs vanilla | 100.0%" in md.read_text()
    assert 'id="study"' in html_path.read_text() and "tsam vs vanilla" in html_path.read_text()
    other = make_run(run.parent / "plain")  # no study: no section
    assert "Human study" not in make_report(other)[0].read_text()


@pytest.mark.skipif(_CHROMIUM is None, reason="chromium / chromium-browser not on PATH (Debian: apt-get install -y "
                                               "chromium); the headless-browser study test is skipped")
def test_a_participant_in_a_real_browser(run):
    """Chromium (headless, through Playwright): start, answer by click and by key, reload, leave, resume, finish."""
    from playwright.sync_api import sync_playwright

    items = create(run, prompts=3, seeds=1)  # 3 pairs + 1 check
    clicks = []
    with serving(run) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(base + "/")
        assert "4 comparisons" in page.content()
        page.click("text=Start")
        page.wait_for_url("**/p/*")
        pid = page.url.rsplit("/", 1)[1]

        def current():
            assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth === 8)")
            assert "<b>red</b>" not in page.content() and "a <b>red</b> cube" in page.inner_text(".prompt")
            return int(page.get_attribute("input[name=item_id]", "value"))

        first = current()
        page.reload()
        assert current() == first  # a reload shows the same item
        page.click("button[value=left]")
        page.wait_for_load_state()
        clicks.append((first, "left"))
        second = current()
        page.keyboard.press("2")  # the keyboard shortcut for right
        page.wait_for_function(f"!document.querySelector('input[name=item_id]') || "
                               f"document.querySelector('input[name=item_id]').value !== '{second}'")
        clicks.append((second, "right"))
        page.close()
        # come back later in a fresh browser context with the id
        page = browser.new_context().new_page()
        page.goto(base + "/")
        page.fill("input[name=pid]", pid)
        page.click("text=Continue")
        page.wait_for_url(f"**/p/{pid}")
        assert "Comparison 3 of 4" in page.content()
        while "Thank you" not in page.content():
            item = current()
            page.click("button[value=tie]")
            page.wait_for_load_state()
            clicks.append((item, "tie"))
        browser.close()
    answers = {(a["item_id"], a["choice"]) for a in StudyStore(run).answers() if a["pid"] == pid}
    assert answers == set(clicks) and len(answers) == len(items) == 4
    assert len({i for i, _ in clicks}) == 4  # never the same item twice
