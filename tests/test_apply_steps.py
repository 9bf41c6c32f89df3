"""The selected model applied one job per result: steps, the per-contrast merge, job records."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from genovae import io, provenance, runner


def test_concat_tsv_is_exact_and_keeps_contrast_order(tmp_path):
    a, b, out = tmp_path / "a.tsv", tmp_path / "b.tsv", tmp_path / "out.tsv"
    a.write_text("contrast\tgene\tp\nA_vs_rest\t007\t1e-300\n")
    b.write_text("contrast\tgene\tp\nB_vs_rest\tNA\t0.5\nB_vs_rest\tx\tnan\n")
    io.concat_tsv([a, b], out)
    # no value is parsed: gene "007" and "NA" and the p-values stay as written
    assert out.read_text() == "contrast\tgene\tp\nA_vs_rest\t007\t1e-300\nB_vs_rest\tNA\t0.5\nB_vs_rest\tx\tnan\n"
    # a table without a final newline does not glue its last row to the next table's first
    a.write_text("contrast\tgene\tp\nA_vs_rest\t1\t0.1")
    io.concat_tsv([a, b], out)
    assert out.read_text().splitlines()[1:3] == ["A_vs_rest\t1\t0.1", "B_vs_rest\tNA\t0.5"]


def test_concat_tsv_refuses_tables_with_other_columns_and_writes_nothing(tmp_path):
    a, b, out = tmp_path / "a.tsv", tmp_path / "b.tsv", tmp_path / "out.tsv"
    a.write_text("contrast\tgene\nA\tx\n")
    b.write_text("contrast\tgene\tsymbol\nB\ty\tY\n")
    with pytest.raises(ValueError, match="columns differ"):
        io.concat_tsv([a, b], out)
    assert not out.exists() and not list(tmp_path.glob(".out.tsv*"))


def test_every_job_writes_a_record_that_provenance_reads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {"run": "demo", "new_data": {"name": "new"}, "privacy": {}}
    log = "results/demo/logs/train/round_1.log"
    out = "results/demo/rounds/1/x.txt"
    job = SimpleNamespace(rule="train", output=[out], log=[log], config=config)
    runner.run_rule(job, lambda sm, _log: io.write_text(out, "x"))
    record = json.loads((tmp_path / "results/demo/logs/train/round_1.job.json").read_text())
    assert record["rule"] == "train" and record["status"] == "ok"
    assert isinstance(record["peak_memory_mb"], int) and record["peak_memory_mb"] > 10
    assert record["seconds"] >= 0 and record["start"] <= record["end"]
    # a failed job says so, and its outputs are gone
    failed = SimpleNamespace(rule="evaluate", output=[out], log=["results/demo/logs/evaluate.log"], config=config)

    def boom(sm, _log):
        io.write_text(out, "half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        runner.run_rule(failed, boom)
    assert not (tmp_path / out).exists()
    jobs = provenance.job_times(tmp_path / "results/demo/logs")
    assert jobs["train/round_1.log"]["status"] == "ok" and jobs["evaluate.log"]["status"] == "failed"
    assert jobs["train/round_1.log"]["peak_memory_mb"] == record["peak_memory_mb"]
    # a log without a record (a job killed before it could write one) keeps its timestamps
    (tmp_path / "results/demo/logs/killed.log").write_text("2026-11-29 10:00:00 INFO genovae: rule x started\n")
    assert provenance.job_times(tmp_path / "results/demo/logs")["killed.log"] == {
        "start": "2026-11-29 10:00:00", "end": "2026-11-29 10:00:00"}


def test_contrast_names_number_the_contrasts_as_the_risk_jobs_do():
    from genovae.risk import contrast_names, contrasts

    cond = ["EWS", "BL", "NB", "RMS", "EWS"]
    assert contrast_names(cond) == [n for n, _, _ in contrasts(cond)] == [
        "BL_vs_rest", "EWS_vs_rest", "NB_vs_rest", "RMS_vs_rest"]
    assert contrast_names(cond, case="EWS", control="BL") == ["EWS_vs_BL"]
    assert contrast_names(["tumour", "normal"]) == ["tumour_vs_normal"]


def test_known_genes_are_ranked_by_both_routes_in_every_contrast():
    import pandas as pd

    from genovae.summary import known_gene_ranks

    risk = pd.DataFrame({
        "contrast": ["A_vs_B"] * 3 + ["B_vs_A"] * 3,
        "gene": ["g1", "g2", "g3"] * 2,
        "in_model": [True, True, False] * 2,
        "vae_rank": [2, 1, None, 1, 2, None],
        "vae_call": [True, False, False, False, False, False],
        "classical_rank": [3, 1, 2, 1, 3, 2],
        "fdr": [0.2, 0.01, 0.03, 0.01, 0.2, 0.03],
        "log2_fold_change": [1.0, 2.0, -1.0, -1.0, -2.0, 1.0],
        "symbol": ["CD33", "MPO", "ZYX"] * 2,
    })
    rows = known_gene_ranks(risk, ["cd33", "ZYX", "NOPE"])
    first = {r["gene"]: r for r in rows if r["contrast"] == "A_vs_B"}
    assert first["cd33"]["id"] == "g1" and first["cd33"]["vae_rank"] == 2 and first["cd33"]["vae_call"]
    assert first["cd33"]["classical_rank"] == 3 and first["cd33"]["n_modelled"] == 2 and first["cd33"]["n_genes"] == 3
    assert first["ZYX"]["vae_rank"] is None and first["ZYX"]["classical_rank"] == 2  # not modelled: t-test only
    assert first["NOPE"] == {"contrast": "A_vs_B", "gene": "NOPE", "found": False}
    assert len(rows) == 6


def test_a_live_holder_of_the_round_lock_is_refused_with_its_pid(tmp_path):
    """A training job orphaned by a killed Snakemake keeps its round's lock: the rerun's job is refused."""
    import subprocess
    import sys
    import time

    from genovae.errors import InputError

    lock = tmp_path / "rounds" / "1" / ".train.lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from genovae import io\n"
        "with io.exclusive_lock(sys.argv[2], 'training round 1'):\n"
        "    print('held', flush=True); time.sleep(60)\n"), str(io.Path(io.__file__).parent.parent), str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=f"training round 1 is already running \\(pid {holder.pid} on "):
            with io.exclusive_lock(lock, "training round 1"):
                pass
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    # the lock dies with its process: the next job trains
    with io.exclusive_lock(lock, "training round 1"):
        assert f"pid {__import__('os').getpid()} " in lock.read_text()


def _fake_squeue(folder, states):
    """An ``squeue`` on PATH that answers ``states`` one call after another (then the last again),
    as squeue --format=%T does; an empty state is a job squeue no longer knows (rc 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "states").write_text("\n".join(states) + "\n")
    script = folder / "squeue"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {folder}/calls\n'
        f"n=$(wc -l < {folder}/calls)\n"
        f"s=$(sed -n \"${{n}}p\" {folder}/states); [ -n \"$s\" ] || s=$(tail -n 1 {folder}/states)\n"
        'if [ "$s" = gone ]; then echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1; fi\n'
        'echo "$s"\n')
    script.chmod(0o755)
    return folder / "calls"


