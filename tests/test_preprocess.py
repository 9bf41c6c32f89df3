"""Unit tests of genovae.preprocess: the stratified split and the train-fitted transform."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genovae import io
from genovae.errors import ConfigError, InputError
from genovae.preprocess import Transform, fit_transform, preprocess, stratified_split

N, G = 60, 30
FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def samples(n=N):
    return [f"s{i:02d}" for i in range(n)]


def genes(g=G):
    return [f"g{j:02d}" for j in range(g)]


def labels(n=N):
    """Three unequal groups (30 / 20 / 10), shuffled."""
    lab = np.array(["a"] * (n // 2) + ["b"] * (n // 3) + ["c"] * (n - n // 2 - n // 3))
    np.random.default_rng(9).shuffle(lab)
    return pd.Series(lab, index=samples(n))


def counts_matrix(seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.lognormal(2.0, 1.0, size=G) * rng.lognormal(0, 0.3, size=(N, 1))
    return pd.DataFrame(rng.poisson(mu).astype(float) + 1.0, index=samples(), columns=genes())


def log_matrix(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(5.0, 1.0, size=(N, G)) * rng.uniform(0.5, 2.0, size=G)
    return pd.DataFrame(x, index=samples(), columns=genes())


def intensity_matrix(seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.lognormal(6.0, 1.5, size=(N, G)), index=samples(), columns=genes())


MATRICES = {"counts": counts_matrix, "log": log_matrix, "intensity": intensity_matrix}


def train_mask(seed=1):
    return (stratified_split(labels(), FRACTIONS, seed) == "train").to_numpy()


# --------------------------------------------------------------- split
def test_split_every_group_in_every_split():
    lab = labels()
    out = stratified_split(lab, FRACTIONS, seed=1)
    assert list(out.index) == list(lab.index)
    assert set(out) == {"train", "val", "test"}
    table = pd.crosstab(lab, out)
    assert (table[["train", "val", "test"]] > 0).all().all()
    # a group of two samples still gets one per non-zero split: here val and test
    tiny = pd.Series(["x"] * 3 + ["y"] * 20)
    t = pd.crosstab(tiny, stratified_split(tiny, FRACTIONS, seed=0))
    assert t.loc["x"].to_dict() == {"test": 1, "train": 1, "val": 1}


def test_split_fractions_respected():
    lab = labels(300)
    out = stratified_split(lab, FRACTIONS, seed=2)
    share = out.value_counts(normalize=True)
    for s, f in FRACTIONS.items():
        assert share[s] == pytest.approx(f, abs=0.02)
    # per group too
    for level in lab.unique():
        sub = out[lab == level].value_counts(normalize=True)
        for s, f in FRACTIONS.items():
            assert sub[s] == pytest.approx(f, abs=0.03), (level, s)


def test_split_zero_test_fraction():
    out = stratified_split(labels(), {"train": 0.8, "val": 0.2, "test": 0.0}, seed=1)
    assert set(out) == {"train", "val"}


def test_split_seeded():
    lab = labels()
    a = stratified_split(lab, FRACTIONS, seed=7)
    b = stratified_split(lab, FRACTIONS, seed=7)
    c = stratified_split(lab, FRACTIONS, seed=8)
    assert a.equals(b)
    assert not a.equals(c)
    # a different seed moves samples but keeps the per-group sizes
    assert pd.crosstab(lab, a).equals(pd.crosstab(lab, c))


def test_split_group_too_small():
    with pytest.raises(InputError, match="too few"):
        stratified_split(pd.Series(["x", "x", "y", "y", "y", "y"]), FRACTIONS, seed=1)


# ------------------------------------------------ fitted on train only
def _state(t):
    return (list(t.genes), list(t.center), list(t.scale), t.library_size_target)


@pytest.mark.parametrize("value_type", ["counts", "log", "intensity"])
@pytest.mark.parametrize("scaling", ["zscore", "minmax"])
def test_transform_uses_train_only(value_type, scaling):
    m = MATRICES[value_type]()
    mask = train_mask()
    kw = dict(n_top_genes=12, scaling=scaling)
    ref, _ = fit_transform(m, mask, value_type, **kw)
    # val/test samples scaled by 100, and one gene made wildly variable there
    other = m.copy()
    other.loc[~mask] *= 100.0
    other.loc[~mask, "g00"] = np.random.default_rng(0).uniform(1, 1e6, size=(~mask).sum())
    t2, _ = fit_transform(other, mask, value_type, **kw)
    assert _state(t2) == _state(ref)
    # changing one train sample (part of its genes) does change the fit
    changed = m.copy()
    first_train = np.flatnonzero(mask)[0]
    changed.iloc[first_train, :5] *= 100.0
    t3, _ = fit_transform(changed, mask, value_type, **kw)
    assert _state(t3) != _state(ref)


# ------------------------------------------------------------- scaling
@pytest.mark.parametrize("value_type", ["counts", "log", "intensity"])
def test_zscore_train_standardised(value_type):
    m = MATRICES[value_type]()
    mask = train_mask()
    t, logx = fit_transform(m, mask, value_type, n_top_genes=None, scaling="zscore")
    z = t.scale_log(logx)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[mask].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[mask].std(axis=0), 1.0, atol=1e-4)
    # non-train samples are not exactly standardised (the fit is not on them)
    assert np.abs(z[~mask].mean(axis=0)).max() > 1e-3
    np.testing.assert_allclose(t.unscale(z), logx, rtol=1e-5, atol=1e-5)


def test_minmax_train_unit_interval_and_clipped():
    m = log_matrix()
    mask = train_mask()
    m.loc[~mask] = m.loc[~mask] * 3.0 - 5.0  # val/test go beyond the train range
    t, logx = fit_transform(m, mask, "log", n_top_genes=None, scaling="minmax")
    z = t.scale_log(logx)
    assert z[mask].min() == 0.0 and z[mask].max() == 1.0
    np.testing.assert_allclose(z[mask].min(axis=0), 0.0, atol=1e-7)
    np.testing.assert_allclose(z[mask].max(axis=0), 1.0, atol=1e-6)
    assert z.min() >= 0.0 and z.max() <= 1.0
    raw = (logx[~mask] - np.asarray(t.center)) / np.asarray(t.scale)
    assert (raw < 0).any() and (raw > 1).any()  # clipping really happened


def test_counts_normalisation_by_hand():
    m = counts_matrix()
    mask = train_mask()
    t, logx = fit_transform(m, mask, "counts", n_top_genes=None, scaling="none")
    raw = m.to_numpy()
    target = np.median(raw[mask].sum(axis=1))
    assert t.library_size_target == pytest.approx(target)
    assert t.log_base == pytest.approx(np.e)
    i, gene = 7, "g05"
    j = t.genes.index(gene)
    hand = np.log1p(m.loc[m.index[i], gene] / raw[i].sum() * target)
    assert logx[i, j] == pytest.approx(hand, rel=1e-12)
    # scaling "none" leaves the log values as they are
    np.testing.assert_allclose(t.scale_log(logx), logx.astype(np.float32), rtol=1e-6)
    # an explicit target is used as given
    t2, logx2 = fit_transform(
        m, mask, "counts", n_top_genes=None, scaling="none", library_size_target=1e4
    )
    assert t2.library_size_target == 1e4
    assert logx2[i, j] == pytest.approx(
        np.log1p(m.loc[m.index[i], gene] / raw[i].sum() * 1e4), rel=1e-12
    )


def test_counts_library_uses_all_genes_even_after_selection():
    m = counts_matrix()
    mask = train_mask()
    t, logx = fit_transform(m, mask, "counts", n_top_genes=5, scaling="none")
    raw = m.to_numpy()
    j = list(m.columns).index(t.genes[0])
    hand = np.log1p(raw[3, j] / raw[3].sum() * t.library_size_target)
    assert logx[3, 0] == pytest.approx(hand, rel=1e-12)


def test_intensity_clip_then_log2():
    m = intensity_matrix()
    m.iloc[0, 0] = 0.0
    m.iloc[1, 0] = 0.25
    m.iloc[2, 0] = 1e9
    mask = np.ones(N, bool)
    t, logx = fit_transform(
        m,
        mask,
        "intensity",
        n_top_genes=None,
        scaling="none",
        intensity_floor=1.0,
        intensity_ceiling=1e6,
    )
    assert t.log_base == 2.0
    assert t.genes[0] == "g00"
    assert logx[0, 0] == 0.0 and logx[1, 0] == 0.0  # clipped to the floor, log2(1) = 0
    assert logx[2, 0] == pytest.approx(np.log2(1e6))
    assert logx[3, 0] == pytest.approx(np.log2(m.iloc[3, 0]))
    with pytest.raises(ConfigError, match="intensity_floor"):
        fit_transform(m, mask, "intensity", intensity_floor=0.0)


# ------------------------------------------------------ gene selection
def test_n_top_genes_by_train_mad_and_constant_dropped():
    rng = np.random.default_rng(4)
    mask = train_mask()
    ntr = int(mask.sum())
    x = np.empty((N, G))
    spread = np.linspace(0.1, 3.0, G)  # gene j has MAD proportional to spread[j]
    base = rng.normal(size=N)
    base = (base - np.median(base[mask])) / np.median(np.abs(base[mask] - np.median(base[mask])))
    x[:] = base[:, None] * spread[None, :] + 10.0
    # g29 (largest spread) is constant on train: must be dropped
    x[mask, G - 1] = 4.0
    # g00 has a tiny MAD but a huge sd (two outliers): not a top gene by MAD
    x[np.flatnonzero(mask)[:2], 0] = [1e3, -1e3]
    # val/test values are reversed in spread: must not matter
    x[~mask] = rng.normal(size=((~mask).sum(), G)) * spread[::-1] * 50
    m = pd.DataFrame(x, index=samples(), columns=genes())
    t, logx = fit_transform(m, mask, "log", n_top_genes=5, scaling="zscore")
    assert t.genes == ["g24", "g25", "g26", "g27", "g28"]
    assert logx.shape == (N, 5)
    np.testing.assert_array_equal(logx, x[:, 24:29])
    assert t.filter_report["after_constant_filter"] == G - 1
    assert t.filter_report["selected"] == 5
    # without a limit, every non-constant gene is kept in input order
    t_all, _ = fit_transform(m, mask, "log", n_top_genes=None)
    assert t_all.genes == genes()[:-1]
    assert ntr > 5


def test_all_constant_raises():
    m = pd.DataFrame(np.ones((N, 4)), index=samples(), columns=genes(4))
    with pytest.raises(InputError, match="no gene"):
        fit_transform(m, train_mask(), "log")


def test_min_expression_filter():
    m = log_matrix()
    mask = train_mask()
    m["g03"] = 0.0
    m.loc[m.index[mask][:3], "g03"] = 10.0  # expressed in 3 train samples only
    t, _ = fit_transform(m, mask, "log", n_top_genes=None, min_expression=1.0, min_samples=5)
    assert "g03" not in t.genes
    t, _ = fit_transform(m, mask, "log", n_top_genes=None, min_expression=1.0, min_samples=3)
    assert "g03" in t.genes


# --------------------------------------------- save / load / apply / preprocess
@pytest.mark.parametrize(
    "value_type,scaling", [("counts", "zscore"), ("log", "minmax"), ("intensity", "zscore")]
)
def test_preprocess_files_and_apply_roundtrip(tmp_path, value_type, scaling):
    m = MATRICES[value_type]()
    mpath = tmp_path / "matrix.parquet"
    io.write_matrix(mpath, m)
    lab = labels()
    sheet = pd.DataFrame({"sample_id": lab.index, "condition": lab.to_numpy(), "extra": "x"})
    # the sheet's row order differs from the matrix's
    sheet = sheet.iloc[::-1]
    spath = tmp_path / "samples.tsv"
    sheet.to_csv(spath, sep="\t", index=False)
    out = dict(
        out_features=tmp_path / "pre" / "features.parquet",
        out_split=tmp_path / "pre" / "split.tsv",
        out_transform=tmp_path / "pre" / "transform.json",
    )
    t = preprocess(
        mpath,
        spath,
        **out,
        condition="condition",
        value_type=value_type,
        split=FRACTIONS,
        seed=3,
        log_base="2",
        n_top_genes=12,
        scaling=scaling,
    )
    features = io.read_matrix(out["out_features"])
    split = pd.read_csv(out["out_split"], sep="\t", dtype={"sample_id": str})
    assert list(features.index) == samples()
    assert list(features.columns) == t.genes and len(t.genes) == 12
    assert list(split.columns) == ["sample_id", "split", "condition", "library_size"]
    assert list(split["sample_id"]) == samples()
    assert list(split["condition"]) == list(lab.loc[samples()])
    expected = stratified_split(lab.loc[samples()], FRACTIONS, 3)
    assert list(split["split"]) == list(expected)
    raw = io.read_matrix(mpath)
    np.testing.assert_allclose(
        split["library_size"], raw.to_numpy(np.float64).sum(axis=1), rtol=1e-9
    )
    # the transform was fitted on the train rows of that split
    train = (split["split"] == "train").to_numpy()
    if scaling == "zscore":
        np.testing.assert_allclose(features.to_numpy()[train].mean(axis=0), 0.0, atol=1e-5)

    loaded = Transform.load(out["out_transform"])
    assert loaded == t
    json.loads(open(out["out_transform"]).read())  # plain JSON
    applied = loaded.apply(raw)
    assert list(applied.columns) == t.genes
    np.testing.assert_allclose(applied.to_numpy(), features.to_numpy(), rtol=1e-6, atol=1e-6)
    # column order and extra columns of a new frame do not matter
    shuffled = raw[raw.columns[::-1]]
    np.testing.assert_allclose(
        loaded.apply(shuffled).to_numpy(), features.to_numpy(), rtol=1e-6, atol=1e-6
    )
    # a subset of samples transforms the same way as in the full frame
    np.testing.assert_allclose(
        loaded.apply(raw.iloc[5:9]).to_numpy(), features.to_numpy()[5:9], rtol=1e-6, atol=1e-6
    )
    with pytest.raises(InputError, match="missing"):
        loaded.apply(raw.drop(columns=[t.genes[0], t.genes[3]]))


def test_transform_save_load_roundtrip(tmp_path):
    m = counts_matrix()
    t, _ = fit_transform(m, train_mask(), "counts", n_top_genes=10)
    path = tmp_path / "t.json"
    t.save(path)
    back = Transform.load(path)
    assert back == t
    np.testing.assert_array_equal(back.apply(m).to_numpy(), t.apply(m).to_numpy())


# ------------------------------------------- gene selection: Seurat v3 (issue 15)
DATA = Path(__file__).parent / "data"


def test_loess_reproduces_a_quadratic_and_interpolates_smoothly():
    from genovae.preprocess import loess

    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(-2, 3, size=5000))
    y = 0.5 * x**2 - x + 1
    # local quadratics fit a quadratic exactly, also between the interpolation vertices
    np.testing.assert_allclose(loess(x, y, vertices=60), y, atol=1e-6)
    noisy = np.sin(x) + rng.normal(0, 0.3, size=len(x))
    exact = loess(x, noisy, vertices=len(x))  # evaluated at every x
    interpolated = loess(x, noisy, vertices=200)
    assert np.max(np.abs(exact - interpolated)) < 0.02
    assert np.max(np.abs(exact - np.sin(x))) < 0.15


def test_seurat_v3_matches_scanpy_on_a_fixture():
    """scanpy 1.11.5's highly_variable_genes(flavor="seurat_v3") ranking of a fixed NB count matrix
    (tests/data/make_seurat_v3_fixture.py): the top-k agree on >= 90 % (measured: 100 % at k = 50, 100;
    99 % at 200; 99.75 % at 400)."""
    f = np.load(DATA / "seurat_v3_counts.npz", allow_pickle=False)
    m = pd.DataFrame(f["counts"].astype(np.float32), columns=[str(g) for g in f["genes"]])
    reference = [str(g) for g in f["ranking"]]
    for k in (50, 100, 200, 400):
        t, _ = fit_transform(m, np.ones(len(m), bool), "counts", n_top_genes=k)
        assert t.filter_report["gene_selection"] == "seurat_v3"
        overlap = len(set(t.genes) & set(reference[:k])) / k
        assert overlap >= 0.9, (k, overlap)


def sparse_marker_counts():
    """Counts with a marker gene expressed (high) in 15 % of the samples, zero elsewhere."""
    rng = np.random.default_rng(3)
    mean = rng.lognormal(1.0, 1.0, size=G)
    x = rng.poisson(mean * rng.lognormal(0, 0.2, size=(N, 1))).astype(float)
    x[:, 0] = 0.0
    x[: int(0.15 * N), 0] = rng.poisson(40.0, size=int(0.15 * N))
    return pd.DataFrame(x, index=samples(), columns=genes())


def test_sparse_marker_kept_by_seurat_v3_and_variance_dropped_by_mad():
    m = sparse_marker_counts()
    mask = np.ones(N, bool)
    auto, _ = fit_transform(m, mask, "counts", n_top_genes=5)
    assert auto.filter_report["gene_selection"] == "seurat_v3" and "g00" in auto.genes
    mad, _ = fit_transform(m, mask, "counts", n_top_genes=5, gene_selection="mad")
    assert mad.filter_report["gene_selection"] == "mad" and "g00" not in mad.genes
    # log values (e.g. log-normalised single cells): mad is the default, variance keeps the marker
    logm = np.log2(m + 1)
    t, _ = fit_transform(logm, mask, "log", n_top_genes=5)
    assert t.filter_report["gene_selection"] == "mad" and "g00" not in t.genes
    t, _ = fit_transform(logm, mask, "log", n_top_genes=5, gene_selection="variance")
    assert "g00" in t.genes


def test_seurat_v3_uses_train_samples_only():
    m = sparse_marker_counts()
    mask = np.ones(N, bool)
    mask[: int(0.15 * N)] = False  # the marker's samples are not in train: it is constant there
    t, _ = fit_transform(m, mask, "counts", n_top_genes=5)
    assert "g00" not in t.genes


@pytest.mark.realdata
def test_pbmc_markers_are_selected_by_seurat_v3():
    """pbmc68k_reduced (700 cells x 765 genes, counts): of CD8A, FOXP3, IL2RA, CD14, CD19 only CD8A is
    among the 765 genes (PROVENANCE.md). The default n_top_genes (2000) keeps all 765; at 200 genes,
    Seurat v3 keeps CD8A and the B/NK/T markers that MAD drops (CD8A is detected in 9 % of the cells)."""
    from conftest import shared_dataset

    from genovae import settings

    path = shared_dataset("pbmc68k_reduced") / "counts.tsv"
    m = pd.read_csv(path, sep="\t", index_col=0)
    markers = [g for g in ("CD8A", "FOXP3", "IL2RA", "CD14", "CD19") if g in m.columns]
    assert markers == ["CD8A"]
    mask = np.ones(len(m), bool)
    default_n = settings.section_defaults("preprocess")["n_top_genes"]
    t, _ = fit_transform(m, mask, "counts", n_top_genes=default_n)
    assert set(markers) <= set(t.genes)
    t, _ = fit_transform(m, mask, "counts", n_top_genes=200)
    more = ["CD8A", "CD8B", "CD79A", "MS4A1", "GNLY", "NKG7"]
    assert set(more) <= set(t.genes)
    mad, _ = fit_transform(m, mask, "counts", n_top_genes=200, gene_selection="mad")
    assert "CD8A" not in mad.genes and "MS4A1" not in mad.genes
    # scanpy's own top 200 of the same matrix (tests/data/seurat_v3_pbmc68k_top.txt): measured overlap 100 %
    lines = (DATA / "seurat_v3_pbmc68k_top.txt").read_text().splitlines()
    reference = [g for g in lines if not g.startswith("#")]
    assert len(set(t.genes) & set(reference[:200])) / 200 >= 0.9
