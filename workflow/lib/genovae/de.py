"""The classical risk-gene route: limma-style moderated t statistics on every gene.

Empirical Bayes moderation of the gene-wise residual variances as in limma
(Smyth 2004, *Stat. Appl. Genet. Mol. Biol.* 3:3; limma's ``fitFDist``,
``squeezeVar``, ``trigammaInverse`` and the two-group case of ``eBayes``):

* the residual variances ``s2`` (``df`` degrees of freedom) are modelled as
  ``s2 | sigma2 ~ sigma2 chi2(df)/df`` with ``1/sigma2 ~ chi2(d0)/(d0 s0_2)``;
  ``d0`` and ``s0_2`` are estimated by the method of moments on ``log(s2)``
  (:func:`fit_f_dist`); with a covariate (the mean log expression, limma-trend)
  ``s0_2`` follows a natural cubic spline of it;
* the posterior variances ``(d0 s0_2 + df s2)/(d0 + df)`` replace ``s2`` in the t
  statistic, which then has ``df + d0`` degrees of freedom (capped at the pooled
  residual df, as limma does).

:func:`classical_route` runs case vs control on every gene of the collected
matrix, reading it in blocks of genes: memory beyond the per-gene statistics is
a few ``n_samples x block`` float64 temporaries, whatever the number of genes.

Deviations from limma (each said where it happens):

* with no covariate and ``evar <= 0`` (d0 = inf), ``s0_2`` is the mean of the
  variances, as limma >= 3.43.17 does (older versions, and the trend case, use
  ``exp(emean)``, which is biased upwards for equal variances);
* in :func:`moderated_t`, genes whose pooled variance is exactly 0 (constant in
  both groups, e.g. never detected) are left out of the prior fit and get t = 0,
  p = 1 (limma would floor their variance at 1e-5 x median and let them widen the
  prior; in limma such genes are normally removed before by ``filterByExpr``);
* limma's ``robust=TRUE`` option and ``winsor.tail.p`` are not implemented.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import special

from . import sparse
from .errors import InputError
from .risk import bh

#: values per block of genes read by :func:`classical_route` (2**24: 128 MB as float64)
BLOCK_VALUES = 1 << 24

log = logging.getLogger(__name__)


# ----------------------------------------------------------------- helpers
def trigamma_inverse(x):
    """limma's ``trigammaInverse``: y with ``polygamma(1, y) == x`` (elementwise, x > 0).

    Newton's method on 1/trigamma(y) (convex, so it converges monotonically from
    the start 0.5 + 1/x); x > 1e7 gives 1/sqrt(x), x < 1e-6 gives 1/x (limma's
    asymptotic special cases); x < 0 gives NaN.
    """
    x = np.asarray(x, np.float64)
    scalar = x.ndim == 0
    x = np.atleast_1d(x)
    y = np.full(x.shape, np.nan)
    big = x > 1e7
    small = (x < 1e-6) & (x >= 0)
    y[big] = 1.0 / np.sqrt(x[big])
    with np.errstate(divide="ignore"):
        y[small] = 1.0 / x[small]
    rest = np.isfinite(x) & (x >= 1e-6) & ~big
    if rest.any():
        xr = x[rest]
        yr = 0.5 + 1.0 / xr
        for _ in range(50):
            tri = special.polygamma(1, yr)
            dif = tri * (1.0 - tri / xr) / special.polygamma(2, yr)
            yr = yr + dif
            if np.max(-dif / yr) < 1e-8:
                break
        else:
            log.warning("trigamma_inverse: iteration limit exceeded")
        y[rest] = yr
    return y[0] if scalar else y


def _ns_knots(x, df):
    """Knots of R's ``splines::ns(x, df, intercept=TRUE)``: the range of x and ``df - 2``
    interior knots at its quantiles (R's type 7, numpy's default)."""
    x = np.asarray(x, np.float64)
    inner = np.quantile(x, np.linspace(0.0, 1.0, df)[1:-1]) if df > 2 else np.empty(0)
    return np.unique(np.concatenate([[x.min()], inner, [x.max()]]))


def _ns_basis(x, knots):
    """A basis of the natural cubic splines with these knots (boundary knots first and last).

    The truncated power basis of Hastie, Tibshirani & Friedman (ESL eq. 5.4-5.5)
    on x scaled by the boundary knots: another basis of the space R's ``ns``
    spans, so least-squares fitted values and residuals equal those of
    ``lm.fit(ns(...), e)``; linear beyond the boundary knots, as ``ns``.
    """
    lo, hi = knots[0], knots[-1]
    u = (np.asarray(x, np.float64) - lo) / (hi - lo)
    k = (knots - lo) / (hi - lo)
    cols = [np.ones_like(u), u]

    def d(kk):
        return (np.clip(u - kk, 0, None) ** 3 - np.clip(u - k[-1], 0, None) ** 3) / (k[-1] - kk)

    if len(k) > 2:
        d_pen = d(k[-2])
        cols += [d(kk) - d_pen for kk in k[:-2]]
    return np.column_stack(cols)


# ----------------------------------------------------------------- empirical Bayes
def fit_f_dist(s2, df, covariate=None):
    """limma's fitFDist: prior (d0, s0_2) of the residual variances s2 (per gene) with df residual degrees of freedom.

    covariate (e.g. mean log expression): s0_2 becomes a per-gene trend (limma-trend).
    Returns (d0: float (may be np.inf), s0_2: array per gene).

    As limma: genes with non-finite or negative ``s2`` or ``df <= 0`` are left
    out of the fit (their ``s0_2`` is the trend's value at their covariate, or
    the constant); variances are floored at 1e-5 x their median; with
    ``e = log(s2) - digamma(df/2) + log(df/2)``, ``evar`` (the variance of ``e``,
    ddof=1, or with a covariate the mean squared residual of the trend, the fit's
    rank removed) minus ``mean(trigamma(df/2))`` gives ``d0 = 2 trigammaInverse(evar)``
    and ``s0_2 = exp(emean + digamma(d0/2) - log(d0/2))``. The trend is a least-squares
    natural cubic spline (the space of R's ``ns(covariate, df=k, intercept=TRUE)``,
    k = 1 + [n>=3] + [n>=6] + [n>=30], at most the number of distinct covariate
    values: 4 for any real cohort), as limma fits it with ``lm.fit``.
    If ``evar <= 0``: d0 = inf and s0_2 = exp(emean) with a trend, the mean of the
    variances without one (limma >= 3.43.17; older limma used exp(emean) there too).
    """
    s2 = np.atleast_1d(np.asarray(s2, np.float64))
    n = len(s2)
    df = np.broadcast_to(np.asarray(df, np.float64), s2.shape)
    ok = np.isfinite(s2) & (s2 > -1e-15) & np.isfinite(df) & (df > 1e-15)
    cov = None
    if covariate is not None:
        cov = np.broadcast_to(np.asarray(covariate, np.float64), s2.shape)
        ok &= np.isfinite(cov)
    nok = int(ok.sum())
    if nok == 0:
        return np.nan, np.full(n, np.nan)
    if nok == 1:
        return 0.0, np.full(n, s2[ok][0])
    x = np.maximum(s2[ok], 0.0)
    d1 = df[ok]
    splinedf = 0
    if cov is not None:
        splinedf = 1 + (nok >= 3) + (nok >= 6) + (nok >= 30)
        splinedf = min(splinedf, len(np.unique(cov[ok])))
        if splinedf < 2:  # one covariate value: no trend
            cov = None
    m = float(np.median(x))
    if m == 0:
        log.warning("more than half of the residual variances are exactly zero: eBayes unreliable")
        m = 1.0
    x = np.maximum(x, 1e-5 * m)
    z = np.log(x)
    e = z - special.digamma(d1 / 2) + np.log(d1 / 2)
    if cov is None:
        emean = float(e.mean())
        evar = float(np.sum((e - emean) ** 2) / (nok - 1))
    else:
        c = cov[ok]
        knots = _ns_knots(c, splinedf)
        basis = _ns_basis(c, knots)
        coef, _, rank, _ = np.linalg.lstsq(basis, e, rcond=None)
        fitted = basis @ coef
        evar = float(np.sum((e - fitted) ** 2) / max(nok - rank, 1))
        emean = np.full(n, float(np.median(fitted)))  # genes without a finite covariate: the median
        emean[ok] = fitted
        other = ~ok & np.isfinite(cov)
        if other.any():  # the spline's value at the left-out genes' covariates, as limma predicts it
            emean[other] = _ns_basis(cov[other], knots) @ coef
    evar -= float(np.mean(special.polygamma(1, d1 / 2)))
    if evar > 0:
        d0 = float(2 * trigamma_inverse(evar))
        s0_2 = np.exp(emean + special.digamma(d0 / 2) - np.log(d0 / 2))
    else:
        d0 = np.inf
        s0_2 = np.exp(emean) if cov is not None else float(np.mean(x))
    return d0, np.broadcast_to(np.asarray(s0_2, np.float64), (n,)).copy()


def squeeze_var(s2, df, covariate=None):
    """limma's squeezeVar: (posterior variances per gene, d0, s0_2).

    ``s2_post = (d0 s0_2 + df s2) / (d0 + df)``; ``s0_2`` when d0 is infinite.
    """
    s2 = np.atleast_1d(np.asarray(s2, np.float64))
    df = np.broadcast_to(np.asarray(df, np.float64), s2.shape)
    d0, s0_2 = fit_f_dist(s2, df, covariate)
    if not np.isfinite(d0):
        post = s0_2.copy() if d0 == np.inf else np.full(s2.shape, np.nan)
    else:
        post = (d0 * s0_2 + df * s2) / (d0 + df)
    return post, d0, s0_2


def _t_sf2(t, df):
    """Two-sided p of Student t (normal where df is infinite), with the scipy.special functions that
    scipy.stats' ``t.sf`` and ``norm.sf`` call (importing scipy.stats costs a job 0.3 s of start-up)."""
    t = np.abs(np.asarray(t, np.float64))
    df = np.broadcast_to(np.asarray(df, np.float64), t.shape)
    p = np.empty(t.shape)
    inf = ~np.isfinite(df)
    p[inf] = 2 * special.ndtr(-t[inf])
    p[~inf] = 2 * special.stdtr(df[~inf], -t[~inf])
    return p


