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
* **privacy** (:func:`privacy_metrics`), distances to the same reference, every real
  *training* record:

  - *DCR against a real-vs-real baseline*: the distance of each synthetic sample
    to its closest training record (DCR) next to the same distance of each real
    *held-out* record (validation + test, never trained on). A generator that
    did not memorise behaves like fresh real samples: ``dcr_ratio`` (median
    synthetic DCR / median held-out DCR) near 1 or above and
    ``share_below_holdout_p05`` (synthetic samples closer to training than the
    5th percentile of the held-out DCRs) near 0.05;
  - *near-copies*: synthetic samples closer to a training record than half the
    5th percentile of the distances of training records to their closest other
    training record (``n_near_copies``; ``holdout_near_copy_share``: the same
    share among held-out records), and ``n_identical_to_training``;
  - *membership inference*: an attacker scores each real record by minus its
    distance to the closest synthetic sample; ``membership_auc`` is the ROC AUC
    of that score telling training records (members) from held-out ones
    (non-members), 0.5 = no leakage, with the advantage ``2 AUC - 1`` and a
    seeded stratified-bootstrap 99 % interval;
  - ``verdict`` and ``passed``: "synthetic samples copy training records" when
    more than 5 % are near-copies (or any is an exact copy); "membership
    leakage" when the advantage's interval excludes 0 and the advantage is at
    least 0.2; otherwise "no sign of memorisation". A distance-based attack is a
    lower bound on the leakage: passing is no proof of privacy.

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
NEAR_COPY_QUANTILE = 0.05  # near-copy: closer to a training record than half this quantile of the
NEAR_COPY_FRACTION = 0.5  # ... train-to-train nearest-neighbour distances (real records are almost never that close)
NEAR_COPY_MAX_SHARE = 0.05  # copying: more near-copies than this share of the synthetic samples (or any exact copy)
BASELINE_QUANTILE = 0.05  # share of synthetic DCRs below this quantile of the held-out DCRs (expected: 0.05)
BOOTSTRAP = 1000  # resamples of the membership advantage's interval
ALPHA = 0.01  # 99 % interval of the membership advantage (two-sided)
MIN_ADVANTAGE = 0.2  # a membership advantage (2 AUC - 1) whose interval excludes 0 and is at least this: leakage
MAX_QUERIES = 1000  # held-out / training records whose distances make the baselines (a seeded draw above that)


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
        mu, logvar = encode(model, cohort.inputs(), np.flatnonzero(m))
        mean, cov = latent_distribution(mu, logvar)
        z = rng.multivariate_normal(mean, cov, size=int(n_per_condition), method="eigh")
        pick = rng.integers(0, int(m.sum()), size=int(n_per_condition))
        library, lib_all = cohort.library[m][pick], cohort.library_all[m][pick]
        # draws from p(x|z): model-space values, or counts when the likelihood models counts
        # analysis.batch: each draw in the batch of the training sample its library size comes from
        cov = cohort.covariates[m][pick] if cohort.n_covariates else None
        obs = model.sample_observations(z, library, rng, noise, c=cov)
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


def _pairwise_min(a, b, rows, a_rows=None, block=1024):
    """Distances between the rows of ``a`` and ``b[rows]`` (read in blocks of rows of ``b``).

    Returns (closest ``b[rows]`` to each row of ``a``, closest row of ``a`` to each ``b[rows]``).
    With ``a_rows`` (the row numbers of ``a`` in ``b``) a record is not its own neighbour.
    """
    from sklearn.metrics import pairwise_distances

    rows = np.asarray(rows)
    a_best, b_best = np.full(len(a), np.inf), np.empty(len(rows))
    for i in range(0, len(rows), block):
        r = rows[i : i + block]
        d = pairwise_distances(a, np.asarray(b[r], np.float64), metric="euclidean")
        if a_rows is not None:
            d[np.asarray(a_rows)[:, None] == r[None, :]] = np.inf
        a_best = np.minimum(a_best, d.min(axis=1))
        b_best[i : i + len(r)] = d.min(axis=0) if len(a) else np.inf
    return a_best, b_best


def _queries(real, rows, rng, limit=MAX_QUERIES):
    """At most ``limit`` of ``rows`` (a seeded draw), their row numbers and values."""
    rows = np.asarray(rows)
    if len(rows) > limit:
        rows = np.sort(rng.choice(rows, limit, replace=False))
    return rows, np.asarray(real[rows], np.float64).reshape(len(rows), -1)


