#!/usr/bin/env python3
"""How much of "the VAE's latent space against PCA" is geometry? PCA's components keep their variances, a
VAE's latent means are close to whitened (its N(0, I) prior gives every active dimension about unit spread).

For each cohort of ``bench_loop.py``, prepared as genovae prepares it (the same genes, split and values), this
scores the condition's leave-one-out 5-NN on every sample (``genovae.labels.label_structure``, bench_loop.py's
``knn_all``) in PCA-10 fitted on the train samples (genovae's baseline), in the same components scaled to unit
variance on the train samples (whitened), and in the first 2 and 5 components. Compare with the VAE's
``knn_all_vae`` in ``benchmarks/runs/bench_loop_hidden_after.json``. No training; seconds per cohort.

    python3 benchmarks/bench_pca_geometry.py --json benchmarks/runs/bench_pca_geometry.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "lib"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_loop import DATASETS, available  # noqa: E402


def geometry(name):
    from bench_loop import labelled_cohort
    from genovae.evaluate import fit_pca
    from genovae.labels import label_structure

    cohort, y, _ = labelled_cohort(name)
    z = fit_pca(cohort, 10).transform(cohort.x)
    sd = z[cohort.mask("train")].std(axis=0)
    knn = lambda x: label_structure(x, y)["knn_accuracy"]  # noqa: E731
    return {
        "dataset": name,
        "n": int(len(y)),
        "knn_all_pca": knn(z),
        "knn_all_pca_whitened": knn(z / sd),
        "knn_all_pca2": knn(z[:, :2]),
        "knn_all_pca5": knn(z[:, :5]),
        "sd_first_over_tenth": float(sd[0] / sd[-1]),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    from _common import machine

    results = []
    for name in args.datasets:
        if not available(name):
            continue
        r = geometry(name)
        print(json.dumps(r), flush=True)
        results.append(r)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
