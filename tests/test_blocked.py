"""The memory-bounded passes (blocks of samples or genes, PCA without copies, one
neighbour search for leave-one-out k-NN) give the numbers of the direct computations."""

import io as _io
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from genovae import evaluate, pca, risk, synthetic
from genovae.apply import latent_table
from genovae.dataset import Cohort
from genovae.labels import loo_knn_predict
from genovae.preprocess import Transform
from genovae.simulate import simulate_cohort
from genovae.train import train_vae


def _low_rank(n=400, g=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)) @ rng.standard_normal((8, g)) + 0.3 * rng.standard_normal((n, g)) + 2.0
    return x.astype(np.float32)


# ------------------------------------------------------------------ PCA
@pytest.mark.parametrize("path", ["dense", "arpack"])
def test_pca_of_row_subset_matches_sklearn(monkeypatch, path):
    x = _low_rank()
    rows = np.sort(np.random.default_rng(1).choice(len(x), 250, replace=False))
    if path == "arpack":
        monkeypatch.setattr(pca, "DENSE_ENTRIES", 0)
    monkeypatch.setattr(pca, "BLOCK_ROWS", 37)
    fit = pca.fit(x, rows, 5)
    ref = PCA(n_components=5, svd_solver="full").fit(x[rows].astype(np.float64))
    # same subspace (components up to sign), same singular values
    np.testing.assert_allclose(np.abs(fit.components_ @ ref.components_.T), np.eye(5), atol=1e-4)
    np.testing.assert_allclose(fit.singular_values_, ref.singular_values_, rtol=1e-5)
    np.testing.assert_allclose(fit.mean_, ref.mean_, rtol=1e-6)
    # scores of any rows, and the reconstruction error, as sklearn's
    signs = np.sign(np.sum(fit.components_ * ref.components_, axis=1))
    np.testing.assert_allclose(fit.transform(x, rows[:50]) * signs, ref.transform(x[rows[:50]].astype(float)),
                               atol=1e-3 * np.abs(ref.transform(x[rows])).max())
    direct = ((ref.inverse_transform(ref.transform(x[rows].astype(float))) - x[rows]) ** 2).sum()
    assert fit.squared_error(x, rows) == pytest.approx(direct, rel=1e-5)
    # deterministic, signs included
    again = pca.fit(x, rows, 5)
    np.testing.assert_array_equal(again.components_, fit.components_)
    assert (fit.components_[np.arange(5), np.abs(fit.components_).argmax(axis=1)] > 0).all()


def test_pca_with_as_many_components_as_samples_is_exact():
    x = _low_rank(n=12, g=30)
    fit = pca.fit(x, np.arange(12), 20)  # capped at the 12 samples
    assert fit.n_components_ == 12
    assert fit.squared_error(x) == pytest.approx(0.0, abs=1e-6)


def test_column_moments_in_blocks():
    x = _low_rank(n=101, g=7)
    rows = np.arange(3, 90)
    mean, var = pca.column_moments(x, rows, block=10)
    np.testing.assert_allclose(mean, x[rows].astype(float).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(var, x[rows].astype(float).var(axis=0), rtol=1e-10)


# ---------------------------------------------------------- leave-one-out k-NN
@pytest.mark.parametrize("k", [1, 5])
def test_loo_knn_is_sklearn_leave_one_out(k):
    rng = np.random.default_rng(4)
    y = rng.choice(["a", "b", "c"], size=90)
    X = rng.standard_normal((90, 4)) + (y == "b")[:, None] * 1.0
    expected = cross_val_predict(KNeighborsClassifier(n_neighbors=k), X, y, cv=LeaveOneOut())
    np.testing.assert_array_equal(loo_knn_predict(X, y, k), expected)


def test_loo_knn_never_votes_with_the_sample_itself():
    # every sample's nearest neighbour is itself at distance 0: with k=1 leave-one-out,
    # the prediction must come from the other cluster member
    X = np.array([[0.0], [0.1], [10.0], [10.1]])
    y = np.array(["a", "b", "a", "b"])
    np.testing.assert_array_equal(loo_knn_predict(X, y, 1), ["b", "a", "b", "a"])


# ----------------------------------------------------------------- Welch
def test_welch_from_moments_is_scipy_ttest():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 30)), rng.normal(size=(15, 30)) + 0.4
    a[:, 0] = b[:, 0] = 1.0  # constant everywhere: t 0, p 1
    a[:, 1], b[:, 1] = 1.0, 2.0  # constant within groups, different means
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_ref, p_ref = stats.ttest_ind(a, b, axis=0, equal_var=False)
    t, p = risk.welch(a, b)
    np.testing.assert_allclose(t, np.nan_to_num(t_ref), rtol=1e-12)
    np.testing.assert_allclose(p, np.where(np.isfinite(p_ref), p_ref, 1.0), rtol=1e-12)
    assert t[0] == 0 and p[0] == 1


