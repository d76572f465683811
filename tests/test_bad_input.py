"""Bad input, tried as a new user would, across ``tsam generate``, ``tsam bench run/score/report`` and
``tsam mini train/probe``: for every case a non-zero exit, exactly one line on stderr (``error: ...``), no
traceback, and nothing lost or changed among the outputs made before it.

The workspace (an earlier ``generate`` output, a scored benchmark run, a training run, prompt files,
damaged copies) is made once per module; every case runs ``tsam_diffusion.cli.main`` in this process
(a case that must touch a file outside the workspace has none). Interrupted runs are tested with
real signals on real processes at the end of this file.
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tsam_diffusion.cli import main

PROMPT = "a red circle and a blue square"
TINY = ["--model", "tiny-sd", "--steps", "2"]


def snapshot(root: Path) -> dict[str, str]:
    """SHA-1 of every file below ``root`` (the SQLite WAL/SHM side files excepted: SQLite owns them)."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def identities(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, modification time in ns) of every file below ``root``: an atomic rewrite, even of the
    same bytes, changes both."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def corrupt_pages(db: Path, seed: int = 0, page: int = 4096) -> None:
    """Random bytes over the middle of every page after the first: the file still opens as SQLite (its
    header is intact) but its tables are damaged, as after a crash of the disk under it."""
    data = bytearray(db.read_bytes())
    rng = random.Random(seed)
    for start in range(page, len(data), page):
        for offset in range(start + 8, start + page - 8):
            data[offset] = rng.randrange(256)
    db.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """The workspace: earlier outputs of every command, and the bad files the cases use."""
    root = tmp_path_factory.mktemp("ws")
    offline = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # CI sets it too; the hub-id cases must decide offline at once
    assert main(["generate", PROMPT, *TINY, "--out", str(root / "gen")]) == 0
    run = root / "run"
    assert main(["bench", "run", "--suite", "shapes-dev", "--limit", "2", "--seeds", "0", "--methods", "vanilla",
                 "--steps", "2", "--out", str(run)]) == 0
    assert main(["bench", "score", str(run), "--metrics", "shapes"]) == 0
    assert main(["bench", "report", str(run)]) == 0
    assert main(["mini", "train", "--out", str(root / "train"), "--steps", "1", "--batch-size", "2"]) == 0
    empty = root / "empty-run"
    empty.mkdir()
    from tsam_diffusion.bench.db import RunDB

    RunDB(empty)  # a run database without images
    for name, damage in (("garbage-run", lambda p: p.write_bytes(b"this is not a database\n" * 50)),
                         ("damaged-run", corrupt_pages)):
        shutil.copytree(run, root / name)
        damage(root / name / "run.sqlite")
    foreign = root / "foreign-run"
    foreign.mkdir()
    with sqlite3.connect(foreign / "run.sqlite") as con:
        con.execute("CREATE TABLE images (job_id TEXT, other TEXT)")
    (root / "not-a-model").mkdir()
    (root / "bad-index").mkdir()
    (root / "bad-index" / "model_index.json").write_text("{ not json")
    prompts = root / "prompts"
    prompts.mkdir()
    (prompts / "empty.txt").write_text("# only a comment\n\n")
    (prompts / "bad.jsonl").write_text('{"prompt": "a cat"}\n{"prompt": \n')
    (prompts / "noprompt.jsonl").write_text('{"caption": "a cat"}\n')
    (prompts / "bad.csv").write_text("id,caption\n1,a cat\n")
    (prompts / "latin1.txt").write_bytes("a caf\xe9 table\n".encode("latin-1"))
    (prompts / "prompts.xyz").write_text("a cat\n")
    (prompts / "dupe.jsonl").write_text('{"id": 1, "prompt": "a cat"}\n{"id": 1, "prompt": "a dog"}\n')
    shutil.copytree(root / "train", root / "train-damaged")
    (root / "train-damaged" / "checkpoint.pt").write_bytes(b"\x00" * 100)
    (root / "a-file").write_text("not a folder\n")
    with sqlite3.connect(root / "damaged-run" / "run.sqlite") as con:  # the damage is there, and SQLite sees it
        assert con.execute("PRAGMA quick_check").fetchone()[0] != "ok"
    yield root
    if offline is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = offline


