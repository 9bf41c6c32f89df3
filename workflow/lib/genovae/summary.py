"""summary.json: the run at a glance (data, rounds, selected model, metrics)."""

from __future__ import annotations

import pandas as pd

from . import io
from .loop import METRICS
from .risk import ranking_metrics
from .verdict import build_verdict

HEADLINE = ("recon_mse", "r2", "loss", "kl", "active_units", "pca_recon_mse", "mse_ratio_pca")


def summarize(
    *,
    run,
    manifest,
    split,
    transform,
    selection,
    test,
    risk,
    truth,
    out_summary,
    round_metrics=(),
    latent_dim=None,
    condition="condition",
    synthetic=None,
    routes=None,
    known_genes=(),
    prediction=None,
):
    """summary.json, with the verdict (genovae.verdict) and every warning of the run in one list.

    ``round_metrics``: the metrics.json of every round run (the selected one is used).
    """
    man = io.read_json(manifest)
    sel = io.read_json(selection)
    met = io.read_json(test)
    tr = io.read_json(transform)
    sp = io.read_split(split)
    metrics = {
        f"{part}_{k}": met[f"{part}_{k}"] for part in ("val", "test") for k in HEADLINE if f"{part}_{k}" in met
    }
    summary = {
        "run": run,
        "n_samples": int(len(sp)),
        "n_genes": len(tr["genes"]),
        "n_genes_input": int(man["shape_after"][1]),
        "value_type": man["value_type"],
        "split": sp["split"].value_counts().reindex(["train", "val", "test"], fill_value=0).to_dict(),
        "groups": sp["condition"].value_counts().sort_index().to_dict(),
        "device": sel["device"]["used"],
        "device_name": sel["device"]["name"],
        "device_note": sel["device"].get("fallback"),
        "rounds_run": sel["rounds_run"],
        "max_rounds": sel["max_rounds"],
        "selected_round": sel["selected_round"],
        "metric": sel["metric"],
        "threshold": sel["threshold"],
        "threshold_met": sel["threshold_met"],
        "rounds": sel["rounds"],
        "metrics": metrics,
        "warnings": man.get("warnings", []),
        "latent_vs_pca": _latent_vs_pca(met.get("labels", [])),
        "privacy": _privacy(man, sel),
    }
    if summary["privacy"]["dp"].get("stop_reason"):
        summary["loop_stop_reason"] = summary["privacy"]["dp"]["stop_reason"]
    elif sel.get("loop_stop_reason"):
        summary["loop_stop_reason"] = sel["loop_stop_reason"]
    by_round = {int(m["round"]): m for m in map(io.read_json, round_metrics)}
    batch_cols = [c.split(":", 1)[1] for c in sp.columns if c.startswith("covariate:")]  # analysis.batch
    summary["verdict"] = build_verdict(
        selection=sel,
        test_metrics=met,
        round_metrics=by_round.get(int(sel["selected_round"]), {}),
        latent_dim=int(latent_dim if latent_dim is not None else len(met.get("val_kl_per_dim", []))),
        condition=condition,
        direction=METRICS.get(sel["metric"], "min"),
        stop_reason=summary.get("loop_stop_reason"),
        batch=batch_cols,
    )
    # one list of everything a user should know: data warnings from collect, then the verdict's,
    # then the risk-gene routes' (a VAE route that abstained says why)
    summary["warnings"] = summary["warnings"] + summary["verdict"]["warnings"]
    if routes:
        summary["risk_routes"] = io.read_json(routes)
        for r in summary["risk_routes"]:
            if str(r.get("vae_status", "")).startswith("abstained"):
                summary["warnings"].append(
                    f"risk genes, {r['contrast']}: the VAE route {r['vae_status']}; it calls no genes — use the "
                    f"classical route ({r.get('classical_fdr_0_05', 0)} genes at FDR < 0.05)"
                )
    if batch_cols:  # analysis.batch
        summary["batch"], extra = batch_block(sp, met.get("labels", []), batch_cols)
        summary["warnings"] += extra
    if synthetic:
        syn = io.read_json(synthetic)
        summary["synthetic"] = {k: syn[k] for k in ("n_synthetic", "n_per_condition", "fidelity", "utility", "privacy")}
        if warning := privacy_warning(syn["privacy"]):
            summary["warnings"].append(warning)
    if prediction:
        from .predict import summary_block

        summary["prediction"], extra = summary_block(prediction)
        summary["warnings"] += extra
    if known_genes:
        summary["known_genes"] = known_gene_ranks(io.read_risk(risk), known_genes)
    if truth:
        planted = pd.read_csv(truth, sep="\t")["gene"].astype(str).tolist()
        r = io.read_risk(risk)
        summary["ranking"] = ranking_metrics(r, planted)
    io.write_json(out_summary, summary)
    return summary


