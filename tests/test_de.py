"""genovae.de: limma-style empirical Bayes (fitFDist, squeezeVar, trigammaInverse), the
two-group moderated t, and the blocked classical route over every gene of a matrix."""

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from genovae import de, io
from genovae.preprocess import fit_transform


def _inv_chi2_variances(rng, g, d0, s0_2):
    """sigma2_g = s0_2 d0 / chi2(d0): limma's prior for the gene-wise variances."""
    return s0_2 * d0 / rng.chisquare(d0, g)


# ------------------------------------------------------------- trigamma inverse
def test_trigamma_inverse_inverts_trigamma():
    y = np.logspace(-4, 6, 200)
    x = special.polygamma(1, y)
    np.testing.assert_allclose(de.trigamma_inverse(x), y, rtol=1e-6)
    assert de.trigamma_inverse(float(special.polygamma(1, 2.5))) == pytest.approx(2.5, rel=1e-8)
    assert np.isnan(de.trigamma_inverse(-1.0))


# ------------------------------------------------------------- fitFDist
def test_fit_f_dist_recovers_the_prior():
    rng = np.random.default_rng(11)
    g, d0, s0_2, d = 5000, 4.0, 0.5, 6
    s2 = _inv_chi2_variances(rng, g, d0, s0_2) * rng.chisquare(d, g) / d
    est_d0, est_s0 = de.fit_f_dist(s2, d)
    assert est_d0 == pytest.approx(d0, rel=0.15)
    assert est_s0.shape == (g,)
    np.testing.assert_allclose(est_s0, s0_2, rtol=0.15)


def test_fit_f_dist_trend_recovers_a_mean_variance_trend():
    rng = np.random.default_rng(12)
    g, d0, d = 5000, 6.0, 8
    cov = rng.uniform(0, 10, g)
    s0_2 = np.exp(1.0 - 0.3 * cov)  # log-linear: inside the spline's space
    s2 = _inv_chi2_variances(rng, g, d0, s0_2) * rng.chisquare(d, g) / d
    est_d0, est_s0 = de.fit_f_dist(s2, d, covariate=cov)
    assert est_d0 == pytest.approx(d0, rel=0.2)
    np.testing.assert_allclose(est_s0, s0_2, rtol=0.15)
    # without the trend the spread of the prior looks larger: fewer prior df
    assert de.fit_f_dist(s2, d)[0] < 0.5 * est_d0


def test_trend_spline_spans_the_space_of_r_ns():
    # R's ns(x, df=4, intercept=TRUE): cubic B-splines on the range and the 1/3, 2/3 quantiles,
    # constrained to zero second derivative at both ends; same least-squares fit as de's basis
    from scipy.interpolate import BSpline

    rng = np.random.default_rng(1)
    x = rng.gamma(2, 2, 400)
    y = np.sin(x) + rng.normal(size=400)
    lo, hi = x.min(), x.max()
    knots = np.r_[[lo] * 4, np.quantile(x, [1 / 3, 2 / 3]), [hi] * 4]
    b = BSpline.design_matrix(x, knots, 3).toarray()
    eye = np.eye(b.shape[1])
    cons = np.array([[BSpline(knots, eye[i], 3).derivative(2)(at) for i in range(b.shape[1])] for at in (lo, hi)])
    ns = b @ np.linalg.svd(cons)[2][2:].T
    ref = ns @ np.linalg.lstsq(ns, y, rcond=None)[0]
    basis = de._ns_basis(x, de._ns_knots(x, 4))
    np.testing.assert_allclose(basis @ np.linalg.lstsq(basis, y, rcond=None)[0], ref, atol=1e-10)


def test_hand_derived_values():
    # df = 2: e = log(s2) + euler_gamma; var(log s2) = pi^2/3 makes evar = pi^2/3 - trigamma(1) = pi^2/6,
    # so d0 = 2 trigammaInverse(pi^2/6) = 2 and s0_2 = exp(mean(e) + digamma(1) - log(1)) = exp(mean log s2) = 1
    a = np.pi / np.sqrt(3)
    s2 = np.exp([-a, 0.0, a])
    d0, s0_2 = de.fit_f_dist(s2, 2)
    assert d0 == pytest.approx(2.0, rel=1e-8)
    np.testing.assert_allclose(s0_2, 1.0, rtol=1e-10)
    post, d0b, _ = de.squeeze_var(s2, 2)
    np.testing.assert_allclose(post, (2 * 1.0 + 2 * s2) / 4, rtol=1e-10)
    # the same as a two-group test, n = 2 + 2 (d = 2), the group variances equal to s2
    diff = np.array([1.0, -2.0, 0.5])
    res = de.moderated_t(2, diff, s2, 2, np.zeros(3), s2)
    assert res["d0"] == pytest.approx(2.0)
    np.testing.assert_allclose(res["df_total"], 4.0)  # d + d0 = 4 < pooled 3 x 2 = 6
    t = diff / np.sqrt((1 + s2) / 2 * (1 / 2 + 1 / 2))
    np.testing.assert_allclose(res["t"], t, rtol=1e-10)
    np.testing.assert_allclose(res["p"], 2 * stats.t.sf(np.abs(t), 4), rtol=1e-8)