def moderated_t(n1, mean1, var1, n2, mean2, var2, covariate=None):
    """Two-group moderated t from per-gene group sizes (ints), means and variances (ddof=1).

    pooled residual variance s2 = ((n1-1)var1 + (n2-1)var2)/(n1+n2-2), d = n1+n2-2, squeezed by squeeze_var;
    t = (mean1-mean2)/sqrt(s2_post*(1/n1+1/n2)), df_total = min(d + d0, d * n_genes) (limma caps at the pooled df),
    two-sided p from Student t. Returns dict(t=, p=, df_total=, s2_post=, d0=, s0_2=).

    Genes with a pooled variance of exactly 0 (constant in both groups) are left
    out of the prior fit and get t = 0, p = 1 (see the module's deviations).
    ``n1``/``n2`` may be scalars or per-gene arrays; a group of one sample has no
    variance: pass 0 (its ``var`` is ignored when n = 1).
    """
    mean1 = np.atleast_1d(np.asarray(mean1, np.float64))
    mean2 = np.atleast_1d(np.asarray(mean2, np.float64))
    shape = mean1.shape
    n1 = np.broadcast_to(np.asarray(n1, np.float64), shape)
    n2 = np.broadcast_to(np.asarray(n2, np.float64), shape)
    v1 = np.where(n1 > 1, np.broadcast_to(np.asarray(var1, np.float64), shape), 0.0)
    v2 = np.where(n2 > 1, np.broadcast_to(np.asarray(var2, np.float64), shape), 0.0)
    d = n1 + n2 - 2
    with np.errstate(invalid="ignore", divide="ignore"):
        s2 = ((n1 - 1) * v1 + (n2 - 1) * v2) / d
    s2 = np.where(d > 0, s2, np.nan)
    constant = s2 == 0
    s2_fit = np.where(constant, np.nan, s2)
    post, d0, s0_2 = squeeze_var(s2_fit, d, covariate)
    post = np.where(constant, 0.0, post)
    # limma: min(d + d0, sum(df.residual)), the residual df of all genes pooled
    pooled = float(d[d > 0].sum()) if (d > 0).any() else np.inf
    df_total = np.minimum(d + d0, pooled)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (mean1 - mean2) / np.sqrt(post * (1.0 / n1 + 1.0 / n2))
    t = np.where(constant, 0.0, t)
    p = np.full(shape, np.nan)
    fin = np.isfinite(t) & ~np.isnan(df_total)
    p[fin] = _t_sf2(t[fin], df_total[fin])
    p = np.where(constant, 1.0, p)
    return dict(t=t, p=p, df_total=df_total, s2_post=post, d0=d0, s0_2=s0_2)


