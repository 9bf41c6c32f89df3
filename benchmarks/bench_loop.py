#!/usr/bin/env python3
"""The retrain loop on real and simulated cohorts: does it make the model better?

For each dataset (the labelled cohorts in ../shared/data and the simulate source) and each
variant of the loop, this runs the library's own rule steps in this process, exactly as
the workflow chains them: collect (or simulate) -> preprocess -> [train round r ->
evaluate -> decide] until genovae.loop.continues_after says stop -> select the best round.
Round r's settings come from genovae.settings (``S.round_params(r, decision of r-1)``,
what the Snakefile's train params call). Torch runs on 1 thread on the CPU, seeded.

Variants (the config keys that differ; everything else is the schema's default):

* ``before``: the behaviour before issue 15 -- ``model.hidden: [256, 128]``,
  ``retrain.strategy: warm_start``;
* ``after``: today's defaults -- ``model.hidden: auto``, ``retrain.strategy: adaptive``;
* ``reseed`` (not run by default): ``model.hidden: auto`` with ``retrain.strategy: reseed`` and
  ``stop_without_improvement: false`` -- the same settings from a new seed each round, which
  measures how much of a round-to-round difference is the seed alone;
* ``search`` (not run by default): ``retrain.strategy: search`` (an Optuna study draws each
  round's settings from ``retrain.search``) with ``stop_without_improvement: false``.

Both use ``retrain.metric: val_mse_ratio_pca`` with ``--threshold`` (default 1.03, the
setting the issue measured) and ``--max-rounds`` (default 3). Per dataset and variant it
reports round 1's and the selected round's metric, the rounds run and each round's
diagnosis and change, and for the selected model the held-out test split's
reconstruction against PCA at the same dimension and the condition's 5-NN accuracy on
the test samples (classifier fitted on train + validation) in the VAE latent space and
in PCA's.

    python3 benchmarks/bench_loop.py --json benchmarks/runs/loop.json
    python3 benchmarks/bench_loop.py --datasets khan_srbct simulate --variants after
    python3 benchmarks/bench_loop.py --variants after --threshold 1.1 --max-rounds 1 --seeds 1 2 3 \
        --set "model.hidden=[128]" --set simulate.n_samples=600

``--seeds`` runs each dataset and variant once per ``train.seed`` (the split stays); ``--set`` takes any
``section.key=value`` (YAML value), the simulate source's keys included. ``pbmc68k_counts`` is
pbmc68k_reduced's UMI counts (``value_type: counts``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

import _common  # noqa: F401  (puts workflow/lib on sys.path)
from _common import machine

SHARED = _common.REPO.parent / "shared" / "data"

#: per dataset: the collect inputs and the config keys a user of that cohort would set
DATASETS = {
    "golub_all_aml": dict(files=("expression.tsv", "samples.tsv"), value_type="intensity", condition="label",
                          preprocess={"intensity_floor": 100, "intensity_ceiling": 16000}),
    "khan_srbct": dict(files=("expression.tsv", "samples.tsv"), value_type="log", condition="tumour_type",
                       data={"log_base": "e"}),
    "alon_colon": dict(files=("expression.tsv", "samples.tsv"), value_type="intensity", condition="tissue"),
    # 64 cell lines of 9 cancer types plus one-sample replicate groups: groups of fewer than 3 samples
    # cannot be split three ways (collect refuses them), so they are left out (58 lines of 8 types remain)
    "nci60": dict(files=("expression.tsv", "samples.tsv"), value_type="log", condition="cancer_type",
                  min_group=3),
    "pbmc68k_reduced": dict(files=("expression.tsv", "samples.tsv"), value_type="log", condition="bulk_labels",
                            data={"log_base": "e"}),
    # the same cells as UMI counts (counts.tsv), as a user of a count matrix would give them
    "pbmc68k_counts": dict(files=("counts.tsv", "samples.tsv"), value_type="counts", condition="bulk_labels",
                           folder="pbmc68k_reduced"),
    "simulate": dict(files=None, value_type="counts", condition="condition"),
}

VARIANTS = {
    "before": {"model": {"hidden": [256, 128]}, "retrain": {"strategy": "warm_start"}},
    "after": {},
    # the seed's share: today's settings again from a new seed each round, every round run
    "reseed": {"retrain": {"strategy": "reseed", "stop_without_improvement": False}},
    # retrain.strategy: search (an Optuna study over retrain.search), every round run
    "search": {"retrain": {"strategy": "search", "stop_without_improvement": False}},
}


def config_of(name, variant, threshold, max_rounds, overrides=()):
    """The config of one run; ``overrides``: ``section.key=value`` (YAML value) set last, e.g.
    ``model.dropout=0.0`` (on the command line: ``--set``)."""
    spec = DATASETS[name]
    cfg = {"run": f"{name}-{variant}", "analysis": {"condition": spec["condition"]}}
    if spec["files"] is None:
        cfg["data"] = {"source": "simulate"}
    else:
        d = SHARED / spec.get("folder", name)
        cfg["data"] = {"expression": str(d / spec["files"][0]), "samples": str(d / spec["files"][1]),
                       "value_type": spec["value_type"], **spec.get("data", {})}
    cfg["preprocess"] = dict(spec.get("preprocess", {}))
    for section, values in VARIANTS[variant].items():
        cfg.setdefault(section, {}).update(values)
    cfg.setdefault("retrain", {}).update(metric="val_mse_ratio_pca", threshold=threshold, max_rounds=max_rounds)
    cfg["train"] = {"threads": 1, "device": "cpu"}
    for item in overrides:
        key, _, value = item.partition("=")
        section, _, sub = key.partition(".")
        if not (section and sub and _):
            raise SystemExit(f"--set {item!r}: expected section.key=value")
        cfg.setdefault(section, {})[sub] = yaml.safe_load(value)
    return cfg


def prepare(S, name, tmp):
    """collect (or simulate) and preprocess, as the workflow's rules call them."""
    from genovae import collect, preprocess, simulate

    p = {k: str(tmp / k) for k in ("matrix.parquet", "samples.tsv", "genes.tsv", "manifest.json", "truth.tsv",
                                   "features.parquet", "split.tsv", "transform.json")}
    if S.simulate_source:
        simulate.simulate(out_matrix=p["matrix.parquet"], out_samples=p["samples.tsv"], out_genes=p["genes.tsv"],
                          out_manifest=p["manifest.json"], out_truth=p["truth.tsv"], **S.simulate.asdict())
    else:
        expression, samples = S.data.expression, S.data.samples
        if DATASETS[name].get("min_group"):
            expression, samples = drop_small_groups(expression, samples, S.analysis.condition,
                                                    DATASETS[name]["min_group"], tmp)
        collect.collect(expression, samples, out_matrix=p["matrix.parquet"],
                        out_samples=p["samples.tsv"], out_genes=p["genes.tsv"], out_manifest=p["manifest.json"],
                        value_type=S.value_type, condition=S.analysis.condition, split=S.split_fractions())
    preprocess.preprocess(p["matrix.parquet"], p["samples.tsv"], out_features=p["features.parquet"],
                          out_split=p["split.tsv"], out_transform=p["transform.json"], **S.preprocess_params())
    return p