def test_equal_variances_give_infinite_prior_df():
    # all variances equal: evar = 0 - trigamma(d/2) < 0, so d0 = inf, s0_2 = the pooled variance
    g, n1, n2 = 10, 4, 5
    var = np.full(g, 2.0)
    diff = np.linspace(-1, 1, g)
    res = de.moderated_t(n1, diff, var, n2, np.zeros(g), var)
    assert res["d0"] == np.inf
    np.testing.assert_allclose(res["s0_2"], 2.0)
    np.testing.assert_allclose(res["s2_post"], 2.0)
    np.testing.assert_allclose(res["df_total"], 7 * g)  # capped at the pooled residual df
    t = diff / np.sqrt(2.0 * (1 / n1 + 1 / n2))
    np.testing.assert_allclose(res["t"], t, rtol=1e-12)
    np.testing.assert_allclose(res["p"], 2 * stats.t.sf(np.abs(t), 7 * g), rtol=1e-8)


def test_trend_with_no_residual_spread_uses_the_curve():
    # log s2 exactly linear in the covariate: the spline fits e exactly, evar < 0, d0 = inf,
    # s0_2 = exp(emean) = s2 exp(log(d/2) - digamma(d/2)) (limma-trend's value)
    cov = np.linspace(0, 5, 40)
    s2 = np.exp(0.5 * cov - 1)
    d0, s0_2 = de.fit_f_dist(s2, 6, covariate=cov)
    assert d0 == np.inf
    np.testing.assert_allclose(s0_2, s2 * np.exp(np.log(3) - special.digamma(3)), rtol=1e-8)


def test_left_out_genes_and_zero_variance():
    rng = np.random.default_rng(3)
    g = 200
    var1, var2 = rng.chisquare(5, g) / 5, rng.chisquare(5, g) / 5
    m1, m2 = rng.normal(size=g), rng.normal(size=g)
    var1[:3] = var2[:3] = 0.0  # constant in both groups
    m1[0] = m2[0] = 4.0
    m1[1] = 5.0
    res = de.moderated_t(4, m1, var1, 4, m2, var2)
    assert (res["t"][:3] == 0).all() and (res["p"][:3] == 1).all()
    ref = de.moderated_t(4, m1[3:], var1[3:], 4, m2[3:], var2[3:])
    np.testing.assert_allclose(res["t"][3:], ref["t"])
    assert res["d0"] == ref["d0"]
    # non-finite variances are left out of the fit; their s0_2 is still defined (trend at their covariate)
    s2 = rng.chisquare(4, g) / 4
    cov = rng.uniform(0, 3, g)
    s2b = s2.copy()
    s2b[:5] = np.nan
    d0a, s0a = de.fit_f_dist(s2[5:], 4, covariate=cov[5:])
    d0b, s0b = de.fit_f_dist(s2b, 4, covariate=cov)
    assert d0a == pytest.approx(d0b)
    np.testing.assert_allclose(s0b[5:], s0a, rtol=1e-10)
    assert np.isfinite(s0b[:5]).all()


# ------------------------------------------------------------- calibration and power
def _moments(x):
    return x.mean(axis=1), x.var(axis=1, ddof=1)


def test_null_calibration():
    g, n = 3000, 6
    small_share, few_calls = [], 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        sd = np.sqrt(_inv_chi2_variances(rng, g, 5.0, 0.4))[:, None]
        a, b = rng.normal(0, 1, (g, n)) * sd, rng.normal(0, 1, (g, n)) * sd
        res = de.moderated_t(n, *_moments(a), n, *_moments(b))
        share = float((res["p"] < 0.05).mean())
        small_share.append(share)
        assert 0.03 <= share <= 0.07, (seed, share)
        few_calls += (de.bh(res["p"]) < 0.05).mean() <= 0.01
    assert few_calls >= 18
    assert 0.04 <= np.mean(small_share) <= 0.06


def test_more_power_than_welch():
    g, n, planted = 2000, 4, 50
    tp_mod = tp_welch = 0
    for seed in range(3):
        rng = np.random.default_rng(200 + seed)
        sd = np.sqrt(_inv_chi2_variances(rng, g, 4.0, 0.5))
        a = rng.normal(0, 1, (g, n)) * sd[:, None]
        b = rng.normal(0, 1, (g, n)) * sd[:, None]
        a[:planted] += 1.5 * sd[:planted, None]
        res = de.moderated_t(n, *_moments(a), n, *_moments(b))
        p_welch = stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue
        tp_mod += int((de.bh(res["p"])[:planted] < 0.05).sum())
        tp_welch += int((de.bh(p_welch)[:planted] < 0.05).sum())
    assert tp_mod > tp_welch


# ------------------------------------------------------------- the classical route on a matrix
N_CASE, N_CONTROL, G, PLANTED = 12, 12, 60, 4


