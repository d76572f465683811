"""tsam bench export / import: a run's rows and scores without images, merged across shards."""
import dataclasses
import gzip
import json

import numpy as np
import pytest

from tsam_diffusion.bench import Metric, register_metric
from tsam_diffusion.bench.archive import export_run, import_runs
from tsam_diffusion.bench.db import BenchError, ConfigConflict, RunDB
from tsam_diffusion.bench.run import parse_methods, run_benchmark
from tsam_diffusion.bench.suites import load_prompts_file
from tsam_diffusion.cli import main

GEN = dict(model="tiny-sd", num_inference_steps=2, progress=False)


class MeanPixel(Metric):
    name = "mean-pixel"

    def score(self, images, prompts, metas):
        return [{"value": float(np.asarray(im, dtype=float).mean() / 255)} for im in images]


@pytest.fixture()
def shards(tsam_pipe, tmp_path):
    """One run split in two processes' shares (RANK 0 and 1 of 2), in two directories, both scored."""
    register_metric("mean-pixel", lambda device="cpu", **kw: MeanPixel())
    f = tmp_path / "p.txt"
    f.write_text("a black car and a white clock\na cat with a hat\n")
    prompts = load_prompts_file(f)
    dirs = []
    for rank in (0, 1):
        out = tmp_path / f"shard{rank}"
        run_benchmark(prompts, parse_methods("vanilla,tsam[alpha=2]"), [0, 1], out, batch_size=1, rank=rank,
                      world_size=2, pipeline=tsam_pipe, **GEN)
        assert main(["bench", "score", str(out), "--metrics", "mean-pixel", "--device", "cpu"]) == 0
        dirs.append(out)
    RunDB(dirs[0]).add_scores("other", {RunDB(dirs[0]).images()[0]["job_id"]: {}})  # scored, without a value
    return dirs


def _state(run):
    db = RunDB(run, create=False)
    rows = {r["job_id"]: r for r in db.images()}
    scores = {(s["job_id"], s["metric"], s["key"]): s["value"] for s in db.scores()}
    return rows, scores, set(db.scored()), db.settings(), db.methods()


def test_export_import_round_trip_merges_shards(shards, tmp_path, capsys):
    files = [tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"]
    for d, f in zip(shards, files):
        assert main(["bench", "export", str(d), "--out", str(f)]) == 0
    assert "4 images' rows and scores" in capsys.readouterr().err
    merged = tmp_path / "merged"
    assert main(["bench", "import", *map(str, files), "--out", str(merged)]) == 0
    assert "8 images' rows and scores imported, 0 were already there" in capsys.readouterr().err
    rows, scores, scored, settings, methods = _state(merged)
    parts = [_state(d) for d in shards]
    assert rows == {**parts[0][0], **parts[1][0]} and len(rows) == 8  # every column, as written
    assert scores == {**parts[0][1], **parts[1][1]} and len(scores) == 8
    assert scored == parts[0][2] | parts[1][2] and sum(m == "other" for _, m in scored) == 1
    assert settings == parts[0][3] and methods == parts[0][4]
    assert RunDB(merged).done_jobs() == set()  # no PNGs in an export: `bench run` would make them again
    # importing again adds nothing; the report works without the images
    assert import_runs(files, merged) == {"imported": 0, "already there": 8}
    assert main(["bench", "report", str(merged)]) == 0
    assert "mean-pixel" in (merged / "report.md").read_text()


def test_export_is_small(shards, tmp_path):
    f = tmp_path / "a.jsonl.gz"
    assert export_run(shards[0], f) == 4
    lines = gzip.open(f, "rt").read().splitlines()
    assert json.loads(lines[0])["format"] == "tsam-bench-export" and len(lines) == 5
    assert f.stat().st_size < 4 * 1000  # about 150-600 bytes an image, here with the header's share


def test_import_refuses_disagreeing_files_before_writing(shards, tsam_pipe, tmp_path):
    prompts = load_prompts_file(tmp_path / "p.txt")[:1]
    other, renamed = tmp_path / "other", tmp_path / "renamed"
    run_benchmark(prompts, parse_methods("vanilla"), [0], other, pipeline=tsam_pipe, **{**GEN, "num_inference_steps": 3})
    # the same method name as in the shards, with another configuration
    method = dataclasses.replace(parse_methods("tsam[alpha=3]")[0], name="tsam[alpha=2]")
    run_benchmark(prompts, [method], [0], renamed, pipeline=tsam_pipe, **GEN)
    a, b, c = (tmp_path / f"{x}.jsonl.gz" for x in "abc")
    export_run(shards[0], a)
    export_run(other, b)
    export_run(renamed, c)
    with pytest.raises(BenchError, match="other settings"):
        import_runs([a, b], tmp_path / "merged")
    with pytest.raises(BenchError, match="another configuration"):
        import_runs([a, c], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()  # nothing written
    import_runs([a], tmp_path / "merged")
    with pytest.raises(ConfigConflict, match="other settings"):  # against what the run directory holds
        import_runs([b], tmp_path / "merged")
    assert len(RunDB(tmp_path / "merged").images()) == 4


def _with_device(src, dst, device):
    """A copy of an export whose images say they were made on ``device`` (None: not recorded, as before tsam did)."""
    lines = [json.loads(x) for x in gzip.open(src, "rt").read().splitlines()]
    for line in lines[1:]:
        line["row"]["versions"].pop("device")
        if device is not None:
            line["row"]["versions"]["device"] = device
    with gzip.open(dst, "wt") as f:
        f.write("".join(json.dumps(x) + "\n" for x in lines))
    return dst


def test_import_refuses_mixing_devices(shards, tmp_path):
    """CPU and GPU images of one seed differ: a merged run would pair them, so import refuses, before writing;
    exports from before tsam recorded the device merge with either."""
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    export_run(shards[0], a)
    export_run(shards[1], b)
    gpu = _with_device(b, tmp_path / "gpu.jsonl.gz", "cuda: NVIDIA H200")
    old = _with_device(b, tmp_path / "old.jsonl.gz", None)
    with pytest.raises(BenchError, match=r"importing these files together would mix .*\(cpu, cuda: NVIDIA H200\)"):
        import_runs([a, gpu], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    assert import_runs([a], tmp_path / "merged")["imported"] == 4
    with pytest.raises(BenchError, match=r"importing into .*merged would mix"):  # against what the run holds
        import_runs([gpu], tmp_path / "merged")
    assert import_runs([old], tmp_path / "merged")["imported"] == 4
    assert import_runs([gpu], tmp_path / "gpu-only")["imported"] == 4


def test_bad_files_get_one_clear_error(tmp_path, capsys):
    junk = tmp_path / "junk.jsonl.gz"
    junk.write_bytes(b"not gzip at all")
    plain = tmp_path / "plain.jsonl.gz"
    with gzip.open(plain, "wt") as g:
        g.write('{"hello": 1}\n')
    for f, why in [(junk, "not a readable"), (plain, "no export header"), (tmp_path / "none.gz", "does not exist")]:
        assert main(["bench", "import", str(f), "--out", str(tmp_path / "m")]) == 1
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err
    assert main(["bench", "export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.gz")]) == 1
    assert "holds no benchmark run" in capsys.readouterr().err