def labelled_cohort(name, overrides=()):
    """A dataset prepared as the workflow prepares it (schema defaults, ``overrides`` as ``--set``), for
    benchmarks that score representations without genovae's training: ``(cohort, condition labels as
    str, raw values of the modelled genes, samples x genes)``."""
    import numpy as np
    import pandas as pd

    from genovae.dataset import load_cohort, load_labels
    from genovae.settings import load_settings

    S = load_settings(config_of(name, "after", 1.1, 1, overrides))
    with tempfile.TemporaryDirectory(prefix=f"bench_{name}_") as tmp:
        p = prepare(S, name, Path(tmp))
        cohort = load_cohort(p["features.parquet"], p["split.tsv"], p["matrix.parquet"], "gaussian")
        genes = list(pd.read_parquet(p["features.parquet"]).columns)
        raw = pd.read_parquet(p["matrix.parquet"]).loc[cohort.sample_ids, genes].to_numpy(np.float32)
        labels = load_labels(p["samples.tsv"], cohort.sample_ids, S.analysis.condition, ())
    return cohort, np.asarray(labels[S.analysis.condition]).astype(str), raw


def one_thread():
    """torch and OpenMP on one thread: the benchmarks' figures do not depend on the machine's cores."""
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def available(name):
    """Whether dataset ``name``'s files are there (simulate always is); says so on stderr when not."""
    folder = SHARED / DATASETS[name].get("folder", name)
    if DATASETS[name]["files"] is not None and not folder.is_dir():
        print(f"skip {name}: {folder} is missing", file=sys.stderr)
        return False
    return True


