"""Synthetic cohorts from the selected model, and how good and how private they are.

Generation (per condition ``c``):

1. encode the training samples of ``c``: posterior means ``mu_i`` and variances;
2. fit a Gaussian to that condition's part of the latent space: mean of the
   ``mu_i``, covariance of the ``mu_i`` plus the average posterior variance
   (the moments of the aggregate posterior), and draw ``n_per_condition``
   latent points from it;
3. decode them and, with ``noise``, draw from the likelihood ``p(x | z)``
   (Gaussian with the learned gene-wise scale; negative binomial counts with
   the learned dispersion and a library size drawn from the condition's training
   samples; the Bernoulli likelihood gives its mean);
4. map them back to the input's space by inverting the preprocessing transform
   where it is invertible: unscale (z-score/min-max), then ``2^x`` for
   intensities, ``expm1(x) * library / target`` rounded to integers for counts;
   log values stay logs. Only the genes the model was trained on are written.

Evaluation, on the training genes in the model's (preprocessed) space unless
said otherwise; every number is in ``metrics.json``:

* **fidelity**: Pearson correlation of the per-gene means and of the per-gene
  variances of synthetic vs real training samples (log space; overall and per
  condition), and a *classifier two-sample test*: a random forest told to
  separate real training from synthetic samples (equal numbers,
  cross-validated); its AUC is 0.5 when it cannot (good), 1 when synthetic
  samples are trivially recognised;
* **utility**: a logistic regression (on 50 principal components of the real
  training samples) trained on the synthetic cohort and tested on the real
  held-out test samples (validation when there is no test split), next to the
  same classifier trained on the real training samples;
* **privacy**: the distance of each synthetic sample to the closest real
  *training* record vs to the closest real *held-out* record (validation + test;
  the training set is subsampled to the held-out size, 20 draws, so that the two
  reference sets are equally large). A ratio of medians near 1 and a share near
  0.5 of synthetic samples closer to a training than to a held-out record mean
  no memorisation; a ratio well below 1 means synthetic samples copy training
  records. ``n_identical_to_training`` counts exact copies.

Privacy of the synthetic cohort itself: it is generated from the model plus two
aggregates of the training data (each condition's latent mean and covariance,
the library sizes) and the preprocessing transform (train gene means and
scales). With ``privacy.dp`` the model is differentially private; these
aggregates are not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

PREFIX = "synthetic_"
DCR_DRAWS = 20


# --------------------------------------------------------------- generation
def latent_distribution(mu, logvar):
    """Mean and covariance of the aggregate posterior of a group of samples."""
    mean = mu.mean(axis=0)
    k = mu.shape[1]
    cov = np.cov(mu, rowvar=False).reshape(k, k) if len(mu) > 1 else np.zeros((k, k))
    return mean, cov + np.diag(np.exp(logvar).mean(axis=0))


def to_input_space(values, transform, lib_all):
    """Model-space values -> the input's value type (inverse of the transform where invertible)."""
    logx = transform.unscale(values)
    if transform.value_type == "counts":
        lib = np.where(lib_all > 0, lib_all, 1.0)
        return np.clip(np.rint(np.expm1(logx) * lib[:, None] / transform.library_size_target), 0, None)
    if transform.value_type == "intensity":
        return np.exp2(logx)
    return logx


def to_model_space(values, transform, lib_all):
    """Input-space values of the model's genes -> model space (the transform, as for real samples)."""
    if transform.value_type == "counts":
        return transform.scale_log(transform.counts_to_log(values, lib_all))
    return transform.scale_log(transform.to_log(values))


