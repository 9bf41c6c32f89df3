"""provenance.json: how every result of a run was made.

Records the full resolved config, the inputs (path, sha256, size from the collect
manifest), the git commit of the workflow and whether its tree was dirty, the
versions of Python and the key packages, the training device, the seeds, and the
start, end, status and true peak memory of every job (from the record each job writes beside its log).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import re
import subprocess
import sys
from pathlib import Path

from . import __version__, io
from .runner import job_record_path

PACKAGES = ("snakemake", "torch", "numpy", "pandas", "scikit-learn", "scipy", "pyarrow", "matplotlib", "opacus", "optuna")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")


def versions():
    out = {"python": platform.python_version(), "genovae": __version__}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(workflow_dir):
    def git(*args):
        return subprocess.run(
            ["git", "-C", str(workflow_dir), *args], capture_output=True, text=True, timeout=30
        )

    try:
        head = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "note": "git not available"}
    if head.returncode != 0:
        return {"commit": None, "dirty": None, "note": "workflow is not a git checkout"}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def job_times(log_dir):
    """{job log (relative): {start, end[, seconds, status, peak_memory_mb]}} of every job log.

    From the job record each rule writes beside its log (see :func:`genovae.runner.write_job_record`);
    a log without one (a job that died before it could write it) gets its first and last timestamp.
    """
    out = {}
    for log in sorted(Path(log_dir).rglob("*.log")):
        record = job_record_path(log)
        if record.is_file():
            try:
                rec = io.read_json(record)
            except ValueError:
                rec = None
            if isinstance(rec, dict) and rec.get("start"):
                out[str(log.relative_to(log_dir))] = {k: rec[k] for k in ("start", "end", "seconds", "status",
                                                                          "peak_memory_mb") if rec.get(k) is not None}
                continue
        stamps = []
        with open(log, errors="replace") as fh:
            for line in fh:
                m = _STAMP.match(line)
                if m:
                    stamps.append(m.group(1))
        if stamps:
            out[str(log.relative_to(log_dir))] = {"start": stamps[0], "end": stamps[-1]}
    return out


def write_provenance(*, config, manifest, selection, log_dir, workflow_dir, out):
    man = io.read_json(manifest)
    sel = io.read_json(selection)
    prov = {
        "written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "inputs": man.get("inputs", []),
        "source": man.get("source", "file"),
        "workflow": git_state(workflow_dir),
        "versions": versions(),
        "platform": {"system": platform.platform(), "executable": sys.executable},
        "device": sel.get("device"),
        "seeds": {
            "split": config["preprocess"]["split"]["seed"],
            "train": config["train"]["seed"],
            "rounds": {str(r["round"]): r.get("seed") for r in sel.get("rounds", [])},
            **({"simulate": config["simulate"]["seed"]} if config["data"]["source"] == "simulate" else {}),
        },
        "jobs": job_times(log_dir),
    }
    io.write_json(out, prov)
    return prov
