"""Shared helpers: run Snakemake for real on a temporary copy of the workflow."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
WORKFLOW_PARTS = ("Snakefile", "workflow", "config", "envs", "resources")

#: a small simulated cohort and a small model: a full run takes ~30 s on 2 cores
TINY_CONFIG = {
    "run": "tiny",
    "data": {"source": "simulate"},
    "simulate": {"n_samples": 60, "n_genes": 120, "n_planted": 10, "log2_fold_change": 1.5, "seed": 3},
    "analysis": {"condition": "condition"},
    "preprocess": {"n_top_genes": 80},
    "model": {"hidden": [32], "latent_dim": 4, "dropout": 0.0, "likelihood": "gaussian"},
    "train": {
        "epochs": 15,
        "batch_size": 16,
        "kl_warmup_epochs": 3,
        "patience": 5,
        "threads": 1,
    },
    "retrain": {"metric": "val_r2", "threshold": -100.0, "max_rounds": 3},
    "plots": {"dpi": 50},
    # the synthetic cohort has its own tests (test_privacy.py); skip it elsewhere for speed
    "generate": {"enabled": False},
}


def noise_cohort(n_train=40, n_val=10, n_genes=30, seed=0):
    """A Gaussian-noise cohort (train then val samples, two conditions) for training-loop tests."""
    import numpy as np

    from genovae.dataset import Cohort

    n = n_train + n_val
    x = np.random.default_rng(seed).normal(size=(n, n_genes)).astype(np.float32)
    return Cohort(
        sample_ids=np.array([f"s{i}" for i in range(n)]),
        split=np.array(["train"] * n_train + ["val"] * n_val),
        condition=np.array(["a", "b"] * (n // 2)),
        x=x,
        target=x,
        library=np.ones(n, np.float32),
        library_all=np.ones(n),
        genes=[f"g{j}" for j in range(n_genes)],
    )


def copy_workflow(dest):
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / part)
    return dest


def write_config(workdir, config, name="config/config.yaml"):
    path = Path(workdir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_snakemake(workdir, *args, check=True, timeout=900):
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--nolock", *args]
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


def planned_jobs(workdir, *args):
    """Rule -> job count that a dry run plans (empty when nothing is to be done)."""
    proc = run_snakemake(workdir, "--dry-run", *args)
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    block = text.split("Job stats:", 1)[1]
    jobs = {}
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


@pytest.fixture
def one_thread():
    """Pin torch to one thread for in-process training (fast and steady on a loaded machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def workdir(tmp_path):
    return copy_workflow(tmp_path / "wf")


@pytest.fixture
def tiny(workdir):
    write_config(workdir, TINY_CONFIG)
    return workdir


def shared_dataset(name):
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name} not found at {path} (../shared/data is absent)")
    return path


def check_h5ad_for_scanpy(path, use_rep="X_genovae"):
    """Read ``path`` with anndata.read_h5ad and build scanpy's kNN graph on ``obsm[use_rep]``.

    The check every .h5ad genovae writes must pass: anndata reads it, and
    scanpy.pp.neighbors fills obsp with an obs x obs graph. Returns the AnnData.
    """
    import anndata
    import scanpy

    adata = anndata.read_h5ad(path)
    assert use_rep in adata.obsm, f"{path}: no obsm['{use_rep}']"
    assert adata.obsm[use_rep].shape[0] == adata.n_obs
    scanpy.pp.neighbors(adata, use_rep=use_rep, n_neighbors=min(15, max(2, adata.n_obs - 1)))
    for key in ("connectivities", "distances"):
        assert adata.obsp[key].shape == (adata.n_obs, adata.n_obs), (path, key)
    assert adata.obsp["connectivities"].nnz > 0
    return adata


def check_every_h5ad(folder):
    """:func:`check_h5ad_for_scanpy` on every .h5ad under ``folder`` (a run's results); their paths."""
    paths = sorted(Path(folder).rglob("*.h5ad"))
    assert paths, f"no .h5ad under {folder}"
    for path in paths:
        check_h5ad_for_scanpy(path)
    return paths
