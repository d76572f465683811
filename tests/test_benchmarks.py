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
    assert methods["sd-tifa"]["floor_s"] == pytest.approx(methods["reference"]["median_s"] + report["pieces_s"]["partial_fwd_bwd_b1"])
    assert set(report["loss_ms"]) == {"16x16", "64x64"}
    assert (tmp_path / "s.json").exists()