RUN = ["bench", "run", "--suite", "shapes-dev", "--limit", "2", "--seeds", "0", "--methods", "vanilla", "--steps", "2"]
TO_RUN = ["--out", "{ws}/run"]  # the earlier run: a bad option must leave it as it was


def _full_disk(monkeypatch) -> None:
    """PNG writes fail as on a full disk."""
    from PIL import Image

    def no_space(self, fp, *args, **kwargs):
        raise OSError(28, "No space left on device", str(fp))

    monkeypatch.setattr(Image.Image, "save", no_space)


# (id, argv with {ws} for the workspace, a text the error line must contain, optional setup(monkeypatch))
CASES = [
    # tsam generate
    ("gen-empty-prompt", ["generate", "  ", *TINY], "prompt is empty"),
    ("gen-steps-0", ["generate", PROMPT, "--steps", "0"], "--steps must be >= 1"),
    ("gen-steps-word", ["generate", PROMPT, "--steps", "four"], "invalid int value"),
    ("gen-height-33", ["generate", PROMPT, "--height", "33"], "multiple of 8"),
    ("gen-width-negative", ["generate", PROMPT, "--width", "-8"], "multiple of 8"),
    ("gen-scale-nan", ["generate", PROMPT, "--guidance-scale", "nan"], "finite"),
    ("gen-alpha-negative", ["generate", PROMPT, "--alpha", "-1"], "alpha"),
    ("gen-gamma-zero", ["generate", PROMPT, "--gamma", "0"], "gamma"),
    ("gen-unknown-preset", ["generate", PROMPT, "--preset", "nope"], "invalid choice"),
    ("gen-seed-negative", ["generate", PROMPT, "--seed", "-1"], "out of range"),
    ("gen-missing-folder", ["generate", PROMPT, "--model", "./no-such-model"], "does not exist"),
    ("gen-hub-id-offline", ["generate", PROMPT, "--model", "someone/no-such-model"], "--model DIR"),
    ("gen-folder-not-a-model", ["generate", PROMPT, "--model", "{ws}/not-a-model"], "weights are needed"),
    ("gen-bad-model-index", ["generate", PROMPT, "--model", "{ws}/bad-index"], "could not load model"),
    ("gen-no-cuda", ["generate", PROMPT, "--device", "cuda"], "not available"),
    ("gen-bad-device", ["generate", PROMPT, "--device", "gpu0"], "not a valid torch device"),
    ("gen-maps-without-tsam", ["generate", PROMPT, "--save-maps", "--no-tsam"], "--save-maps"),
    ("gen-compare-and-no-tsam", ["generate", PROMPT, "--compare", "--no-tsam"], "not allowed with"),
    ("gen-threads-0", ["generate", PROMPT, "--threads", "0"], "--threads"),
    ("gen-out-is-a-file", ["generate", PROMPT, *TINY, "--out", "{ws}/a-file"], "a-file"),
    ("gen-out-under-a-file", ["generate", PROMPT, *TINY, "--out", "{ws}/a-file/out"], "a-file"),
    ("gen-mini-wrong-size", ["generate", PROMPT, "--height", "64", "--width", "64", "--out", "{ws}/gen"], "32x32"),
    ("gen-disk-full", ["generate", PROMPT, "--out", "{ws}/gen"], "No space left", _full_disk),
    # tsam bench run
    ("run-no-source", ["bench", "run", "--out", "{ws}/run"], "required"),
    ("run-unknown-suite", ["bench", "run", "--suite", "nope", "--out", "{ws}/run"], "unknown prompt suite"),
    ("run-unknown-method", [*RUN, *TO_RUN, "--methods", "vanilla,magic"], "unknown method"),
    ("run-method-twice", [*RUN, *TO_RUN, "--methods", "vanilla,vanilla"], "named twice"),
    ("run-bad-override", [*RUN, *TO_RUN, "--methods", "tsam[alpha=-1]"], "alpha"),
    ("run-unknown-override", [*RUN, *TO_RUN, "--methods", "tsam[colour=1]"], "KEY=VALUE"),
    ("run-seeds-backwards", [*RUN, *TO_RUN, "--seeds", "5-1"], "bad seed range"),
    ("run-seeds-word", [*RUN, *TO_RUN, "--seeds", "abc"], "bad seed range"),
    ("run-seed-too-large", [*RUN, *TO_RUN, "--seeds", str(2**64)], "out of range"),
    ("run-limit-0", [*RUN, *TO_RUN, "--limit", "0"], "--limit"),
    ("run-batch-0", [*RUN, *TO_RUN, "--batch-size", "0"], "--batch-size"),
    ("run-prompts-missing", ["bench", "run", "--prompts", "{ws}/prompts/none.txt", "--out", "{ws}/x"], "none.txt"),
    ("run-prompts-empty", ["bench", "run", "--prompts", "{ws}/prompts/empty.txt", "--out", "{ws}/x"], "no prompts"),
    ("run-prompts-bad-jsonl", ["bench", "run", "--prompts", "{ws}/prompts/bad.jsonl", "--out", "{ws}/x"], "bad.jsonl:2"),
    ("run-prompts-no-field", ["bench", "run", "--prompts", "{ws}/prompts/noprompt.jsonl", "--out", "{ws}/x"], "prompt"),
    ("run-prompts-bad-csv", ["bench", "run", "--prompts", "{ws}/prompts/bad.csv", "--out", "{ws}/x"], "column"),
    ("run-prompts-latin1", ["bench", "run", "--prompts", "{ws}/prompts/latin1.txt", "--out", "{ws}/x"], "UTF-8"),
    ("run-prompts-extension", ["bench", "run", "--prompts", "{ws}/prompts/prompts.xyz", "--out", "{ws}/x"], ".xyz"),
    ("run-prompts-duplicate-id", ["bench", "run", "--prompts", "{ws}/prompts/dupe.jsonl", "--out", "{ws}/x"], "duplicate id"),
    ("run-prompts-folder", ["bench", "run", "--prompts", "{ws}/prompts", "--out", "{ws}/x"], "prompts"),
    ("run-other-settings", [*RUN, *TO_RUN, "--guidance-scale", "2"], "other settings"),
    ("run-garbage-db", [*RUN, "--out", "{ws}/garbage-run"], "not a run database"),
    ("run-damaged-db", [*RUN, "--out", "{ws}/damaged-run"], "damaged"),
    ("run-out-under-a-file", [*RUN, "--out", "{ws}/a-file/run"], "a-file"),
    ("run-no-cuda", [*RUN, *TO_RUN, "--device", "cuda"], "not available"),
    ("run-missing-model", [*RUN, "--model", "./no-such-model", "--out", "{ws}/x"], "does not exist"),
    ("run-threads-word", [*RUN, *TO_RUN, "--threads", "many"], "--threads"),
    ("run-disk-full", [*RUN[:4], "--limit", "3", *RUN[6:], *TO_RUN], "No space left", _full_disk),
    # tsam bench score
    ("score-no-dir", ["bench", "score", "{ws}/nowhere", "--metrics", "shapes"], "no benchmark run"),
    ("score-dir-without-run", ["bench", "score", "{ws}/prompts", "--metrics", "shapes"], "no benchmark run"),
    ("score-garbage-db", ["bench", "score", "{ws}/garbage-run", "--metrics", "shapes"], "not a run database"),
    ("score-damaged-db", ["bench", "score", "{ws}/damaged-run", "--metrics", "shapes"], "damaged"),
    ("score-foreign-db", ["bench", "score", "{ws}/foreign-run", "--metrics", "shapes"], "not a run database of this"),
    ("score-empty-run", ["bench", "score", "{ws}/empty-run", "--metrics", "shapes"], "no images"),
    ("score-unknown-metric", ["bench", "score", "{ws}/run", "--metrics", "beauty"], "unknown metric"),
    ("score-no-metric", ["bench", "score", "{ws}/run", "--metrics", ","], "names no metric"),
    ("score-bad-option", ["bench", "score", "{ws}/run", "--metrics", "clip", "--option", "model"], "METRIC.KEY=VALUE"),
    ("score-batch-0", ["bench", "score", "{ws}/run", "--metrics", "shapes", "--batch-size", "0"], "--batch-size"),
    ("score-clip-offline", ["bench", "score", "{ws}/run", "--metrics", "clip"], "--option clip.model=DIR"),
    ("score-tifa-no-questions", ["bench", "score", "{ws}/run", "--metrics", "tifa", "--option",
                                 "tifa.questions={ws}/none.json"], "tifa"),
    # tsam bench report
    ("report-no-dir", ["bench", "report", "{ws}/nowhere"], "no benchmark run"),
    ("report-garbage-db", ["bench", "report", "{ws}/garbage-run"], "not a run database"),
    ("report-damaged-db", ["bench", "report", "{ws}/damaged-run"], "damaged"),
    ("report-empty-run", ["bench", "report", "{ws}/empty-run"], "no images"),
    ("report-min-prompts-1", ["bench", "report", "{ws}/run", "--min-prompts", "1"], "--min-prompts"),
    ("report-out-under-a-file", ["bench", "report", "{ws}/run", "--out", "{ws}/a-file/report.html"], "a-file"),
    # tsam mini train
    ("train-steps-0", ["mini", "train", "--out", "{ws}/t", "--steps", "0"], "--steps"),
    ("train-batch-0", ["mini", "train", "--out", "{ws}/t", "--batch-size", "0"], "--batch-size"),
    ("train-lr-0", ["mini", "train", "--out", "{ws}/t", "--lr", "0"], "--lr"),
    ("train-grounding-negative", ["mini", "train", "--out", "{ws}/t", "--grounding", "-1"], "--grounding"),
    ("train-budget-negative", ["mini", "train", "--out", "{ws}/t", "--time-budget", "-5"], "--time-budget"),
    ("train-no-cuda", ["mini", "train", "--out", "{ws}/t", "--device", "cuda"], "not available"),
    ("train-out-under-a-file", ["mini", "train", "--out", "{ws}/a-file/t", "--steps", "1"], "a-file"),
    ("train-other-settings", ["mini", "train", "--out", "{ws}/train", "--steps", "2", "--batch-size", "2",
                              "--seed", "1"], "resume with the same settings"),
    ("train-damaged-checkpoint", ["mini", "train", "--out", "{ws}/train-damaged", "--steps", "2", "--batch-size", "2"],
     "damaged"),
    ("train-no-out", ["mini", "train"], "--out"),
    # tsam mini probe
    ("probe-scenes-0", ["mini", "probe", "--scenes", "0", "--out", "{ws}/probe.json"], "--scenes"),
    ("probe-levels-out-of-range", ["mini", "probe", "--levels", "0,0.5", "--out", "{ws}/probe.json"], "(0, 1]"),
    ("probe-levels-word", ["mini", "probe", "--levels", "high", "--out", "{ws}/probe.json"], "--levels"),
    ("probe-unknown-template", ["mini", "probe", "--templates", "two-attr,four", "--out", "{ws}/probe.json"], "four"),
    ("probe-not-a-mini-model", ["mini", "probe", "--model", "tiny-sd", "--out", "{ws}/probe.json"], "not a tsam-mini"),
    ("probe-missing-model", ["mini", "probe", "--model", "./no-such-model", "--out", "{ws}/probe.json"], "does not exist"),
    ("probe-out-under-a-file", ["mini", "probe", "--out", "{ws}/a-file/probe.json"], "a-file"),
    ("probe-no-cuda", ["mini", "probe", "--device", "cuda", "--out", "{ws}/probe.json"], "not available"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, ws, capfd, monkeypatch):
    name, argv, expected, *setup = case
    argv = [a.replace("{ws}", str(ws)) for a in map(str, argv)]
    if setup:
        setup[0](monkeypatch)
    before = snapshot(ws)
    capfd.readouterr()
    t0 = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - t0
    err = capfd.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines()
             if line.strip() and "it/s]" not in line and "s/it]" not in line and "%|" not in line]  # progress bars
    assert code != 0, f"{name}: exit 0\n{err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: stderr is not one error line:\n{err}"
    if expected:
        assert expected in lines[0], lines[0]
    after = snapshot(ws)
    lost = {k for k in before if after.get(k) != before[k]}
    assert not lost, f"{name}: earlier outputs changed or lost: {sorted(lost)}"
    if name.endswith("offline"):
        assert seconds < 5, f"{name}: took {seconds:.1f} s to decide the weights are missing"


