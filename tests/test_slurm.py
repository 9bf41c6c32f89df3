"""genovae on a real SLURM cluster: tests/slurm/cluster.sh + snakemake-executor-plugin-slurm.

The module starts a single-node SLURM on loopback (munge, slurmctld, slurmd, slurmdbd +
MariaDB, one fake GPU backed by /dev/null) with ``tests/slurm/cluster.sh``, runs the demo
workflow with tiny settings and the GPU switch on through

    snakemake --executor slurm --jobs N --workflow-profile profiles/slurm

and checks that every job of every rule was a SLURM job that COMPLETED (both training rounds
of the retrain loop separately), that training was allocated ``gres/gpu=1`` and fell back to
the CPU (no device behind the fake GPU) and said so, and that the results are byte-identical to
a local run (``--workflow-profile profiles/local``) of the same config. A second test cancels a
training job mid-run (``scancel``) and checks that the shipped profile retries it and that training
resumes from its checkpoint with the weights of an uninterrupted run. Then it stops the cluster.

Starting the cluster needs root, apt-get and Debian's Slurm packages (~25 s the first time).
When it cannot start, the test fails with the reason under CI (``CI=true``) and is skipped
with the reason otherwise. ``GENOVAE_SLURM_TEST=0`` skips it on purpose (e.g. on a workstation
where you do not want Slurm installed); ``GENOVAE_SLURM_KEEP=1`` leaves the cluster running.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY_CONFIG, copy_workflow, run_snakemake, write_config
from genovae import io, resources

CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
RUN = "demo"
#: outputs that must not depend on where the jobs ran
COMPARED = ("latent.tsv", "risk_genes.tsv", "reconstruction_error.tsv")
#: seconds: the cluster's start, the local run, and everything together (the SLURM run
#: gets what is left of BUDGET, so that the module ends within 10 minutes)
START_TIMEOUT = 240
LOCAL_TIMEOUT = 240
BUDGET = 560
T0 = time.monotonic()
TINY_THREADS = TINY_CONFIG["train"]["threads"]


def tiny_demo_config():
    """The shipped demo (Khan SRBCT data) with tiny settings: two rounds, one thread."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["preprocess"]["n_top_genes"] = 300
    cfg["model"].update({"hidden": [32], "latent_dim": 4})
    # train.threads fixes the CPU thread count of training and apply (float results
    # depend on it); both runs use the same value
    cfg["train"].update({"epochs": 8, "patience": 5, "kl_warmup_epochs": 2, "threads": 1})
    # an unreachable threshold: the retrain loop runs max_rounds = 2 rounds
    cfg["retrain"].update({"metric": "val_mse_ratio_pca", "threshold": 0.0, "max_rounds": 2})
    cfg["plots"] = {"dpi": 50, "top_genes": 10}
    cfg["resources"] = {"gpu": True}
    return cfg


