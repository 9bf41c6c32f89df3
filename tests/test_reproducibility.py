"""Reproducibility: what each kind of config change reruns, isolation of runs,
bit-identical reruns on CPU, and re-applying a trained model to new data."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from conftest import TINY_CONFIG, copy_workflow, planned_jobs, run_snakemake, write_config

pytestmark = pytest.mark.workflow

R = "results/tiny"


def tiny_file_config(workdir):
    """TINY_CONFIG on a data file (so that editing the file can be tested)."""
    cfg = copy.deepcopy(TINY_CONFIG)
    src = workdir / "resources" / "khan_srbct"
    cfg["data"] = {"source": "file", "expression": str(src.relative_to(workdir) / "expression.tsv.gz"),
                   "samples": str(src.relative_to(workdir) / "samples.tsv"), "value_type": "log",
                   "log_base": "e"}
    cfg["analysis"] = {"condition": "tumour_type"}
    cfg["retrain"] = {"metric": "val_r2", "threshold": 2.0, "max_rounds": 2, "stop_without_improvement": False}
    cfg["preprocess"] = {"n_top_genes": 100}
    # one job per step, so that each test can name the steps a change reruns (the merged layout's
    # reruns, by job: tests/test_job_layout.py)
    cfg["resources"] = {"job_layout": "per_step"}
    return cfg


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-round run on a data file; tests work on copies of it."""
    wd = copy_workflow(tmp_path_factory.mktemp("finished") / "wf")
    write_config(wd, tiny_file_config(wd))
    run_snakemake(wd)
    return wd


@pytest.fixture
def rerun_dir(finished, tmp_path):
    dest = tmp_path / "wf"
    shutil.copytree(finished, dest, symlinks=True)
    return dest


def change(workdir, **sections):
    cfg = tiny_file_config(workdir)
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    write_config(workdir, cfg)


def test_nothing_changed_nothing_to_do(rerun_dir):
    assert planned_jobs(rerun_dir) == {}


def test_data_file_content_reruns_everything(rerun_dir):
    import gzip

    path = rerun_dir / "resources/khan_srbct/expression.tsv.gz"
    lines = gzip.open(path, "rt").read().splitlines()
    lines[1] = lines[1].replace("\t", "\t1", 1)  # one value of one sample changes
    time.sleep(1.1)
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    jobs = planned_jobs(rerun_dir)
    assert {"collect", "preprocess", "train", "evaluate", "decide", "select_model", "latent"} <= set(jobs)


def test_preprocessing_setting_reruns_preprocess_and_after(rerun_dir):
    change(rerun_dir, preprocess={"n_top_genes": 80})
    jobs = planned_jobs(rerun_dir)
    assert "collect" not in jobs
    assert {"preprocess", "train", "latent", "summarize"} <= set(jobs)
    run_snakemake(rerun_dir)
    assert len(json.loads((rerun_dir / R / "preprocess/transform.json").read_text())["genes"]) == 80


def test_model_setting_reruns_training_and_after(rerun_dir):
    change(rerun_dir, model={"latent_dim": 3})
    jobs = planned_jobs(rerun_dir)
    assert "collect" not in jobs and "preprocess" not in jobs
    assert {"train", "evaluate", "decide", "select_model", "latent"} <= set(jobs)


def test_threshold_reruns_only_the_decisions(rerun_dir):
    before = (rerun_dir / R / "rounds/1/model.pt").stat().st_mtime_ns
    change(rerun_dir, retrain={"threshold": -100.0})
    jobs = planned_jobs(rerun_dir)
    assert "train" not in jobs and "evaluate" not in jobs and "preprocess" not in jobs
    assert "decide" in jobs
    run_snakemake(rerun_dir)
    summary = json.loads((rerun_dir / R / "summary.json").read_text())
    assert summary["rounds_run"] == 1 and summary["threshold_met"]
    assert (rerun_dir / R / "rounds/1/model.pt").stat().st_mtime_ns == before


