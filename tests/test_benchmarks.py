"""The benchmark scripts run (a smoke test on a small setting; they assert nothing about time)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_speed_benchmark_runs_and_reports(tmp_path):
    import speed

    report = speed.main(["--width-scale", "10", "--steps", "2", "--size", "128", "--reps", "1",
                         "--methods", "reference,none,sd-tifa", "--json", str(tmp_path / "s.json")])
    methods = report["methods"]
    assert set(methods) == {"reference", "none", "sd-tifa"}
    assert methods["sd-tifa"]["update_passes"] == 1 and methods["reference"]["update_passes"] == 0
    assert methods["none"]["sampling_passes"] == methods["reference"]["sampling_passes"] == 3  # PNDM: N + 1
    assert methods["sd-tifa"]["floor_s"] == speed.floor_seconds(methods["reference"]["median_s"], 1, report["pieces_s"]["partial_fwd_bwd_b1"])
    assert methods["reference"]["floor_s"] == methods["reference"]["median_s"]  # no update: the floor is plain sampling
    assert set(report["loss_ms"]) == {"16x16", "64x64"}
    assert (tmp_path / "s.json").exists()


def test_speed_benchmark_baselines(tmp_path, capsys):
    import speed

    report = speed.main(["--width-scale", "10", "--steps", "2", "--size", "128", "--reps", "1",
                         "--methods", "reference,attend-excite,diffusers-ae,syngen,conform"])
    methods = report["methods"]
    assert all(methods[m]["update_passes"] > 0 for m in ("attend-excite", "diffusers-ae", "syngen", "conform"))
    assert "attend-excite vs diffusers' StableDiffusionAttendAndExcitePipeline" in capsys.readouterr().out


def test_floor_is_sampling_plus_one_partial_pass_per_update():
    import speed

    assert speed.floor_seconds(2.0, 3, 0.5) == 3.5  # 2 s of plain sampling + 3 updates x 0.5 s
    assert speed.floor_seconds(1.25, 0, 9.0) == 1.25


def _shapes_run(tmp_path, table):
    """A run database with shapes scores: table = {method: (config, [(template, prompt_id, seed, whole)])}."""
    from tsam_diffusion.bench.db import RunDB

    db = RunDB(tmp_path)
    db.claim_settings({"model": "x"})
    for method, (config, rows) in table.items():
        db.claim_method(method, config)
        db.add_images([{"job_id": f"{p}/s{s}/{method}", "suite": "d", "prompt_id": p, "prompt": "p", "prompt_meta": {"template": t},
                        "seed": s, "method": method, "config": config, "image": "x.png", "model": "x", "versions": {},
                        "seconds": 0.0, "created": 0.0, "loss_first": None, "loss_last": None, "updates": 0, "skipped": 0,
                        "diagnostics": {}} for t, p, s, _ in rows])
        db.add_scores("shapes", {f"{p}/s{s}/{method}": {"whole": w, "presence": w, f"whole@{t}": w} for t, p, s, w in rows})
    return tmp_path


def test_select_preset_rule_uses_paired_differences_and_the_single_object_limit(tmp_path):
    import select_preset

    def rows(single, multi):  # 10 single-object and 10 multi-object images
        return [("one", f"o{k}", 0, float(k < single)) for k in range(10)] + [("two-attr", f"t{k}", 0, float(k < multi)) for k in range(10)]

    cfg = lambda a: {"tsam": {"alpha": a}}  # noqa: E731
    run = _shapes_run(tmp_path, {"vanilla": ({"tsam": None}, rows(10, 3)),
                                 "tsam[alpha=1]": (cfg(1.0), rows(10, 4)),      # +0.1 multi, single kept
                                 "tsam[alpha=9]": (cfg(9.0), rows(7, 8)),       # +0.5 multi, -0.3 single: excluded by the rule
                                 "tsam[alpha=2]": (cfg(2.0), rows(10, 4)[:15])})  # cut short: same paired difference as alpha=1
    rates = select_preset.method_rates(str(run))
    assert rates["tsam[alpha=1]"]["multi/whole - vanilla"][0] == pytest.approx(0.1)
    assert rates["tsam[alpha=2]"]["n_multi"] == 5 and rates["tsam[alpha=2]"]["multi/whole - vanilla"][0] == pytest.approx(0.2)
    assert select_preset.choose(rates) == "tsam[alpha=2]"  # best paired multi-object gain within the single-object limit
    assert select_preset.best_tsam(rates) == "tsam[alpha=9]"
    rates.pop("tsam[alpha=2]")
    assert select_preset.choose(rates) == "tsam[alpha=1]"


def test_speed_mini_benchmark_runs_and_reports(tmp_path):
    import speed_mini

    report = speed_mini.main(["--batch-sizes", "1", "--reps", "1", "--json", str(tmp_path / "m.json")])
    rows = report["batches"][1]["methods"]
    assert rows["mini"]["update_passes"] == 13 and rows["reference"]["update_passes"] == 0  # steps 0..12 of 25
    assert rows["none"]["sampling_passes"] == rows["mini"]["sampling_passes"] == 25
    assert rows["mini"]["floor_s"] == speed_mini.floor_seconds(rows["reference"]["median_s"], 13, report["batches"][1]["partial_fwd_bwd_s"])
    assert report["main_command_s"] > 0 and (tmp_path / "m.json").exists()


def test_text_binding_measures_each_text_attention_choice():
    """SDXL's three ways to compute T are each measured; on the real MiniLM (tsam-mini) bound pairs get
    more of T than unbound ones, as the paper's section 3 says of CLIP and T5."""
    import text_binding

    mini = text_binding.main(["--model", "tsam-mini", "--limit", "40"])["variants"]["T"]
    assert mini["prompts"] >= 30 and mini["ratio"][1] > 1.0 and mini["bound_wins"][0] > 0.5
    xl = text_binding.main(["--model", "tiny-sdxl", "--limit", "5"])
    assert set(xl["variants"]) == {"both", "first", "second"} and xl["variants"]["both"]["prompts"] == 5
    s = text_binding.summary([{"bound": 2.0, "unbound": 1.0}, {"bound": 1.0, "unbound": 2.0}], resamples=50)
    assert s["bound"][0] == s["unbound"][0] == 1.5 and s["ratio"][0] == 1.0 and s["bound_wins"][0] == 0.5


