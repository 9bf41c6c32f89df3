"""Reliability: killed jobs resume, the lock refuses a second run of the same
name, bad configuration is refused before anything runs, divergence stops cleanly."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY_CONFIG, copy_workflow, run_snakemake, write_config

pytestmark = pytest.mark.workflow

R = "results/tiny"


def long_training_config():
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["train"].update(epochs=120, patience=1000, checkpoint_every=5)
    cfg["retrain"].update(max_rounds=1)
    return cfg


def start_snakemake(workdir, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def wait_for(predicate, timeout, proc=None, what=""):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"snakemake ended before {what}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def checkpoint_epoch(path):
    try:
        return torch.load(path, weights_only=True)["epoch"]
    except Exception:
        return 0


def test_killed_training_resumes_and_matches_an_uninterrupted_run(tmp_path):
    cfg = long_training_config()
    ref = copy_workflow(tmp_path / "ref")
    write_config(ref, cfg)
    run_snakemake(ref)

    wd = copy_workflow(tmp_path / "killed")
    write_config(wd, cfg)
    ckpt = wd / R / "rounds/1/train_checkpoint.pt"
    proc = start_snakemake(wd, "--nolock")
    try:
        wait_for(lambda: ckpt.exists() and checkpoint_epoch(ckpt) >= 20, 300, proc, "a training checkpoint")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole job tree, as a node failure would
        proc.wait()
    assert not (wd / R / "rounds/1/model.pt").exists()
    # the rerun treats the killed job as incomplete and resumes it from its checkpoint
    run_snakemake(wd, "--rerun-incomplete")
    log = (wd / R / "logs/train/round_1.log").read_text()
    assert "resumed from checkpoint" in log
    assert not ckpt.exists()  # removed once the round finished
    a = torch.load(ref / R / "rounds/1/model.pt", weights_only=True)["state_dict"]
    b = torch.load(wd / R / "rounds/1/model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (ref / R / "latent.tsv").read_bytes() == (wd / R / "latent.tsv").read_bytes()


def test_second_run_of_the_same_name_is_refused_by_the_lock(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    write_config(wd, long_training_config())
    first = start_snakemake(wd)
    try:
        wait_for(lambda: (wd / ".snakemake/locks").is_dir() and any((wd / ".snakemake/locks").iterdir()),
                 120, first, "the lock")
        # Snakemake checks for incomplete outputs before it takes the lock, so a plain second run
        # is refused by whichever check it meets first (which depends on what the first run is
        # doing at that instant). Either way it must not run.
        second = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1"], cwd=wd,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode != 0
        said = second.stdout + second.stderr
        assert "cannot be locked" in said or "incomplete" in said.lower(), said[-2000:]
        # A user who follows the incomplete-files hint (--rerun-incomplete) must meet the lock,
        # not delete and restart the outputs of the run in progress.
        third = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--rerun-incomplete"],
                               cwd=wd, capture_output=True, text=True, timeout=120)
        assert third.returncode != 0
        assert "cannot be locked" in third.stdout + third.stderr, (third.stdout + third.stderr)[-2000:]
        assert first.poll() is None, "the first run must still be running"
    finally:
        os.killpg(first.pid, signal.SIGINT)
        try:
            first.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()


BAD_CONFIGS = [
    ("wrong_type", {"train": {"epochs": "many"}}, "train.epochs"),
    ("negative_lr", {"train": {"lr": -0.1}}, "train.lr"),
    ("split_out_of_range", {"preprocess": {"split": {"train": 1.5}}}, "preprocess.split.train"),
    ("split_sum", {"preprocess": {"split": {"train": 0.5, "val": 0.2, "test": 0.2}}}, "preprocess.split"),
    ("dropout_one", {"model": {"dropout": 1.0}}, "model.dropout"),
    ("unknown_key", {"model": {"latnt_dim": 4}}, "model.latnt_dim"),
    ("unknown_section", {"modle": {"latent_dim": 4}}, "modle"),
    ("unknown_metric", {"retrain": {"metric": "accuracy"}}, "retrain.metric"),
    ("max_rounds_zero", {"retrain": {"max_rounds": 0}}, "retrain.max_rounds"),
    ("bad_device", {"train": {"device": "gpu"}}, "train.device"),
    ("bad_run_name", {"run": "a/b"}, "run"),
    ("case_without_control", {"analysis": {"case": "case"}}, "analysis.case"),
    ("nb_on_log_data", {"data": {"source": "file", "expression": "x.tsv", "samples": "s.tsv",
                                 "value_type": "log"}, "model": {"likelihood": "nb"}}, "model.likelihood"),
    ("bernoulli_without_minmax", {"model": {"likelihood": "bernoulli"}}, "model.likelihood"),
]


@pytest.mark.parametrize("name,changes,key", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_refused_before_anything_runs(tmp_path, name, changes, key):
    wd = copy_workflow(tmp_path / "wf")
    cfg = copy.deepcopy(TINY_CONFIG)
    for section, value in changes.items():
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, dict):
                    cfg.setdefault(section, {}).setdefault(k, {}).update(v)
                else:
                    cfg.setdefault(section, {})[k] = v
        else:
            cfg[section] = value
    write_config(wd, cfg)
    proc = run_snakemake(wd, "--dry-run", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-2000:]
    # one message naming exactly the key at fault (not a dump of the section's schema)
    line = next((ln for ln in text.splitlines() if "genovae config error:" in ln), "")
    assert f"genovae config error: '{key}':" in line, text[-2000:]
    assert len(line) < 400, line
    assert "Traceback" not in text
    assert not (wd / "results").exists()


def test_diverging_training_stops_with_the_epoch_and_writes_no_model(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["train"]["lr"] = 1e6
    write_config(wd, cfg)
    proc = run_snakemake(wd, check=False)
    assert proc.returncode != 0
    assert "training diverged at epoch" in proc.stderr
    assert "Traceback" not in proc.stderr.split("training diverged")[0][-500:]
    for f in ("model.pt", "history.tsv", "train_info.json", "metrics.json"):
        assert not (wd / R / "rounds/1" / f).exists(), f
