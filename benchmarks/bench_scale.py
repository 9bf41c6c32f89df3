#!/usr/bin/env python3
"""Scale: the whole workflow on a TCGA-sized cohort, with time and peak memory of every rule.

    python benchmarks/bench_scale.py                       # 11,000 x 20,000 counts, 5,000 variable genes
    python benchmarks/bench_scale.py --samples 2000 --genes 4000 --workdir /tmp/scale_small   # a quick try

Steps:

1. generate (once; reused when present) a negative-binomial count matrix of
   ``--samples`` x ``--genes`` int32 counts as Parquet (samples x genes, first
   column ``sample_id``; written in row groups of 1,000 samples) and a sample
   sheet with ``--groups`` tumour types, in ``--workdir`` (default
   ``/tmp/genovae_scale``; never inside the repository);
2. run ``snakemake --cores N`` on this repository's Snakefile with
   ``--directory <workdir>`` and a config for that cohort (counts, ``nb``
   likelihood, ``n_top_genes`` 5,000, ``--epochs`` training epochs, one round);
3. read every rule's Snakemake ``benchmark:`` file (wall seconds, peak RSS,
   CPU time) and relate each rule's peak RSS to the float32 size of the
   matrix it reads (collect: the input; preprocess, export_h5ad: the collected
   matrix; train, evaluate, latent, test_metrics, risk_genes, generate: the selected features plus,
   for ``nb``, the counts of those genes; plots: the features).

Prints JSON (and writes it to ``<workdir>/bench_scale.json``). The generated
data is left in the work folder; delete it when done.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

import _common
from _common import machine, run_workflow, work_folder, write_run_config

RUN = "scale"
ROW_GROUP = 1000


def generate(workdir, n, g, groups, seed=0):
    import pyarrow as pa
    import pyarrow.parquet as pq

    expr = workdir / "counts.parquet"
    sheet = workdir / "samples.tsv"
    if expr.exists() and sheet.exists():
        meta = pq.ParquetFile(expr).metadata
        if meta.num_rows == n and meta.num_columns == g + 1:
            return expr, sheet, None
    rng = np.random.default_rng(seed)
    ids = [f"TCGA-{i:06d}" for i in range(n)]
    types = np.array([f"type_{k % groups + 1}" for k in range(n)])
    rng.shuffle(types)
    genes = [f"ENSG{j:011d}" for j in range(g)]
    # gene means: log-normal around 50 counts; per-sample depth factor; 500 marker genes per type (x2-4)
    base = rng.lognormal(np.log(50.0), 1.5, size=g).astype(np.float32)
    effect = np.ones((groups, g), np.float32)
    for k in range(groups):
        marked = rng.choice(g, size=min(500, g), replace=False)
        effect[k, marked] = rng.uniform(2.0, 4.0, size=len(marked)) ** rng.choice([-1, 1], size=len(marked))
    theta = 5.0
    t0 = time.perf_counter()
    schema = pa.schema([("sample_id", pa.string())] + [(gene, pa.int32()) for gene in genes])
    tmp = expr.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema, compression="snappy") as writer:
        for start in range(0, n, ROW_GROUP):
            rows = slice(start, min(start + ROW_GROUP, n))
            k = np.array([int(t.split("_")[1]) - 1 for t in types[rows]])
            depth = rng.lognormal(0.0, 0.35, size=(len(k), 1)).astype(np.float32)
            mu = base[None, :] * effect[k] * depth
            lam = rng.gamma(theta, mu / theta).astype(np.float32)
            counts = rng.poisson(lam).astype(np.int32)
            cols = [pa.array(ids[rows])] + [pa.array(counts[:, j]) for j in range(g)]
            writer.write_table(pa.Table.from_arrays(cols, schema=schema), row_group_size=ROW_GROUP)
    os.replace(tmp, expr)
    with open(sheet, "w") as fh:
        fh.write("sample_id\ttumour_type\n")
        for i, t in zip(ids, types):
            fh.write(f"{i}\t{t}\n")
    return expr, sheet, time.perf_counter() - t0


def write_config(workdir, expr, sheet, a):
    cfg = {
        "run": RUN,
        "data": {"source": "file", "expression": str(expr), "samples": str(sheet), "format": "table",
                 "orientation": "samples_by_genes", "value_type": "counts"},
        "analysis": {"condition": "tumour_type", "case": None, "control": None},
        "preprocess": {"n_top_genes": a.top_genes, "scaling": "zscore"},
        "model": {"hidden": [256, 128], "latent_dim": 10, "dropout": 0.1, "batch_norm": True, "likelihood": "nb"},
        "train": {"epochs": a.epochs, "batch_size": 256, "kl_warmup_epochs": min(5, a.epochs), "patience": 30,
                  "threads": a.cores, "device": "auto", "checkpoint_every": 10},
        "retrain": {"metric": "val_mse_ratio_pca", "threshold": 100.0, "max_rounds": 1},
    }
    return write_run_config(workdir, cfg)


def matrix_mb(rule, n, g, top):
    """float32 size (MB, 2^20 bytes) of the matrix data a rule reads."""
    full = n * g * 4 / 2**20
    feat = n * top * 4 / 2**20
    return {
        "collect": full, "preprocess": full, "export_h5ad": full,
        # features + counts of those genes (nb)
        "train": 2 * feat, "evaluate": 2 * feat, "latent": 2 * feat, "test_metrics": 2 * feat,
        "risk_genes": 2 * feat, "generate": 2 * feat,
        "plots": feat,
    }.get(rule)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=11_000)
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--top-genes", type=int, default=5_000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--workdir", default="/tmp/genovae_scale")
    p.add_argument("--keep-results", action="store_true", help="do not delete an earlier run's results first")
    p.add_argument("--snakefile", default=str(_common.REPO / "Snakefile"),
                   help="the workflow to run (default: this checkout's; e.g. a patched copy)")
    a = p.parse_args(argv)
    workdir = work_folder(a.workdir, "bench_scale")
    info = {"benchmark": "bench_scale", "command": "python benchmarks/bench_scale.py " + " ".join(sys.argv[1:]),
            "machine": machine("cpu")}
    expr, sheet, gen_s = generate(workdir, a.samples, a.genes, a.groups)
    info["generate_s"] = None if gen_s is None else round(gen_s, 1)
    info["input"] = {"path": str(expr), "bytes": expr.stat().st_size, "samples": a.samples, "genes": a.genes,
                     "float32_mb": round(a.samples * a.genes * 4 / 2**20, 1)}
    cfg = write_config(workdir, expr, sheet, a)
    run, jobs = run_workflow(workdir, cfg, a.cores, workdir / "results" / RUN, a.snakefile, fresh=not a.keep_results)
    info.update(run)
    for j in jobs:
        mb = matrix_mb(j["rule"], a.samples, a.genes, a.top_genes)
        j["reads_float32_mb"] = None if mb is None else round(mb, 1)
        j["rss_over_matrix"] = round(j["max_rss_mb"] / mb, 2) if mb and j["max_rss_mb"] else None
        j["peak_over_matrix"] = round(j["peak_rss_mb"] / mb, 2) if mb and j["peak_rss_mb"] else None
    info["jobs"] = [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in j.items()} for j in jobs]
    over = [j["job"] for j in info["jobs"]
            if max(j["rss_over_matrix"] or 0, j["peak_over_matrix"] or 0) > 3]
    info["targets"] = {
        "wall_under_15_min": info["wall_s"] < 900,
        "rss_at_most_3x_matrix": not over,
        "rules_over_3x": over,
    }
    out = json.dumps(info, indent=2)
    (workdir / "bench_scale.json").write_text(out + "\n")
    print(out)
    return info


if __name__ == "__main__":
    main()