def _auc(pos, neg):
    """ROC AUC of scores ``pos`` (positives) against ``neg`` (Mann-Whitney; ties count one half)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.r_[pos, neg])
    n1, n0 = len(pos), len(neg)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def membership_inference(member_scores, nonmember_scores, seed=1, resamples=BOOTSTRAP):
    """AUC of a membership score (higher = "was trained on") telling members from non-members, its
    advantage ``2 AUC - 1`` and a seeded stratified-bootstrap interval (``1 - ALPHA``) of the advantage."""
    pos, neg = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
    auc = _auc(pos, neg)
    rng = np.random.default_rng(seed)
    boot = [
        _auc(pos[rng.integers(0, len(pos), len(pos))], neg[rng.integers(0, len(neg), len(neg))])
        for _ in range(int(resamples))
    ]
    lo, hi = np.quantile(2 * np.asarray(boot) - 1, [ALPHA / 2, 1 - ALPHA / 2])
    return {
        "membership_auc": auc,
        "membership_advantage": 2 * auc - 1,
        "membership_advantage_ci": [float(lo), float(hi)],
        "membership_ci_level": 1 - ALPHA,
        "n_members": int(len(pos)),
        "n_nonmembers": int(len(neg)),
    }


def privacy_metrics(syn, real, train_rows, holdout_rows, seed=1):
    """Does the synthetic cohort copy its training records? (see module doc)

    All distances are Euclidean, in the space of ``syn`` and ``real`` (the model space), to the same
    reference: every training record. ``real`` is read by row index.
    """
    syn = np.asarray(syn, np.float64)
    train, holdout = np.asarray(train_rows), np.asarray(holdout_rows)
    rng = np.random.default_rng(seed)
    out = {"n_synthetic": int(len(syn)), "n_train": int(len(train)), "n_holdout": int(len(holdout))}
    # synthetic -> closest training record; training record -> closest synthetic sample (membership score)
    dcr, member_d = _pairwise_min(syn, real, train)
    out["dcr_median"] = float(np.median(dcr))
    out["n_identical_to_training"] = int((dcr < 1e-6).sum())
    # near-copies: closer to a training record than training records are to each other (small quantile)
    q_rows, q = _queries(real, train, rng)
    nn_train, _ = _pairwise_min(q, real, train, a_rows=q_rows) if len(train) > 1 else (np.array([]), None)
    nn_train = nn_train[np.isfinite(nn_train)]
    if len(nn_train):
        threshold = NEAR_COPY_FRACTION * float(np.quantile(nn_train, NEAR_COPY_QUANTILE))
        n_near = int((dcr < threshold).sum())
        out.update(
            train_nn_median=float(np.median(nn_train)),
            near_copy_threshold=threshold,
            n_near_copies=n_near,
            near_copy_share=n_near / len(syn),
        )
    if len(holdout):
        # real-vs-real baseline: held-out records (never trained on) -> closest training record
        h_rows, h = _queries(real, holdout, rng)
        base, _ = _pairwise_min(h, real, train)
        p05 = float(np.quantile(base, BASELINE_QUANTILE))
        out.update(
            holdout_dcr_median=float(np.median(base)),
            holdout_dcr_p05=p05,
            dcr_ratio=float(np.median(dcr) / np.median(base)) if np.median(base) > 0 else None,
            holdout_near_copy_share=float(np.mean(base < out["near_copy_threshold"])) if len(nn_train) else None,
            share_below_holdout_p05=float(np.mean(dcr < p05)),
            expected_share_below_holdout_p05=BASELINE_QUANTILE,
        )
        # membership inference: score = -(distance to the closest synthetic sample)
        _, nonmember_d = _pairwise_min(syn, real, holdout)
        if len(train) >= 2 and len(holdout) >= 2:
            out.update(membership_inference(-member_d, -nonmember_d, seed))
    out.update(privacy_verdict(out))
    return out


def privacy_verdict(p):
    """Plain verdict on a :func:`privacy_metrics` result: ``passed`` and ``verdict``."""
    copies = p.get("near_copy_share", 0) > NEAR_COPY_MAX_SHARE or p.get("n_identical_to_training", 0) > 0
    ci = p.get("membership_advantage_ci")
    leak = ci is not None and ci[0] > 0 and p["membership_advantage"] >= MIN_ADVANTAGE
    if copies:
        verdict = "synthetic samples copy training records"
    elif leak:
        verdict = "membership leakage: training records are closer to the synthetic samples than held-out records are"
    elif ci is None:
        verdict = "no near-copies of training records (no held-out samples: membership not tested)"
    else:
        verdict = "no sign of memorisation"
    return {"passed": not (copies or leak), "verdict": verdict}


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
        "privacy": privacy_metrics(syn_model, x, train, holdout, seed),
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
        ("privacy: verdict", p.get("verdict"), "no sign of memorisation"),
        ("privacy: membership-inference AUC (training vs held-out records)", p.get("membership_auc"),
         "close to 0.5 (above: synthetic samples give training records away)"),
        ("privacy: membership advantage (2 AUC - 1), interval low", (p.get("membership_advantage_ci") or [None])[0],
         "at most 0"),
        ("privacy: median distance to closest training record, synthetic / held-out real", p.get("dcr_ratio"),
         "1 or above (below 1: closer to training records than new real samples are)"),
        ("privacy: share of synthetic samples closer than the 5th percentile of held-out records",
         p.get("share_below_holdout_p05"), "about 0.05 or less"),
        ("privacy: near-copies of training records (synthetic samples)", p.get("n_near_copies"), "0"),
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
        "privacy: %s (membership AUC %s, %s near-copies)",
        len(ids), n_per_condition, f["mean_correlation"] or float("nan"), f["c2st_auc"],
        metrics["privacy"]["verdict"], metrics["privacy"].get("membership_auc"), metrics["privacy"].get("n_near_copies"),
    )
    return metrics