def sample_cohort(model, cohort, transform, *, n_per_condition, seed=1, noise=True):
    """Synthetic samples per training condition.

    Returns (ids, labels, values in the input's space, values in model space).
    """
    from .evaluate import encode

    rng = np.random.default_rng(seed)
    train = cohort.mask("train")
    conditions = sorted(set(cohort.condition[train].tolist()))
    labels, written, model_space = [], [], []
    for c in conditions:
        m = train & (cohort.condition == c)
        mu, logvar = encode(model, cohort.x, np.flatnonzero(m))
        mean, cov = latent_distribution(mu, logvar)
        z = rng.multivariate_normal(mean, cov, size=int(n_per_condition), method="eigh")
        pick = rng.integers(0, int(m.sum()), size=int(n_per_condition))
        library, lib_all = cohort.library[m][pick], cohort.library_all[m][pick]
        # draws from p(x|z): model-space values, or counts when the likelihood models counts
        obs = model.sample_observations(z, library, rng, noise)
        values = obs if model.space == "counts" else to_input_space(obs, transform, lib_all)
        written.append(values)
        model_space.append(to_model_space(values, transform, lib_all))
        labels += [c] * int(n_per_condition)
    width = max(4, len(str(len(labels))))
    ids = [f"{PREFIX}{i + 1:0{width}d}" for i in range(len(labels))]
    return ids, np.array(labels, dtype=object), np.vstack(written), np.vstack(model_space).astype(np.float64)


# --------------------------------------------------------------- evaluation
def _pearson(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def group_moments(x, labels, rows=None, transform=None):
    """Per-gene mean and variance (ddof=0) of ``x[rows]``, overall and per label.

    ``labels`` are those of ``x[rows]``. With ``transform`` the moments are of the
    log-scale values (``x`` is in model space; unscaling is affine per gene, so the
    moments map exactly). Read in blocks of rows: no copy of the matrix.
    """
    from .pca import column_moments

    rows = np.arange(len(x)) if rows is None else np.asarray(rows)
    labels = np.asarray(labels)

    def moments(r):
        mean, var = column_moments(x, r)
        if transform is not None:
            scale = np.asarray(transform.scale)
            mean, var = mean * scale + np.asarray(transform.center), var * scale**2
        return {"n": len(r), "mean": mean, "var": var}

    out = {"all": moments(rows)}
    for c in sorted(set(labels.tolist())):
        out[c] = moments(rows[labels == c])
    return out


def fidelity(real, syn):
    """Correlation of gene means and variances, synthetic vs real (moments from :func:`group_moments`)."""
    out = {
        "mean_correlation": _pearson(real["all"]["mean"], syn["all"]["mean"]),
        "variance_correlation": _pearson(real["all"]["var"], syn["all"]["var"]),
        "per_condition": {},
    }
    for c in sorted((set(real) & set(syn)) - {"all"}):
        r, s = real[c], syn[c]
        out["per_condition"][str(c)] = {
            "mean_correlation": _pearson(r["mean"], s["mean"]),
            "variance_correlation": _pearson(r["var"], s["var"]) if r["n"] > 1 else None,
        }
    return out


def _classifier(seed):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=2000, random_state=seed)


