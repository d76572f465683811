"""tsam bench run: planning, resumability, conflicts, bad input, and two processes under torchrun."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tsam_diffusion import TSAMConfig
from tsam_diffusion.bench.db import ConfigConflict, RunDB
from tsam_diffusion.bench.run import BenchError, parse_methods, parse_seeds, plan, run_benchmark, shard
from tsam_diffusion.bench.suites import load_prompts_file, load_suite
from tsam_diffusion.cli import main

GEN = dict(model="tiny-sd", num_inference_steps=2, progress=False)


@pytest.fixture()
def prompts(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a black car and a white clock\na cat with a hat\n")
    return load_prompts_file(f)


def test_parse_methods_and_seeds():
    ms = parse_methods("vanilla,tsam,tsam:sd-ae")
    assert [m.name for m in ms] == ["vanilla", "tsam", "tsam:sd-ae"]
    assert ms[0].guidance is None and ms[2].guidance.refinement_iterations == 20
    assert ms[1].resolve("sd-tifa").guidance == TSAMConfig.preset("sd-tifa")  # bare tsam: the model's own preset
    with pytest.raises(ValueError, match="valid methods: vanilla, tsam, .*tsam:sd-ae, tsam:sd-tifa"):
        parse_methods("vanilla,tsam:nope")
    # overrides in brackets: a sweep in one run
    a, b = parse_methods("tsam:sd-ae[alpha=5;gamma=2;refinement_steps=0+10;update_steps=0-3],tsam[alpha=3]")
    assert a.guidance == TSAMConfig.preset("sd-ae", alpha=5.0, gamma=2.0, refinement_steps=(0, 10), update_steps=(0, 1, 2, 3))
    assert b.name == "tsam[alpha=3]" and b.resolve("sd-tifa").guidance == TSAMConfig.preset("sd-tifa", alpha=3.0)
    for bad, why in (("tsam[beta=1]", "KEY=VALUE"), ("tsam[alpha=x]", "bad value"), ("tsam[center_maps=maybe]", "bad value"),
                     ("tsam[alpha=-1]", "alpha must be")):
        with pytest.raises(ValueError, match=why):
            parse_methods(bad)
    assert parse_seeds("0-3,10,2") == [0, 1, 2, 3, 10]
    for bad in ("", "a", "5-2", "1-"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


def test_plan_is_deterministic_and_shards_partition():
    ps = load_suite("ae-objects")[:3]
    chunks = plan(ps, parse_methods("vanilla,tsam"), list(range(5)), batch_size=2)
    assert len(chunks) == 3 * 2 * 3 and [len(c) for c in chunks[:3]] == [2, 2, 1]
    ids = [j.job_id for c in chunks for j in c]
    assert len(set(ids)) == len(ids) == 30
    shards = [shard(chunks, r, 3) for r in range(3)]  # what each of 3 processes runs
    assert [len(sh) for sh in shards] == [6, 6, 6]
    shard_ids = [{j.job_id for c in sh for j in c} for sh in shards]
    assert set().union(*shard_ids) == set(ids) and sum(map(len, shard_ids)) == 30  # a partition
    assert shards[1][0] is chunks[1] and shards[2][1] is chunks[5]  # round robin
    assert [len(sh) for sh in (shard(chunks[:7], r, 3) for r in range(3))] == [3, 2, 2]
    assert shard(chunks, 0, 1) == chunks
    with pytest.raises(ValueError, match="rank 3"):
        shard(chunks, 3, 3)
    assert ids == [j.job_id for c in plan(ps, parse_methods("vanilla,tsam"), list(range(5)), 2) for j in c]


def test_run_resume_and_pairing(tsam_pipe, prompts, tmp_path):
    out = tmp_path / "run"
    methods = parse_methods("vanilla,tsam")
    counts = run_benchmark(prompts, methods, [0, 1], out, batch_size=2, pipeline=tsam_pipe, **GEN)
    assert counts == {"planned": 8, "done_before": 0, "made": 8}
    rows = RunDB(out).images()
    assert len(rows) == 8 and all((out / r["image"]).is_file() for r in rows)
    tsam_rows = [r for r in rows if r["method"] == "tsam"]
    assert all(r["updates"] >= 1 and r["loss_first"] is not None for r in tsam_rows)
    assert {(r["prompt_id"], r["seed"]) for r in tsam_rows} == {(r["prompt_id"], r["seed"]) for r in rows if r["method"] == "vanilla"}
    assert rows[0]["versions"]["tsam-diffusion"] and rows[0]["versions"]["device"] == "cpu" and rows[0]["model"] == "tiny-sd"
    # a bare `tsam` is the model's own preset; each row records the sampling values used
    assert tsam_rows[0]["config"]["tsam"]["name"] == "sd-tifa" and RunDB(out).methods()["tsam"]["tsam"]["name"] == "sd-tifa"
    assert {(r["config"]["num_inference_steps"], r["config"]["guidance_scale"]) for r in rows} == {(2, 7.5)}
    # rerun: nothing to do; a lost image and a half-written temporary file: exactly one redone
    assert run_benchmark(prompts, methods, [0, 1], out, batch_size=2, pipeline=tsam_pipe, **GEN)["made"] == 0
    lost = out / rows[3]["image"]
    lost.unlink()
    (lost.parent / f".{lost.name}.999.tmp").write_bytes(b"\x89PNG half")
    counts = run_benchmark(prompts, methods, [0, 1], out, batch_size=2, pipeline=tsam_pipe, **GEN)
    assert counts["made"] == 1 and counts["done_before"] == 7
    assert len(RunDB(out).images()) == 8


def _set_device(run, device):
    """Pretend the run's images were made on ``device`` (None: before tsam recorded it)."""
    with sqlite3.connect(run / "run.sqlite") as con:
        expr = "json_remove(versions, '$.device')" if device is None else f"json_set(versions, '$.device', '{device}')"
        con.execute(f"UPDATE images SET versions = {expr}")


