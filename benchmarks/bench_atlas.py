#!/usr/bin/env python3
"""Atlas: the whole workflow on a single-cell atlas of sparse counts, with time and peak memory of every rule.

    python benchmarks/bench_atlas.py                       # 200,000 cells x 20,000 genes, 10 cell types, 5 % non-zero
    python benchmarks/bench_atlas.py --cells 3000 --genes 2000 --epochs 3 --workdir /tmp/atlas_small   # a quick try
    python benchmarks/bench_atlas.py --generate-only       # the cohort alone (at full size: ~1.6 GB of CSR)

Steps:

1. generate (once; reused when the same ``--cells``, ``--genes``, ``--types``,
   ``--density`` and ``--seed`` are in its file name) an AnnData ``.h5ad`` in
   ``--workdir`` (default ``/tmp/genovae_atlas``; never inside the repository)
   whose X is a CSR matrix of negative-binomial counts (float32): gene
   log-means normal with sd 2 (most genes low, a few high), shifted so that
   the expected share of non-zeros is ``--density``; per cell type a few
   hundred marker genes 4-32x higher; a log-normal library-size factor per
   cell; a dispersion per gene. obs ``cell_type`` (Dirichlet frequencies),
   obs_names ``cell000001``..., var_names ``gene00001``.... It is drawn in
   blocks of cells and keeps only the non-zeros: a uniform per entry decides
   whether the count is 0, and the count is the NB's inverse CDF at that
   uniform (means above 5: NB draws, zeros redrawn), which is exactly NB;
2. run ``snakemake --cores N`` on this repository's Snakefile with
   ``--directory <workdir>`` and a config for that cohort (the h5ad's obs as
   sample sheet, counts, ``nb`` likelihood, 2,000 variable genes, ``--epochs``
   of batch ``--batch-size``, one round; risk genes of every cell type against
   the rest, evaluation, the synthetic cohort, export_h5ad and the overview
   on, as by default; prediction and loadings off, as by default);
3. read every rule's Snakemake ``benchmark:`` file (wall seconds, peak RSS,
   CPU time) and the job's own peak memory, and relate each peak to the
   size of the CSR matrix (data + indices + indptr); training samples/s
   = train cells x epochs / training seconds (round 1's train_info.json);
4. (``--compare-epochs``, default 2) train round 1's model on the run's cohort
   with its nb counts sparse (the workflow's way: batches densified on the
   device) and dense, alternating, twice each: samples/s and their ratio
   (target >= 0.9). ``--compare-only`` does this step alone on a finished run.

Targets (issue 19): the whole run under 30 minutes on 2 cores, and every
rule's peak RSS at most 3x the CSR size (1.5 GB at full size; on a small
cohort the interpreter and torch, 0.1-0.7 GB per job, dominate every ratio).
The default 10 epochs of batch 1,024 are 2.5 minutes of training at
200,000 cells (140,000 training cells at ~9,300 samples/s: 2 threads, [512, 128]
hidden, 2,000 genes; BENCHMARKS.md section 7), 15 minutes for the whole run.
Generating the full-size cohort takes about 40 s and 2.1 GB of peak memory
there (the CSR's 1.5 GB and one block).

Prints a summary (``--json``: the JSON) and writes the JSON to
``<workdir>/bench_atlas.json``. The generated data is left in the work
folder; delete it when done.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import time

import numpy as np

import _common
from _common import machine, run_workflow, work_folder, write_run_config

RUN = "atlas"
BLOCK = 500  # cells drawn at a time: 500 x 20,000 float32 is 40 MB per temporary
LIB_SD = 0.5  # sd of the log library-size factor
TOP_GENES = 2000


def cohort_means(rng, genes, types, density):
    """Cell-type frequencies, NB means (types x genes, at library factor 1) and dispersions (per gene)."""
    from scipy.optimize import brentq
    from scipy.special import ndtri

    freq = rng.dirichlet(np.full(types, 2.0))
    log_mean = np.tile(rng.normal(0.0, 2.0, genes), (types, 1))
    for k in range(types):
        markers = rng.choice(genes, size=min(300, genes // 20), replace=False)
        log_mean[k, markers] += rng.uniform(np.log(4), np.log(32), len(markers))
    theta = np.exp(rng.normal(np.log(2.0), 0.75, genes)).clip(0.1, 100)
    lib = np.exp(LIB_SD * ndtri((np.arange(32) + 0.5) / 32))  # 32 quantiles of the library factor

    def excess(shift):  # expected share of non-zeros minus the target
        mu = np.exp(log_mean + shift)[:, :, None] * lib
        return freq @ (1 - (1 + mu / theta[:, None]) ** -theta[:, None]).mean(axis=(1, 2)) - density

    mean = np.exp(log_mean + brentq(excess, -40, 40, xtol=1e-4))
    return freq, mean.astype(np.float32), theta.astype(np.float32)


def nb_positive(rng, mu, theta, u):
    """NB(mu, theta) counts given that they are not 0, i.e. given u >= P(0) for the uniform u that
    decided it: the inverse CDF at u (pmf recursion) for means up to 5; above, NB draws with 0 redrawn."""
    mu, theta, u = (np.asarray(v, np.float64) for v in (mu, theta, u))
    r = mu / (mu + theta)
    out = np.empty(len(mu), np.float32)
    i = np.flatnonzero(mu <= 5)
    pmf = np.exp(-theta[i] * np.log1p(mu[i] / theta[i]))  # P(0)
    cdf, k = pmf.copy(), 0
    while i.size and k < 1000:  # here every count is above k
        k += 1
        out[i] = k
        pmf *= (k - 1 + theta[i]) / k * r[i]
        cdf += pmf
        more = u[i] >= cdf
        i, pmf, cdf = i[more], pmf[more], cdf[more]
    i = np.flatnonzero(mu > 5)
    while i.size:
        out[i] = rng.negative_binomial(theta[i], 1 - r[i])
        i = i[out[i] == 0]
    return out


def generate(path, cells, genes, types, density, seed):
    import anndata
    import pandas as pd
    from scipy import sparse

    rng = np.random.default_rng(seed)
    freq, mean, theta = cohort_means(rng, genes, types, density)
    cell_type = rng.choice(types, size=cells, p=freq)
    lib = rng.lognormal(0.0, LIB_SD, cells).astype(np.float32)
    # the non-zeros go straight into arrays sized for 10 % more than expected: pages past the
    # last one written are never touched, so they cost no memory (and no second copy is made)
    cap = min(cells * genes, int(1.1 * density * cells * genes) + BLOCK * genes)
    data, indices = np.empty(cap, np.float32), np.empty(cap, np.int32)
    indptr = np.zeros(cells + 1, np.int64)
    for start in range(0, cells, BLOCK):
        block = slice(start, start + BLOCK)
        mu = mean[cell_type[block]]
        mu *= lib[block, None]
        p0 = mu / theta  # -> P(count = 0), in place
        np.log1p(p0, out=p0)
        p0 *= -theta
        np.exp(p0, out=p0)
        u = rng.random(mu.shape, dtype=np.float32)
        row, col = np.nonzero(u >= p0)  # row-major: the CSR order
        nnz = indptr[start]
        if nnz + len(col) > len(data):  # far more non-zeros than expected: grow (a copy)
            data, indices = (np.concatenate([v, np.empty_like(v)]) for v in (data, indices))
        data[nnz:nnz + len(col)] = nb_positive(rng, mu[row, col], theta[col], u[row, col])
        indices[nnz:nnz + len(col)] = col
        indptr[start + 1:start + len(mu) + 1] = nnz + np.cumsum(np.bincount(row, minlength=len(mu)))
    nnz = indptr[-1]
    x = sparse.csr_matrix((data[:nnz], indices[:nnz], indptr), shape=(cells, genes))
    width = len(str(cells)), len(str(genes))
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"type_{k + 1:02d}" for k in cell_type])},
                       index=[f"cell{i:0{max(6, width[0])}d}" for i in range(1, cells + 1)])
    var = pd.DataFrame(index=[f"gene{j:0{max(5, width[1])}d}" for j in range(1, genes + 1)])
    tmp = path.with_name(path.stem + ".tmp.h5ad")
    anndata.AnnData(X=x, obs=obs, var=var).write_h5ad(tmp)
    os.replace(tmp, path)


def csr_stats(path):
    """nnz, density and bytes of the file's X (data + indices + indptr, as stored)."""
    import h5py

    with h5py.File(path, "r") as fh:
        x = fh["X"]
        cells, genes = (int(v) for v in x.attrs["shape"])
        nbytes = sum(x[k].size * x[k].dtype.itemsize for k in ("data", "indices", "indptr"))
        nnz = int(x["data"].size)
    return {"path": str(path), "file_bytes": path.stat().st_size, "cells": cells, "genes": genes, "nnz": nnz,
            "density": round(nnz / (cells * genes), 4), "csr_bytes": nbytes, "csr_mb": round(nbytes / 2**20, 1),
            "dense_float32_mb": round(cells * genes * 4 / 2**20, 1)}