#: below this kNN batch-mixing score (1 = neighbours as mixed as at random) the latent space separates batches
MIXING_WARN = 0.5
#: conditioning on the batch "costs biology" when the condition's kNN accuracy drops by more than this
CONSERVATION_DROP = 0.1


def batch_block(split, label_rows, columns):
    """analysis.batch in summary.json: per batch column, its levels, how they cross the condition,
    the integration scores of each representation, and the warnings a user must read."""
    block, warnings = {}, []
    rows = [r for r in label_rows if r.get("scope") == "all"]

    def score(label, key):
        return {r["representation"]: r[key] for r in rows
                if r["label"] == label and r.get(key) is not None and r[key] == r[key]}

    condition_rows = [r for r in rows if r["label"] not in columns]
    for col in columns:
        table = pd.crosstab(split[f"covariate:{col}"], split["condition"])
        pure = [str(b) for b, row in table.iterrows() if (row > 0).sum() == 1 and table.shape[1] > 1]
        mixing, asw = score(col, "batch_mixing"), score(col, "batch_asw")
        block[col] = {
            "levels": {str(k): int(v) for k, v in split[f"covariate:{col}"].value_counts().sort_index().items()},
            "single_condition_batches": pure,
            "batch_mixing": mixing,
            "batch_asw": asw,
            "batch_knn_accuracy": score(col, "knn_accuracy"),
        }
        if pure:
            warnings.append(
                f"batch {col}: {len(pure)} of {table.shape[0]} batches hold one condition only "
                f"({', '.join(pure[:5])}): the batch is confounded with the condition there, and conditioning "
                "on it can remove the condition's signal"
            )
        vae = mixing.get("vae")
        if vae is not None and vae < MIXING_WARN:
            others = "; ".join(f"{name} {mixing[key]:.2f}" for key, name in
                               (("vae_plain", "the same model without the covariate"), ("pca", "PCA"))
                               if key in mixing)
            warnings.append(
                f"batch {col}: the latent space still separates the batches (kNN batch mixing {vae:.2f} of 1"
                f"{'; ' + others if others else ''}); compare biology across batches with care"
            )
    if condition_rows:
        cond = condition_rows[0]["label"]
        acc = score(cond, "knn_accuracy")
        block["condition_knn_accuracy"] = acc
        if "vae" in acc and "vae_plain" in acc and acc["vae_plain"] - acc["vae"] > CONSERVATION_DROP:
            warnings.append(
                f"conditioning on the batch lowered the condition's kNN accuracy from {acc['vae_plain']:.2f} to "
                f"{acc['vae']:.2f}: the batch may carry part of the biology"
            )
    return block, warnings


def privacy_warning(p):
    """The summary's warning when the synthetic cohort fails its privacy check (``genovae.synthetic.privacy_metrics``;
    None when it passes)."""
    if p.get("passed", True):
        return None
    parts = []
    if p.get("membership_auc") is not None:
        lo, hi = p["membership_advantage_ci"]
        level = round(100 * p["membership_ci_level"])
        parts.append(
            f"membership-inference AUC {p['membership_auc']:.2f} (advantage {p['membership_advantage']:.2f}, "
            f"{level} % interval {lo:.2f} to {hi:.2f})"
        )
    if p.get("n_near_copies") is not None:
        parts.append(f"{p['n_near_copies']} of {p['n_synthetic']} synthetic samples are near-copies of a training record")
    return (
        f"synthetic cohort: {p['verdict']}: {'; '.join(parts)} — do not share it as anonymous; "
        "see docs/privacy.md"
    )


