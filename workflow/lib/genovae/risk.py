"""Condition-associated ("risk") genes, by two routes with error control.

For each contrast (``case`` vs ``control``, or each group vs the rest):

1. **VAE route** (``vae_*`` columns), on the modelled genes. Latent means of the
   two groups are compared dimension by dimension (Welch t-test, Benjamini-Hochberg
   FDR; ``latent_dims.tsv``). Then the posterior is sampled (``vae_draws`` draws):
   each draw takes ``z ~ q(z|x)`` for every sample of the contrast (at most
   ``POSTERIOR_PER_GROUP`` per group, a seeded subsample of a larger one), decodes it to
   log expression at one common library size, and weights the samples with a
   Bayesian bootstrap; the draw's log2 fold change is the difference of the two
   groups' weighted means. Over the draws, per gene: the mean
   (``vae_log2_fold_change``, a denoised fold change — the decoder shrinks it towards
   0 compared with the observed one), its spread (``vae_lfc_sd``),
   ``vae_proba_de`` = P(|log2 fold change| > ``lfc_delta``), the Bayes factor
   ``log(p / (1 - p))`` and ``vae_score``, the conservative effect: the 5 % posterior
   quantile of the change's magnitude in the direction of its mean (log2; 0 when the
   draws disagree on the sign), which orders ``vae_rank``. Genes are called
   (``vae_call``) by the posterior expected FDR, as scvi-tools does: the longest
   top list (by ``vae_proba_de``) whose mean ``1 - vae_proba_de`` is at most
   ``risk_fdr``. The route **abstains** (``vae_status``; no calls) when no latent
   dimension separates the groups at ``latent_fdr``, or when its ranking is no
   stronger than under permuted labels: the mean ``vae_score`` of its top 20 genes
   is compared with the same figure for ``vae_permutations`` label permutations
   (same draws and weights), a permutation p-value above 0.05 abstains.
2. **Classical route**, on every collected gene (not only the modelled ones): a
   moderated t-test (limma's empirical Bayes, Smyth 2004; with a mean-variance trend
   for counts, as limma-trend) on the log-scale values, Benjamini-Hochberg FDR, and the
   log2 fold change of the group means; ``classical_rank`` orders genes by p-value.
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
    "in_model",
    "vae_rank",
    "vae_call",
    "vae_status",
    "vae_proba_de",
    "vae_bayes_factor",
    "vae_log2_fold_change",
    "vae_lfc_sd",
    "vae_score",
    "ave_log2",
    "log2_fold_change",
    "t_stat",
    "p_value",
    "fdr",
    "classical_rank",
)

#: genes in the permutation statistic (mean |vae_score| of the top genes)
PERMUTATION_TOP = 20
#: the permutation p-value above which the VAE route abstains
PERMUTATION_LEVEL = 0.05


#: samples per group in the posterior draws: a larger group is subsampled (seeded). The groups' mean
#: decoded expression is then known to well within the draws' spread, and a 200,000-cell cohort costs
#: 32 draws x 4,000 decodes per contrast instead of 32 x 200,000
POSTERIOR_PER_GROUP = 2000


def posterior_samples(idx, lab, seed, per_group=POSTERIOR_PER_GROUP):
    """``idx`` (the contrast's samples) with each group (``lab`` True / False) cut to ``per_group``
    samples by a seeded draw without replacement; unchanged when both groups are smaller."""
    keep = np.ones(len(idx), bool)
    rng = np.random.default_rng([int(seed), 1])  # its own stream: the draws' stream is unchanged
    for group in (lab, ~lab):
        members = np.flatnonzero(group)
        if len(members) > per_group:
            keep[members] = False
            keep[np.sort(rng.choice(members, per_group, replace=False))] = True
    return idx[keep], lab[keep]


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


def expected_fdr_calls(proba, fdr, tiebreak=None):
    """Boolean calls: the longest top list (by ``proba`` descending) whose mean ``1 - proba`` is <= ``fdr``."""
    proba = np.nan_to_num(np.asarray(proba, float), nan=0.0)
    order = np.lexsort((np.zeros_like(proba) if tiebreak is None else -np.abs(tiebreak), -proba))
    ok = np.cumsum(1.0 - proba[order]) / np.arange(1, len(proba) + 1) <= fdr
    calls = np.zeros(len(proba), bool)
    if ok.any():
        calls[order[: int(np.flatnonzero(ok)[-1]) + 1]] = True
    return calls


def posterior_change(model, cohort, transform, case_m, ctrl_m, *, draws=32, permutations=49, delta=0.25,
                     seed=0, mu=None, logvar=None, block=256):
    """Posterior log2 fold changes of the decoded expression, case vs control (see the module docstring).

    Returns a dict of per-gene arrays for the true labels (``mean``, ``sd``, ``proba``, ``score``) and
    ``perm_top`` / ``true_top``: the permutation statistic under ``permutations`` label permutations
    and under the true labels. Memory: ``(1 + permutations) x draws x genes`` float32. Groups of more
    than ``POSTERIOR_PER_GROUP`` samples are subsampled (:func:`posterior_samples`).
    """
    from .evaluate import encode

    idx = np.flatnonzero(np.asarray(case_m) | np.asarray(ctrl_m))
    idx, lab = posterior_samples(idx, np.asarray(case_m)[idx], seed)
    if mu is None or logvar is None:
        mu, logvar = encode(model, cohort.inputs(), rows=idx)
    else:
        mu, logvar = mu[idx], logvar[idx]
    rng = np.random.default_rng(seed)
    labellings = np.stack([lab] + [rng.permutation(lab) for _ in range(int(permutations))])
    sd = np.exp(0.5 * np.asarray(logvar, np.float64))
    m, n_genes = len(idx), len(cohort.genes)
    # one common library size: the decoded expression compares the groups, not their sequencing depth
    lib_all = np.full(m, float(np.median(cohort.library_all[idx])))
    lib = np.full(m, float(np.median(cohort.library[idx])), dtype=np.float32)
    to_log2 = np.log2(transform.log_base)
    lfc = np.empty((len(labellings), int(draws), n_genes), np.float32)
    for d in range(int(draws)):
        z = mu + sd * rng.standard_normal(mu.shape)
        w = rng.exponential(size=m)  # Bayesian bootstrap: the samples are a draw from their population
        wc, wt = labellings * w, (~labellings) * w
        sum_c = np.zeros((len(labellings), n_genes))
        sum_t = np.zeros((len(labellings), n_genes))
        for i in range(0, m, block):
            sl = slice(i, i + block)
            dec = decoded_log(model, transform, z[sl], lib_all[sl], lib[sl])
            sum_c += wc[:, sl] @ dec
            sum_t += wt[:, sl] @ dec
        lfc[:, d] = (sum_c / wc.sum(axis=1)[:, None] - sum_t / wt.sum(axis=1)[:, None]) * to_log2
    mean = lfc.mean(axis=1, dtype=np.float64)
    spread = lfc.std(axis=1, ddof=1, dtype=np.float64) if draws > 1 else np.zeros_like(mean)
    proba = (np.abs(lfc) > delta).mean(axis=1, dtype=np.float64)
    # the conservative effect: the 5 % posterior quantile of the change in the direction of its mean
    # (0 when the draws disagree on the sign): large and certain changes first
    direction = np.where(mean >= 0, 1.0, -1.0)[:, None, :]
    score = np.clip(np.quantile(lfc * direction, 0.05, axis=1), 0.0, None)
    k = min(PERMUTATION_TOP, n_genes)
    top = -np.sort(-score, axis=1)[:, :k].mean(axis=1)
    return {"mean": mean[0], "sd": spread[0], "proba": proba[0], "score": score[0],
            "true_top": float(top[0]), "perm_top": top[1:]}


def rank_contrast(model, cohort, transform, name, case_m, ctrl_m, latent_fdr=0.05, mu=None, *, logvar=None,
                  classical=None, draws=32, permutations=49, lfc_delta=0.25, risk_fdr=0.05, seed=0):
    """(risk gene table sorted by ``vae_rank``, then ``classical_rank``; latent dimension table; route summary)
    of one contrast.

    ``classical``: the classical route's table (:func:`genovae.de.classical_route`, every collected gene);
    without it the moderated test runs on the modelled genes' log-scale values.
    """
    from .de import moderated_t

    if mu is None or logvar is None:
        from .evaluate import encode

        mu, logvar = encode(model, cohort.inputs())
    t_dim, p_dim = welch(mu[case_m], mu[ctrl_m])
    fdr_dim = bh(p_dim)
    diff = mu[case_m].mean(axis=0) - mu[ctrl_m].mean(axis=0)
    used = fdr_dim < latent_fdr
    sd = np.sqrt((mu[case_m].var(axis=0, ddof=1) + mu[ctrl_m].var(axis=0, ddof=1)) / 2)
    dims = pd.DataFrame(
        {
            "contrast": name,
            "dimension": [f"z{i + 1}" for i in range(mu.shape[1])],
            "mean_difference": diff,
            "cohens_d": np.divide(diff, sd, out=np.zeros_like(sd), where=sd > 0),
            "t_stat": t_dim,
            "p_value": p_dim,
            "fdr": fdr_dim,
            "separates_groups": used,
        }
    )
    post = posterior_change(model, cohort, transform, case_m, ctrl_m, draws=draws, permutations=permutations,
                            delta=lfc_delta, seed=seed, mu=mu, logvar=logvar)
    perm_p = float((1 + np.sum(post["perm_top"] >= post["true_top"])) / (1 + len(post["perm_top"])))
    if not used.any():
        status = f"abstained: no latent dimension separates the groups (FDR < {latent_fdr:g})"
    elif perm_p > PERMUTATION_LEVEL:
        status = f"abstained: ranking no stronger than under permuted labels (permutation p = {perm_p:.2f})"
    else:
        status = f"called (permutation p = {perm_p:.2f})"
    calls = expected_fdr_calls(post["proba"], risk_fdr, tiebreak=post["mean"])
    if status.startswith("abstained"):
        calls[:] = False
    vae = pd.DataFrame(
        {
            "gene": cohort.genes,
            "in_model": True,
            "vae_call": calls,
            "vae_status": status.split(" (")[0].split(":")[0],
            "vae_proba_de": post["proba"],
            "vae_bayes_factor": np.log((post["proba"] + 1e-8) / (1 - post["proba"] + 1e-8)),
            "vae_log2_fold_change": post["mean"],
            "vae_lfc_sd": post["sd"],
            "vae_score": post["score"],
        }
    )
    vae["vae_rank"] = _rank(-post["score"], tiebreak=-vae["vae_proba_de"].to_numpy())
    if classical is None:
        case_stats = log_moments(cohort.x, case_m, transform)
        ctrl_stats = log_moments(cohort.x, ctrl_m, transform)
        mt = moderated_t(*case_stats, *ctrl_stats)
        to_log2 = np.log2(transform.log_base)
        both = case_m | ctrl_m
        classical = pd.DataFrame(
            {
                "gene": cohort.genes,
                "ave_log2": (case_stats[1] * case_stats[0] + ctrl_stats[1] * ctrl_stats[0])
                / max(int(both.sum()), 1) * to_log2,
                "log2_fold_change": (case_stats[1] - ctrl_stats[1]) * to_log2,
                "t_stat": mt["t"],
                "p_value": mt["p"],
                "fdr": bh(mt["p"]),
            }
        )
    classical = classical.copy()
    classical["classical_rank"] = _rank(classical["p_value"].fillna(1.0).to_numpy(),
                                        tiebreak=-np.abs(classical["t_stat"].fillna(0.0).to_numpy()))
    df = classical.merge(vae, on="gene", how="outer", sort=False)
    # the outer merge leaves object columns of True/False/NaN: NaN (a gene one route did not see) is
    # False (no fillna on object columns: pandas 2 warns that it downcasts)
    df["in_model"] = df["in_model"].eq(True)
    df["vae_call"] = df["vae_call"].eq(True)
    df["vae_status"] = df["vae_status"].fillna("not modelled")
    df["vae_rank"] = df["vae_rank"].astype("Int64")
    df["classical_rank"] = df["classical_rank"].astype("Int64")
    df.insert(0, "contrast", name)
    df = df.sort_values(["vae_rank", "classical_rank"], na_position="last", kind="stable")
    route = {
        "contrast": name,
        "vae_status": status,
        "vae_calls": int(calls.sum()),
        "permutation_p": perm_p,
        "latent_dims_separating": int(used.sum()),
        "classical_fdr_0_05": int((df["fdr"] < 0.05).sum()),
        "genes_tested_classical": int(df["p_value"].notna().sum()),
        "genes_modelled": len(cohort.genes),
    }
    return df[list(RISK_COLUMNS)].reset_index(drop=True), dims, route


def annotate(risk, annotation):
    """``risk`` with the gene table's annotation columns (symbol, description, ...) joined on."""
    if annotation is None or annotation.shape[1] == 0:
        return risk
    ann = annotation.drop(columns=[c for c in annotation.columns if c in RISK_COLUMNS], errors="ignore")
    return risk.merge(ann, left_on="gene", right_index=True, how="left")


def rank_genes(model, cohort, transform, case=None, control=None, latent_fdr=0.05, annotation=None, **route):
    """(risk gene table, latent dimension table) of every contrast, in contrast order.

    ``route``: the keyword settings of :func:`rank_contrast` (draws, permutations, lfc_delta, risk_fdr, seed).
    """
    from .evaluate import encode

    mu, logvar = encode(model, cohort.inputs())
    tables, dims = [], []
    for name, case_m, ctrl_m in contrasts(cohort.condition, case, control):
        table, dim, _ = rank_contrast(model, cohort, transform, name, case_m, ctrl_m, latent_fdr, mu=mu,
                                      logvar=logvar, **route)
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