# ------------------------------------------------- cohort-level passes
@pytest.fixture(scope="module")
def nb_setup():
    """A small counts cohort in the workflow's layout and a briefly trained nb VAE."""
    matrix, sheet, _ = simulate_cohort(n_samples=90, n_genes=60, n_planted=6, seed=5)
    counts = matrix.to_numpy(dtype=np.float64)
    lib_all = counts.sum(axis=1)
    target = float(np.median(lib_all))
    logx = np.log1p(counts / lib_all[:, None] * target)
    split = np.array(["train"] * 60 + ["val"] * 15 + ["test"] * 15)
    np.random.default_rng(0).shuffle(split)
    tr = split == "train"
    t = Transform(value_type="counts", log_base=float(np.e), genes=list(matrix.columns),
                  center=logx[tr].mean(axis=0).tolist(), scale=logx[tr].std(axis=0).tolist(),
                  library_size_target=target)
    x = np.ascontiguousarray(t.scale_log(logx))
    c32 = np.ascontiguousarray(counts.astype(np.float32))
    cohort = Cohort(sample_ids=matrix.index.to_numpy(), split=split, condition=sheet["condition"].to_numpy(),
                    x=x, target=c32, library=c32.sum(axis=1), library_all=lib_all, genes=list(matrix.columns))
    model, _, _ = train_vae(cohort, model_config=dict(hidden=[16], latent_dim=3, dropout=0.0, batch_norm=True,
                                                      likelihood="nb"),
                            epochs=15, batch_size=16, lr=1e-2, kl_warmup_epochs=2, patience=50, seed=1,
                            device="cpu", progress=_io.StringIO())
    return cohort, t, model


def _metrics(cohort, t, model):
    p = evaluate.fit_pca(cohort, 3)
    return {**evaluate.split_metrics(model, cohort, t, "train", pca=p), **evaluate.split_metrics(model, cohort, t, "val", pca=p)}


def test_split_metrics_do_not_depend_on_the_block_size(monkeypatch, nb_setup):
    cohort, t, model = nb_setup
    ref = _metrics(cohort, t, model)
    monkeypatch.setattr(evaluate, "BATCH", 7)
    monkeypatch.setattr(pca, "BLOCK_ROWS", 5)
    small = _metrics(cohort, t, model)
    for key, value in ref.items():
        assert np.allclose(small[key], value, rtol=1e-5, atol=1e-7), key
    # and recon_mse is the plain mean over the split of the decoded-mean error
    import torch

    m = cohort.mask("val")
    with torch.no_grad():
        mu, _ = model.encode(torch.from_numpy(cohort.x[m]))
        mean = model.mean(model.decode(mu), torch.from_numpy(cohort.library[m])).numpy()
    pred = t.scale_log(t.counts_to_log(mean, cohort.library_all[m]))
    assert ref["val_recon_mse"] == pytest.approx(float(((pred - cohort.x[m]) ** 2).mean()), rel=1e-5)


def test_latent_table_does_not_depend_on_the_block_size(monkeypatch, nb_setup):
    cohort, t, model = nb_setup
    lat, err = latent_table(model, cohort, t)
    monkeypatch.setattr(evaluate, "BATCH", 4)
    lat4, err4 = latent_table(model, cohort, t)
    np.testing.assert_allclose(lat4.filter(like="z").to_numpy(), lat.filter(like="z").to_numpy(), atol=1e-6)
    np.testing.assert_allclose(err4["reconstruction_mse"], err["reconstruction_mse"], rtol=1e-5)


def test_rank_genes_classical_route_is_the_direct_computation(nb_setup):
    from genovae.de import moderated_t

    cohort, t, model = nb_setup
    table, _ = risk.rank_genes(model, cohort, t)
    logx = t.unscale(cohort.x)
    for name, case_m, ctrl_m in risk.contrasts(cohort.condition):
        part = table[table["contrast"] == name].set_index("gene").loc[cohort.genes]
        a, b = logx[case_m], logx[ctrl_m]
        ref = moderated_t(len(a), a.mean(axis=0), a.var(axis=0, ddof=1), len(b), b.mean(axis=0), b.var(axis=0, ddof=1))
        np.testing.assert_allclose(part["t_stat"], ref["t"], rtol=1e-9)
        np.testing.assert_allclose(part["p_value"], ref["p"], rtol=1e-9)
        lfc = (logx[case_m].mean(axis=0) - logx[ctrl_m].mean(axis=0)) / np.log(2)
        np.testing.assert_allclose(part["log2_fold_change"], lfc, rtol=1e-9, atol=1e-12)