def write_config(workdir, h5ad, a):
    cfg = {
        "run": RUN,
        "data": {"source": "file", "expression": str(h5ad), "format": "h5ad", "value_type": "counts"},
        "analysis": {"condition": "cell_type", "case": None, "control": None, "predict": False, "loadings": False},
        "preprocess": {"n_top_genes": TOP_GENES, "scaling": "zscore"},
        "model": {"hidden": "auto", "latent_dim": 10, "dropout": 0.1, "batch_norm": True, "likelihood": "nb"},
        "train": {"epochs": a.epochs, "batch_size": a.batch_size, "kl_warmup_epochs": min(5, a.epochs),
                  "patience": 30, "threads": "auto", "device": "auto", "checkpoint_every": 10},
        "retrain": {"max_rounds": 1},
    }
    return write_run_config(workdir, cfg)


def training(results):
    """Round 1's training: cells, epochs, seconds (the epochs alone) and samples/s."""
    path = results / "rounds" / "1" / "train_info.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    return {"n_train": info["n_train"], "epochs_run": info["epochs_run"], "seconds": round(info["seconds"], 1),
            "samples_per_s": round(info["n_train"] * info["epochs_run"] / info["seconds"], 1),
            "hidden": info["model"]["hidden"], "threads": info["threads"], "device": info["device"]["used"]}


