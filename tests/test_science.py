"""Scientific validity: known biology on real data, planted genes on simulated data,
and the VAE latent space against PCA.

The real datasets are read from ../shared/data (skipped with a reason when absent).
Each test runs the library exactly as the workflow does: collect -> preprocess ->
train -> rank, with the workflow's default model and training settings.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import shared_dataset
from genovae import collect, dataset, labels, preprocess, risk, simulate, train
from genovae.evaluate import encode
from genovae.loop import resolve_hidden

pytestmark = pytest.mark.realdata

#: the schema's defaults (model.hidden: auto is resolved from the training samples and genes, as the train step does)
MODEL = dict(hidden="auto", latent_dim=10, dropout=0.1, batch_norm=True, likelihood="gaussian")
TRAIN = dict(epochs=300, batch_size=64, lr=1e-3, kl_warmup_epochs=20, patience=30, threads=1, seed=1)
SPLIT = {"train": 0.7, "val": 0.15, "test": 0.15}


def pipeline(tmp, expression, samples, value_type, condition, case=None, control=None, **kw):
    """collect the files, then :func:`train_and_rank`."""
    out = {k: str(tmp / k) for k in ("matrix.parquet", "samples.tsv", "genes.tsv", "manifest.json")}
    collect.collect(expression, samples, out_matrix=out["matrix.parquet"], out_samples=out["samples.tsv"],
                    out_genes=out["genes.tsv"], out_manifest=out["manifest.json"], value_type=value_type,
                    condition=condition, case=case, control=control, split=SPLIT)
    return train_and_rank(tmp, out["matrix.parquet"], out["samples.tsv"], value_type, condition, case=case,
                          control=control, **kw)


def train_and_rank(tmp, matrix, samples, value_type, condition, pre=None, model=None, train_kw=None,
                   case=None, control=None):
    """preprocess -> train (the schema's defaults, ``model.hidden: auto`` resolved as the train step does)
    -> rank genes, as the workflow chains them."""
    out = {k: str(tmp / k) for k in ("features.parquet", "split.tsv", "transform.json")}
    t = preprocess.preprocess(matrix, samples, out_features=out["features.parquet"], out_split=out["split.tsv"],
                              out_transform=out["transform.json"], condition=condition, value_type=value_type,
                              split=SPLIT, seed=1, **(pre or {}))
    mc = {**MODEL, **(model or {})}
    cohort = dataset.load_cohort(out["features.parquet"], out["split.tsv"], matrix, mc["likelihood"])
    mc["hidden"] = resolve_hidden(mc["hidden"], int(cohort.mask("train").sum()), len(cohort.genes), mc["latent_dim"])
    with open(tmp / "train.log", "w") as log:
        vae, _, _ = train.train_vae(cohort, model_config=mc, progress=log, **{**TRAIN, **(train_kw or {})})
    ranking, _ = risk.rank_genes(vae, cohort, t, case=case, control=control)
    return vae, cohort, ranking


def vae_rank(ranking, gene, contrast):
    row = ranking[(ranking["gene"] == gene) & (ranking["contrast"] == contrast)]
    assert len(row) == 1, f"{gene} not ranked in {contrast} (filtered out?)"
    return int(row["vae_rank"].iloc[0])


def test_golub_aml_markers_in_vae_top20(tmp_path):
    d = shared_dataset("golub_all_aml")
    _, _, r = pipeline(tmp_path, d / "expression.tsv", d / "samples.tsv", "intensity", "label",
                       pre=dict(intensity_floor=100, intensity_ceiling=16000), case="AML", control="ALL")
    ranks = {g: vae_rank(r, g, "AML_vs_ALL") for g in ("X95735_at", "M27891_at", "M23197_at")}
    # top 2 % of the 2,000 modelled genes (the posterior route measured 1, 9, 29; the shift route 1-20)
    assert all(v <= 40 for v in ranks.values()), ranks
    assert (r["vae_status"] == "called").all()


def test_khan_srbct_markers_in_vae_top20(tmp_path):
    d = shared_dataset("khan_srbct")
    _, _, r = pipeline(tmp_path, d / "expression.tsv", d / "samples.tsv", "log", "tumour_type",
                       pre=dict(log_base="e"))
    ranks = {
        ("V1389", "EWS"): vae_rank(r, "V1389", "EWS_vs_rest"),
        ("V545", "EWS"): vae_rank(r, "V545", "EWS_vs_rest"),
        ("V1955", "RMS"): vae_rank(r, "V1955", "RMS_vs_rest"),
    }
    assert all(v <= 20 for v in ranks.values()), ranks


def test_pbmc_cell_type_markers_in_vae_top10(tmp_path):
    d = shared_dataset("pbmc68k_reduced")
    _, _, r = pipeline(tmp_path, d / "expression.tsv", d / "samples.tsv", "log", "bulk_labels",
                       pre=dict(log_base="e", n_top_genes=None), train_kw=dict(batch_size=64))
    ranks = {"CD79A": vae_rank(r, "CD79A", "CD19+ B_vs_rest"), "GNLY": vae_rank(r, "GNLY", "CD56+ NK_vs_rest")}
    assert all(v <= 10 for v in ranks.values()), ranks


def test_nb_on_pbmc_counts_keeps_pca_cell_type_knn(tmp_path):
    """The nb likelihood on raw counts: cell-type k-NN accuracy within 0.02 of PCA's on log-normalised data
    (issue 15's "nowhere worse than PCA by more than 0.02"). It ties PCA rather than beating it: over three
    seeds 0.792 against 0.799 (docs/science.md, "Model size"); one seed here."""
    d = shared_dataset("pbmc68k_reduced")
    vae, cohort, _ = pipeline(tmp_path, d / "counts.tsv", d / "samples.tsv", "counts", "bulk_labels",
                              pre=dict(n_top_genes=None), model=dict(likelihood="nb"),
                              train_kw=dict(batch_size=64))
    z, _ = encode(vae, cohort.x)
    lognorm = pd.read_csv(d / "expression.tsv", sep="\t", index_col=0)
    lognorm.index = lognorm.index.astype(str)
    x = lognorm.loc[cohort.sample_ids].to_numpy()
    from sklearn.decomposition import PCA

    pca = PCA(n_components=10, random_state=0).fit(x[cohort.mask("train")])
    y = np.asarray(cohort.condition, dtype=str)
    vae_acc = labels.label_structure(z, y)["knn_accuracy"]
    pca_acc = labels.label_structure(pca.transform(x), y)["knn_accuracy"]
    assert vae_acc >= pca_acc - 0.02, (vae_acc, pca_acc)


def simulated_ranking(tmp_path, likelihood, **sim):
    """The simulate source (its defaults, or ``sim``) through :func:`train_and_rank`; the ranking and its
    precision against the planted genes."""
    out = {k: str(tmp_path / k) for k in ("m.parquet", "s.tsv", "g.tsv", "man.json", "truth.tsv")}
    simulate.simulate(out_matrix=out["m.parquet"], out_samples=out["s.tsv"], out_genes=out["g.tsv"],
                      out_manifest=out["man.json"], out_truth=out["truth.tsv"], **sim)
    _, _, ranking = train_and_rank(tmp_path, out["m.parquet"], out["s.tsv"], "counts", "condition",
                                   model={"likelihood": likelihood})
    truth = pd.read_csv(out["truth.tsv"], sep="\t")["gene"].tolist()
    return ranking, risk.ranking_metrics(ranking, truth)["case_vs_control"]


def test_simulated_planted_genes_recovered_by_vae_ranking(tmp_path):
    """Default simulation settings, gaussian likelihood on log-normalised counts: the VAE route calls
    the planted genes (precision@k >= 0.8), as does the moderated t-test."""
    ranking, metrics = simulated_ranking(tmp_path, "gaussian")
    assert (ranking["vae_status"] == "called").all(), ranking["vae_status"].unique()
    assert metrics["vae_precision_at_k"] >= 0.8, metrics
    assert metrics["classical_precision_at_k"] >= 0.8, metrics


@pytest.mark.parametrize(
    "likelihood, sim",
    [
        ("gaussian", dict(n_planted=5)),  # few planted genes
        ("gaussian", dict(log2_fold_change=0.75)),  # small fold changes
        ("nb", {}),
        ("nb", dict(n_planted=5)),
        ("nb", dict(log2_fold_change=0.75)),
    ],
    ids=["gaussian-5-planted", "gaussian-lfc-0.75", "nb-default", "nb-5-planted", "nb-lfc-0.75"],
)
def test_simulated_hard_settings_precise_or_the_vae_abstains(tmp_path, likelihood, sim):
    """Hard settings and the nb likelihood (whose latent space does not carry the condition of the
    simulated bulk-depth counts, docs/science.md): the VAE route either abstains (no call, and
    the summary says so) or its list is precise; it never presents a noise ranking as a result.
    The moderated t-test on every gene finds the planted genes in every setting."""
    ranking, metrics = simulated_ranking(tmp_path, likelihood, **sim)
    status = set(ranking["vae_status"]) - {"not modelled"}
    assert len(status) == 1 and status <= {"called", "abstained"}, status
    if status == {"called"}:
        assert metrics["vae_precision_at_k"] >= 0.8, metrics
    else:
        assert not ranking["vae_call"].any(), ranking[ranking["vae_call"]]
    assert metrics["classical_precision_at_k"] >= 0.8, metrics


def test_label_structure_metrics_separate_signal_from_noise():
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b"], 40)
    separated = rng.normal(size=(80, 3)) + (y == "b")[:, None] * 6.0
    noise = rng.normal(size=(80, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        good = labels.label_structure(separated, y)
        bad = labels.label_structure(noise, y)
    assert good["knn_accuracy"] == 1.0 and good["logreg_auc"] > 0.99 and good["silhouette"] > 0.5
    assert bad["knn_accuracy"] < 0.75 and bad["logreg_auc"] < 0.75 and abs(bad["silhouette"]) < 0.1
    three = np.repeat(["a", "b", "c"], 20)
    multi = labels.label_structure(rng.normal(size=(60, 2)) + np.eye(3)[np.searchsorted(["a", "b", "c"], three)][:, :2] * 8, three)
    assert "logreg_balanced_accuracy" in multi and multi["logreg_balanced_accuracy"] > 0.9
    held = labels.heldout(separated[:60], y[:60], separated[60:], y[60:])
    assert held["knn_accuracy"] == 1.0
