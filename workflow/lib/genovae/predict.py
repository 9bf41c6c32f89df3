"""Disease prediction from the latent space (``analysis.predict``).

A classifier for ``analysis.condition`` is fitted on the latent means of the train +
validation samples (standardised, L2-regularised logistic regression, scikit-learn) and
scored on the held-out test samples — beside the same classifier on PCA (same dimension,
fitted on the training samples) and on the preprocessed genes. It is saved with the
model (``model/classifier.joblib``) and ``apply_new`` uses it to predict the condition of
new samples (``predictions.tsv``).

Metrics on the test samples: ROC AUC (two groups; macro one-vs-rest with more), balanced
accuracy, Brier score (mean over samples of the summed squared error of the class
probabilities; lower is better) and a reliability curve (confidence of the predicted
class against its accuracy).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: the representations the classifier is fitted on, in the order of the tables
REPRESENTATIONS = ("vae", "pca", "genes")
#: what the latent classifier may lose against a baseline before the summary says so
TOLERANCE = 0.02


def make_classifier(C=1.0, seed=0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=float(C), max_iter=5000, random_state=int(seed)))


def brier(y, proba, classes):
    onehot = (np.asarray(y)[:, None] == np.asarray(classes)[None, :]).astype(float)
    return float(((proba - onehot) ** 2).sum(axis=1).mean())


def scores(y, proba, classes):
    """ROC AUC, balanced accuracy and Brier score of class probabilities ``proba`` for labels ``y``."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    y = np.asarray(y).astype(str)
    classes = np.asarray(classes).astype(str)
    out = {"n": int(len(y)), "roc_auc": None, "balanced_accuracy": None, "brier": None}
    if len(y) == 0:
        return out
    pred = classes[np.argmax(proba, axis=1)]
    out["balanced_accuracy"] = float(balanced_accuracy_score(y, pred))
    out["brier"] = brier(y, proba, classes)
    present = set(y)
    if len(present) >= 2:
        if len(classes) == 2:
            out["roc_auc"] = float(roc_auc_score(y == classes[1], proba[:, 1]))
        elif present == set(classes):
            out["roc_auc"] = float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes))
    return out


def reliability(y, proba, classes, bins=5):
    """(mean confidence, accuracy, count) per confidence bin of the predicted class."""
    y = np.asarray(y).astype(str)
    conf = proba.max(axis=1)
    correct = np.asarray(classes).astype(str)[np.argmax(proba, axis=1)] == y
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        m = which == b
        if m.any():
            rows.append((float(conf[m].mean()), float(correct[m].mean()), int(m.sum())))
    return rows


def fit_and_score(reps, y, train, test, C=1.0, seed=0):
    """{representation: (fitted classifier, test scores, test probabilities)}; ``train``/``test`` are masks."""
    y = np.asarray(y).astype(str)
    classes = np.array(sorted(set(y[train])))
    out = {}
    for name, X in reps.items():
        if len(classes) < 2:
            out[name] = (None, scores([], np.empty((0, len(classes))), classes), None)
            continue
        clf = make_classifier(C, seed).fit(X[train], y[train])
        proba = clf.predict_proba(X[test]) if test.any() else np.empty((0, len(clf.classes_)))
        out[name] = (clf, scores(y[test], proba, clf.classes_), proba)
    return out, classes


def predict_job(sm, _log=None):
    """Rule ``predict``'s step from a job's ``snakemake`` object (also run by rule apply_model)."""
    from .apply import model_files

    predict_step(**model_files(sm), out_classifier=sm.output.classifier, out_metrics=sm.output.prediction_metrics,
                 out_predictions=sm.output.predictions, out_plot=sm.output.reliability, threads=sm.threads,
                 **sm.params.predict)


def predict_step(*, model, features, split, matrix, transform, out_classifier, out_metrics, out_predictions,
                 out_plot, C=1.0, seed=0, threads=1):
    """Rule ``predict``: fit the classifiers, score them on the test samples, save the latent one."""
    import joblib

    from . import io
    from .apply import _load
    from .errors import InputError
    from .evaluate import encode, fit_pca

    vae, blob, _, cohort = _load(model, features, split, matrix, transform, threads)
    y = np.asarray(cohort.condition).astype(str)
    train = np.isin(cohort.split, ("train", "val"))
    test = cohort.split == "test"
    if len(set(y[train])) < 2:
        raise InputError(split, "the train and validation samples hold fewer than two condition groups: "
                                "nothing to predict (analysis.predict)")
    mu = encode(vae, cohort.inputs())[0]
    pca = fit_pca(cohort, vae.config["latent_dim"])
    reps = {"vae": mu, "pca": pca.transform(cohort.x), "genes": cohort.x}
    fitted, classes = fit_and_score(reps, y, train, test, C=C, seed=seed)
    rows = [{"representation": name, "n_train": int(train.sum()), **fitted[name][1]} for name in REPRESENTATIONS]
    io.write_tsv(out_metrics, pd.DataFrame(rows))
    clf = fitted["vae"][0]
    proba = clf.predict_proba(mu)
    table = pd.DataFrame({"sample_id": cohort.sample_ids, "split": cohort.split, "condition": y,
                          "predicted": clf.classes_[np.argmax(proba, axis=1)]})
    for j, c in enumerate(clf.classes_):
        table[f"probability_{c}"] = proba[:, j]
    io.write_tsv(out_predictions, table)
    with io.atomic_path(out_classifier) as tmp:
        joblib.dump({"classifier": clf, "classes": list(clf.classes_), "representation": "vae latent means",
                     "latent_dim": int(mu.shape[1]), "model_round": blob["round"], "C": float(C)}, tmp)
    reliability_plot({name: fitted[name][2] for name in REPRESENTATIONS}, y[test], classes, out_plot)
    return rows


def reliability_plot(probas, y, classes, path, dpi=120):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import io

    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfectly calibrated")
    for name, proba in probas.items():
        if proba is None or len(y) == 0:
            continue
        pts = reliability(y, proba, classes)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence of the predicted condition")
    ax.set_ylabel("share predicted correctly")
    ax.set_title(f"Reliability on the {len(y)} test samples", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def predict_new(classifier, latent_means, sample_ids):
    """predictions.tsv of new samples: the predicted condition and the probability of each."""
    import joblib

    saved = joblib.load(classifier)
    clf = saved["classifier"]
    proba = clf.predict_proba(latent_means)
    table = pd.DataFrame({"sample_id": sample_ids, "predicted": clf.classes_[np.argmax(proba, axis=1)]})
    for j, c in enumerate(clf.classes_):
        table[f"probability_{c}"] = proba[:, j]
    return table


def summary_block(metrics_path):
    """The prediction metrics for summary.json and a plain warning when the latent classifier loses."""
    df = pd.read_csv(metrics_path, sep="\t")
    rows = {r["representation"]: {k: (None if pd.isna(v) else v) for k, v in r.items() if k != "representation"}
            for r in df.to_dict(orient="records")}
    warnings = []
    vae = rows.get("vae", {})
    for base in ("pca", "genes"):
        other = rows.get(base, {})
        for key, better in (("roc_auc", "max"), ("balanced_accuracy", "max")):
            a, b = vae.get(key), other.get(key)
            if a is not None and b is not None and a < b - TOLERANCE:
                warnings.append(f"Predicting the condition from the latent space is worse than from "
                                f"{'PCA' if base == 'pca' else 'the preprocessed genes'} on the test samples "
                                f"({key.replace('_', ' ')} {a:.2f} vs {b:.2f}); prefer that classifier.")
                break
    return {"test": rows}, warnings
