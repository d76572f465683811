"""The README's screenshot of the study page: a small tsam-mini run, a study on it, one page in headless Chromium.

    python tools/study_screenshot.py --out docs/study.png      # about a minute on 2 CPU cores
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tsam_diffusion.bench.run import parse_methods, run_benchmark
from tsam_diffusion.bench.suites import Prompt
from tsam_diffusion.study.app import serving
from tsam_diffusion.study.sample import draw
from tsam_diffusion.study.store import StudyStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("docs/study.png"))
    args = ap.parse_args()
    run = Path(tempfile.mkdtemp()) / "run"
    prompts = [Prompt("demo", "a red circle and a blue square", "demo")]
    run_benchmark(prompts, parse_methods("vanilla,tsam"), [3], run, model="tsam-mini", progress=False)
    items, settings = draw(run, ["tsam:vanilla"], check_every=10)
    StudyStore(run, create=True).replace_items([i for i in items if i["kind"] == "pair"], settings)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with serving(run) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 720})
        page.goto(base + "/")
        page.click("text=Start")
        page.wait_for_url("**/p/*")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    print(args.out)


if __name__ == "__main__":
    main()
