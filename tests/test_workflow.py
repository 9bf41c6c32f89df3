"""End-to-end workflow tests: Snakemake runs for real in a temporary copy."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from conftest import TINY_CONFIG, planned_jobs, run_snakemake, write_config

pytestmark = pytest.mark.workflow

RESULTS = Path("results/tiny")
SUMMARY_KEYS = {
    "run",
    "n_samples",
    "n_genes",
    "device",
    "rounds_run",
    "selected_round",
    "threshold",
    "threshold_met",
    "rounds",
    "metrics",
}


def with_changes(**sections):
    cfg = copy.deepcopy(TINY_CONFIG)
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    return cfg


def report_images(html):
    """{file name: PNG bytes} of every image embedded in a Snakemake HTML report."""
    found = re.findall(r'data:image/png;charset=utf8;filename=([^;]+);base64,([A-Za-z0-9+/=]+)', html)
    return {name: base64.b64decode(data) for name, data in found}


def recorded_inputs(workdir, output):
    """Input files Snakemake recorded for the job that wrote ``output``."""
    key = base64.urlsafe_b64encode(str(output).encode()).decode()
    meta = json.loads((workdir / ".snakemake/metadata" / key).read_text())
    return set(meta["input"])


def rounds_on_disk(workdir):
    return sorted(int(p.name) for p in (workdir / RESULTS / "rounds").iterdir() if p.is_dir())


def test_dry_run_lists_the_pipeline(tiny):
    jobs = planned_jobs(tiny)
    # a tiny cohort: the merged job layout (each round trains and evaluates in one job, one job
    # applies the model); one job per step: tests/test_job_layout.py
    for rule in ("simulate", "preprocess", "train", "decide", "select_model", "apply_model", "plots",
                 "summarize", "all"):
        assert rule in jobs, f"{rule} missing from the dry run: {jobs}"
    assert "evaluate" not in jobs and "latent" not in jobs
    # before the first checkpoint has run, only round 1 is planned
    assert jobs["train"] == 1


def test_full_run_produces_every_output(tiny):
    run_snakemake(tiny)
    r = tiny / RESULTS
    for rel in (
        "data/matrix.parquet",
        "data/manifest.json",
        "data/truth.tsv",
        "preprocess/features.parquet",
        "preprocess/split.tsv",
        "preprocess/transform.json",
        "rounds/1/model.pt",
        "rounds/1/history.tsv",
        "rounds/1/metrics.json",
        "rounds/1/decision.json",
        "model/model.pt",
        "model/selection.json",
        "latent.tsv",
        "reconstruction_error.tsv",
        "risk_genes.tsv",
        "latent_dims.tsv",
        "summary.json",
        "plots/loss_curves.png",
        "plots/latent_space.png",
        "plots/reconstruction_error.png",
        "plots/volcano.png",
        "plots/risk_heatmap.png",
    ):
        assert (r / rel).is_file() and (r / rel).stat().st_size > 0, rel
    summary = json.loads((r / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["n_samples"] == 60
    assert summary["device"] == "cpu"
    assert summary["rounds_run"] == 1 and summary["selected_round"] == 1
    assert summary["threshold_met"] is True
    assert {"val_recon_mse", "test_recon_mse"} <= set(summary["metrics"])
    assert "ranking" in summary  # simulated data: precision@k of both rankings
    vs = summary["latent_vs_pca"]["condition"]["all"]
    assert set(vs["knn_accuracy"]) == {"vae", "pca"} and set(vs["logreg_auc"]) == {"vae", "pca"}
    prov = json.loads((r / "provenance.json").read_text())
    assert prov["config"]["model"]["latent_dim"] == 4
    assert prov["versions"]["torch"] and prov["versions"]["snakemake"]
    assert prov["device"]["used"] == "cpu" and prov["seeds"]["train"] == 1
    assert "train/round_1.log" in prov["jobs"] and prov["jobs"]["train/round_1.log"]["start"]
    # every job's log reports its true peak memory; provenance collects it (a trained
    # model's job holds at least the interpreter with torch: well over 50 MB)
    upstream = ("preprocess.log", "train/round_1.log", "evaluate/round_1.log", "latent.log",
                "test_metrics.log", "risk_genes.log", "summarize.log", "plots.log")  # jobs provenance waits for
    peaks = {job: prov["jobs"][job].get("peak_memory_mb") for job in upstream}
    assert all(isinstance(p, int) and 50 < p < 20_000 for p in peaks.values()), peaks
    assert all(prov["jobs"][job]["status"] == "ok" for job in upstream)
    # risk genes: the simulated cohort's two groups make one contrast, computed in apply_model
    # (the per-contrast files of one job per step: tests/test_job_layout.py)
    assert "contrast 1 of 1" in (r / "logs/risk_genes.log").read_text() and not (r / "risk").exists()
    assert "commit" in prov["workflow"]
    latent = pd.read_csv(r / "latent.tsv", sep="\t")
    assert len(latent) == 60 and [c for c in latent if c.startswith("z")] == ["z1", "z2", "z3", "z4"]
    risk = pd.read_csv(r / "risk_genes.tsv", sep="\t")
    for col in ("gene", "vae_score", "vae_rank", "t_stat", "p_value", "fdr", "log2_fold_change",
                "classical_rank"):
        assert col in risk.columns
    # every rule wrote a log and a benchmark
    assert (r / "logs/train/round_1.log").is_file()
    assert (r / "benchmarks/train/round_1.tsv").is_file()
    # nothing left to do afterwards
    assert planned_jobs(tiny) == {}
    # one self-contained HTML report with every figure
    run_snakemake(tiny, "--report", "report.html")
    html = (tiny / "report.html").read_text()
    for name in ("loss_curves.png", "latent_space.png", "volcano.png", "risk_heatmap.png", "rounds.tsv",
                 "label_metrics.tsv", "summary.json", "provenance.json"):
        assert name in html, name
    images = report_images(html)
    assert len(images) == 5, sorted(images)
    for name, png in images.items():
        img = matplotlib.image.imread(io.BytesIO(png), format="png")  # every image decodes
        assert img.shape[0] > 100 and img.shape[1] > 100, name


def test_unreachable_threshold_runs_max_rounds_and_selects_the_best(tiny):
    # warm_start (no longer the default; the adaptive loop has its own test below)
    write_config(tiny, with_changes(retrain={"metric": "val_r2", "threshold": 2.0, "max_rounds": 3,
                                             "strategy": "warm_start"}))
    run_snakemake(tiny)
    assert rounds_on_disk(tiny) == [1, 2, 3]
    summary = json.loads((tiny / RESULTS / "summary.json").read_text())
    assert summary["rounds_run"] == 3 and summary["threshold_met"] is False
    values = {d["round"]: d["value"] for d in summary["rounds"]}
    # the loss-curve figure was drawn from every round, not only the first
    assert recorded_inputs(tiny, RESULTS / "plots/loss_curves.png") >= {
        str(RESULTS / f"rounds/{r}/history.tsv") for r in (1, 2, 3)
    }
    assert summary["selected_round"] == max(values, key=values.get)
    # warm start: later rounds begin from the previous round's weights, with more epochs
    info2 = json.loads((tiny / RESULTS / "rounds/2/train_info.json").read_text())
    assert info2["warm_start"] is True and info2["settings"]["epochs"] > TINY_CONFIG["train"]["epochs"]


def test_adaptive_round_follows_the_diagnosis_of_the_round_before(tiny):
    """retrain.strategy: adaptive (the default): round 1's decision diagnoses it and says what round 2
    changes; round 2 trains from scratch with exactly those settings, and model.hidden: auto is resolved."""
    write_config(tiny, with_changes(model={"hidden": "auto"},
                                    retrain={"metric": "val_r2", "threshold": 2.0, "max_rounds": 2}))
    run_snakemake(tiny)
    assert rounds_on_disk(tiny) == [1, 2]
    d1 = json.loads((tiny / RESULTS / "rounds/1/decision.json").read_text())
    assert d1["diagnosis"] in ("overfitting", "underfitting", "posterior_collapse", "kl_dominates", "fits", "unclear")
    assert d1["change"].startswith(d1["diagnosis"]) and d1["evidence"]["val_ratio_pca"] > 0
    info1 = json.loads((tiny / RESULTS / "rounds/1/train_info.json").read_text())
    info2 = json.loads((tiny / RESULTS / "rounds/2/train_info.json").read_text())
    assert isinstance(info1["model"]["hidden"], list)  # auto, resolved from the training samples and genes
    assert d1["settings"]["hidden"] == info1["model"]["hidden"]
    round2 = {**{k: info2["model"][k] for k in ("hidden", "dropout")},
              **{k: info2["settings"][k] for k in ("epochs", "lr", "weight_decay", "beta", "kl_warmup_epochs",
                                                   "patience")}}
    assert round2 == d1["next_settings"]
    # round 2 differs from round 1 exactly in what the change names, and as the diagnosis says
    changed = {k for k in round2 if round2[k] != d1["settings"][k]}
    assert all(k in d1["change"] for k in changed)
    if d1["diagnosis"] == "overfitting":
        before = d1["settings"]
        assert (round2["weight_decay"] > before["weight_decay"] or round2["dropout"] > before["dropout"]
                or round2["hidden"] < before["hidden"])
    elif d1["diagnosis"] == "underfitting":
        assert round2["epochs"] > d1["settings"]["epochs"] or round2["hidden"] > d1["settings"]["hidden"]
    elif d1["diagnosis"] in ("posterior_collapse", "kl_dominates"):
        assert round2["beta"] < d1["settings"]["beta"]
    else:
        assert not changed
    assert info2["warm_start"] is False and info2["seed"] == info1["seed"] + 1
    summary = json.loads((tiny / RESULTS / "summary.json").read_text())
    assert summary["rounds"][0]["diagnosis"] == d1["diagnosis"]
    assert any("Why the rounds fell short" in w for w in summary["warnings"])
    # the threshold alone retrains nothing, also for adaptive rounds
    jobs = planned_jobs(tiny, "--config", "retrain={metric: val_r2, threshold: 3.0, max_rounds: 2}")
    assert "decide" in jobs and "train" not in jobs and "evaluate" not in jobs


def test_search_rounds_train_what_the_study_drew(tiny):
    """retrain.strategy: search: each decision draws the next round's settings from the study of the rounds
    so far (decide of round r reads the decisions of rounds 1..r-1); round r+1 trains exactly them; the
    study rebuilds from the decision files; a new threshold retrains nothing."""
    from genovae.search import study_from_decisions

    # no stop_without_improvement: for a search it is off unless set, so all three rounds run
    write_config(tiny, with_changes(retrain={"metric": "val_r2", "threshold": 2.0, "max_rounds": 3,
                                             "strategy": "search"}))
    run_snakemake(tiny)
    assert rounds_on_disk(tiny) == [1, 2, 3]
    paths = [tiny / RESULTS / f"rounds/{r}/decision.json" for r in (1, 2, 3)]
    decisions = [json.loads(p.read_text()) for p in paths]
    for r in (1, 2):
        d, info = decisions[r - 1], json.loads((tiny / RESULTS / f"rounds/{r + 1}/train_info.json").read_text())
        trained = {**{k: info["model"][k] for k in ("hidden", "dropout")},
                   **{k: info["settings"][k] for k in ("epochs", "lr", "weight_decay", "beta", "kl_warmup_epochs",
                                                       "patience")}}
        assert trained == d["next_settings"] == decisions[r]["settings"]
        assert d["search"]["trial"] == r and d["change"].startswith("search (random draw)")
        assert info["warm_start"] is False
    assert recorded_inputs(tiny, RESULTS / "rounds/3/decision.json") >= {
        str(RESULTS / f"rounds/{r}/decision.json") for r in (1, 2)
    }
    # each round's latent structure for the condition is recorded and shown beside PCA's (never used to select)
    assert all(d["latent_knn"]["label"] == "condition" and 0 <= d["latent_knn"]["vae"] <= 1 for d in decisions)
    table = pd.read_csv(tiny / RESULTS / "model/rounds.tsv", sep="\t")
    assert table["knn_vae"].tolist() == pytest.approx([d["latent_knn"]["vae"] for d in decisions], abs=1e-5)
    study = study_from_decisions([str(p) for p in paths])
    assert [t.value for t in study.trials] == [d["value"] for d in decisions]
    jobs = planned_jobs(tiny, "--config", "retrain={metric: val_r2, threshold: 3.0, max_rounds: 3, strategy: search}")
    assert "decide" in jobs and "train" not in jobs and "evaluate" not in jobs


def test_reachable_threshold_runs_one_round(tiny):
    write_config(tiny, with_changes(retrain={"metric": "val_recon_mse", "threshold": 1e6, "max_rounds": 3}))
    run_snakemake(tiny)
    assert rounds_on_disk(tiny) == [1]
    summary = json.loads((tiny / RESULTS / "summary.json").read_text())
    assert summary["rounds_run"] == 1 and summary["threshold_met"] is True


def test_config_changes_rerun_only_affected_jobs(tiny):
    run_snakemake(tiny)
    # a model setting: training and what follows, not collect/preprocess
    jobs = planned_jobs(tiny, "--config", "model={latent_dim: 3}")
    assert "train" in jobs and "apply_model" in jobs  # a tiny cohort: the merged job layout
    assert "simulate" not in jobs and "preprocess" not in jobs
    # a preprocessing setting: preprocess and what follows, not collect
    jobs = planned_jobs(tiny, "--config", "preprocess={n_top_genes: 60}")
    assert "preprocess" in jobs and "train" in jobs
    assert "simulate" not in jobs
    # the threshold: only the decision and what follows, no retraining of round 1
    jobs = planned_jobs(tiny, "--config", "retrain={threshold: -50.0}")
    assert "decide" in jobs and "train" not in jobs and "evaluate" not in jobs
    # really rerun with the model change and check the new latent size
    run_snakemake(tiny, "--config", "model={latent_dim: 3}")
    latent = pd.read_csv(tiny / RESULTS / "latent.tsv", sep="\t")
    assert [c for c in latent if c.startswith("z")] == ["z1", "z2", "z3"]


def test_bad_config_is_refused_with_the_key(tiny):
    proc = run_snakemake(tiny, "--dry-run", "--config", "model={latent_dim: x}", check=False)
    assert proc.returncode != 0
    assert "latent_dim" in proc.stderr + proc.stdout
    proc = run_snakemake(tiny, "--dry-run", "--config", "modle={latent_dim: 8}", check=False)
    assert proc.returncode != 0
    assert "modle" in proc.stderr + proc.stdout


def test_bad_input_stops_collect_with_a_clear_message(workdir):
    data = workdir / "bad"
    data.mkdir()
    (data / "expr.tsv").write_text("sample_id\tg1\tg2\ns1\t1\tx\ns2\t2\t3\n")
    (data / "samples.tsv").write_text("sample_id\tcondition\ns1\tA\ns2\tB\n")
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["data"] = {"source": "file", "expression": "bad/expr.tsv", "samples": "bad/samples.tsv",
                   "value_type": "log"}
    write_config(workdir, cfg)
    proc = run_snakemake(workdir, check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "bad/expr.tsv" in text and "non-numeric value 'x'" in text
    assert "Traceback" not in proc.stderr
    assert not (workdir / RESULTS / "data").exists() or not any((workdir / RESULTS / "data").iterdir())


def test_demo_config_runs_on_the_shipped_data(workdir):
    """The README's demo, with fewer epochs: the real shipped dataset end to end."""
    run_snakemake(workdir, "--config", "train={epochs: 25, patience: 5}", "retrain={max_rounds: 1}")
    summary = json.loads((workdir / "results/demo/summary.json").read_text())
    assert summary["n_samples"] == 83 and summary["rounds_run"] == 1
    risk = pd.read_csv(workdir / "results/demo/risk_genes.tsv", sep="\t")
    assert set(risk["contrast"]) == {"BL_vs_rest", "EWS_vs_rest", "NB_vs_rest", "RMS_vs_rest"}
    assert "description" in risk.columns
