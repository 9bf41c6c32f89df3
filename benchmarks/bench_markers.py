#!/usr/bin/env python3
"""Known markers of the shared datasets: their ranks by both risk-gene routes, and whether the VAE
route called genes or abstained.

    python benchmarks/bench_markers.py [--json]

Runs the library as the workflow does (collect -> preprocess -> train -> risk genes per contrast,
the classical route on every collected gene), with the workflow's defaults (model.hidden auto, one
training round, seed 1, torch on one thread), on the datasets of ../shared/data that are present.
The markers are those the datasets' PROVENANCE.md names. A marker's rank is among the modelled genes
for the VAE route and among all collected genes for the moderated t-test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import _common
from _common import machine

SHARED = _common.REPO.parent / "shared" / "data"
SPLIT = {"train": 0.7, "val": 0.15, "test": 0.15}

#: dataset, value type, condition column, preprocess settings, (marker gene, contrast) pairs
CASES = [
    ("golub_all_aml", "intensity", "label", dict(intensity_floor=100, intensity_ceiling=16000),
     dict(case="AML", control="ALL"),
     [("M23197_at", "AML_vs_ALL"), ("M27891_at", "AML_vs_ALL"), ("X95735_at", "AML_vs_ALL")]),
    ("khan_srbct", "log", "tumour_type", dict(log_base="e"), {},
     [("V1389", "EWS_vs_rest"), ("V545", "EWS_vs_rest"), ("V1955", "RMS_vs_rest"), ("V1003", "RMS_vs_rest")]),
    ("pbmc68k_reduced", "log", "bulk_labels", dict(log_base="e", n_top_genes=None), {},
     [("CD79A", "CD19+ B_vs_rest"), ("GNLY", "CD56+ NK_vs_rest"), ("NKG7", "CD56+ NK_vs_rest"),
      ("CD8A", "CD8+ Cytotoxic T_vs_rest")]),
]


def run_case(tmp, name, value_type, condition, pre, contrast_kw, markers):
    import numpy as np
    import torch

    from genovae import collect, dataset, de, loop, preprocess, risk, train

    torch.set_num_threads(1)
    d = SHARED / name
    out = {k: str(tmp / k) for k in ("m.parquet", "s.tsv", "g.tsv", "man.json", "f.parquet", "split.tsv", "t.json")}
    collect.collect(d / "expression.tsv", d / "samples.tsv", out_matrix=out["m.parquet"], out_samples=out["s.tsv"],
                    out_genes=out["g.tsv"], out_manifest=out["man.json"], value_type=value_type,
                    condition=condition, split=SPLIT, **contrast_kw)
    t = preprocess.preprocess(out["m.parquet"], out["s.tsv"], out_features=out["f.parquet"], out_split=out["split.tsv"],
                              out_transform=out["t.json"], condition=condition, value_type=value_type, split=SPLIT,
                              seed=1, **pre)
    cohort = dataset.load_cohort(out["f.parquet"], out["split.tsv"], out["m.parquet"], "gaussian")
    n_train = int(cohort.mask("train").sum())
    hidden = loop.auto_hidden(n_train, len(cohort.genes), 10)
    with open(tmp / "train.log", "w") as log:
        vae, _, _ = train.train_vae(cohort, model_config=dict(hidden=hidden, latent_dim=10, dropout=0.1,
                                                              batch_norm=True, likelihood="gaussian"),
                                    epochs=300, batch_size=32, lr=1e-3, kl_warmup_epochs=20, patience=30, seed=1,
                                    device="cpu", progress=log)
    rows, routes = [], []
    for cname, case_m, ctrl_m in risk.contrasts(cohort.condition, contrast_kw.get("case"), contrast_kw.get("control")):
        wanted = [g for g, c in markers if c == cname]
        if not wanted:
            continue
        classical, _ = de.classical_route(out["m.parquet"], t, cohort.sample_ids, cohort.library_all, case_m, ctrl_m)
        table, _, route = risk.rank_contrast(vae, cohort, t, cname, case_m, ctrl_m, classical=classical, seed=2)
        routes.append(route)
        by_gene = table.set_index("gene")
        for g in wanted:
            r = by_gene.loc[g]
            rows.append({"dataset": name, "contrast": cname, "gene": g,
                         "vae_rank": None if r["vae_rank"] is None or np.isnan(float(r["vae_rank"])) else int(r["vae_rank"]),
                         "vae_call": bool(r["vae_call"]), "classical_rank": int(r["classical_rank"]),
                         "fdr": float(r["fdr"]), "n_modelled": len(cohort.genes), "n_genes": len(table)})
    return {"dataset": name, "hidden": hidden, "n_train": n_train, "markers": rows, "routes": routes}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = []
    for case in CASES:
        if not (SHARED / case[0]).is_dir():
            print(f"skipped {case[0]}: not in {SHARED}")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run_case(Path(tmp), *case))
    info = {"machine": machine(), "results": results}
    for res in results:
        for route in res["routes"]:
            print(f"{res['dataset']:16s} {route['contrast']:28s} VAE {route['vae_status']}, {route['vae_calls']} calls; "
                  f"t-test {route['classical_fdr_0_05']} at FDR < 0.05")
        for m in res["markers"]:
            print(f"  {m['gene']:10s} {m['contrast']:28s} VAE rank {m['vae_rank']} of {m['n_modelled']}"
                  f"{' (called)' if m['vae_call'] else ''}; t-test rank {m['classical_rank']} of {m['n_genes']}")
    if args.json:
        out = _common.REPO / "benchmarks" / "runs" / "bench_markers.json"
        out.write_text(json.dumps(info, indent=2, default=str) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