def sparse_vs_dense(results, epochs, batch_size, threads, pairs=2):
    """Training samples/s on the run's cohort with its nb counts sparse (what the workflow does: batches
    densified on the device) and dense (the same counts as one array), alternating, in this process."""
    import torch

    from genovae.dataset import load_cohort
    from genovae.train import train_vae

    torch.set_num_threads(threads)
    model_config = json.loads((results / "rounds" / "1" / "train_info.json").read_text())["model"]
    sparse_cohort = load_cohort(results / "preprocess" / "features.parquet", results / "preprocess" / "split.tsv",
                                results / "data" / "matrix.parquet", "nb")
    dense_cohort = dataclasses.replace(sparse_cohort, target=sparse_cohort.target.toarray())
    kw = dict(model_config=model_config, epochs=epochs, batch_size=batch_size, kl_warmup_epochs=1, patience=100,
              seed=1, progress=None, threads=threads)
    rates = {"sparse": [], "dense": []}
    for _ in range(pairs):
        for kind, cohort in (("sparse", sparse_cohort), ("dense", dense_cohort)):
            info = train_vae(cohort, **kw)[2]
            rates[kind].append(info["n_train"] * info["epochs_run"] / info["seconds"])
    ratios = [s / d for s, d in zip(rates["sparse"], rates["dense"])]
    return {"epochs": epochs, "pairs": pairs, "threads": threads,
            "sparse_samples_per_s": [round(r, 1) for r in rates["sparse"]],
            "dense_samples_per_s": [round(r, 1) for r in rates["dense"]],
            "ratio_sparse_over_dense": round(_common.median(ratios), 3)}


