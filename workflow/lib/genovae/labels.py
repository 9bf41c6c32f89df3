"""How well a representation separates known labels: VAE latent means vs PCA.

For each label column (the condition, plus ``analysis.labels``), on the same
samples and the same number of dimensions:

* ``silhouette``: mean silhouette width of the label groups (Euclidean); O(n^2), so above
  :data:`SILHOUETTE_MAX` samples it is the mean over a seeded random subsample of that size
  (standard error about 0.01 or less);
* ``knn_accuracy``: leave-one-out 5-nearest-neighbour accuracy (above :data:`KNN_QUERY_MAX`
  samples, averaged over a seeded subsample whose neighbours are searched among all samples);
* ``logreg_auc`` (two groups): cross-validated ROC AUC of a logistic
  regression on standardised coordinates, or ``logreg_balanced_accuracy``
  (more groups): its cross-validated balanced accuracy.

:func:`heldout` fits the same classifiers on training samples and scores them
on held-out samples (used once, for the selected model, on the test split).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn import config_context
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score, silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

K_NEIGHBOURS = 5
#: silhouettes (label and batch) are computed on at most this many samples (seeded subsample)
SILHOUETTE_MAX = 10_000
#: k-NN scores (label accuracy, batch mixing) are averaged over at most this many samples (seeded
#: subsample; their neighbours are searched among all samples): standard error below 0.004
KNN_QUERY_MAX = 20_000


def _subsample(n, seed, cap=None):
    """Sorted indices of a seeded random subsample of ``cap`` (default SILHOUETTE_MAX) of n; all if n <= cap."""
    cap = SILHOUETTE_MAX if cap is None else cap
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def _usable(X, y):
    y = pd.Series(np.asarray(y, dtype=object))
    ok = (y.notna() & (y.astype(str).str.strip() != "")).to_numpy()
    X, y = np.asarray(X)[ok], y[ok].astype(str).to_numpy()
    counts = pd.Series(y).value_counts()
    keep = np.isin(y, counts[counts >= 2].index)
    return X[keep], y[keep]


def _logreg():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))


def _neighbours(X, k, rows):
    """The ``k`` nearest neighbours of the samples ``rows`` among all of ``X``, each without itself
    (among duplicates, the farthest of the k + 1 found is dropped instead)."""
    _, ind = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X[rows])
    own = ind == rows[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones(ind.shape, bool)
    keep[np.arange(len(rows)), drop] = False
    return ind[keep].reshape(len(rows), k)


def loo_knn_predict(X, y, k, rows=None):
    """Leave-one-out k-NN predictions from one neighbour search, for ``rows`` (default: every sample).

    The same predictions as ``cross_val_predict(KNeighborsClassifier(k), X, y,
    cv=LeaveOneOut())`` (uniform votes, ties to the first class in sorted order),
    without fitting n classifiers: n log n instead of n^2 log n. Each sample of ``rows`` votes
    with its neighbours among all samples.
    """
    X = np.asarray(X)
    rows = np.arange(len(X)) if rows is None else np.asarray(rows)
    classes, codes = np.unique(y, return_inverse=True)
    neighbours = _neighbours(X, k, rows)
    votes = np.zeros((len(rows), len(classes)), int)
    np.add.at(votes, (np.repeat(np.arange(len(rows)), k), codes[neighbours].ravel()), 1)
    return classes[votes.argmax(axis=1)]


def label_structure(X, y, seed=0):
    """Silhouette, LOO k-NN accuracy and CV logistic-regression score for one label."""
    X, y = _usable(X, y)
    levels = np.unique(y)
    out = {"n": int(len(y)), "groups": int(len(levels))}
    if len(levels) < 2:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # distances in chunks of at most 64 MB (scikit-learn's default is 1 GB)
        with config_context(working_memory=64):
            rows = _subsample(len(y), seed)
            if len(np.unique(y[rows])) >= 2:
                out["silhouette"] = float(silhouette_score(X[rows], y[rows]))
        # above KNN_QUERY_MAX samples, the accuracy of a seeded subsample of them (neighbours among all)
        query = _subsample(len(y), seed + 1, KNN_QUERY_MAX)
        pred = loo_knn_predict(X, y, min(K_NEIGHBOURS, len(y) - 1), rows=query)
        out["knn_accuracy"] = float((pred == y[query]).mean())
        folds = int(min(5, pd.Series(y).value_counts().min()))
        if folds >= 2:
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            if len(levels) == 2:
                prob = cross_val_predict(_logreg(), X, y, cv=cv, method="predict_proba")[:, 1]
                out["logreg_auc"] = float(roc_auc_score(y == levels[1], prob))
            else:
                pred = cross_val_predict(_logreg(), X, y, cv=cv)
                out["logreg_balanced_accuracy"] = float(balanced_accuracy_score(y, pred))
    return out


def heldout(X_train, y_train, X_test, y_test):
    """Classifiers fitted on the training samples, scored on held-out samples."""
    X_train, y_train = _usable(X_train, y_train)
    X_test = np.asarray(X_test)
    y_test = np.asarray(y_test, dtype=str)
    known = np.isin(y_test, np.unique(y_train))
    X_test, y_test = X_test[known], y_test[known]
    out = {"n": int(len(y_test))}
    if len(y_test) == 0 or len(np.unique(y_train)) < 2:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        knn = KNeighborsClassifier(n_neighbors=min(K_NEIGHBOURS, len(y_train))).fit(X_train, y_train)
        out["knn_accuracy"] = float((knn.predict(X_test) == y_test).mean())
        lr = _logreg().fit(X_train, y_train)
        levels = lr.classes_
        if len(levels) == 2 and len(np.unique(y_test)) == 2:
            out["logreg_auc"] = float(roc_auc_score(y_test == levels[1], lr.predict_proba(X_test)[:, 1]))
        elif len(levels) > 2:
            out["logreg_balanced_accuracy"] = float(balanced_accuracy_score(y_test, lr.predict(X_test)))
    return out


K_MIXING = 15


def batch_mixing(X, batch, groups=None, k=K_MIXING, seed=0):
    """How well a representation mixes batches (analysis.batch), two scores in [0, 1], 1 = well mixed.

    * ``batch_mixing``: for each sample, the share of its ``k`` nearest neighbours from
      another batch, over the share expected if batches were placed at random
      (``1 - (n_b - 1) / (n - 1)``), capped at 1 and averaged: a normalised kNN
      batch-mixing score in the spirit of iLISI (Korsunsky et al. 2019);
    * ``batch_asw``: scib's batch silhouette (Luecken et al. 2022): ``1 - |s_i|`` of the
      batch labels' silhouette, computed within each biological group (``groups``, the
      condition) so that the biology a group shares is not counted against mixing, and
      averaged over samples.

    Samples with a missing batch are left out; NaN when fewer than two batches remain. The
    silhouettes use a seeded subsample of each group: SILHOUETTE_MAX samples in all (at least 1,000 a group).
    """
    batch = pd.Series(np.asarray(batch, dtype=object))
    ok = (batch.notna() & (batch.astype(str).str.strip() != "")).to_numpy()
    X, b = np.asarray(X)[ok], batch[ok].astype(str).to_numpy()
    grp = np.zeros(len(b), int)
    if groups is not None:
        grp = np.unique(np.asarray(groups, dtype=str)[ok], return_inverse=True)[1]
    out = {"batch_mixing": float("nan"), "batch_asw": float("nan")}
    levels, codes = np.unique(b, return_inverse=True)
    if len(levels) < 2 or len(b) < 3:
        return out
    n = len(b)
    kk = min(k, n - 1)
    rows = _subsample(n, seed + 1, KNN_QUERY_MAX)
    neighbours = _neighbours(X, kk, rows)
    other = (codes[neighbours] != codes[rows][:, None]).mean(axis=1)
    size = np.bincount(codes)[codes[rows]]
    expected = 1.0 - (size - 1) / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(expected > 0, np.minimum(other / expected, 1.0), np.nan)
    out["batch_mixing"] = float(np.nanmean(ratio))
    from sklearn.metrics import silhouette_samples

    scores, weights = [], []
    for g in np.unique(grp):
        m = np.flatnonzero(grp == g)
        if len(np.unique(codes[m])) < 2 or len(m) <= len(np.unique(codes[m])):
            continue
        # the groups share the budget: SILHOUETTE_MAX samples in all, at least 1,000 per group
        part = m[_subsample(len(m), seed + int(g), max(1000, SILHOUETTE_MAX * len(m) // n))]
        if len(np.unique(codes[part])) < 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sil = silhouette_samples(X[part], codes[part])
        scores.append(float(np.mean(1.0 - np.abs(sil))))
        weights.append(len(m))
    if scores:
        out["batch_asw"] = float(np.average(scores, weights=weights))
    return out


def compare(representations, labels, mask=None, batch=(), groups=None):
    """Rows of label metrics for each representation (e.g. {'vae': Z, 'pca': P}) and label.

    Labels named in ``batch`` (analysis.batch) also get :func:`batch_mixing` scores, within
    the biological ``groups`` (the condition's values)."""
    rows = []
    for label, y in labels.items():
        for rep, X in representations.items():
            m = np.ones(len(X), bool) if mask is None else mask
            row = {"label": label, "representation": rep, **label_structure(X[m], np.asarray(y)[m])}
            if label in batch:
                row.update(batch_mixing(X[m], np.asarray(y)[m], None if groups is None else np.asarray(groups)[m]))
            rows.append(row)
    return rows


def compare_heldout(representations, labels, train_mask, test_mask):
    rows = []
    for label, y in labels.items():
        y = np.asarray(y)
        for rep, X in representations.items():
            rows.append(
                {
                    "label": label,
                    "representation": rep,
                    **heldout(X[train_mask], y[train_mask], X[test_mask], y[test_mask]),
                }
            )
    return rows
