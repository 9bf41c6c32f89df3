"""Disease prediction from the latent space (analysis.predict)."""

from __future__ import annotations

import json

import anndata
import joblib
import numpy as np
import pandas as pd
import pytest

from pathlib import Path

from conftest import TINY_CONFIG, run_snakemake, write_config
from genovae import predict

RESULTS = Path("results") / TINY_CONFIG["run"]


def test_scores_of_perfect_random_and_inverted_probabilities():
    y = np.array(["a", "b"] * 10)
    classes = np.array(["a", "b"])
    perfect = np.column_stack([(y == "a"), (y == "b")]).astype(float)
    s = predict.scores(y, perfect, classes)
    assert s["roc_auc"] == 1.0 and s["balanced_accuracy"] == 1.0 and s["brier"] == 0.0
    s = predict.scores(y, 1 - perfect, classes)
    assert s["roc_auc"] == 0.0 and s["balanced_accuracy"] == 0.0 and s["brier"] == 2.0
    s = predict.scores(y, np.full((20, 2), 0.5), classes)
    assert s["roc_auc"] == 0.5 and s["brier"] == pytest.approx(0.5)
    # three classes: macro one-vs-rest AUC
    y3 = np.array(["a", "b", "c"] * 5)
    p3 = (y3[:, None] == np.array(["a", "b", "c"])[None, :]).astype(float)
    assert predict.scores(y3, p3, ["a", "b", "c"])["roc_auc"] == 1.0
    # reliability: a confident correct classifier sits in the top bin at accuracy 1
    assert predict.reliability(y, perfect, classes) == [(1.0, 1.0, 20)]


def test_the_latent_classifier_is_scored_against_pca_and_genes_and_warns_when_it_loses(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array(["case", "control"] * 40)
    signal = (y == "case").astype(float)
    genes = rng.normal(size=(80, 30)) + signal[:, None] * 1.5
    latent_noise = rng.normal(size=(80, 3))  # a latent space that lost the condition
    train = np.arange(80) < 60
    fitted, classes = predict.fit_and_score({"vae": latent_noise, "pca": genes[:, :3], "genes": genes}, y,
                                            train, ~train)
    assert list(classes) == ["case", "control"]
    assert fitted["genes"][1]["roc_auc"] > 0.9 and fitted["vae"][1]["roc_auc"] < 0.8
    rows = [{"representation": k, "n_train": 60, **fitted[k][1]} for k in ("vae", "pca", "genes")]
    pd.DataFrame(rows).to_csv(tmp_path / "m.tsv", sep="\t", index=False)
    block, warnings = predict.summary_block(tmp_path / "m.tsv")
    assert set(block["test"]) == {"vae", "pca", "genes"}
    assert len(warnings) == 2 and "worse than from PCA" in warnings[0] and "preprocessed genes" in warnings[1]
    # the saved classifier predicts new samples with one probability per class
    joblib.dump({"classifier": fitted["genes"][0]}, tmp_path / "c.joblib")
    new = predict.predict_new(tmp_path / "c.joblib", genes[:5], [f"n{i}" for i in range(5)])
    assert list(new.columns) == ["sample_id", "predicted", "probability_case", "probability_control"]
    np.testing.assert_allclose(new[["probability_case", "probability_control"]].sum(axis=1), 1.0)


@pytest.mark.workflow
def test_predict_step_and_apply_new_predictions(workdir):
    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg.setdefault("analysis", {})["predict"] = True
    write_config(workdir, cfg)
    run_snakemake(workdir)
    r = workdir / RESULTS
    metrics = pd.read_csv(r / "prediction_metrics.tsv", sep="\t")
    assert list(metrics["representation"]) == ["vae", "pca", "genes"]
    assert metrics["roc_auc"].between(0, 1).all() and metrics["brier"].ge(0).all()
    preds = pd.read_csv(r / "predictions.tsv", sep="\t")
    assert len(preds) == 60 and {"predicted", "probability_case", "probability_control"} <= set(preds.columns)
    assert (r / "plots/reliability.png").stat().st_size > 0 and (r / "model/classifier.joblib").is_file()
    summary = json.loads((r / "summary.json").read_text())
    assert set(summary["prediction"]["test"]) == {"vae", "pca", "genes"}
    # apply_new on a few of the cohort's own samples: predictions with the saved classifier
    matrix = pd.read_parquet(r / "data/matrix.parquet")
    matrix.iloc[:4].to_csv(workdir / "new.tsv", sep="\t")
    run_snakemake(workdir, "apply_new", "--config", "new_data={expression: new.tsv, name: four}")
    new = pd.read_csv(r / "new/four/predictions.tsv", sep="\t")
    assert len(new) == 4 and set(new["predicted"]) <= {"case", "control"}
    # latent.h5ad with the predictions in obs: anndata reads it, scanpy builds the kNN graph
    from conftest import check_every_h5ad

    check_every_h5ad(r)
    obs = anndata.read_h5ad(r / "latent.h5ad").obs
    assert obs["genovae_predicted"].dtype == "category" and obs["genovae_probability_case"].dtype == np.float64