def _unavailable(reason):
    if IN_CI:
        pytest.fail(f"SLURM test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"SLURM test skipped: {reason}")


def _cluster(action, timeout):
    return subprocess.run(
        ["bash", str(CLUSTER_SH), action],
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def slurm_possible():
    """Cheap checks before anything starts: root, Linux, apt-get, the plugin."""
    if os.environ.get("GENOVAE_SLURM_TEST") == "0" and not IN_CI:
        pytest.skip("GENOVAE_SLURM_TEST=0")
    if sys.platform != "linux":
        _unavailable(f"needs Linux (Debian 12), not {sys.platform}")
    if os.geteuid() != 0:
        _unavailable("tests/slurm/cluster.sh must run as root (it installs and starts Slurm)")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        _unavailable("no apt-get to install Slurm (the script targets Debian 12)")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        _unavailable("snakemake-executor-plugin-slurm is not installed (pip install -r requirements-dev.txt)")


@pytest.fixture(scope="module")
def slurm_cluster(slurm_possible):
    """Start the loopback cluster for this module; always stop it afterwards."""
    t0 = time.monotonic()
    try:
        proc = _cluster("start", START_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        _cluster("stop", 120)
        _unavailable(f"cluster.sh start timed out after {START_TIMEOUT} s:\n{exc.stderr or ''}")
    if proc.returncode != 0:
        _cluster("stop", 120)
        _unavailable(
            f"cluster.sh start failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    print(f"SLURM cluster up in {time.monotonic() - t0:.0f} s\n{proc.stdout}")
    try:
        yield proc.stdout
    finally:
        if os.environ.get("GENOVAE_SLURM_KEEP") != "1":
            stop = _cluster("stop", 180)
            assert stop.returncode == 0, f"cluster.sh stop failed:\n{stop.stderr}"


class Bounded:
    """``cmd`` running in the background with its output in ``log_path``. :meth:`finish` waits
    until ``timeout`` seconds after the start, then sends SIGINT (a Snakemake waiting on SLURM
    jobs ignores SIGTERM; SIGINT makes it cancel them and exit), waits 60 s more, then SIGKILLs
    the process group."""

    def __init__(self, cmd, cwd, log_path, timeout, env=None):
        self.log_path = Path(log_path)
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True,
                env=env, start_new_session=True,
            )

    def finish(self):
        """Return (returncode, timed_out, log text)."""
        timed_out = False
        try:
            rc = self.proc.wait(timeout=max(1.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.proc.send_signal(signal.SIGINT)
            try:
                rc = self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                rc = self.proc.wait()
        return rc, timed_out, self.log_path.read_text()


def run_with_sigint(cmd, cwd, log_path, timeout, env=None):
    return Bounded(cmd, cwd, log_path, timeout, env).finish()


def snakemake_env():
    return dict(os.environ, PYTHONHASHSEED="0")


def sacct_jobs(since):
    """Allocations (no steps) submitted since ``since``: dicts with rule, state, tres."""
    fields = "JobIDRaw,JobName%60,Comment%120,State,ExitCode,AllocTRES%120,Elapsed"
    text = subprocess.run(
        ["sacct", "-X", "--parsable2", "--noheader", "--starttime", since,
         "--endtime", "now", "--format", fields],
        capture_output=True, text=True, timeout=60,
    ).stdout
    table = subprocess.run(
        ["sacct", "-X", "--starttime", since, "--endtime", "now", "--format",
         "JobID,Comment%40,State,ExitCode,Elapsed,AllocTRES%50"],
        capture_output=True, text=True, timeout=60,
    ).stdout
    jobs = []
    for line in text.splitlines():
        jobid, name, comment, state, exit_code, tres, elapsed = line.split("|")
        rule = comment[len("rule_"):].split("_wildcards_")[0] if comment.startswith("rule_") else None
        jobs.append(dict(id=jobid, name=name, comment=comment, rule=rule, state=state,
                         exit=exit_code, tres=tres, elapsed=elapsed))
    return jobs, table


JOB_KINDS = ("rule", "checkpoint", "localrule", "localcheckpoint")


def jobs_in_log(log, local=None):
    """Rule -> number of jobs a Snakemake log started. ``local=False``: only the jobs it
    submitted (``rule x:``), ``local=True``: only those it ran itself (``localrule x:``)."""
    counts = Counter()
    for line in log.splitlines():
        words = line.strip().split()
        if len(words) == 2 and words[0] in JOB_KINDS and words[1].endswith(":"):
            if local is None or words[0].startswith("local") == local:
                counts[words[1][:-1]] += 1
    return counts


@pytest.fixture(scope="module")
def local_run(slurm_possible, tmp_path_factory):
    """The same config run locally (the reference outputs), started in the background
    so that it overlaps with the cluster's start; ``.finish()`` waits for it."""
    wd = copy_workflow(tmp_path_factory.mktemp("local") / "wf")
    shutil.copytree(REPO / "profiles", wd / "profiles")
    write_config(wd, tiny_demo_config())
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/local", "--cores", "2"]
    global T0
    T0 = time.monotonic()
    run = Bounded(cmd, wd, wd / "snakemake.log", LOCAL_TIMEOUT, snakemake_env())
    run.workdir = wd
    yield run
    if run.proc.poll() is None:
        run.deadline = time.monotonic()
        run.finish()


# local_run first: it starts before the cluster and runs while the cluster starts
@pytest.mark.slurm
@pytest.mark.workflow
def test_demo_runs_on_slurm_like_locally(local_run, slurm_cluster, tmp_path):
    local_wd = local_run.workdir
    # the reference run ends before the SLURM jobs start (2 cores: no contention)
    local_rc, local_timed_out, local_log = local_run.finish()
    assert local_rc == 0 and not local_timed_out, (
        f"local run failed (rc {local_rc}, timed out: {local_timed_out}):\n{local_log[-6000:]}"
    )
    wd = copy_workflow(tmp_path / "wf")
    shutil.copytree(REPO / "profiles", wd / "profiles")
    write_config(wd, tiny_demo_config())
    # sacct's --starttime has a resolution of seconds: step back one
    since = (dt.datetime.now() - dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    cmd = [
        sys.executable, "-m", "snakemake",
        "--executor", "slurm", "--jobs", "4",
        "--workflow-profile", "profiles/slurm",
        # CI: first poll after 5 s (not 20). While no job finishes the plugin waits 10 s
        # longer before each next poll (5, 15, 25 s: at 5, 20, 45 s after a submission) and
        # goes back to 5 s when one has: each job here takes 10-20 s (two Snakemake starts
        # and the script), so it is seen after 20 s. Keep the SLURM logs of successful jobs,
        # and fail at once instead of retrying (a retry would hide a failure).
        "--slurm-init-seconds-before-status-checks", "5",
        "--slurm-keep-successful-logs",
        "--retries", "0",
    ]
    t0 = time.monotonic()
    slurm_timeout = max(120, BUDGET - (t0 - T0))
    rc, timed_out, log = run_with_sigint(cmd, wd, wd / "snakemake.log", slurm_timeout, snakemake_env())
    elapsed = time.monotonic() - t0
    jobs, table = sacct_jobs(since)
    context = (
        f"\n--- sacct (since {since}) ---\n{table}\n--- snakemake log (tail) ---\n{log[-8000:]}"
    )
    print(f"SLURM run: {elapsed:.0f} s{context}")
    assert not timed_out, f"snakemake --executor slurm ran past {slurm_timeout:.0f} s (sent SIGINT){context}"
    assert rc == 0, f"snakemake --executor slurm failed (rc {rc}){context}"

    # every job of every rule was a SLURM job of this run, and COMPLETED
    assert jobs, f"sacct lists no jobs{context}"
    assert len({j["name"] for j in jobs}) == 1, f"jobs of more than one run{context}"
    bad = [j for j in jobs if j["state"] != "COMPLETED" or j["rule"] is None]
    assert not bad, f"jobs not COMPLETED (or without a rule comment): {bad}{context}"
    on_slurm = Counter(j["rule"] for j in jobs)
    expected = jobs_in_log(local_log)
    del expected["all"]  # the target rule has no action: Snakemake "runs" it itself
    del expected["run_config"]  # a localrule (writes the run's config): it runs beside Snakemake, not on SLURM
    assert on_slurm == expected, f"SLURM jobs per rule {dict(on_slurm)} != local {dict(expected)}{context}"
    assert jobs_in_log(log, local=False) == expected, f"submitted other jobs than ran locally{context}"
    # only the target and the one localrule (run_config writes the run's config) ran beside Snakemake
    assert set(jobs_in_log(log, local=True)) <= {"all", "run_config"}, f"jobs ran outside SLURM{context}"
    # the checkpointed retrain loop: each round is its own job
    assert on_slurm["train"] == 2 and on_slurm["decide"] == 2, context

    # training asked for the GPU switch's GPU and got it; nothing else did
    for j in jobs:
        has_gpu = "gres/gpu=1" in j["tres"]
        assert has_gpu == (j["rule"] == "train"), f"AllocTRES of {j['comment']}: {j['tres']}{context}"

    # no device behind the fake GPU: training fell back to the CPU and said so
    results = wd / "results" / RUN
    for r in (1, 2):
        train_log = (results / "logs" / "train" / f"round_{r}.log").read_text()
        assert "no usable CUDA device although CUDA_VISIBLE_DEVICES=" in train_log, train_log
        info = json.loads((results / "rounds" / str(r) / "train_info.json").read_text())
        assert info["device"]["used"] == "cpu" and info["device"]["cuda_visible_devices"], info
    summary = json.loads((results / "summary.json").read_text())
    assert summary["device"] == "cpu" and summary["rounds_run"] == 2, summary
    assert "CUDA_VISIBLE_DEVICES" in (summary["device_note"] or ""), summary

    # SLURM's own job logs (kept with --slurm-keep-successful-logs)
    slurm_logs = list((wd / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert {p.relative_to(wd / ".snakemake" / "slurm_logs").parts[0] for p in slurm_logs} >= {
        f"rule_{rule}" for rule in expected
    }, slurm_logs

    # the same bytes as the local run
    local_results = local_wd / "results" / RUN
    for name in COMPARED:
        assert (results / name).read_bytes() == (local_results / name).read_bytes(), (
            f"{name} differs between the SLURM and the local run"
        )
    # and the local run ran with the device it had (no fake GPU there)
    local_summary = json.loads((local_results / "summary.json").read_text())
    assert local_summary["rounds_run"] == 2


def long_training_config(epochs=150):
    """A simulated cohort whose one training round runs long enough (150 epochs: ~10 s on an idle
    machine) to be cancelled mid-way, checkpointing every 5 epochs; no early stopping."""
    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["simulate"].update(n_samples=300, n_genes=1500)
    cfg["preprocess"]["n_top_genes"] = 1000
    cfg["model"]["hidden"] = [128]
    cfg["train"].update(epochs=epochs, patience=100000, checkpoint_every=5, threads=1)
    cfg["retrain"]["max_rounds"] = 1
    return cfg


def running_train_job():
    """The SLURM job id of a RUNNING train job (its comment names the rule), or None."""
    out = subprocess.run(["squeue", "--noheader", "--states=RUNNING", "--format=%i|%k"],
                         capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        jobid, _, comment = line.partition("|")
        if comment.startswith("rule_train_"):
            return jobid.strip()
    return None


def checkpoint_epoch(path):
    import torch

    try:
        return torch.load(path, weights_only=True)["epoch"]
    except Exception:
        return 0


@pytest.mark.slurm
@pytest.mark.workflow
def test_a_cancelled_training_job_is_retried_and_resumes(slurm_cluster, tmp_path):
    """scancel of a training job mid-run: the shipped profile sees the cancel at its next status
    poll, resubmits the job (a retry) and training resumes from its checkpoint, ending with the
    weights of an uninterrupted run."""
    import torch

    target = f"results/{TINY_CONFIG['run']}/rounds/1/model.pt"
    ref = copy_workflow(tmp_path / "ref")
    write_config(ref, long_training_config())
    run_snakemake(ref, target)
    wd = copy_workflow(tmp_path / "wf")
    shutil.copytree(REPO / "profiles", wd / "profiles")
    write_config(wd, long_training_config())
    since = (dt.datetime.now() - dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    cmd = [sys.executable, "-m", "snakemake", target, "--executor", "slurm", "--jobs", "2",
           "--workflow-profile", "profiles/slurm", "--slurm-init-seconds-before-status-checks", "5",
           "--retries", "1"]
    run = Bounded(cmd, wd, wd / "snakemake.log", 420, snakemake_env())
    ckpt = wd / f"results/{TINY_CONFIG['run']}/rounds/1/train_checkpoint.pt"
    cancelled = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.proc.poll() is None:
        if ckpt.exists() and checkpoint_epoch(ckpt) >= 10:
            cancelled = running_train_job()
            if cancelled:
                subprocess.run(["scancel", cancelled], check=True, timeout=30)
                break
        time.sleep(0.5)
    rc, timed_out, log = run.finish()
    jobs, table = sacct_jobs(since)
    context = f"\n--- sacct (since {since}) ---\n{table}\n--- snakemake log (tail) ---\n{log[-6000:]}"
    assert cancelled, f"no running train job with a checkpoint to cancel{context}"
    assert not timed_out and rc == 0, f"the run did not recover from the cancel (rc {rc}){context}"
    train = [j for j in jobs if j["rule"] == "train"]
    assert [j["state"].split()[0] for j in train] == ["CANCELLED", "COMPLETED"], context
    assert train[0]["id"] == cancelled, context
    train_log = (wd / f"results/{TINY_CONFIG['run']}/logs/train/round_1.log").read_text()
    assert "resumed from checkpoint" in train_log, train_log[-3000:]
    a = torch.load(ref / target, weights_only=True)["state_dict"]
    b = torch.load(wd / target, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed round's weights differ"


def files_mentioning(folders, text):
    """Files under ``folders`` whose content contains ``text``."""
    found = []
    for folder in folders:
        for path in Path(folder).rglob("*"):
            if path.is_file() and text in path.read_text(errors="replace"):
                found.append(path)
    return found


def wait_for_train_checkpoint(run, ckpt, epoch, timeout):
    """The id of the running train job once its checkpoint reached ``epoch``, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.proc.poll() is None:
        if ckpt.exists() and checkpoint_epoch(ckpt) >= epoch:
            job = running_train_job()
            if job:
                return job
        time.sleep(0.5)
    return None


@pytest.mark.slurm
@pytest.mark.workflow
def test_an_orphaned_training_job_blocks_the_rerun_which_names_its_scancel(slurm_cluster, tmp_path):
    """Snakemake killed (kill -9, a lost SSH session; or two Ctrl-Cs that interrupt the plugin's own
    scancel) leaves its training job running. The rerun must not train that round beside it: its
    job is refused with the exact scancel to type, and the orphan trains on undisturbed. After the
    scancel, the same command resumes the round from the orphan's checkpoint."""
    wd = copy_workflow(tmp_path / "wf")
    shutil.copytree(REPO / "profiles", wd / "profiles")
    # ~10 min of epochs: the orphan is still training whatever the machine's load (it is cancelled)
    write_config(wd, long_training_config(epochs=20000))
    run_dir = wd / "results" / TINY_CONFIG["run"]
    target = f"results/{TINY_CONFIG['run']}/rounds/1/model.pt"
    cmd = [sys.executable, "-m", "snakemake", target, "--executor", "slurm", "--jobs", "2",
           "--workflow-profile", "profiles/slurm", "--slurm-init-seconds-before-status-checks", "5",
           "--retries", "0"]
    ckpt = run_dir / "rounds/1/train_checkpoint.pt"
    first = Bounded(cmd, wd, wd / "first.log", 300, snakemake_env())
    orphan = wait_for_train_checkpoint(first, ckpt, 5, 240)
    os.kill(first.proc.pid, signal.SIGKILL)  # Snakemake alone: its SLURM job lives on
    first.proc.wait()
    run_id = next((ln.split(": ")[1] for ln in (wd / "first.log").read_text().splitlines()
                   if ln.startswith("SLURM run ID: ")), None)
    try:
        assert orphan, f"no running train job to orphan:\n{(wd / 'first.log').read_text()[-4000:]}"
        assert io_state(orphan) == "RUNNING"
        subprocess.run([sys.executable, "-m", "snakemake", "--unlock", "--cores", "1"], cwd=wd, check=True,
                       capture_output=True, timeout=120, env=snakemake_env())
        rc, timed_out, log = run_with_sigint(cmd, wd, wd / "rerun.log", 240, snakemake_env())
        assert not timed_out and rc != 0, f"the rerun trained beside the orphan (rc {rc}):\n{log[-4000:]}"
        train_log = (run_dir / "logs/train/round_1.log").read_text()
        assert "training round 1 is already running" in train_log, f"{train_log[-3000:]}\n{log[-3000:]}"
        assert f"`scancel {orphan}`" in train_log and f"`scancel --name {run_id}`" in train_log, train_log[-3000:]
        # the orphan was left alone: still running, its checkpoint still moving on
        assert io_state(orphan) == "RUNNING"
        epoch = checkpoint_epoch(ckpt)
        time.sleep(3)
        assert checkpoint_epoch(ckpt) > epoch > 5
    finally:
        subprocess.run(["scancel", orphan or "0"], timeout=30)
    deadline = time.monotonic() + 60
    while io_state(orphan) in io.SLURM_LIVE_STATES and time.monotonic() < deadline:
        time.sleep(1)
    # after the scancel the same command trains the round: from the orphan's checkpoint
    last = Bounded(cmd, wd, wd / "last.log", 240, snakemake_env())
    train_log = run_dir / "logs/train/round_1.log"
    while last.proc.poll() is None and time.monotonic() < last.deadline:
        if train_log.exists() and "resumed from checkpoint" in train_log.read_text():
            break
        time.sleep(1)
    last.deadline = time.monotonic()  # no need to train 20,000 epochs: stop it (Ctrl-C cancels the job)
    rc, _, log = last.finish()
    assert "resumed from checkpoint" in train_log.read_text(), f"{train_log.read_text()[-3000:]}\n{log[-3000:]}"
    assert not any(io_state(j["id"]) in io.SLURM_LIVE_STATES for j in sacct_jobs("now-1hours")[0]), \
        "one Ctrl-C left a job running"


def io_state(job):
    return io.slurm_job_state(job)


# ------------------------------------------------------------ without a cluster
def test_cluster_script_is_self_contained():
    text = CLUSTER_SH.read_text()
    assert "../shared" not in text and "/shared/" not in text
    proc = subprocess.run(["bash", "-n", str(CLUSTER_SH)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "AccountingStorageType=accounting_storage/slurmdbd" in text  # the plugin polls sacct
    assert "File=/dev/null" in text  # the fake GPU


def train_resources(workdir, *args):
    """The resources line of the first train job in a dry run."""
    proc = run_snakemake(workdir, "--dry-run", *args)
    block = proc.stdout.split("rule train:", 1)[1]
    line = next(x for x in block.splitlines() if x.strip().startswith("resources:"))
    return dict(kv.split("=", 1) for kv in line.split(":", 1)[1].strip().split(", "))


@pytest.mark.workflow
def test_profiles_and_the_gpu_switch(tiny):
    shutil.copytree(REPO / "profiles", tiny / "profiles")
    # default: CPU only
    res = train_resources(tiny, "--workflow-profile", "profiles/local")
    assert res["gpu"] == "0" and "gpu_model" not in res
    # sized from the cohort (genovae.resources), not the profile's flat default
    sim, top = TINY_CONFIG["simulate"], TINY_CONFIG["preprocess"]["n_top_genes"]
    shape = (sim["n_samples"], sim["n_genes"])
    assert res["mem_mb"] == str(resources.mem_mb("train", shape, top))
    assert res["runtime"] == str(resources.runtime_min("train", shape, top))
    # the switch: one GPU (of a given type) for training, and nothing else asks for one
    on = ("--config", "resources={gpu: true, gpu_model: a100}")
    res = train_resources(tiny, "--workflow-profile", "profiles/local", *on)
    assert res["gpu"] == "1" and res["gpu_model"] == "a100"
    proc = run_snakemake(tiny, "--dry-run", "--workflow-profile", "profiles/local", *on)
    assert proc.stdout.count("gpu=1") == 1, "only the train job asks for a GPU"


@pytest.mark.workflow
def test_slurm_profile_requests(tiny):
    """The SLURM profile's requests in a dry run (needs the executor plugin, not a cluster)."""
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="snakemake-executor-plugin-slurm not installed")
    shutil.copytree(REPO / "profiles", tiny / "profiles")
    on = ("--config", "resources={gpu: true, gpu_model: a100}")
    res = train_resources(tiny, "--workflow-profile", "profiles/slurm", *on)
    sim, top = TINY_CONFIG["simulate"], TINY_CONFIG["preprocess"]["n_top_genes"]
    assert res["mem_mb"] == str(resources.mem_mb("train", (sim["n_samples"], sim["n_genes"]), top))
    assert res["gpu"] == "1" and res["runtime"] == "240"  # the profile's training time
    assert res["cpus_per_task"] == str(TINY_THREADS)
    # cpus_per_task follows train.threads (not a constant that happens to equal it); the test's
    # `--cores 2` caps threads at 2 even for remote jobs, so 2 is the value that tells them apart
    assert TINY_THREADS == 1
    cfg = yaml.safe_load((tiny / "config" / "config.yaml").read_text())
    cfg["train"]["threads"] = 2
    (tiny / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = train_resources(tiny, "--workflow-profile", "profiles/slurm", *on)
    assert res["cpus_per_task"] == "2"