def test_raising_max_rounds_continues_from_the_last_round(rerun_dir):
    mtimes = {r: (rerun_dir / R / f"rounds/{r}/model.pt").stat().st_mtime_ns for r in (1, 2)}
    change(rerun_dir, retrain={"max_rounds": 3})
    run_snakemake(rerun_dir)
    summary = json.loads((rerun_dir / R / "summary.json").read_text())
    assert summary["rounds_run"] == 3
    for r, m in mtimes.items():  # finished rounds were reused, not retrained
        assert (rerun_dir / R / f"rounds/{r}/model.pt").stat().st_mtime_ns == m
    # retrain.strategy: adaptive (the default since issue 15; this asserted warm start before): round 3
    # trains from scratch with the settings round 2's decision named
    info = json.loads((rerun_dir / R / "rounds/3/train_info.json").read_text())
    d2 = json.loads((rerun_dir / R / "rounds/2/decision.json").read_text())
    assert info["warm_start"] is False and info["model"]["hidden"] == d2["next_settings"]["hidden"]
    assert info["settings"]["weight_decay"] == d2["next_settings"]["weight_decay"]


def test_plot_setting_reruns_only_the_report(rerun_dir):
    change(rerun_dir, plots={"dpi": 60})
    jobs = planned_jobs(rerun_dir)
    # run_config and provenance record the config itself: they follow every change
    assert set(jobs) - {"all"} <= {"plots", "provenance", "run_config"}, jobs
    assert "plots" in jobs