def _privacy(manifest, selection):
    """Pseudonymisation (from the collect manifest) and the DP budget spent (from the selection)."""
    pseudo = manifest.get("privacy") or {"pseudonymized": False}
    return {
        "pseudonymized": bool(pseudo.get("pseudonymized")),
        **({"key_id": pseudo["key_id"]} if pseudo.get("key_id") else {}),
        "dp": _dp_block(selection) or {"enabled": False},
    }


def _dp_block(selection):
    """The ``privacy.dp`` part of summary.json from the selection (None without DP). Read here, not
    in genovae.privacy, which imports torch: a summary costs no second of start-up for it."""
    rounds = [r for r in selection.get("rounds", []) if r.get("epsilon") is not None]
    last = selection.get("privacy")
    if not last:
        return None
    info = selection.get("train_info", {}).get("dp", {})
    return {
        "enabled": True,
        "mechanism": "DP-SGD (Poisson sampling, per-sample clipping, Gaussian noise; Opacus RDP accountant)",
        "target_epsilon_per_round": info.get("target_epsilon"),
        "delta": last.get("delta"),
        "max_grad_norm": info.get("max_grad_norm"),
        "epsilon_per_round": {str(r["round"]): r["epsilon"] for r in rounds},
        "epsilon_spent": last.get("epsilon_total"),
        "total_epsilon_budget": last.get("total_epsilon"),
        "selected_round_noise_multiplier": info.get("noise_multiplier"),
        "stop_reason": last.get("reason"),
    }


def _latent_vs_pca(rows):
    """{label: {scope: {metric: {"vae": x, "pca": y}}}} from the label-metric rows."""
    out = {}
    for row in rows:
        scope = out.setdefault(row["label"], {}).setdefault(row["scope"], {})
        for key, value in row.items():
            if key in ("label", "scope", "representation", "n", "groups") or value is None:
                continue
            if isinstance(value, float) and value != value:  # NaN: metric not defined here
                continue
            scope.setdefault(key, {})[row["representation"]] = value
    return out


def known_gene_ranks(risk, known):
    """Per contrast and known gene (matched by id, else by symbol, ignoring case): its ranks by both routes.

    A user's positive controls: where the markers of the condition land says more about a ranking
    than its length.
    """
    from .annotation import symbol_column

    sym = symbol_column(risk.columns)
    rows = []
    for contrast, sub in risk.groupby("contrast", sort=False):
        ids = sub["gene"].astype(str).str.upper()
        symbols = sub[sym].astype(str).str.upper() if sym else None
        modelled = sub["in_model"].astype(str).str.lower().eq("true") if "in_model" in sub else pd.Series(True, sub.index)
        for gene in known:
            hit = sub[ids == str(gene).upper()]
            if hit.empty and symbols is not None:
                hit = sub[symbols == str(gene).upper()]
            if hit.empty:
                rows.append({"contrast": contrast, "gene": gene, "found": False})
                continue
            r = hit.sort_values("classical_rank").iloc[0]
            rows.append({
                "contrast": contrast,
                "gene": gene,
                "found": True,
                "id": str(r["gene"]),
                "vae_rank": None if pd.isna(r.get("vae_rank")) else int(r["vae_rank"]),
                "vae_call": str(r.get("vae_call")).lower() == "true",
                "classical_rank": int(r["classical_rank"]),
                "fdr": float(r["fdr"]),
                "log2_fold_change": float(r["log2_fold_change"]),
                "n_modelled": int(modelled.sum()),
                "n_genes": int(len(sub)),
            })
    return rows
