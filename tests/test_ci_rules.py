"""The suite's own rules (tests/conftest.py): under CI a skipped test fails; the skip count is printed."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

DEMO = '''
import pytest

def test_needs_a_missing_dependency():
    pytest.importorskip("no_such_module_anywhere")

def test_fine():
    pass
'''


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    shutil.copy(Path(__file__).parent / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_demo.py").write_text(DEMO)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci is not None else {})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_skip_is_a_failure_under_ci(tmp_path):
    local = _run(tmp_path, None)
    assert local.returncode == 0 and "1 passed, 1 skipped" in local.stdout and "skipped tests: 1" in local.stdout
    ci = _run(tmp_path, "true")
    assert ci.returncode == 1 and "1 failed, 1 passed" in ci.stdout
    assert "skipped under CI=true" in ci.stdout and "no_such_module_anywhere" in ci.stdout
