"""Helpers shared by the benchmarks: import path, machine description, statistics, workflow runs."""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIB = REPO / "workflow" / "lib"
if str(LIB) not in sys.path:
    sys.path.insert(0, str(LIB))


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(device="cpu"):
    import torch

    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "host_cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "n/a")(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def median(xs):
    return float(statistics.median(xs)) if xs else float("nan")


def dump(obj, as_json):
    if as_json:
        print(json.dumps(obj, indent=2))
    else:
        for k, v in obj.items():
            if not isinstance(v, (list, dict)):
                print(f"{k:>28}: {v}")


def sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def work_folder(path, benchmark):
    """``path`` resolved and created; outside the repository, since the data is large."""
    path = Path(path).resolve()
    if path == REPO or REPO in path.parents:
        sys.exit(f"{benchmark}: --workdir must be outside the repository (the data is large)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_run_config(workdir, cfg):
    """Write ``cfg`` as <workdir>/config.yaml (the --configfile) and <workdir>/config/config.yaml."""
    import yaml

    text = yaml.safe_dump(cfg, sort_keys=False)
    path = workdir / "config.yaml"
    path.write_text(text)
    # the Snakefile names config/config.yaml (relative to the working directory) as its base config
    (workdir / "config").mkdir(exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(text)
    return path


def read_benchmarks(bench_dir):
    """Per job: Snakemake's benchmark figures, and the true peak memory its log reports
    (Snakemake's max_rss samples about once a second and can miss a short peak)."""
    from genovae.provenance import job_times

    logged = job_times(Path(bench_dir).parent / "logs")
    rows = []
    for f in sorted(Path(bench_dir).rglob("*.tsv")):
        with open(f) as fh:
            rec = next(csv.DictReader(fh, delimiter="\t"))
        name = str(f.relative_to(bench_dir))[: -len(".tsv")]
        peak = logged.get(name + ".log", {}).get("peak_memory_mb")
        rows.append({
            "job": name,
            "rule": name.split("/")[0],
            "s": float(rec["s"]),
            "max_rss_mb": float(rec["max_rss"]) if rec.get("max_rss", "NA") != "NA" else None,
            "cpu_time_s": float(rec["cpu_time"]) if rec.get("cpu_time", "NA") != "NA" else None,
            "end_mtime": f.stat().st_mtime,
            "peak_rss_mb": None if peak is None else float(peak),
        })
    return rows


def union_seconds(intervals):
    total, end = 0.0, -1e300
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def run_workflow(workdir, configfile, cores, results, snakefile=REPO / "Snakefile", fresh=True):
    """``snakemake --cores`` on ``snakefile`` in ``workdir`` (its output in <workdir>/snakemake.log;
    ``fresh``: the run's ``results`` folder is deleted first). Returns (summary, jobs): every job
    of :func:`read_benchmarks`, with its start and end in seconds since the run began."""
    if fresh and results.exists():
        shutil.rmtree(results)
    cmd = ["snakemake", "-s", str(Path(snakefile).resolve()), "--directory", str(workdir), "--configfile",
           str(configfile), "--cores", str(cores)]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    wall = time.time() - t0
    (workdir / "snakemake.log").write_text(proc.stdout + proc.stderr)
    jobs = read_benchmarks(results / "benchmarks")
    for j in jobs:
        j["start"], j["end"] = j["end_mtime"] - j["s"] - t0, j["end_mtime"] - t0
        del j["end_mtime"]
    busy = union_seconds([(j["start"], j["end"]) for j in jobs])
    summary = {
        "snakemake_command": " ".join(cmd),
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        "sum_job_s": round(sum(j["s"] for j in jobs), 1),
        "time_with_a_job_running_s": round(busy, 1),
        "snakemake_only_s": round(wall - busy, 1),
    }
    if proc.returncode:
        summary["error_tail"] = (proc.stdout + proc.stderr)[-3000:]
    return summary, jobs