def test_log_moments_in_gene_blocks(nb_setup):
    cohort, t, _ = nb_setup
    m = cohort.mask("train")
    n, mean, var = risk.log_moments(cohort.x, m, t, block=7)
    logx = t.unscale(cohort.x)[m]
    assert n == m.sum()
    np.testing.assert_allclose(mean, logx.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(var, logx.var(axis=0, ddof=1), rtol=1e-10)


def test_group_moments_map_model_space_to_log_space(nb_setup):
    cohort, t, _ = nb_setup
    rows = np.flatnonzero(cohort.mask("train"))
    labels = cohort.condition[rows]
    got = synthetic.group_moments(cohort.x, labels, rows, t)
    logx = t.unscale(cohort.x[rows])
    np.testing.assert_allclose(got["all"]["mean"], logx.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(got["all"]["var"], logx.var(axis=0), rtol=1e-8)
    for c in set(labels):
        np.testing.assert_allclose(got[c]["var"], logx[labels == c].var(axis=0), rtol=1e-8)
        assert got[c]["n"] == (labels == c).sum()


def test_pca_falls_back_to_the_exact_svd_when_arpack_does_not_converge(monkeypatch, caplog):
    from scipy.sparse.linalg import ArpackNoConvergence

    def no_convergence(*_a, **_k):
        raise ArpackNoConvergence("no convergence", np.array([]), np.array([]))

    x = _low_rank()
    rows = np.arange(300)
    monkeypatch.setattr(pca, "DENSE_ENTRIES", 0)
    monkeypatch.setattr(pca, "_arpack", no_convergence)
    fit = pca.fit(x, rows, 5)
    monkeypatch.setattr(pca, "DENSE_ENTRIES", 10**12)
    exact = pca.fit(x, rows, 5)
    np.testing.assert_array_equal(fit.components_, exact.components_)
    assert "ARPACK did not converge" in caplog.text


def test_silhouettes_of_large_cohorts_use_a_seeded_subsample(monkeypatch):
    """Silhouettes are O(n^2): above SILHOUETTE_MAX samples they use a seeded subsample, which stays
    within 0.02 of the full value; small cohorts use every sample, exactly as scikit-learn does."""
    from sklearn.metrics import silhouette_samples, silhouette_score

    from genovae import labels

    rng = np.random.default_rng(3)
    n = 4000
    y = rng.choice(["a", "b", "c"], size=n)
    X = rng.normal(size=(n, 4)) + (y == "b")[:, None] * 1.5 + (y == "c")[:, None] * np.array([0, 3, 0, 0])
    full = silhouette_score(X, y)
    assert labels.label_structure(X, y)["silhouette"] == pytest.approx(full, abs=1e-12)
    monkeypatch.setattr(labels, "SILHOUETTE_MAX", 1000)
    sub = labels.label_structure(X, y, seed=0)["silhouette"]
    assert sub != full and abs(sub - full) < 0.02
    assert labels.label_structure(X, y, seed=0)["silhouette"] == sub  # seeded
    # the batch silhouette, within each group, is subsampled the same way
    batch = rng.choice(["b1", "b2"], size=n)
    X[batch == "b2"] += 0.5
    groups = np.where(y == "a", "g1", "g2")
    exact = np.average(
        [np.mean(1 - np.abs(silhouette_samples(X[groups == g], batch[groups == g]))) for g in ("g1", "g2")],
        weights=[(groups == g).sum() for g in ("g1", "g2")],
    )
    sampled = labels.batch_mixing(X, batch, groups)["batch_asw"]
    assert sampled != exact and abs(sampled - exact) < 0.02
    monkeypatch.setattr(labels, "SILHOUETTE_MAX", 10_000)
    assert labels.batch_mixing(X, batch, groups)["batch_asw"] == pytest.approx(exact, abs=1e-12)


def test_knn_scores_of_large_cohorts_average_a_seeded_subsample(monkeypatch):
    """Above KNN_QUERY_MAX samples the k-NN accuracy and batch mixing average a seeded subsample of
    samples whose neighbours are searched among all: the same votes as the full computation."""
    from genovae import labels

    rng = np.random.default_rng(4)
    n = 3000
    y = rng.choice(["a", "b"], size=n)
    X = rng.normal(size=(n, 3)) + (y == "b")[:, None] * 1.0
    full = labels.loo_knn_predict(X, y, 5)
    rows = np.array([0, 7, 2999, 1500])
    assert (labels.loo_knn_predict(X, y, 5, rows=rows) == full[rows]).all()
    exact = labels.label_structure(X, y)["knn_accuracy"]
    assert exact == pytest.approx((full == y).mean())
    batch = rng.choice(["b1", "b2"], size=n)
    mixing = labels.batch_mixing(X, batch)["batch_mixing"]
    monkeypatch.setattr(labels, "KNN_QUERY_MAX", 1000)
    sub = labels.label_structure(X, y)["knn_accuracy"]
    assert sub != exact and abs(sub - exact) < 0.03
    sub_mixing = labels.batch_mixing(X, batch)["batch_mixing"]
    assert sub_mixing != mixing and abs(sub_mixing - mixing) < 0.03
