#!/usr/bin/env python3
"""Latent loadings on pbmc68k_reduced: which genes make each latent dimension?

The shared single-cell cohort (700 PBMCs, 765 genes, log-normalised, 10 cell types) goes
through the library's own steps with the schema's defaults (benchmarks/bench_loop.py's
DATASETS entry): collect -> preprocess -> train round 1 -> genovae.loadings.latent_loadings.
For every latent dimension it prints the 12 genes it moves most (sign: the direction in
which the decoded expression moves as the dimension grows) and the cell types with the
highest and lowest mean on it. Torch on 2 threads, CPU, seeded.

    python3 benchmarks/bench_loadings.py --seed 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TOP = 12


def pbmc_loadings(seed=1, tmp=None, top=TOP):
    """{"top": {dim: [(gene, "+"/"-"), ...]}, "high": {dim: cell type}, "low": {...}, "info": ...}."""
    from bench_loop import config_of, prepare

    from genovae.dataset import load_cohort
    from genovae.evaluate import encode
    from genovae.loadings import latent_loadings
    from genovae.preprocess import Transform
    from genovae.settings import load_settings
    from genovae.train import train_vae

    cfg = config_of("pbmc68k_reduced", "after", 1.1, 1)
    cfg["train"].update(threads=2, seed=seed)
    S = load_settings(cfg)
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        p = prepare(S, "pbmc68k_reduced", Path(d))
        params = S.round_params(1)
        cohort = load_cohort(p["features.parquet"], p["split.tsv"], p["matrix.parquet"],
                             params["model"]["likelihood"])
        transform = Transform.load(p["transform.json"])
    train = {k: v for k, v in params["train"].items() if k not in ("warm_start", "dp")}
    model, _, info = train_vae(cohort, model_config=params["model"], **train)
    load = latent_loadings(model, cohort, transform, seed=seed)
    z = encode(model, cohort.inputs())[0]
    out = {"top": {}, "high": {}, "low": {}, "info": {"model": info["model"], "epochs_run": info["epochs_run"]}}
    for j in range(load.shape[1]):
        dim = f"z{j + 1}"
        order = np.argsort(-np.abs(load[:, j]))[:top]
        out["top"][dim] = [(cohort.genes[i], "+" if load[i, j] > 0 else "-") for i in order]
        means = pd.Series(z[:, j]).groupby(cohort.condition).mean()
        out["high"][dim], out["low"][dim] = str(means.idxmax()), str(means.idxmin())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    found = pbmc_loadings(args.seed)
    print(f"model {found['info']['model']}, {found['info']['epochs_run']} epochs")
    for dim, top in found["top"].items():
        genes = ", ".join(f"{g}{s}" for g, s in top)
        print(f"{dim} (high in {found['high'][dim]}, low in {found['low'][dim]}): {genes}")


if __name__ == "__main__":
    main()