def per_rule(jobs, csr_mb):
    """Each job's peak (the larger of Snakemake's max_rss and the job's own record) over the CSR size,
    and per rule: jobs, seconds (summed) and the largest peak."""
    rules = {}
    for j in jobs:
        peak = max(j["max_rss_mb"] or 0, j["peak_rss_mb"] or 0) or None
        j["peak_over_csr"] = None if peak is None else peak / csr_mb
        r = rules.setdefault(j["rule"], {"jobs": 0, "s": 0.0, "cpu_time_s": 0.0, "peak_mb": 0.0})
        r["jobs"] += 1
        r["s"] += j["s"]
        r["cpu_time_s"] += j["cpu_time_s"] or 0
        r["peak_mb"] = max(r["peak_mb"], peak or 0)
    for r in rules.values():
        r["peak_over_csr"] = r["peak_mb"] / csr_mb
    return {name: {k: round(v, 2) for k, v in r.items()} for name, r in rules.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=int, default=200_000)
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--types", type=int, default=10, help="cell types")
    p.add_argument("--density", type=float, default=0.05, help="target share of non-zero counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--workdir", default="/tmp/genovae_atlas")
    p.add_argument("--generate-only", action="store_true", help="only generate (or find) the cohort")
    p.add_argument("--json", action="store_true", help="print the JSON, not a summary")
    p.add_argument("--compare-epochs", type=int, default=2,
                   help="after the run: training epochs per side of the sparse / dense comparison (0: skip)")
    p.add_argument("--compare-only", action="store_true",
                   help="only the sparse / dense comparison, on the finished run in --workdir (added to its JSON)")
    a = p.parse_args(argv)
    if not 0 < a.density < 1:
        p.error("--density must be between 0 and 1")
    workdir = work_folder(a.workdir, "bench_atlas")
    if a.compare_only:
        info = json.loads((workdir / "bench_atlas.json").read_text())
        info["sparse_vs_dense"] = sparse_vs_dense(workdir / "results" / RUN, a.compare_epochs or 2, a.batch_size,
                                                  info["training"]["threads"])
        (workdir / "bench_atlas.json").write_text(json.dumps(info, indent=2) + "\n")
        print(json.dumps(info["sparse_vs_dense"], indent=2))
        return info
    info = {"benchmark": "bench_atlas", "command": "python benchmarks/bench_atlas.py " + " ".join(sys.argv[1:]),
            "machine": machine("cpu")}
    h5ad = workdir / f"atlas_{a.cells}x{a.genes}_t{a.types}_d{a.density:g}_s{a.seed}.h5ad"
    info["generate_s"] = info["generate_peak_rss_mb"] = None
    if not h5ad.exists():
        t0 = time.perf_counter()
        generate(h5ad, a.cells, a.genes, a.types, a.density, a.seed)
        info["generate_s"] = round(time.perf_counter() - t0, 1)
        info["generate_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    info["input"] = csr_stats(h5ad)
    if not a.generate_only:
        results = workdir / "results" / RUN
        run, jobs = run_workflow(workdir, write_config(workdir, h5ad, a), a.cores, results)
        info.update(run)
        info["training"] = training(results)
        info["rules"] = per_rule(jobs, info["input"]["csr_mb"])
        info["jobs"] = [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in j.items()} for j in jobs]
        if a.compare_epochs and info["training"]:
            info["sparse_vs_dense"] = sparse_vs_dense(results, a.compare_epochs, a.batch_size,
                                                      info["training"]["threads"])
        over = sorted(name for name, r in info["rules"].items() if r["peak_over_csr"] > 3)
        info["targets"] = {"wall_under_30_min": info["wall_s"] < 1800, "peak_at_most_3x_csr": not over,
                           "rules_over_3x": over}
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = json.dumps(info, indent=2)
    (workdir / "bench_atlas.json").write_text(out + "\n")
    _common.dump(info, a.json)
    if not a.json:
        _common.dump({**info["input"], **(info.get("training") or {}), **info.get("targets", {})}, False)
        for name, r in info.get("rules", {}).items():
            print(f"{name:>28}: {r['s']:7.1f} s, peak {r['peak_mb']:6.0f} MB = {r['peak_over_csr']:.2f}x the CSR")
    return info


if __name__ == "__main__":
    main()
