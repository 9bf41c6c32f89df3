"""How well a representation separates known labels: VAE latent means vs PCA.

For each label column (the condition, plus ``analysis.labels``), on the same
samples and the same number of dimensions:

* ``silhouette``: mean silhouette width of the label groups (Euclidean);
* ``knn_accuracy``: leave-one-out 5-nearest-neighbour accuracy;
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


def _usable(X, y):
    y = pd.Series(np.asarray(y, dtype=object))
    ok = (y.notna() & (y.astype(str).str.strip() != "")).to_numpy()
    X, y = np.asarray(X)[ok], y[ok].astype(str).to_numpy()
    counts = pd.Series(y).value_counts()
    keep = np.isin(y, counts[counts >= 2].index)
    return X[keep], y[keep]


def _logreg():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))


def loo_knn_predict(X, y, k):
    """Leave-one-out k-NN predictions from one neighbour search.

    The same predictions as ``cross_val_predict(KNeighborsClassifier(k), X, y,
    cv=LeaveOneOut())`` (uniform votes, ties to the first class in sorted order),
    without fitting n classifiers: n log n instead of n^2 log n.
    """
    X = np.asarray(X)
    classes, codes = np.unique(y, return_inverse=True)
    _, ind = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X)
    rows = np.arange(len(X))
    own = ind == rows[:, None]
    # drop the sample itself (or, among duplicates, the farthest neighbour)
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones(ind.shape, bool)
    keep[rows, drop] = False
    neighbours = ind[keep].reshape(len(X), k)
    votes = np.zeros((len(X), len(classes)), int)
    np.add.at(votes, (np.repeat(rows, k), codes[neighbours].ravel()), 1)
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
            out["silhouette"] = float(silhouette_score(X, y))
        pred = loo_knn_predict(X, y, min(K_NEIGHBOURS, len(y) - 1))
        out["knn_accuracy"] = float((pred == y).mean())
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


def compare(representations, labels, mask=None):
    """Rows of label metrics for each representation (e.g. {'vae': Z, 'pca': P}) and label."""
    rows = []
    for label, y in labels.items():
        for rep, X in representations.items():
            m = np.ones(len(X), bool) if mask is None else mask
            rows.append({"label": label, "representation": rep, **label_structure(X[m], np.asarray(y)[m])})
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
