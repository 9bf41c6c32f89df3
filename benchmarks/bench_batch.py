#!/usr/bin/env python3
"""analysis.batch: does conditioning the VAE on the batch mix batches and keep the biology?

Simulated cohorts (genovae.simulate: 240 samples, 300 genes, 20 planted condition genes at
log2 FC 1.5, 3 batches whose genes shift by exp(N(0, batch_effect)) on the log scale) go
through the library's own steps: preprocess (split by condition x batch, 200 genes) ->
train_vae twice with the same settings, once conditioned on the batch and once without it
-> latent means of all samples. For each it reports the kNN batch-mixing score and scib's
batch ASW (genovae.labels.batch_mixing: 1 = mixed as at random, 0 = batches apart; within
each condition) and the condition's leave-one-out 5-NN accuracy, beside PCA at the latent
dimension. Torch on 2 threads, CPU, seeded.

``--real`` runs the same comparison on shared cohorts whose sample sheet has a real technical
covariate, the ``split`` column of the original studies (golub_all_aml: the 38-sample training
set against the 34-sample independent set, collected later and from more centres; khan_srbct:
the 63 training samples against the 20 test samples), with the config a user of that cohort
would set (benchmarks/bench_loop.py's DATASETS) and every other setting the schema's default.

    python3 benchmarks/bench_batch.py --json benchmarks/runs/bench_batch.json
    python3 benchmarks/bench_batch.py --effects 0.5 --likelihoods gaussian --seeds 1 2 3
    python3 benchmarks/bench_batch.py --real golub_all_aml khan_srbct --seeds 1 2 3 --effects --likelihoods \
        --json benchmarks/runs/bench_batch_real.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from genovae import io  # noqa: E402
from genovae.apply import without_covariates  # noqa: E402
from genovae.dataset import load_cohort  # noqa: E402
from genovae.evaluate import encode, fit_pca  # noqa: E402
from genovae.labels import batch_mixing, label_structure  # noqa: E402
from genovae.preprocess import preprocess  # noqa: E402
from genovae.simulate import simulate_cohort  # noqa: E402
from genovae.train import train_vae  # noqa: E402

SPLIT = {"train": 0.7, "val": 0.15, "test": 0.15}


def one(effect, likelihood, seed, epochs):
    matrix, samples = simulate_cohort(n_samples=240, n_genes=300, n_planted=20, log2_fold_change=1.5,
                                      n_batches=3, batch_effect=effect, seed=seed)[:2]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        io.write_matrix(d / "m.parquet", matrix)
        io.write_tsv(d / "s.tsv", samples)
        preprocess(d / "m.parquet", d / "s.tsv", out_features=d / "f.parquet", out_split=d / "split.tsv",
                   out_transform=d / "t.json", condition="condition", value_type="counts", split=SPLIT, seed=1,
                   batch=["batch"], n_top_genes=200, log_base=np.e)
        cohort = load_cohort(d / "f.parquet", d / "split.tsv", d / "m.parquet", likelihood)
    batch = samples.set_index("sample_id").loc[cohort.sample_ids, "batch"].to_numpy()
    settings = dict(epochs=epochs, batch_size=32, patience=30, kl_warmup_epochs=10, threads=2, seed=seed)
    config = dict(hidden=[64], latent_dim=6, dropout=0.1, likelihood=likelihood)
    out = []
    reps = {}
    for name, c in (("conditioned", cohort), ("plain", without_covariates(cohort))):
        t0 = time.perf_counter()
        model, _, info = train_vae(c, model_config=config, **settings)
        reps[name] = (encode(model, c.inputs())[0], info["epochs_run"], time.perf_counter() - t0)
    reps["pca"] = (fit_pca(cohort, 6).transform(cohort.x), None, 0.0)
    for name, (z, epochs_run, seconds) in reps.items():
        out.append({
            "batch_effect": effect, "likelihood": likelihood, "seed": seed, "representation": name,
            **batch_mixing(z, batch, cohort.condition),
            "condition_knn": label_structure(z, cohort.condition)["knn_accuracy"],
            "epochs_run": epochs_run, "seconds": round(seconds, 1),
        })
    return out


def real(name, seed):
    """The comparison on a shared cohort, batch = its sample sheet's ``split`` column."""
    from bench_loop import config_of, prepare

    from genovae.settings import load_settings

    cfg = config_of(name, "after", 1.1, 1)
    cfg["analysis"]["batch"] = ["split"]
    cfg["train"].update(seed=seed, threads=2)
    S = load_settings(cfg)
    with tempfile.TemporaryDirectory() as d:
        p = prepare(S, name, Path(d))
        params = S.round_params(1)
        cohort = load_cohort(p["features.parquet"], p["split.tsv"], p["matrix.parquet"],
                             params["model"]["likelihood"])
        sheet = io.read_sample_sheet(p["samples.tsv"]).set_index("sample_id").loc[cohort.sample_ids]
    batch, condition = sheet["split"].to_numpy(), cohort.condition
    train = {k: v for k, v in params["train"].items() if k not in ("warm_start", "dp")}
    reps = {}
    for rep, c in (("conditioned", cohort), ("plain", without_covariates(cohort))):
        t0 = time.perf_counter()
        model, _, info = train_vae(c, model_config=params["model"], **train)
        reps[rep] = (encode(model, c.inputs())[0], info["epochs_run"], time.perf_counter() - t0)
    reps["pca"] = (fit_pca(cohort, params["model"]["latent_dim"]).transform(cohort.x), None, 0.0)
    return [{"dataset": name, "seed": seed, "representation": rep, **batch_mixing(z, batch, condition),
             "batch_knn": label_structure(z, batch)["knn_accuracy"],
             "condition_knn": label_structure(z, condition)["knn_accuracy"], "epochs_run": e, "seconds": round(s, 1)}
            for rep, (z, e, s) in reps.items()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--effects", type=float, nargs="*", default=[0.25, 0.5, 0.8])
    ap.add_argument("--likelihoods", nargs="*", default=["gaussian", "nb"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[3])
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--real", nargs="*", default=[])
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for name in args.real:
        for seed in args.seeds:
            for r in real(name, seed):
                rows.append(r)
                print(f"{name:14s} seed {seed} {r['representation']:11s} mixing {r['batch_mixing']:.2f} "
                      f"asw {r['batch_asw']:.2f} batch 5-NN {r['batch_knn']:.2f} condition 5-NN "
                      f"{r['condition_knn']:.2f} epochs {r['epochs_run']} {r['seconds']} s", flush=True)
    for lik in args.likelihoods:
        for effect in args.effects:
            for seed in args.seeds:
                for r in one(effect, lik, seed, args.epochs):
                    rows.append(r)
                    print(f"{lik:8s} effect {effect:4.2f} seed {seed} {r['representation']:11s} "
                          f"mixing {r['batch_mixing']:.2f} asw {r['batch_asw']:.2f} "
                          f"condition 5-NN {r['condition_knn']:.2f} epochs {r['epochs_run']} {r['seconds']} s",
                          flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
