"""A user's first hour: a config of their own stands alone, and every place a user looks
(summary.json, the end-of-run message, the report's landing page) tells the same verdict."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from conftest import TINY_CONFIG, copy_workflow, run_snakemake, shared_dataset

pytestmark = pytest.mark.workflow


def test_a_model_that_must_lose_says_so_everywhere(tmp_path):
    """Pure noise and an unreachable threshold: the warning is in the summary, the message and the report."""
    wd = copy_workflow(tmp_path / "wf")
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["run"] = "noise"
    cfg["simulate"].update(n_programs=0, n_planted=1, log2_fold_change=0.01)
    cfg["retrain"] = {"metric": "val_mse_ratio_pca", "threshold": 0.5, "max_rounds": 2}
    (wd / "noise.yaml").write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(wd, "--configfile", "noise.yaml")
    summary = json.loads((wd / "results/noise/summary.json").read_text())
    v = summary["verdict"]
    assert v["status"] == "fail" and not v["threshold"]["met"] and v["threshold"]["rounds_run"] == 2
    warning = next(w for w in summary["warnings"] if "did not reach the threshold" in w)
    assert warning in v["warnings"]
    # the end-of-run message: verdict, headline, every warning, and a report hint with the run's own config
    out = proc.stdout + proc.stderr
    assert "Verdict: not good enough" in out and v["headline"] in out and warning in out
    hint = "snakemake --configfile results/noise/config.yaml --report results/noise/report.html"
    assert hint in out
    # following the hint builds this run's report (not the demo's), with the verdict on its landing page
    run_snakemake(wd, *hint.split()[1:])
    report = (wd / "results/noise/report.html").read_text()
    assert "Verdict: not good enough" in report and "did not reach the threshold" in report
    assert not (wd / "results/demo").exists()
    overview = (wd / "results/noise/overview.html").read_text()
    assert "did not reach the threshold" in overview and "Retrain rounds" in overview


def test_minimal_user_config_stands_alone_on_golub(tmp_path):
    """Only data and analysis: every other key takes the schema's default, never the demo's."""
    d = shared_dataset("golub_all_aml")
    wd = copy_workflow(tmp_path / "wf")
    os.symlink(d, wd / "golub")
    user = {
        "run": "golub",
        "data": {"expression": "golub/expression.tsv", "samples": "golub/samples.tsv",
                 "genes": "golub/genes.tsv", "value_type": "intensity"},
        "analysis": {"condition": "label"},
    }
    (wd / "my_study.yaml").write_text(yaml.safe_dump(user))
    schema = yaml.safe_load((wd / "workflow/schemas/config.schema.yaml").read_text())
    demo = yaml.safe_load((wd / "config/config.yaml").read_text())
    proc = run_snakemake(wd, "--configfile", "my_study.yaml")
    used = yaml.safe_load((wd / "results/golub/config.yaml").read_text())
    props = schema["properties"]
    # the demo's tuned values and data settings are not inherited
    assert used["retrain"]["threshold"] == props["retrain"]["properties"]["threshold"]["default"]
    a_props = props["analysis"]["properties"]
    assert used["analysis"]["predict"] is a_props["predict"]["default"] is False and demo["analysis"]["predict"] is True
    assert used["analysis"]["known_genes"] == a_props["known_genes"]["default"] == [] != demo["analysis"]["known_genes"]
    assert used["data"]["log_base"] == props["data"]["properties"]["log_base"]["default"] != demo["data"]["log_base"]
    assert used["train"]["batch_size"] == props["train"]["properties"]["batch_size"]["default"]
    assert used["data"]["genes"] == "golub/genes.tsv"
    summary = json.loads((wd / "results/golub/summary.json").read_text())
    assert summary["n_samples"] == 72 and summary["groups"] == {"ALL": 47, "AML": 25}
    assert summary["verdict"]["headline"] in proc.stdout + proc.stderr
    risk = (wd / "results/golub/risk_genes.tsv").read_text()
    assert "AML" in risk and "description" in risk.splitlines()[0]
    assert not (wd / "results/demo").exists()
    # the saved config, passed back, rebuilds nothing: it is exactly the run's config
    again = run_snakemake(wd, "--configfile", "results/golub/config.yaml", "--dry-run")
    assert "Nothing to be done" in again.stdout + again.stderr
    assert Path(wd / "results/golub/overview.html").is_file()
