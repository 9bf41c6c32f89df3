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

# torch and scipy are imported inside the functions that need them: export_h5ad (envs/data.yaml,
# no torch) and summarize import only RISK_COLUMNS / ranking_metrics from here, and start faster

#: the columns of risk_genes.tsv (before annotation columns), in order
RISK_COLUMNS = (
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
)


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
        from scipy import stats

        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


def welch(a, b):
    """Welch t statistic and two-sided p-value per column."""
    return welch_from_moments(*_moments(np.asarray(a, float)), *_moments(np.asarray(b, float)))


def _moments(v):
    n = len(v)
    return n, v.mean(axis=0), v.var(axis=0, ddof=1) if n > 1 else np.full(v.shape[1:], np.nan)


def welch_from_moments(n1, mean1, var1, n2, mean2, var2):
    """Welch t statistic and two-sided p-value from group sizes, means and variances (ddof=1).

    The numbers of ``scipy.stats.ttest_ind(a, b, equal_var=False)``; genes with no
    variance in either group (or a group of one) get t 0 and p 1.
    """
    from scipy import stats

    # constant genes within a group make scipy warn about precision; their t is 0, p 1
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t, p = stats.ttest_ind_from_stats(mean1, np.sqrt(var1), n1, mean2, np.sqrt(var2), n2, equal_var=False)
    return np.nan_to_num(t), np.where(np.isfinite(p), p, 1.0)


def log_moments(x, mask, transform, block=512):
    """Size, per-gene mean and variance (ddof=1) of the log-scale (unscaled) values of ``x[mask]``.

    Blocks of genes at a time: the float64 temporaries are ``mask.sum() x block``.
    """
    n = int(mask.sum())
    mean, var = np.empty(x.shape[1]), np.full(x.shape[1], np.nan)
    for j in range(0, x.shape[1], block):
        cols = slice(j, j + block)
        v = transform.unscale(x[mask, cols], cols)
        mean[cols] = v.mean(axis=0)
        if n > 1:
            var[cols] = v.var(axis=0, ddof=1)
    return n, mean, var


def decoded_log(model, transform, z, library_all, library):
    """Decoder output of latent points mapped to log space (pre-scaling)."""
    return model.to_log_space(model.px_mean(z, library).astype(np.float64), transform, library_all)


def mean_decoded_shift(model, transform, base, shift, library_all, library, block=256):
    """Mean over ``base`` points of decode(z + shift) - decode(z), log space, in blocks of points."""
    total = np.zeros(len(transform.genes))
    for i in range(0, len(base), block):
        s = slice(i, i + block)
        z, la, lb = base[s], library_all[s], library[s]
        total += (decoded_log(model, transform, z + shift, la, lb) - decoded_log(model, transform, z, la, lb)).sum(axis=0)
    return total / max(len(base), 1)


def contrast_names(condition, case=None, control=None):
    """Names of the contrasts of ``condition``, in the order the workflow numbers them (1, 2, ...)."""
    return [name for name, _, _ in contrasts(condition, case, control)]


def rank_contrast(model, cohort, transform, name, case_m, ctrl_m, latent_fdr=0.05, mu=None):
    """(risk gene table sorted by ``vae_rank``, latent dimension table) of one contrast."""
    if mu is None:
        from .evaluate import encode

        mu, _ = encode(model, cohort.x)
    scale = np.asarray(transform.scale)
    to_log2 = np.log2(transform.log_base)
    t_dim, p_dim = welch(mu[case_m], mu[ctrl_m])
    fdr_dim = bh(p_dim)
    shift = mu[case_m].mean(axis=0) - mu[ctrl_m].mean(axis=0)
    used = fdr_dim < latent_fdr
    if not used.any():
        used = np.ones_like(used)
    shift = np.where(used, shift, 0.0)
    sd = np.sqrt((mu[case_m].var(axis=0, ddof=1) + mu[ctrl_m].var(axis=0, ddof=1)) / 2)
    dims = pd.DataFrame(
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
    delta_log = mean_decoded_shift(
        model, transform, mu[ctrl_m], shift, cohort.library_all[ctrl_m], cohort.library[ctrl_m]
    )
    vae_score = delta_log / scale
    case_stats = log_moments(cohort.x, case_m, transform)
    ctrl_stats = log_moments(cohort.x, ctrl_m, transform)
    t, p = welch_from_moments(*case_stats, *ctrl_stats)
    lfc = (case_stats[1] - ctrl_stats[1]) * to_log2
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
    return df.sort_values("vae_rank")[list(RISK_COLUMNS)], dims


def annotate(risk, annotation):
    """``risk`` with the gene table's annotation columns (symbol, description, ...) joined on."""
    if annotation is None or annotation.shape[1] == 0:
        return risk
    ann = annotation.drop(columns=[c for c in annotation.columns if c in RISK_COLUMNS], errors="ignore")
    return risk.merge(ann, left_on="gene", right_index=True, how="left")


def rank_genes(model, cohort, transform, case=None, control=None, latent_fdr=0.05, annotation=None):
    """(risk gene table, latent dimension table) of every contrast, in contrast order."""
    from .evaluate import encode

    mu, _ = encode(model, cohort.x)
    tables, dims = [], []
    for name, case_m, ctrl_m in contrasts(cohort.condition, case, control):
        table, dim = rank_contrast(model, cohort, transform, name, case_m, ctrl_m, latent_fdr, mu=mu)
        tables.append(table)
        dims.append(dim)
    risk = pd.concat(tables, ignore_index=True)
    return annotate(risk, annotation), pd.concat(dims, ignore_index=True)


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
