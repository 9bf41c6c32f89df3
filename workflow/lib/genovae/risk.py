"""Condition-associated ("risk") gene ranking, by two documented routes.

For each contrast (``case`` vs ``control``, or each group vs the rest):

1. **Latent route** (``vae_*`` columns). Latent means of case and control
   samples are compared dimension by dimension (Welch t-test, Benjamini-Hochberg
   FDR; written to ``latent_dims.tsv``). The shift between the case and control
   centroids, restricted to the dimensions with FDR < ``latent_fdr`` (all
   dimensions when none pass), is pushed through the decoder: for every control
   sample ``z``, ``decode(z + shift) - decode(z)`` is computed in the
   preprocessed space and averaged over the control samples. ``vae_score`` is
   that expected change (in units of the scaled data, e.g. standard deviations
   for z-scores), ``vae_log2_fold_change`` the same change in log2 units, and
   ``vae_rank`` orders genes by ``|vae_score|``.
2. **Classical route**: a Welch t-test per gene on the log-scale
   (pre-scaling) values, Benjamini-Hochberg FDR, and log2 fold change of the
   group means; ``classical_rank`` orders genes by p-value.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .evaluate import encode


#: with two groups and no case/control given, a group with one of these names is the control
CONTROL_NAMES = {"control", "ctrl", "normal", "healthy", "wt", "wildtype", "wild_type", "untreated"}


def contrasts(condition, case=None, control=None):
    """List of (name, case_mask, control_mask).

    Two groups without case/control: the group named like a control (see
    ``CONTROL_NAMES``) is the control, else the first in sort order.
    """
    condition = np.asarray(condition).astype(str)
    if case is not None and control is not None:
        return [(f"{case}_vs_{control}", condition == case, condition == control)]
    levels = sorted(set(condition))
    if len(levels) == 2:
        a, b = levels
        if b.lower() in CONTROL_NAMES and a.lower() not in CONTROL_NAMES:
            a, b = b, a
        return [(f"{b}_vs_{a}", condition == b, condition == a)]
    return [(f"{lvl}_vs_rest", condition == lvl, condition != lvl) for lvl in levels]


def bh(p):
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


def welch(a, b):
    """Welch t statistic and two-sided p-value per column."""
    # constant genes within a group make scipy warn about precision; their t is 0, p 1
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t, p = stats.ttest_ind(a, b, axis=0, equal_var=False)
    return np.nan_to_num(t), np.where(np.isfinite(p), p, 1.0)


@torch.no_grad()
def decoded_log(model, transform, z, library_all, library):
    """Decoder output of latent points mapped to log space (pre-scaling)."""
    dec = model.decode(torch.as_tensor(z, dtype=torch.float32))
    mean = model.mean(dec, torch.as_tensor(library, dtype=torch.float32)).numpy().astype(np.float64)
    if model.likelihood == "nb":
        return transform.counts_to_log(mean, library_all)
    return transform.unscale(mean)


def rank_genes(model, cohort, transform, case=None, control=None, latent_fdr=0.05, annotation=None):
    """Return (risk gene table, latent dimension table)."""
    mu, _ = encode(model, cohort.x)
    logx = transform.unscale(cohort.x)
    scale = np.asarray(transform.scale)
    to_log2 = np.log2(transform.log_base)
    tables, dims = [], []
    for name, case_m, ctrl_m in contrasts(cohort.condition, case, control):
        t_dim, p_dim = welch(mu[case_m], mu[ctrl_m])
        fdr_dim = bh(p_dim)
        shift = mu[case_m].mean(axis=0) - mu[ctrl_m].mean(axis=0)
        used = fdr_dim < latent_fdr
        if not used.any():
            used = np.ones_like(used)
        shift = np.where(used, shift, 0.0)
        sd = np.sqrt((mu[case_m].var(axis=0, ddof=1) + mu[ctrl_m].var(axis=0, ddof=1)) / 2)
        dims.append(
            pd.DataFrame(
                {
                    "contrast": name,
                    "dimension": [f"z{i + 1}" for i in range(mu.shape[1])],
                    "mean_difference": mu[case_m].mean(axis=0) - mu[ctrl_m].mean(axis=0),
                    "cohens_d": np.divide(shift, sd, out=np.zeros_like(sd), where=sd > 0),
                    "t_stat": t_dim,
                    "p_value": p_dim,
                    "fdr": fdr_dim,
                    "used_for_genes": used,
                }
            )
        )
        base = mu[ctrl_m]
        lib_all = cohort.library_all[ctrl_m]
        lib = cohort.library[ctrl_m]
        delta_log = (
            decoded_log(model, transform, base + shift, lib_all, lib)
            - decoded_log(model, transform, base, lib_all, lib)
        ).mean(axis=0)
        vae_score = delta_log / scale
        t, p = welch(logx[case_m], logx[ctrl_m])
        lfc = (logx[case_m].mean(axis=0) - logx[ctrl_m].mean(axis=0)) * to_log2
        df = pd.DataFrame(
            {
                "contrast": name,
                "gene": cohort.genes,
                "vae_score": vae_score,
                "vae_log2_fold_change": delta_log * to_log2,
                "t_stat": t,
                "p_value": p,
                "fdr": bh(p),
                "log2_fold_change": lfc,
            }
        )
        df["vae_rank"] = _rank(-np.abs(df["vae_score"].to_numpy()))
        df["classical_rank"] = _rank(df["p_value"].to_numpy(), tiebreak=-np.abs(t))
        tables.append(df.sort_values("vae_rank"))
    risk = pd.concat(tables, ignore_index=True)
    cols = [
        "contrast",
        "gene",
        "vae_score",
        "vae_rank",
        "vae_log2_fold_change",
        "t_stat",
        "p_value",
        "fdr",
        "log2_fold_change",
        "classical_rank",
    ]
    risk = risk[cols]
    if annotation is not None and annotation.shape[1] > 0:
        ann = annotation.drop(columns=[c for c in annotation.columns if c in cols], errors="ignore")
        risk = risk.merge(ann, left_on="gene", right_index=True, how="left")
    return risk, pd.concat(dims, ignore_index=True)


def _rank(key, tiebreak=None):
    order = np.lexsort((np.zeros_like(key) if tiebreak is None else tiebreak, key))
    ranks = np.empty(len(key), int)
    ranks[order] = np.arange(1, len(key) + 1)
    return ranks


def ranking_metrics(risk, truth_genes):
    """precision@k and recall@k (k = number of planted genes) of both rankings."""
    truth = set(truth_genes)
    k = len(truth)
    out = {}
    if k == 0:
        return out
    for contrast, df in risk.groupby("contrast", sort=False):
        entry = {"k": k}
        for route, col in (("vae", "vae_rank"), ("classical", "classical_rank")):
            top = set(df.nsmallest(k, col)["gene"])
            hits = len(top & truth)
            entry[f"{route}_precision_at_k"] = hits / k
            entry[f"{route}_recall_at_k"] = hits / len(truth & set(df["gene"])) if truth & set(df["gene"]) else 0.0
        out[contrast] = entry
    return out
