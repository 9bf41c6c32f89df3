"""Job layouts (resources.job_layout): fewer jobs for small cohorts, the same files as one job per step."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import copy_workflow, planned_jobs, run_snakemake
from genovae import io, provenance, resources, runner
from genovae.errors import InputError

R = Path("results/demo")


def test_auto_merges_small_cohorts_and_keeps_one_job_per_step_above():
    merged = resources.merged_jobs
    assert merged("auto", (83, 2308)) is True  # the demo
    assert merged("auto", (1000, 20_000)) is True  # the bound is inclusive
    assert merged("auto", (1001, 20_000)) is False
    assert merged("auto", (200_000, 20_000)) is False
    assert merged("auto", None) is False  # a URL or a GEO series: unknown before the download
    assert merged("merged", (200_000, 20_000)) is True and merged("per_step", (10, 10)) is False


def test_steps_of_one_job_log_apart_and_a_failing_step_removes_every_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = {"run": "demo", "new_data": {"name": "new"}, "privacy": {}}
    outs = ["results/demo/a.txt", "results/demo/b.txt"]
    logs = ["results/demo/logs/first.log", "results/demo/logs/second/round_1.log"]
    job = SimpleNamespace(rule="apply_model", output=outs, log=logs, config=config)

    def first(sm, _log):
        logging.getLogger("genovae.test").info("first step says hello")
        io.write_text(outs[0], "a")

    def second(sm, _log):
        io.write_text(outs[1], "b")

    runner.run_steps(job, [("first", logs[0], first), ("second", logs[1], second)])
    first_log, second_log = ((tmp_path / p).read_text() for p in logs)
    assert "first step says hello" in first_log and "first step says hello" not in second_log
    assert "rule apply_model (step second) finished" in second_log
    jobs = provenance.job_times(tmp_path / "results/demo/logs")
    assert jobs["first.log"]["status"] == jobs["second/round_1.log"]["status"] == "ok"
    record = json.loads((tmp_path / "results/demo/logs/second/round_1.job.json").read_text())
    assert record["rule"] == "apply_model" and record["step"] == "second"

    # a later step fails: the earlier step's output goes too, the message names the step, exit 1
    def broken(sm, _log):
        io.write_text(outs[1], "half")
        raise InputError("results/demo/x.tsv", "is broken")

    with pytest.raises(SystemExit) as exc:
        runner.run_steps(job, [("first", logs[0], first), ("second", logs[1], broken)])
    assert exc.value.code == 1
    assert not any((tmp_path / p).exists() for p in outs)
    err = capsys.readouterr().err
    assert "genovae: rule apply_model (step second) failed: results/demo/x.tsv: is broken" in err
    assert "Traceback" not in err
    assert json.loads((tmp_path / "results/demo/logs/second/round_1.job.json").read_text())["status"] == "failed"


# ----------------------------------------------------------------- the workflow, both layouts
def demo_copy(root, layout, **changes):
    """The demo (Khan SRBCT: four tumour types, four contrasts; prediction and loadings on) with a
    short training and no synthetic cohort, in the given job layout."""
    work = copy_workflow(root)
    path = work / "config/config.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["train"].update(epochs=40, patience=10)
    cfg["generate"] = {"enabled": False}
    cfg.setdefault("resources", {})["job_layout"] = layout
    for section, values in changes.items():
        cfg.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return work


#: differ between two runs whatever the layout: logs, timings, the run's config (its job_layout)
VOLATILE = ("logs/", "benchmarks/", "provenance.json", "config.yaml", ".train.lock")
TIMINGS = ("seconds", "time")


def comparable(path):
    """A result file's content without what differs from run to run (timings)."""
    if path.suffix == ".json":
        def strip(value):
            if isinstance(value, dict):
                return {k: strip(v) for k, v in value.items() if k not in TIMINGS}
            if isinstance(value, list):
                return [strip(v) for v in value]
            return value

        return strip(json.loads(path.read_text()))
    if path.suffix == ".pt":
        import torch

        blob = torch.load(path, map_location="cpu", weights_only=False)
        return {k: v.tolist() for k, v in blob["state_dict"].items()}
    return path.read_bytes()


def result_files(work):
    root = work / R
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part in str(p.relative_to(root)) for part in VOLATILE)}


@pytest.mark.workflow
def test_merged_layout_writes_what_one_job_per_step_writes_and_reruns_by_job(tmp_path):
    per_step = demo_copy(tmp_path / "per_step", "per_step")
    merged = demo_copy(tmp_path / "merged", "merged")
    # (the risk_genes jobs are planned once preprocess, a checkpoint, has found the contrasts)
    assert {"evaluate", "latent", "test_metrics", "risk_table", "predict", "loadings"} <= set(planned_jobs(per_step))
    plan = planned_jobs(merged)
    assert {"train", "decide", "select_model", "apply_model"} <= set(plan)
    assert not {"evaluate", "latent", "test_metrics", "risk_genes", "risk_table", "predict", "loadings"} & set(plan)
    run_snakemake(per_step)
    run_snakemake(merged)

    # the same result files, byte for byte (JSON and the models: but for timings)
    a, b = result_files(per_step), result_files(merged)
    per_contrast = {k for k in a if k.startswith("risk/")}  # the per-step layout's intermediate tables
    assert len(per_contrast) == 12 and set(a) - per_contrast == set(b)
    for name, path in b.items():
        assert comparable(path) == comparable(a[name]), f"{name} differs between the layouts"

    # the merged jobs keep each step's log and job record where the per-step jobs keep theirs
    logs = merged / R / "logs"
    for step in ("train/round_1", "evaluate/round_1", "latent", "test_metrics", "risk_genes", "predict",
                 "loadings"):
        record = json.loads((logs / f"{step}.job.json").read_text())
        assert record["status"] == "ok" and record["step"] == step.split("/")[0], step
    assert "contrast 4 of 4" in (logs / "risk_genes.log").read_text()
    assert (merged / R / "benchmarks/apply_model.tsv").is_file()
    assert not (merged / R / "benchmarks/evaluate").exists()

    # reruns follow the jobs: a risk-gene setting reruns apply_model, never the training;
    # a threshold reruns the decisions only
    assert planned_jobs(merged) == {}
    cfg_path = merged / "config/config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["analysis"]["lfc_delta"] = 0.5
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_jobs(merged)
    assert "apply_model" in jobs and not {"train", "decide", "select_model"} & set(jobs)
    cfg["analysis"]["lfc_delta"] = 0.25
    cfg["retrain"]["threshold"] = 5.0
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_jobs(merged)
    assert "decide" in jobs and "train" not in jobs
