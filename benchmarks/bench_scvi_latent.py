#!/usr/bin/env python3
"""scvi-tools' SCVI on issue 15's latent-structure targets: does the field's reference VAE beat PCA?

For the count cohorts of ``bench_loop.py`` (the pbmc68k_reduced UMI counts and the simulated source), this
prepares the cohort exactly as genovae does (collect/simulate -> preprocess: the same modelled genes and the
same train / validation / test split), trains scvi-tools' ``SCVI`` with its defaults (``n_latent`` = genovae's
10; ``gene_likelihood="nb"`` as genovae's ``likelihood: nb``; scVI's own default is
``zinb``, run too) on the raw counts of the train + validation cells, encodes every cell (the latent means) and
scores the condition's leave-one-out 5-NN accuracy on every cell (``genovae.labels.label_structure``, the
``knn_all`` of bench_loop.py) against PCA with as many components fitted on the train cells of genovae's
preprocessed values (bench_loop.py's baseline).

scvi-tools needs its own environment (it pins packages genovae does not), reusing the installed torch::

    python3 -m venv --system-site-packages /tmp/scvienv && /tmp/scvienv/bin/pip install scvi-tools
    /tmp/scvienv/bin/python benchmarks/bench_scvi_latent.py --seeds 1 2 3 --json benchmarks/runs/bench_scvi_latent.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "lib"))
sys.path.insert(0, str(ROOT / "benchmarks"))

DATASETS = ("pbmc68k_counts", "simulate")


def run(name, seed, likelihood):
    import scvi
    import torch
    from anndata import AnnData

    from bench_loop import labelled_cohort
    from genovae.evaluate import fit_pca
    from genovae.labels import label_structure

    cohort, y, counts = labelled_cohort(name, [f"train.seed={seed}"])
    fit_rows = ~cohort.mask("test")
    pca = fit_pca(cohort, 10).transform(cohort.x)
    torch.set_num_threads(1)
    scvi.settings.seed = seed
    adata = AnnData(counts.copy())
    adata.layers["counts"] = counts.copy()
    fit = adata[fit_rows].copy()
    scvi.model.SCVI.setup_anndata(fit, layer="counts")
    model = scvi.model.SCVI(fit, n_latent=10, gene_likelihood=likelihood)
    t0 = time.perf_counter()
    n_train, n_val = int(cohort.mask("train").sum()), int(cohort.mask("val").sum())
    model.train(train_size=n_train / (n_train + n_val), accelerator="cpu", enable_progress_bar=False)
    seconds = time.perf_counter() - t0
    scvi.model.SCVI.setup_anndata(adata, layer="counts")
    z = model.get_latent_representation(adata)
    return {
        "dataset": name,
        "seed": seed,
        "likelihood": likelihood,
        "n_cells": int(len(y)),
        "n_genes": int(counts.shape[1]),
        "knn_all_scvi": label_structure(z, y)["knn_accuracy"],
        "knn_all_pca": label_structure(pca, y)["knn_accuracy"],
        "epochs": int(model.history["elbo_train"].shape[0]),
        "seconds": round(seconds, 1),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--likelihoods", nargs="+", default=["nb", "zinb"])
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    try:
        import scvi
    except ImportError:
        raise SystemExit("scvi-tools is not installed in this environment: see this script's docstring")
    from _common import machine
    from bench_loop import available

    results = []
    for name in args.datasets:
        if not available(name):
            continue
        for lik in args.likelihoods:
            for seed in args.seeds:
                r = run(name, seed, lik)
                print(json.dumps(r), flush=True)
                results.append(r)
    if args.json:
        out = {"machine": machine(), "scvi_tools": scvi.__version__, "args": vars(args), "results": results}
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