def two_sample_auc(real, syn, seed=1, threads=1, rows=None):
    """Cross-validated AUC of a random forest separating real (``real[rows]``) from synthetic samples
    (0.5 = indistinguishable).

    A random forest rather than a linear model: with many more genes than samples
    a linear classifier separates every training fold perfectly and then
    anti-learns (cross-validated AUC far below 0.5 for differences in spread).
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rng = np.random.default_rng(seed)
    rows = np.arange(len(real)) if rows is None else np.asarray(rows)
    n = min(len(rows), len(syn))
    if n < 2:
        return None
    r = real[rows[rng.choice(len(rows), n, replace=False)]]
    s = syn[rng.choice(len(syn), n, replace=False)]
    x = np.vstack([r, s])
    y = np.r_[np.zeros(n), np.ones(n)]
    folds = StratifiedKFold(n_splits=min(5, n), shuffle=True, random_state=seed)
    forest = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=int(threads))
    p = cross_val_predict(forest, x, y, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def _scores(clf, x, y):
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    out = {"balanced_accuracy": float(balanced_accuracy_score(y, clf.predict(x))), "auc": None}
    classes = list(clf.classes_)
    present = sorted(set(y))
    try:
        proba = clf.predict_proba(x)
        if len(classes) == 2 and len(present) == 2:
            out["auc"] = float(roc_auc_score(y == classes[1], proba[:, 1]))
        elif len(present) > 2 and set(present) <= set(classes):
            cols = [classes.index(c) for c in present]
            p = proba[:, cols] / proba[:, cols].sum(axis=1, keepdims=True)
            out["auc"] = float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=present))
    except ValueError:
        pass
    return out


def utility(real, train_rows, real_labels, syn, syn_labels, eval_rows, eval_labels, eval_split, seed=1,
            components=50):
    """Train on synthetic, test on real held-out samples (``real[eval_rows]``); next to train on real
    (``real[train_rows]``).

    Both classifiers (logistic regression) see the same ``components`` principal
    components, fitted on the real training samples (without copying them, see
    :mod:`genovae.pca`).
    """
    from . import pca as pca_

    out = {"eval_split": eval_split, "n_eval": int(len(eval_rows))}
    if len(eval_rows) == 0:
        return out
    k = int(min(components, len(train_rows) - 1, real.shape[1]))
    if k >= 1:
        pca = pca_.fit(real, train_rows, k, seed=seed)
        real_train, syn, eval_x = pca.transform(real, train_rows), pca.transform(syn), pca.transform(real, eval_rows)
        out["pca_components"] = k
    else:
        real_train, eval_x = real[train_rows], real[eval_rows]
    for name, (x, y) in {"train_on_synthetic": (syn, syn_labels), "train_on_real": (real_train, real_labels)}.items():
        if len(set(y)) < 2:
            out[name] = None
            continue
        out[name] = _scores(_classifier(seed).fit(x, y), eval_x, eval_labels)
    syn_s, real_s = out.get("train_on_synthetic"), out.get("train_on_real")
    if syn_s and real_s and real_s["balanced_accuracy"] > 0:
        out["balanced_accuracy_ratio"] = syn_s["balanced_accuracy"] / real_s["balanced_accuracy"]
    return out


def _closest(a, b, rows, block=1024):
    """Distance of every row of ``a`` to its closest row among ``b[rows]`` (blocks of rows of ``b``)."""
    from sklearn.metrics import pairwise_distances

    best = np.full(len(a), np.inf)
    for i in range(0, len(rows), block):
        ref = np.asarray(b[rows[i : i + block]], np.float64)
        best = np.minimum(best, pairwise_distances(a, ref, metric="euclidean").min(axis=1))
    return best


def distance_to_closest_record(syn, real, train_rows, holdout_rows, seed=1, draws=DCR_DRAWS):
    """Distance of synthetic samples to the closest training (``real[train_rows]``) vs held-out
    (``real[holdout_rows]``) record (see module doc)."""
    syn = np.asarray(syn, np.float64)
    train, holdout = np.asarray(train_rows), np.asarray(holdout_rows)
    out = {"n_train": int(len(train)), "n_holdout": int(len(holdout))}
    d_train_all = _closest(syn, real, train)
    out["dcr_train_median"] = float(np.median(d_train_all))
    out["n_identical_to_training"] = int((d_train_all < 1e-6).sum())
    if len(holdout) == 0:
        return out
    d_hold = _closest(syn, real, holdout)
    out["dcr_holdout_median"] = float(np.median(d_hold))
    rng = np.random.default_rng(seed)
    k = min(len(holdout), len(train))
    ratios, shares = [], []
    for _ in range(int(draws) if k < max(len(train), len(holdout)) else 1):
        sub = train[rng.choice(len(train), k, replace=False)] if k < len(train) else train
        d_tr = _closest(syn, real, sub)
        hold = d_hold if k == len(holdout) else _closest(syn, real, holdout[rng.choice(len(holdout), k, replace=False)])
        med_h = np.median(hold)
        ratios.append(float(np.median(d_tr) / med_h) if med_h > 0 else float("nan"))
        shares.append(float(np.mean((d_tr < hold) + 0.5 * (d_tr == hold))))
    out["dcr_ratio"] = float(np.nanmean(ratios)) if np.isfinite(ratios).any() else None
    out["share_closer_to_training"] = float(np.mean(shares))
    out["reference_size"] = int(k)
    return out


def evaluate_synthetic(cohort, transform, syn_model, syn_labels, seed=1, threads=1):
    """Fidelity, utility and privacy of synthetic samples (model space) against the real cohort.

    The real samples are read from ``cohort.x`` by row index, never copied as a whole.
    """
    x = cohort.x
    train = np.flatnonzero(cohort.mask("train"))
    test = np.flatnonzero(cohort.mask("test"))
    eval_rows, eval_split = (test, "test") if len(test) else (np.flatnonzero(cohort.mask("val")), "val")
    holdout = np.flatnonzero(~cohort.mask("train"))
    real_moments = group_moments(x, cohort.condition[train], train, transform)
    syn_moments = group_moments(transform.unscale(syn_model), syn_labels)
    return {
        "fidelity": {
            **fidelity(real_moments, syn_moments),
            "c2st_auc": two_sample_auc(x, syn_model, seed, threads, rows=train),
        },
        "utility": utility(
            x, train, cohort.condition[train], syn_model, syn_labels, eval_rows, cohort.condition[eval_rows],
            eval_split, seed,
        ),
        "privacy": distance_to_closest_record(syn_model, x, train, holdout, seed),
    }


def metrics_table(metrics):
    """Flat (metric, value, good when) rows for the report."""
    f, u, p = metrics["fidelity"], metrics["utility"], metrics["privacy"]
    syn, real = u.get("train_on_synthetic") or {}, u.get("train_on_real") or {}
    rows = [
        ("fidelity: gene mean correlation", f["mean_correlation"], "close to 1"),
        ("fidelity: gene variance correlation", f["variance_correlation"], "close to 1"),
        ("fidelity: real-vs-synthetic classifier AUC", f["c2st_auc"], "close to 0.5"),
        (f"utility: balanced accuracy on real {u['eval_split']}, trained on synthetic", syn.get("balanced_accuracy"),
         "close to the real-trained value"),
        (f"utility: balanced accuracy on real {u['eval_split']}, trained on real", real.get("balanced_accuracy"),
         "reference"),
        (f"utility: AUC on real {u['eval_split']}, trained on synthetic", syn.get("auc"), "close to the real-trained value"),
        (f"utility: AUC on real {u['eval_split']}, trained on real", real.get("auc"), "reference"),
        ("privacy: distance-to-closest-record ratio (training / held-out)", p.get("dcr_ratio"),
         "close to 1 (below 1: memorisation)"),
        ("privacy: share closer to a training than a held-out record", p.get("share_closer_to_training"),
         "close to 0.5"),
        ("privacy: synthetic samples identical to a training record", p.get("n_identical_to_training"), "0"),
    ]
    return pd.DataFrame(rows, columns=["metric", "value", "good_when"])


# ---------------------------------------------------------------- rule step
def generate(
    *,
    model,
    features,
    split,
    matrix,
    transform,
    out_expression,
    out_samples,
    out_metrics,
    out_table,
    condition_column="condition",
    n_per_condition=100,
    seed=1,
    noise=True,
    threads=1,
):
    import logging

    from . import io
    from .dataset import load_cohort
    from .model import load_model
    from .preprocess import Transform

    torch.set_num_threads(int(threads))
    vae, blob = load_model(model)
    t = Transform.load(transform)
    cohort = load_cohort(features, split, matrix, vae.likelihood)
    ids, labels, values, syn_model = sample_cohort(
        vae, cohort, t, n_per_condition=n_per_condition, seed=seed, noise=noise
    )
    metrics = {
        "model_round": blob.get("round"),
        "n_per_condition": int(n_per_condition),
        "n_synthetic": len(ids),
        "conditions": sorted(set(labels.tolist())),
        "n_genes": len(t.genes),
        "value_type": t.value_type,
        "noise": bool(noise),
        "seed": int(seed),
        **evaluate_synthetic(cohort, t, syn_model, labels, seed, threads),
    }
    expr = pd.DataFrame(values, index=pd.Index(ids, name="sample_id"), columns=t.genes)
    if t.value_type == "counts":
        expr = expr.astype(np.int64)
    sheet = pd.DataFrame({"sample_id": ids, condition_column: labels})
    io.write_tsv(out_expression, expr, index=True)
    io.write_tsv(out_samples, sheet)
    io.write_json(out_metrics, metrics)
    io.write_tsv(out_table, metrics_table(metrics))
    f = metrics["fidelity"]
    logging.getLogger(__name__).info(
        "%d synthetic samples (%d per condition); gene mean correlation %.3f, two-sample AUC %s, "
        "DCR ratio %s",
        len(ids), n_per_condition, f["mean_correlation"] or float("nan"), f["c2st_auc"],
        metrics["privacy"].get("dcr_ratio"),
    )
    return metrics