def test_an_orphaned_slurm_job_is_named_with_the_scancel_that_stops_it(tmp_path, monkeypatch):
    """Two Ctrl-Cs or a killed Snakemake leave its SLURM job running: the rerun's job is refused and
    the message is the exact scancel to type (the job, and every job of that run by its name)."""
    import subprocess
    import sys

    from genovae.errors import InputError

    lock = tmp_path / "rounds" / "2" / ".train.lock"
    env = dict(__import__("os").environ, SLURM_JOB_ID="4242", SLURM_JOB_NAME="genovae_1f2e")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from genovae import io\n"
        "with io.exclusive_lock(sys.argv[2], 'training round 2'):\n"
        "    print('held', flush=True); time.sleep(60)\n"), str(io.Path(io.__file__).parent.parent), str(lock)],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError) as err:
            with io.exclusive_lock(lock, "training round 2"):
                pass
    finally:
        holder.kill()
        holder.wait()
    text = str(err.value)
    assert "training round 2 is already running" in text and "SLURM job 4242" in text
    assert "`scancel 4242`" in text and "`scancel --name genovae_1f2e`" in text


@pytest.mark.parametrize("states, refused", [
    (["RUNNING"], True),  # alive on another node, whose flock this file system does not share
    (["PENDING"], True),  # requeued, about to run again
    (["COMPLETING", "gone"], False),  # ending: waited for, then free
    (["gone"], False),  # squeue no longer knows it: ended long ago
    (["CANCELLED"], False),  # squeue's MinJobAge window after the end
])
def test_a_lock_held_by_a_slurm_job_on_another_node_is_checked_with_squeue(tmp_path, monkeypatch, states, refused):
    from genovae.errors import InputError

    calls = _fake_squeue(tmp_path / "bin", states)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{__import__('os').environ['PATH']}")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    lock = tmp_path / ".train.lock"
    lock.write_text("pid 31337 on node-b17 since 2026-12-06 07:00:00, SLURM job 777 named genovae_abc")
    if refused:
        with pytest.raises(InputError, match=r"already running \(pid 31337 on node-b17.*`scancel 777`"):
            with io.exclusive_lock(lock, "training round 1"):
                pass
        assert "node-b17" in lock.read_text()  # the record of the live holder is kept
    else:
        with io.exclusive_lock(lock, "training round 1"):
            assert f"pid {__import__('os').getpid()} " in lock.read_text()
    assert calls.read_text().split("\n")[0].split() == ["--noheader", "--jobs", "777", "--format=%T"]
    assert len(calls.read_text().splitlines()) == len(states)


