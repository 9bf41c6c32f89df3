#!/usr/bin/env python3
"""End to end: the demo's wall time, split into Snakemake, job start-up and work.

    python benchmarks/bench_demo.py [--cores 2] [--json]

Copies the workflow (Snakefile, workflow/, config/, envs/, resources/) to a
temporary folder, runs ``snakemake --cores N`` there from scratch (the demo
config, Khan SRBCT data), and reads every job's Snakemake ``benchmark:`` file.

* ``wall_s``: the ``snakemake`` command, start to end;
* ``time_with_a_job_running_s``: the union of the jobs' intervals (a job ends
  when its benchmark file is written and started ``s`` seconds before);
  ``snakemake_only_s`` = wall - that: parsing the workflow, building the DAG,
  re-evaluating it after each ``decide`` checkpoint, scheduling, between jobs;
* ``startup_s`` per job: interpreter start-up and imports, measured by running
  the imports of the job's rule (Snakemake's script preamble, the genovae
  modules and the heavy libraries they load: torch, scikit-learn, matplotlib,
  h5py) in a fresh interpreter (median of 3); ``work_s`` = job ``s`` - start-up.

Shares are of the wall time; with 2 cores jobs overlap, so the job sums are
scaled by (time with a job running / sum of job seconds) when shared out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
from _common import machine, read_benchmarks, union_seconds

PARTS = ("Snakefile", "workflow", "config", "envs", "resources")
PREAMBLE = "import pickle, snakemake.io; from snakemake.logging import logger; from snakemake.iocontainers import Snakemake"
#: what each rule's script imports, including the libraries its step imports lazily
IMPORTS = {
    "collect": "import genovae.collect",
    "simulate": "import genovae.simulate",
    "preprocess": "import genovae.preprocess",
    "train": "import genovae.rounds, genovae.train, genovae.dataset, genovae.model, torch",
    "evaluate": "import genovae.rounds, genovae.evaluate, genovae.labels, genovae.dataset, genovae.pca, torch, "
                "scipy.sparse.linalg",
    "decide": "import genovae.rounds, genovae.evaluate",
    "select_model": "import genovae.rounds",
    "latent": "import genovae.apply, genovae.evaluate, genovae.dataset, genovae.model, torch",
    "test_metrics": "import genovae.apply, genovae.labels, genovae.dataset, genovae.model, genovae.pca, torch, "
                    "sklearn.linear_model, sklearn.neighbors, scipy.sparse.linalg",
    "risk_genes": "import genovae.apply, genovae.risk, genovae.dataset, genovae.model, torch, scipy.special",
    "predict": "import genovae.apply, genovae.predict, genovae.dataset, genovae.model, torch, sklearn.linear_model, "
               "matplotlib.pyplot",
    "loadings": "import genovae.apply, genovae.loadings, genovae.dataset, genovae.model, torch, matplotlib.pyplot",
    "apply_model": "import genovae.apply, genovae.risk, genovae.labels, genovae.predict, genovae.loadings, "
                   "genovae.dataset, genovae.model, genovae.pca, torch, sklearn.linear_model, sklearn.neighbors, "
                   "scipy.sparse.linalg, scipy.special, matplotlib.pyplot",
    "risk_table": "import genovae.apply, genovae.io",
    "plots": "import genovae.plots, matplotlib.pyplot",
    "summarize": "import genovae.summary",  # no torch, scikit-learn or scipy since risk.py imports them lazily
    "provenance": "import genovae.provenance",
    "export_h5ad": "import genovae.export, anndata, h5py",
    "generate": "import genovae.synthetic, genovae.evaluate, genovae.dataset, genovae.pca, torch, "
                "sklearn.linear_model, sklearn.ensemble, sklearn.model_selection, scipy.sparse.linalg",
}


def startup_seconds(rule, repeats=3):
    code = (f"import sys; sys.path[:0] = [{str(_common.REPO / 'workflow' / 'scripts')!r}, {str(_common.LIB)!r}]; "
            f"{PREAMBLE}; import _bootstrap; {IMPORTS.get(rule, 'import genovae')}")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the temporary copy")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="genovae_demo_"))
    for part in PARTS:
        src = _common.REPO / part
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp / part)
    info = {"benchmark": "bench_demo", "command": "python benchmarks/bench_demo.py " + " ".join(sys.argv[1:]),
            "machine": machine("cpu"), "snakemake_command": f"snakemake --cores {a.cores}", "workdir": str(tmp)}
    t0 = time.time()
    proc = subprocess.run(["snakemake", "--cores", str(a.cores)], cwd=tmp, capture_output=True, text=True)
    t1 = time.time()
    info["returncode"] = proc.returncode
    if proc.returncode:
        info["error_tail"] = (proc.stdout + proc.stderr)[-3000:]
    info["wall_s"] = round(t1 - t0, 2)
    jobs = read_benchmarks(tmp / "results" / "demo" / "benchmarks")
    cache = {}
    for j in jobs:
        if j["rule"] not in cache:
            cache[j["rule"]] = startup_seconds(j["rule"])
        j["startup_s"] = round(min(cache[j["rule"]], j["s"]), 2)
        j["work_s"] = round(j["s"] - j["startup_s"], 2)
        j["start"], j["end"] = round(j["end_mtime"] - j["s"] - t0, 2), round(j["end_mtime"] - t0, 2)
        del j["end_mtime"]
    busy = union_seconds([(j["start"], j["end"]) for j in jobs])
    total_job = sum(j["s"] for j in jobs)
    startup = sum(j["startup_s"] for j in jobs)
    work = sum(j["work_s"] for j in jobs)
    scale = busy / total_job if total_job else 0.0
    wall = info["wall_s"]
    info.update({
        "jobs_n": len(jobs),
        "sum_job_s": round(total_job, 2),
        "sum_startup_s": round(startup, 2),
        "sum_work_s": round(work, 2),
        "time_with_a_job_running_s": round(busy, 2),
        "snakemake_only_s": round(wall - busy, 2),
        "share_snakemake": round((wall - busy) / wall, 3),
        "share_job_startup": round(startup * scale / wall, 3),
        "share_work": round(work * scale / wall, 3),
        "startup_per_rule_s": {k: round(v, 2) for k, v in cache.items()},
        "jobs": jobs,
    })
    print(json.dumps(info, indent=2) if a.json else "\n".join(
        f"{k:>26}: {v}" for k, v in info.items() if not isinstance(v, (list, dict))))
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


if __name__ == "__main__":
    main()