def drop_small_groups(expression, samples, condition, min_group, tmp):
    """Copies of the matrix and sample sheet without the samples of groups smaller than ``min_group``."""
    import pandas as pd

    sheet = pd.read_csv(samples, sep="\t", dtype=str)
    counts = sheet[condition].value_counts()
    sheet = sheet[sheet[condition].map(counts) >= min_group]
    x = pd.read_csv(expression, sep="\t", index_col=0)
    x.index = x.index.astype(str)
    x = x.loc[sheet["sample_id"]]
    paths = tmp / "input_expression.tsv", tmp / "input_samples.tsv"
    x.to_csv(paths[0], sep="\t")
    sheet.to_csv(paths[1], sep="\t", index=False)
    return str(paths[0]), str(paths[1])


def run_loop(S, p, tmp):
    """Rounds 1.. until the loop stops; returns the decisions and the models' paths."""
    from genovae import io
    from genovae.loop import continues_after
    from genovae.rounds import decide_round, evaluate_round, train_round

    decisions, models, seconds = [], [], []
    for r in range(1, S.retrain.max_rounds + 1):
        d = tmp / "rounds" / str(r)
        d.mkdir(parents=True, exist_ok=True)
        params = S.round_params(r, decisions[-1] if decisions else None)
        t0 = time.perf_counter()
        with open(d / "train.log", "w") as log:
            train_round(features=p["features.parquet"], split=p["split.tsv"], matrix=p["matrix.parquet"],
                        previous=models[-1] if models and params["train"]["warm_start"] else None,
                        out_model=str(d / "model.pt"), out_history=str(d / "history.tsv"),
                        out_info=str(d / "train_info.json"), round_=r, model_config=params["model"],
                        train_config=params["train"], threads=1, progress=log)
        seconds.append(time.perf_counter() - t0)
        evaluate_round(model=str(d / "model.pt"), features=p["features.parquet"], split=p["split.tsv"],
                       matrix=p["matrix.parquet"], transform=p["transform.json"], samples=p["samples.tsv"],
                       out_metrics=str(d / "metrics.json"), round_=r, **S.label_params())
        decide_round(metrics=str(d / "metrics.json"), out_decision=str(d / "decision.json"), round_=r,
                     strategy=S.retrain.strategy, **S.decide_params(), **S.search_decide_params(),
                     previous=[str(tmp / "rounds" / str(k) / "decision.json") for k in range(1, r)])
        decisions.append(io.read_json(d / "decision.json"))
        models.append(str(d / "model.pt"))
        if not continues_after(decisions, S.retrain.max_rounds, S.retrain.stop_without_improvement):
            break
    return decisions, models, seconds


def held_out(model_path, p, condition):
    """Test-split reconstruction against PCA and the condition's 5-NN accuracy (VAE vs PCA)."""
    import numpy as np

    from genovae.dataset import load_cohort, load_labels
    from genovae.evaluate import encode, fit_pca, split_metrics
    from genovae.labels import compare, compare_heldout
    from genovae.model import load_model
    from genovae.preprocess import Transform

    vae, _ = load_model(model_path)
    cohort = load_cohort(p["features.parquet"], p["split.tsv"], p["matrix.parquet"], vae.likelihood)
    pca = fit_pca(cohort, vae.config["latent_dim"])
    test = split_metrics(vae, cohort, Transform.load(p["transform.json"]), "test", pca=pca)
    reps = {"vae": encode(vae, cohort.x)[0], "pca": pca.transform(cohort.x)}
    labels = load_labels(p["samples.tsv"], cohort.sample_ids, condition, ())
    test_mask = cohort.mask("test")
    rows = compare_heldout(reps, labels, ~test_mask, test_mask)
    knn = {r["representation"]: r.get("knn_accuracy") for r in rows if r["label"] == condition}
    # every sample, leave-one-out (labels.label_structure): far less noisy than 8-30 test samples
    every = {r["representation"]: r for r in compare(reps, labels) if r["label"] == condition}
    return {
        "n_all": int(len(cohort.sample_ids)),
        "knn_all_vae": every["vae"].get("knn_accuracy"),
        "knn_all_pca": every["pca"].get("knn_accuracy"),
        "silhouette_all_vae": every["vae"].get("silhouette"),
        "silhouette_all_pca": every["pca"].get("silhouette"),
        "test_n": int(test_mask.sum()),
        "test_mse_ratio_pca": test["test_mse_ratio_pca"],
        "test_r2": test["test_r2"],
        "knn_vae": knn.get("vae"),
        "knn_pca": knn.get("pca"),
        "hidden": vae.config["hidden"],
        "latent_dim": vae.config["latent_dim"],
        "n_train": int(np.sum(cohort.mask("train"))),
        "n_genes": int(cohort.x.shape[1]),
    }