def test_a_lock_left_on_this_host_is_settled_by_flock_alone(tmp_path, monkeypatch):
    """On the holder's own host a free flock means the holder is gone, whatever squeue still says
    (the retry of a cancelled job must not wait for squeue to forget it)."""
    import socket

    calls = _fake_squeue(tmp_path / "bin", ["RUNNING"])
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{__import__('os').environ['PATH']}")
    lock = tmp_path / ".train.lock"
    lock.write_text(f"pid 31337 on {socket.gethostname()} since 2026-12-06 07:00:00, SLURM job 777 named g")
    with io.exclusive_lock(lock, "training round 1"):
        pass
    assert not calls.exists()


def test_training_refuses_fewer_genes_than_latent_dimensions_before_it_starts(tmp_path):
    """Checked in the train step (a model setting must not rerun preprocessing), naming model.latent_dim."""
    import numpy as np
    import pandas as pd

    from genovae.errors import ConfigError
    from genovae.rounds import train_round

    ids = [f"s{i}" for i in range(12)]
    x = pd.DataFrame(np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32), index=ids,
                     columns=["g1", "g2", "g3"])
    io.write_matrix(tmp_path / "features.parquet", x)
    io.write_matrix(tmp_path / "matrix.parquet", x)
    io.write_tsv(tmp_path / "split.tsv", pd.DataFrame({"sample_id": ids, "split": ["train"] * 8 + ["val"] * 4,
                                                       "condition": ["a", "b"] * 6, "library_size": 1.0}))
    with pytest.raises(ConfigError, match="'model.latent_dim'.*4 latent dimensions but only 3 gene"):
        train_round(features=tmp_path / "features.parquet", split=tmp_path / "split.tsv",
                    matrix=tmp_path / "matrix.parquet", previous=None, out_model=tmp_path / "r/model.pt",
                    out_history=tmp_path / "r/history.tsv", out_info=tmp_path / "r/info.json", round_=1,
                    model_config={"hidden": [8], "latent_dim": 4, "dropout": 0.0, "likelihood": "gaussian"},
                    train_config={"epochs": 2})
    assert not (tmp_path / "r" / "model.pt").exists()