def _counts(seed=5):
    rng = np.random.default_rng(seed)
    n = N_CASE + N_CONTROL + 4  # four samples in neither group
    mu = rng.lognormal(3.0, 1.0, G)
    mu = np.tile(mu, (n, 1)) * rng.lognormal(0, 0.2, (n, 1))
    mu[:N_CASE, :PLANTED] *= 4.0
    theta = 20.0
    counts = rng.negative_binomial(theta, theta / (theta + mu)).astype(float)
    counts[:, -1] = 0.0  # a gene never detected
    ids = [f"s{i:02d}" for i in range(n)]
    return pd.DataFrame(counts, index=ids, columns=[f"g{j:03d}" for j in range(G)])


def _log(seed=6):
    rng = np.random.default_rng(seed)
    n = N_CASE + N_CONTROL + 4
    sd = np.sqrt(_inv_chi2_variances(rng, G, 6.0, 0.3))
    x = rng.normal(8, 1, G) + rng.normal(0, 1, (n, G)) * sd
    x[:N_CASE, :PLANTED] += 3 * sd[:PLANTED]
    ids = [f"s{i:02d}" for i in range(n)]
    return pd.DataFrame(x, index=ids, columns=[f"g{j:03d}" for j in range(G)])


def _masks(n):
    case = np.zeros(n, bool)
    case[:N_CASE] = True
    control = np.zeros(n, bool)
    control[N_CASE : N_CASE + N_CONTROL] = True
    return case, control


@pytest.mark.parametrize("value_type", ["counts", "log"])
def test_classical_route(tmp_path, value_type):
    df = _counts() if value_type == "counts" else _log()
    n = len(df)
    case, control = _masks(n)
    transform, _ = fit_transform(df, np.ones(n, bool), value_type, n_top_genes=20)
    # the matrix as collected: another row order, shuffled relative to sample_ids
    order = np.random.default_rng(0).permutation(n)
    path = tmp_path / "matrix.parquet"
    io.write_matrix(path, df.iloc[order])
    ids = list(df.index)
    lib = df.to_numpy(np.float64).sum(axis=1) if value_type == "counts" else None

    table, info = de.classical_route(path, transform, ids, lib, case, control, block=2000)
    assert list(table.columns) == ["gene", "ave_log2", "log2_fold_change", "t_stat", "p_value", "fdr"]
    assert list(table["gene"]) == list(df.columns)  # one row per gene, column order
    assert info["trend"] == (value_type == "counts")
    assert (info["n_genes"], info["n_case"], info["n_control"]) == (G, N_CASE, N_CONTROL)
    top = set(table.nsmallest(PLANTED, "p_value")["gene"])
    assert top == set(df.columns[:PLANTED])
    assert (table["log2_fold_change"][:PLANTED] > 0).all()
    if value_type == "counts":
        assert table["log2_fold_change"][:PLANTED].mean() == pytest.approx(2.0, abs=0.5)
        assert table.iloc[-1]["t_stat"] == 0 and table.iloc[-1]["p_value"] == 1  # never detected
    assert table["p_value"].between(0, 1).all()

    # blocking changes nothing
    small, info_small = de.classical_route(path, transform, ids, lib, case, control, block=7)
    pd.testing.assert_frame_equal(small, table, check_exact=True)
    assert info_small == info

    # the rows are matched by id: same as the in-memory computation in sample_ids order
    x = transform.to_log(df.to_numpy(np.float32).astype(np.float64), library_size=lib)
    a, b = x[case], x[control]
    ref = de.moderated_t(N_CASE, a.mean(0), a.var(0, ddof=1), N_CONTROL, b.mean(0), b.var(0, ddof=1),
                         covariate=x[case | control].mean(0) if value_type == "counts" else None)
    np.testing.assert_allclose(table["t_stat"], ref["t"], rtol=1e-9)
    to_log2 = np.log2(transform.log_base)
    np.testing.assert_allclose(table["log2_fold_change"], (a.mean(0) - b.mean(0)) * to_log2, rtol=1e-9, atol=1e-12)
    assert info["d0"] == pytest.approx(ref["d0"])

    # library sizes left out (counts): summed over the matrix, the same result
    if value_type == "counts":
        again, _ = de.classical_route(path, transform, ids, None, case, control, block=13)
        np.testing.assert_allclose(again["t_stat"], table["t_stat"], rtol=1e-9)


def test_classical_route_missing_sample(tmp_path):
    from genovae.errors import InputError

    df = _log()
    transform, _ = fit_transform(df, np.ones(len(df), bool), "log", n_top_genes=20)
    path = tmp_path / "m.parquet"
    io.write_matrix(path, df.iloc[1:])
    case, control = _masks(len(df))
    with pytest.raises(InputError, match="not in the matrix"):
        de.classical_route(path, transform, list(df.index), None, case, control)
    io.write_matrix(path, df.iloc[[0] + list(range(len(df)))])
    with pytest.raises(InputError, match="more than once"):
        de.classical_route(path, transform, list(df.index), None, case, control)