def test_runs_with_different_names_run_side_by_side(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["retrain"]["max_rounds"] = 1
    write_config(wd, cfg)
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1"]
    procs = [subprocess.Popen(cmd + ["--config", f"run={name}"], cwd=wd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for name in ("alpha", "beta")]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    for name in ("alpha", "beta"):
        summary = json.loads((wd / f"results/{name}/summary.json").read_text())
        assert summary["run"] == name
        assert (wd / f"results/{name}/logs/collect.log").exists() or (wd / f"results/{name}/logs/simulate.log").exists()
    # same seed, same data: the two runs agree
    a = (wd / "results/alpha/latent.tsv").read_bytes()
    assert a == (wd / "results/beta/latent.tsv").read_bytes()


def test_two_fresh_runs_are_bit_identical(finished, tmp_path):
    other = copy_workflow(tmp_path / "wf")
    write_config(other, tiny_file_config(other))
    run_snakemake(other)
    for rel in ("latent.tsv", "risk_genes.tsv", "reconstruction_error.tsv", "label_metrics.tsv",
                "latent_dims.tsv"):
        assert (finished / R / rel).read_bytes() == (other / R / rel).read_bytes(), rel
    s1 = json.loads((finished / R / "summary.json").read_text())
    s2 = json.loads((other / R / "summary.json").read_text())
    assert s1["metrics"] == s2["metrics"] and s1["rounds"] == s2["rounds"]
    m1 = torch.load(finished / R / "model/model.pt", weights_only=True)["state_dict"]
    m2 = torch.load(other / R / "model/model.pt", weights_only=True)["state_dict"]
    assert m1.keys() == m2.keys() and all(torch.equal(m1[k], m2[k]) for k in m1)


def test_apply_new_encodes_without_retraining(rerun_dir):
    src = pd.read_csv(rerun_dir / "resources/khan_srbct/expression.tsv.gz", sep="\t", index_col=0)
    new = src.iloc[:8].rename(index=lambda s: f"new_{s}")
    new.to_csv(rerun_dir / "new.tsv", sep="\t")
    trained = (rerun_dir / R / "model/model.pt").stat().st_mtime_ns
    jobs = planned_jobs(rerun_dir, "apply_new", "--config", "new_data={expression: new.tsv}")
    assert set(jobs) == {"apply_new"}, jobs
    run_snakemake(rerun_dir, "apply_new", "--config", "new_data={expression: new.tsv}")
    assert (rerun_dir / R / "model/model.pt").stat().st_mtime_ns == trained
    got = pd.read_csv(rerun_dir / R / "new/new/latent.tsv", sep="\t").filter(regex=r"^z")
    ref = pd.read_csv(rerun_dir / R / "latent.tsv", sep="\t").set_index("sample_id")
    ref = ref.loc[[s.removeprefix("new_") for s in new.index]].filter(regex=r"^z")
    assert (got.to_numpy() - ref.to_numpy()).max() < 1e-4  # same samples, same latent means
    # genes that do not cover the model's genes are refused with a clear message
    src.iloc[:8, :50].to_csv(rerun_dir / "few_genes.tsv", sep="\t")
    proc = run_snakemake(rerun_dir, "apply_new", "--config", "new_data={expression: few_genes.tsv, name: few}",
                         check=False)
    assert proc.returncode != 0
    assert "few_genes.tsv" in proc.stderr and "genes of the trained model are missing" in proc.stderr
    assert not (rerun_dir / R / "new/few/latent.tsv").exists()


def test_apply_new_never_redecides_and_reads_every_format(rerun_dir):
    """A changed threshold does not make apply_new re-decide or re-select (the run's other results
    would go stale); new_data takes the formats of data (here an .h5ad, genes x samples TSV)."""
    import anndata

    src = pd.read_csv(rerun_dir / "resources/khan_srbct/expression.tsv.gz", sep="\t", index_col=0)
    new = src.iloc[:6].rename(index=lambda s: f"new_{s}")
    anndata.AnnData(X=new.to_numpy(dtype="float32"), obs=pd.DataFrame({"site": ["a", "b"] * 3}, index=new.index),
                    var=pd.DataFrame(index=new.columns)).write_h5ad(rerun_dir / "new.h5ad")
    new.T.to_csv(rerun_dir / "new_t.tsv", sep="\t")
    change(rerun_dir, retrain={"threshold": 0.5})  # the run's decisions are now stale
    selection = (rerun_dir / R / "model/selection.json").read_bytes()
    over = "new_data={expression: new.h5ad, name: h5}"
    assert planned_jobs(rerun_dir, "apply_new", "--config", over) == {"apply_new": 1}
    run_snakemake(rerun_dir, "apply_new", "--config", over)
    assert (rerun_dir / R / "model/selection.json").read_bytes() == selection
    manifest = json.loads((rerun_dir / R / "new/h5/manifest.json").read_text())
    assert manifest["format"] == "h5ad" and manifest["n_samples"] == 6
    h5 = pd.read_csv(rerun_dir / R / "new/h5/latent.tsv", sep="\t")
    assert list(h5["site"]) == ["a", "b"] * 3  # the sheet the .h5ad carries is kept
    run_snakemake(rerun_dir, "apply_new", "--config",
                  "new_data={expression: new_t.tsv, orientation: genes_by_samples, name: t}")
    t = pd.read_csv(rerun_dir / R / "new/t/latent.tsv", sep="\t").filter(regex=r"^z")
    assert (h5.filter(regex=r"^z").to_numpy() - t.to_numpy()).max() < 1e-6  # same values, same latent means
    from conftest import check_every_h5ad

    # apply_new writes tables only: the run's .h5ad is still just latent.h5ad, and it reads
    assert check_every_h5ad(rerun_dir / R) == [rerun_dir / R / "latent.h5ad"]


def test_apply_new_without_a_finished_run_says_so(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    write_config(wd, tiny_file_config(wd))
    pd.read_csv(wd / "resources/khan_srbct/expression.tsv.gz", sep="\t", index_col=0).iloc[:4].to_csv(
        wd / "new.tsv", sep="\t")
    proc = run_snakemake(wd, "apply_new", "--config", "new_data={expression: new.tsv}", check=False)
    assert proc.returncode != 0
    assert "trained model is missing" in proc.stderr and "model.pt" in proc.stderr
    assert not (wd / R / "new/new/latent.tsv").exists()