def test_baselines_shapesbench_script_chooses_on_dev_and_runs_the_choice_on_test(tmp_path):
    """benchmarks/baselines_shapesbench.sh end to end at a trial size (6 prompts, one seed, one step,
    dev in two shards): each baseline's configuration is chosen on dev by select_preset's rule and runs
    on test (its paper settings where the rule keeps vanilla) beside vanilla and tsam:mini; the archive
    alone carries the work to a machine without the run directory, where nothing is generated again; a
    run with another plan is refused."""
    import json
    import os
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[1]
    archive, runs = tmp_path / "archive", tmp_path / "runs"
    env = {**os.environ, "LIMIT": "6", "DEV_SEEDS": "0", "TEST_SEEDS": "0", "STEPS": "1", "DEV_SHARDS": "2",
           "TEST_SHARDS": "1", "ARCHIVE": str(archive), "TABLE_JSON": str(tmp_path / "table.json"),
           "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # this env's tsam
    script = ["bash", "benchmarks/baselines_shapesbench.sh", str(runs)]
    first = subprocess.run(script, cwd=root, env=env, check=True, capture_output=True, text=True)
    assert sorted(p.name for p in archive.iterdir()) == [
        "dev-shard-0-of-2.jsonl.gz", "dev-shard-1-of-2.jsonl.gz", "dev.plan", "selection.json",
        "test-seeds0-shard-0-of-1.jsonl.gz", "test-seeds0.plan"]
    chosen = json.loads((archive / "selection.json").read_text())["chosen"]
    assert set(chosen) == {"attend-excite", "syngen", "conform"}
    assert all(v == "vanilla" or v.split("[")[0] == k for k, v in chosen.items())
    table = json.loads((tmp_path / "table.json").read_text())
    expected = {"vanilla", "tsam:mini"} | {k if v == "vanilla" else v for k, v in chosen.items()}
    assert set(table["_run"]["methods"]) == expected and table["_run"]["prompts"] == 6
    assert set(table["whole"]) == expected | {"n"}
    assert first.stderr.count("images planned") == 3 and "== dev: shard 1 of 2" in first.stdout
    # another machine: only the archive is there; nothing is generated, the table is the same
    shutil.rmtree(runs)
    (tmp_path / "table.json").unlink()
    again = subprocess.run(script, cwd=root, env=env, check=True, capture_output=True, text=True)
    assert "images planned" not in again.stderr and "== " not in again.stdout
    assert json.loads((tmp_path / "table.json").read_text()) == table
    # another plan never mixes into the archive
    other = subprocess.run(script, cwd=root, env={**env, "LIMIT": "5"}, capture_output=True, text=True)
    assert other.returncode == 1 and "holds dev shards of another plan" in other.stderr