def test_a_run_stays_on_one_device(tsam_pipe, prompts, tmp_path, monkeypatch, capsys):
    """Continuing a run on another device is refused (its images would not be paired with the first ones);
    rows from before the device was recorded agree with any device."""
    import torch

    from tsam_diffusion.bench.run import device_label

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    assert device_label("cuda:1") == "cuda: NVIDIA H200" and device_label(torch.device("cpu")) == "cpu"
    out = tmp_path / "run"
    methods = parse_methods("vanilla")
    run_benchmark(prompts[:1], methods, [0], out, pipeline=tsam_pipe, **GEN)
    _set_device(out, "cuda: NVIDIA H200")
    with pytest.raises(BenchError, match=r"different devices \(cpu, cuda: NVIDIA H200\).*run directory of their own"):
        run_benchmark(prompts[:1], methods, [0, 1], out, pipeline=tsam_pipe, **GEN)
    assert len(RunDB(out).images()) == 1  # nothing made
    _set_device(out, None)
    assert run_benchmark(prompts[:1], methods, [0, 1], out, pipeline=tsam_pipe, **GEN)["made"] == 1
    _set_device(out, "mps")  # the command line says it in one line
    f = tmp_path / "p.txt"
    f.write_text(prompts[0].text + "\n")
    assert main(["bench", "run", "--model", "tiny-sd", "--prompts", str(f), "--seeds", "0-2", "--steps", "2",
                 "--methods", "vanilla", "--device", "cpu", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "different devices (cpu, mps)" in err and "Traceback" not in err


def test_methods_are_paired_by_their_starting_noise(tsam_pipe, prompts, tmp_path):
    """Same prompt and seed, same starting noise for every method: a T-SAM method that never updates
    (alpha=0) draws exactly vanilla's pixels, and a guided one differs."""
    out = tmp_path / "run"
    run_benchmark(prompts, parse_methods("vanilla,tsam[alpha=0],tsam"), [0, 1], out, batch_size=2, pipeline=tsam_pipe, **GEN)
    rows = {(r["prompt_id"], r["seed"], r["method"]): r for r in RunDB(out).images()}
    pixels = {k: np.asarray(Image.open(out / r["image"])) for k, r in rows.items()}
    pairs = {(p, s) for p, s, _ in rows}
    assert len(pairs) == 4
    for p, s in pairs:
        assert np.array_equal(pixels[(p, s, "tsam[alpha=0]")], pixels[(p, s, "vanilla")])
    assert any(not np.array_equal(pixels[(p, s, "tsam")], pixels[(p, s, "vanilla")]) for p, s in pairs)
    assert not np.array_equal(pixels[(min(pairs)[0], 0, "vanilla")], pixels[(min(pairs)[0], 1, "vanilla")])  # seeds differ


def test_batched_seeds_equal_single_runs(tsam_pipe, prompts, tmp_path):
    methods = parse_methods("tsam")
    run_benchmark(prompts[:1], methods, [3, 4], tmp_path / "a", batch_size=2, pipeline=tsam_pipe, **GEN)
    run_benchmark(prompts[:1], methods, [3, 4], tmp_path / "b", batch_size=1, pipeline=tsam_pipe, **GEN)
    for r in RunDB(tmp_path / "a").images():
        a = np.asarray(Image.open(tmp_path / "a" / r["image"]), dtype=int)
        b = np.asarray(Image.open(tmp_path / "b" / r["image"]), dtype=int)
        assert np.abs(a - b).max() <= 1


def test_conflicting_config_is_refused(tsam_pipe, prompts, tmp_path):
    out = tmp_path / "run"
    run_benchmark(prompts[:1], parse_methods("tsam"), [0], out, pipeline=tsam_pipe, **GEN)
    db = RunDB(out)
    with pytest.raises(ConfigConflict, match="method 'tsam' already ran"):
        db.claim_method("tsam", {"tsam": {"alpha": 1.0}})
    with pytest.raises(ConfigConflict, match="steps: run has 2, now 3"):
        run_benchmark(prompts[:1], parse_methods("tsam"), [0], out, pipeline=tsam_pipe, **{**GEN, "num_inference_steps": 3})


def test_disk_full_stops_cleanly_and_resumes(tsam_pipe, prompts, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_save = Image.Image.save
    calls = {"n": 0}

    def failing_save(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real_save(self, *a, **k)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(BenchError, match="No space left.*rerun the same command"):
        run_benchmark(prompts, parse_methods("vanilla"), [0, 1], out, batch_size=2, pipeline=tsam_pipe, **GEN)
    assert len(RunDB(out).images()) == 2  # the first chunk is recorded, the broken one is not
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert run_benchmark(prompts, parse_methods("vanilla"), [0, 1], out, batch_size=2, pipeline=tsam_pipe, **GEN)["made"] == 2


def test_unwritable_run_dir(prompts, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BenchError, match="cannot write to the run directory"):
        run_benchmark(prompts, parse_methods("vanilla"), [0], blocker / "run", **GEN)


def test_cli_bad_input(tmp_path, capsys):
    assert main(["bench", "run", "--suite", "nope", "--out", str(tmp_path / "r")]) == 2
    assert "ae-objects" in capsys.readouterr().err
    assert main(["bench", "run", "--suite", "ae-objects", "--methods", "tsam:zzz", "--out", str(tmp_path / "r")]) == 2
    assert "valid methods" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n")
    assert main(["bench", "run", "--prompts", str(empty), "--out", str(tmp_path / "r")]) != 0
    assert "no prompts" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{oops\n')
    assert main(["bench", "run", "--prompts", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert main(["bench", "suites"]) == 0
    assert "tifa-v1" in capsys.readouterr().out


def _torchrun(args, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tsam_diffusion.cli", "bench", "run", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_two_processes_killed_and_resumed(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a black car and a white clock\na cat with a hat\na red apple\n")
    out = tmp_path / "run"
    args = ["--prompts", str(f), "--seeds", "0-3", "--methods", "vanilla,tsam", "--steps", "2",
            "--batch-size", "1", "--device", "cpu", "--out", str(out)]
    proc = _torchrun(args, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill everything once a few images are recorded
        if (out / "run.sqlite").exists():
            try:
                with sqlite3.connect(out / "run.sqlite", timeout=30) as con:
                    if con.execute("SELECT COUNT(*) FROM images").fetchone()[0] >= 3:
                        break
            except sqlite3.OperationalError:
                pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    recorded = RunDB(out).images()
    assert 3 <= len(recorded) < 24
    before = {r["job_id"]: _identity(out / r["image"]) for r in recorded}
    proc = _torchrun(args)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    rows = RunDB(out).images()
    assert len(rows) == 24 and len({r["job_id"] for r in rows}) == 24
    for r in rows:
        Image.open(out / r["image"]).verify()  # every recorded image is a whole PNG
    assert "rank 0:" in log and "rank 1:" in log
    # the images recorded before the kill were kept, not made again (a rewrite is a new file: new inode, new time)
    after = {r["job_id"]: _identity(out / r["image"]) for r in rows}
    assert all(after[job] == ident for job, ident in before.items())


def _identity(path: Path) -> tuple[int, int, str]:
    """(inode, modification time in ns, SHA-1): what an atomic rewrite of the same bytes changes too."""
    import hashlib

    st = path.stat()
    return st.st_ino, st.st_mtime_ns, hashlib.sha1(path.read_bytes()).hexdigest()


def test_score_and_report_end_to_end(tsam_pipe, prompts, tmp_path, capsys):
    from tsam_diffusion.bench import Metric, register_metric

    class MeanPixel(Metric):
        name = "mean-pixel"

        def score(self, images, prompts, metas):
            return [{"value": float(np.asarray(im, dtype=float).mean() / 255)} for im in images]

    calls = []
    register_metric("mean-pixel", lambda device="cpu", **kw: calls.append(kw) or MeanPixel())
    out = tmp_path / "run"
    run_benchmark(prompts, parse_methods("vanilla,tsam"), [0, 1], out, batch_size=2, pipeline=tsam_pipe, **GEN)
    assert main(["bench", "score", str(out), "--metrics", "mean-pixel", "--device", "cpu", "--option", "mean-pixel.k=v"]) == 0
    assert calls == [{"k": "v"}]
    scores = RunDB(out).scores()
    assert len(scores) == 8 and all(0 <= s["value"] <= 1 for s in scores)
    assert main(["bench", "score", str(out), "--metrics", "mean-pixel", "--device", "cpu"]) == 0
    assert "mean-pixel: 0 images scored" in capsys.readouterr().err  # resumable: nothing left
    assert main(["bench", "report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "mean-pixel" in md and "vanilla" in md and (out / "report.html").stat().st_size > 1000
    assert main(["bench", "score", str(out), "--metrics", "nope"]) == 2
    assert "mean-pixel" in capsys.readouterr().err  # the valid names are listed


def test_missing_metric_weights_fail_before_work(tsam_pipe, prompts, tmp_path, capsys):
    out = tmp_path / "run"
    run_benchmark(prompts[:1], parse_methods("vanilla"), [0], out, pipeline=tsam_pipe, **GEN)
    assert main(["bench", "score", str(out), "--metrics", "clip", "--device", "cpu", "--option", f"clip.model={tmp_path}/none"]) == 1
    err = capsys.readouterr().err
    assert "weights" in err and "Traceback" not in err
    assert RunDB(out).scores() == []


def test_scores_count_only_when_stored(tmp_path):
    """A write the database swallows (here a trigger that ignores inserts, as a damaged file may) is
    not reported as scored."""
    from tsam_diffusion.bench.db import BenchError

    db = RunDB(tmp_path)
    with sqlite3.connect(tmp_path / "run.sqlite") as con:
        con.execute("CREATE TRIGGER lose BEFORE INSERT ON scored WHEN NEW.job_id = 'b' BEGIN SELECT RAISE(IGNORE); END")
    with pytest.raises(BenchError, match="1 of 2 shapes scores were not stored"):
        db.add_scores("shapes", {"a": {"whole": 1.0}, "b": {"whole": 0.0}})
    db.add_scores("shapes", {"c": {"whole": 1.0}})
    assert db.scored_jobs("shapes") == {"a", "c"}


def test_opening_checks_the_database_and_leaves_foreign_files_alone(tmp_path):
    from tsam_diffusion.bench.db import BenchError

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "run.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(BenchError, match="damaged or not a run database .*rerun the same `tsam bench run`"):
        RunDB(tmp_path / "a")
    (tmp_path / "b").mkdir()
    with sqlite3.connect(tmp_path / "b" / "run.sqlite") as con:
        con.execute("CREATE TABLE images (job_id TEXT)")
    before = (tmp_path / "b" / "run.sqlite").read_bytes()
    with pytest.raises(BenchError, match=r"missing: .*images\.suite"):
        RunDB(tmp_path / "b", create=False)
    assert (tmp_path / "b" / "run.sqlite").read_bytes() == before  # not switched to WAL, not extended
    with pytest.raises(BenchError, match="no benchmark run"):
        RunDB(tmp_path / "c", create=False)
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("model, preset", [("tiny-pixart", "pixart"), ("tiny-sdxl", "sdxl")])
def test_bench_run_on_other_families(prompts, tmp_path, model, preset):
    """tsam bench run on PixArt and SDXL: the family's preset and defaults, baselines with object words."""
    from tsam_diffusion.bench.suites import load_suite

    out = tmp_path / "run"
    ae = load_suite("ae-objects")[:1]
    counts = run_benchmark(ae, parse_methods("vanilla,tsam,attend-excite[refinement_steps=;thresholds=]"), [0], out,
                           model=model, num_inference_steps=2, progress=False)
    assert counts == {"planned": 3, "done_before": 0, "made": 3}
    rows = {r["method"]: r for r in RunDB(out).images()}
    assert rows["tsam"]["config"]["tsam"]["name"] == preset and rows["tsam"]["updates"] >= 1
    assert rows["attend-excite[refinement_steps=;thresholds=]"]["updates"] >= 1 and rows["vanilla"]["model"] == model