def test_table_size():
    """The README's reliability section names this count."""
    assert len(CASES) >= 40
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"{len(CASES)} bad inputs" in readme


# --------------------------------------------------------------------------- interrupted runs


def _spawn(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "tsam_diffusion.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
        assert time.time() < end, "timed out waiting"
        time.sleep(0.05)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_bench_run_interrupted_says_how_to_continue(tmp_path, sig, code):
    """SIGTERM (a scheduler's pre-emption) or Ctrl-C: one line saying how to continue, finished images kept
    unchanged, and the same command finishes the rest."""
    # one thread in both runs: a PNG written just before the signal, whose row was not yet added, is made again and
    # must come out the same; with --threads auto the two runs may pick different thread counts, hence other rounding
    args = ["bench", "run", "--suite", "shapes-dev", "--limit", "6", "--seeds", "0-1", "--methods", "tsam",
            "--batch-size", "1", "--threads", "1", "--steps", "8", "--out", str(tmp_path / "run")]
    proc = _spawn(args, tmp_path)  # 8 steps: T-SAM still updates (its first steps), a third of the time
    images = tmp_path / "run" / "images"
    _wait_for(lambda: len(list(images.rglob("*.png"))) >= 2, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln]
    assert lines[-1] == "interrupted: finished images are kept; rerun the same command to continue", err
    assert "Traceback" not in err
    kept = snapshot(images)
    assert 2 <= len(kept) < 12
    from tsam_diffusion.bench.db import RunDB

    rows = RunDB(tmp_path / "run").images()
    recorded = len(rows)  # a PNG whose row was not yet added is made again
    kept_files = {r["image"].removeprefix("images/"): identities(images)[r["image"].removeprefix("images/")] for r in rows}
    done = subprocess.run([sys.executable, "-m", "tsam_diffusion.cli", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert f"{recorded} were done, {12 - recorded} made now" in done.stderr
    after = snapshot(images)
    assert len(after) == 12 and all(after[k] == v for k, v in kept.items())  # kept, not regenerated differently
    now = identities(images)
    assert all(now[k] == v for k, v in kept_files.items())  # recorded images untouched: not even rewritten


def test_mini_train_interrupted_keeps_a_checkpoint(tmp_path):
    """Ctrl-C during training: a checkpoint at the step boundary, one line, and resuming goes on from it."""
    args = ["mini", "train", "--out", str(tmp_path / "t"), "--steps", "400", "--batch-size", "2", "--threads", "1"]
    proc = _spawn(args, tmp_path)
    log = tmp_path / "t" / "train_log.csv"
    _wait_for(lambda: log.is_file() and len(log.read_text().splitlines()) >= 2, proc)  # 25 steps logged
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln and "it/s" not in ln]
    assert lines[-1] == "interrupted: checkpoint saved; rerun the same command to resume", err
    import torch

    step = torch.load(tmp_path / "t" / "checkpoint.pt", weights_only=False)["step"]
    assert 25 <= step < 400