def bench(name, variant, threshold, max_rounds, overrides=()):
    from genovae.loop import select_round
    from genovae.settings import load_settings

    S = load_settings(config_of(name, variant, threshold, max_rounds, overrides))
    with tempfile.TemporaryDirectory(prefix=f"bench_loop_{name}_") as tmp:
        tmp = Path(tmp)
        p = prepare(S, name, tmp)
        decisions, models, seconds = run_loop(S, p, tmp)
        selected = select_round(decisions)
        out = {
            "dataset": name,
            "variant": variant,
            "threshold": threshold,
            "rounds_run": len(decisions),
            "selected_round": selected,
            "round1_value": decisions[0]["value"],
            "selected_value": decisions[selected - 1]["value"],
            "passed": any(d["passed"] for d in decisions),
            "rounds": [
                {k: d.get(k) for k in ("round", "value", "passed", "diagnosis", "diagnosis_reason", "change")}
                | {"hidden": (d.get("settings") or {}).get("hidden"), "seconds": round(s, 1),
                   "train_ratio_pca": d["evidence"]["train_ratio_pca"],
                   "gap_vs_pca": d["evidence"]["gap_vs_pca"], "active_units": d["evidence"]["active_units"],
                   "best_epoch": d["evidence"].get("best_epoch"), "epochs_run": d["evidence"].get("epochs_run"),
                   # the condition's 5-NN on train + validation (decide's latent_knn, rounds.tsv's knn_vae)
                   "knn_vae": (d.get("latent_knn") or {}).get("vae")}
                for d, s in zip(decisions, seconds)
            ],
            **held_out(models[selected - 1], p, S.analysis.condition),
        }
    return out


def markdown(results):
    lines = [
        "| dataset | variant | n train × genes | hidden (selected) | round 1 val ratio | selected (round) | rounds "
        "| diagnosis per round | test ratio | 5-NN VAE / PCA | all samples: LOO 5-NN, silhouette VAE / PCA |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        diag = "; ".join(f"{x['round']}: {x['diagnosis']}" for x in r["rounds"])
        lines.append(
            f"| {r['dataset']} | {r['variant']} | {r['n_train']} × {r['n_genes']} | {r['hidden']} "
            f"| {r['round1_value']:.3f} | {r['selected_value']:.3f} ({r['selected_round']}) | {r['rounds_run']} "
            f"| {diag} | {r['test_mse_ratio_pca']:.3f} | {r['knn_vae']:.2f} / {r['knn_pca']:.2f} "
            f"| {r['knn_all_vae']:.2f} / {r['knn_all_pca']:.2f}, {r['silhouette_all_vae']:.2f} / "
            f"{r['silhouette_all_pca']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--variants", nargs="+", default=["before", "after"], choices=list(VARIANTS))
    ap.add_argument("--threshold", type=float, default=1.03)
    ap.add_argument("--max-rounds", type=int, default=3)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a config value on top of the variant's, e.g. model.dropout=0.0 (repeatable)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[],
                    help="train.seed values: each dataset and variant is run once per seed (the split stays)")
    ap.add_argument("--json", help="write the results (and the machine) to this file")
    args = ap.parse_args(argv)
    one_thread()
    results, info = [], machine()
    for name in args.datasets:
        if not available(name):
            continue
        for variant, seed in ((v, s) for v in args.variants for s in args.seeds or [None]):
            overrides = list(args.overrides) + ([f"train.seed={seed}"] if seed is not None else [])
            t0 = time.perf_counter()
            r = bench(name, variant, args.threshold, args.max_rounds, overrides)
            r["overrides"] = overrides
            r["seed"] = seed
            r["seconds"] = round(time.perf_counter() - t0, 1)
            results.append(r)
            print(json.dumps(r, default=str), flush=True)
            if args.json:  # after every result: a long run that breaks keeps what it measured
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args), "results": results},
                                                      indent=1, default=str))
    print(markdown(results))


if __name__ == "__main__":
    main()
