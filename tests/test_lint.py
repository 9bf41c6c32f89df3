"""The workflow is lint-clean and formatted (snakemake --lint, snakefmt --check)."""

import shutil
import subprocess
import sys

import pytest

from conftest import REPO


def test_snakemake_lint_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Lints for" not in out, out


def test_snakefmt_check_passes():
    exe = shutil.which("snakefmt")
    if exe is None:
        pytest.skip("snakefmt is not installed (pip install -r requirements-dev.txt)")
    proc = subprocess.run([exe, "--check", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