# ----------------------------------------------------------------- the route
def _positions(index, sample_ids, matrix_path):
    """Positions of ``sample_ids`` among the matrix's rows; duplicate or missing ids are an InputError."""
    index = pd.Index(index)
    if not index.is_unique:
        dup = list(index[index.duplicated()][:5])
        raise InputError(matrix_path, f"sample ids occur more than once, e.g. {dup}")
    pos = index.get_indexer(sample_ids)
    if (pos < 0).any():
        missing = list(sample_ids[pos < 0][:5])
        raise InputError(matrix_path, f"{int((pos < 0).sum())} sample(s) not in the matrix, e.g. {missing}")
    return pos


def _zero_stays_zero(transform):
    """Whether ``transform.to_log`` maps 0 to 0 (counts: log1p; log values: as they are; not intensities)."""
    return transform.value_type in ("counts", "log")


def _sparse_moments(cohort, rows, is_case, transform, library, n_genes):
    """Per-gene mean and variance (ddof=1) of each group's log values, and the mean over both, from a
    sparse cohort's non-zeros alone (a zero stays 0 in log space): O(non-zeros), not samples x genes.

    ``rows``: the file rows of the contrast's samples; ``is_case``: which of them are cases (the
    others controls); ``library``: their library sizes (counts), in the same order.
    """
    csc = cohort.csc()
    group = np.full(csc.shape[0], -1, dtype=np.int64)  # file row -> 0 case, 1 control, -1 not used
    group[rows] = np.where(is_case, 0, 1)
    lib = np.ones(csc.shape[0])
    if library is not None:
        lib[rows] = library
    n = np.array([int(is_case.sum()), int((~is_case).sum())], dtype=np.float64)
    total = np.zeros((n_genes, 2))  # sum per gene and group
    dev = np.zeros((n_genes, 2))  # sum of squared deviations from the group mean, zeros included
    step = max(1, BLOCK_VALUES // 8)  # non-zeros per pass (whole genes)
    start = 0
    while start < n_genes:
        stop = int(np.searchsorted(csc.indptr, csc.indptr[start] + step, side="right")) - 1
        stop = min(n_genes, max(stop, start + 1))
        lo, hi = csc.indptr[start], csc.indptr[stop]
        r = csc.indices[lo:hi]
        g = group[r]
        keep = g >= 0
        v = transform.to_log(csc.data[lo:hi][keep, None].astype(np.float64), library_size=lib[r[keep]])[:, 0]
        gene = np.repeat(np.arange(stop - start), np.diff(csc.indptr[start : stop + 1]))[keep]
        at = gene * 2 + g[keep]
        k = 2 * (stop - start)
        part = np.bincount(at, weights=v, minlength=k).reshape(-1, 2)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = part / n
        nonzero = np.bincount(at, minlength=k).reshape(-1, 2)
        # two-pass variance (no cancellation for a high, steady gene): non-zeros' deviations + the zeros'
        dev[start:stop] = (np.bincount(at, weights=(v - np.nan_to_num(m).ravel()[at]) ** 2, minlength=k).reshape(-1, 2)
                           + (n - nonzero) * np.nan_to_num(m) ** 2)
        total[start:stop] = part
        start = stop
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n
        var = np.where(n > 1, dev / (n - 1), 0.0)
    ave = total.sum(axis=1) / n.sum() if n.sum() else np.full(n_genes, np.nan)
    return mean[:, 0], var[:, 0], mean[:, 1], var[:, 1], ave


def classical_route(matrix_path, transform, sample_ids, library_all, case_mask, control_mask, block=2000):
    """Moderated t of case vs control for every gene of the collected matrix.

    Returns (DataFrame with columns gene, ave_log2, log2_fold_change, t_stat, p_value, fdr — one row per gene in the
    matrix's column order; info dict with d0, s0_2 (median when a trend), trend (bool), n_genes, n_case, n_control).

    The matrix (Parquet, samples x genes, from ``io.write_matrix``) is read
    ``block`` genes at a time; its rows are matched to ``sample_ids`` (the order
    of the masks and of ``library_all``) by id, whatever their order in the file.
    Each block goes to log space with ``transform.to_log`` (counts: with the
    samples' full library sizes ``library_all``; summed over the matrix first when
    None), then the per-gene mean and variance (ddof=1) of each group are kept:
    peak memory is a few ``n_samples x block`` float64 arrays plus O(n_genes).
    Fold changes and ``ave_log2`` (the mean over case + control) are in log2 units
    (``transform.log_base``); the prior has a mean-expression trend
    (limma-trend) for ``value_type == "counts"`` only. FDR: Benjamini-Hochberg.
    """
    from . import io

    sample_ids = pd.Index([str(s) for s in sample_ids])
    case_mask = np.asarray(case_mask, bool)
    control_mask = np.asarray(control_mask, bool)
    if len(case_mask) != len(sample_ids) or len(control_mask) != len(sample_ids):
        raise ValueError("case_mask and control_mask must have one entry per sample id")
    if (case_mask & control_mask).any():
        raise ValueError("a sample is both case and control")
    n_case, n_control = int(case_mask.sum()), int(control_mask.sum())
    genes = list(io.matrix_genes(matrix_path))
    n_genes = len(genes)
    # at most ~BLOCK_VALUES values per block: a few float64 blocks whatever the number of samples
    block = max(1, min(int(block), BLOCK_VALUES // max(len(sample_ids), 1)))
    counts = transform.value_type == "counts"

    rows = None  # positions of sample_ids among the file's rows
    cohort = sparse.read(matrix_path) if sparse.is_sparse_file(matrix_path) else None  # read once
    if cohort is not None:
        rows = _positions(cohort.index, sample_ids, matrix_path)

    def read(cols):
        nonlocal rows
        if cohort is not None:
            return cohort.column_values(cols)
        index, _, values = io.read_matrix_values(matrix_path, columns=cols)
        if rows is None:
            rows = _positions(index, sample_ids, matrix_path)
        return values

    lib = None
    if counts:
        if library_all is None and cohort is not None:
            lib = cohort.row_sums()[rows]
        elif library_all is None:
            lib = np.zeros(len(sample_ids))
            for j in range(0, n_genes, block):
                values = read(genes[j : j + block])
                lib += np.asarray(values[rows], np.float64).sum(axis=1)
        else:
            lib = np.asarray(library_all, np.float64)
            if len(lib) != len(sample_ids):
                raise ValueError("library_all must have one entry per sample id")

    used = case_mask | control_mask
    lib_used = None if lib is None else lib[used]
    if cohort is not None and _zero_stays_zero(transform):
        mean1, var1, mean2, var2, ave = _sparse_moments(
            cohort, rows[used], case_mask[used], transform, lib_used, n_genes)
    else:
        mean1, var1 = np.empty(n_genes), np.empty(n_genes)
        mean2, var2 = np.empty(n_genes), np.empty(n_genes)
        ave = np.empty(n_genes)
        case_u, control_u = case_mask[used], control_mask[used]
        for j in range(0, n_genes, block):
            cols = slice(j, min(j + block, n_genes))
            values = read(genes[cols])
            x = np.asarray(values[rows[used]], np.float64)  # the used samples, cohort order
            del values
            lx = transform.to_log(x, library_size=lib_used)
            del x
            a, b = lx[case_u], lx[control_u]
            mean1[cols] = a.mean(axis=0) if n_case else np.nan
            mean2[cols] = b.mean(axis=0) if n_control else np.nan
            var1[cols] = a.var(axis=0, ddof=1) if n_case > 1 else 0.0
            var2[cols] = b.var(axis=0, ddof=1) if n_control > 1 else 0.0
            ave[cols] = lx.mean(axis=0) if len(lx) else np.nan
            del lx, a, b

    res = moderated_t(n_case, mean1, var1, n_control, mean2, var2, covariate=ave if counts else None)
    to_log2 = float(np.log2(transform.log_base))
    table = pd.DataFrame(
        {
            "gene": genes,
            "ave_log2": ave * to_log2,
            "log2_fold_change": (mean1 - mean2) * to_log2,
            "t_stat": res["t"],
            "p_value": res["p"],
            "fdr": bh(res["p"]),
        }
    )
    s0 = res["s0_2"]
    info = {
        "d0": float(res["d0"]),
        "s0_2": float(np.nanmedian(s0)) if np.isfinite(s0).any() else float("nan"),
        "trend": bool(counts),
        "n_genes": int(n_genes),
        "n_case": n_case,
        "n_control": n_control,
    }
    return table, info
