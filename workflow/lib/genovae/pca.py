"""PCA of a subset of a matrix's rows, without copying them.

The workflow fits PCA on the training samples of a cohort that is held in
memory as one float32 matrix (all splits). scikit-learn's ``PCA.fit`` would
need ``x[train]`` (a copy) and then a centred copy of that: two extra
matrices, which is most of the memory budget on a TCGA-sized cohort. Here the
leading components come from ARPACK (Lanczos) on a linear operator that
applies the centred training rows implicitly: ``x @ v`` for all rows, keep the
training rows, subtract ``mean . v``. Nothing of the matrix's size is
allocated. Small problems, or as many components as samples/genes, use an exact
SVD of the centred copy instead.

Components are sign-normalised (largest absolute loading positive, as
scikit-learn's ``svd_flip``) and the ARPACK start vector is seeded, so fits are
deterministic.
"""

from __future__ import annotations

import numpy as np

#: below this many matrix entries the exact SVD of a centred copy is used
DENSE_ENTRIES = 4_000_000
#: rows per block in :meth:`RowPCA.transform` and :func:`column_moments`
BLOCK_ROWS = 256


def column_moments(x, rows=None, block=BLOCK_ROWS):
    """Per-column float64 mean and variance (ddof=0) of ``x[rows]``, reading blocks of rows."""
    rows = np.arange(len(x)) if rows is None else np.asarray(rows)
    n = len(rows)
    total = np.zeros(x.shape[1])
    for i in range(0, n, block):
        total += x[rows[i : i + block]].sum(axis=0, dtype=np.float64)
    mean = total / max(n, 1)
    sq = np.zeros(x.shape[1])
    for i in range(0, n, block):
        d = x[rows[i : i + block]].astype(np.float64) - mean
        sq += np.einsum("ij,ij->j", d, d)
    return mean, sq / max(n, 1)


class RowPCA:
    """Fitted principal components: ``mean_`` (genes), ``components_`` (k x genes), ``singular_values_``."""

    def __init__(self, mean, components, singular_values):
        self.mean_ = np.asarray(mean, np.float64)
        self.components_ = np.asarray(components, np.float64)
        self.singular_values_ = np.asarray(singular_values, np.float64)
        self.n_components_ = len(self.components_)

    def transform(self, x, rows=None, block=BLOCK_ROWS):
        """Scores of ``x[rows]`` (all rows by default), float64, computed in blocks of rows."""
        rows = np.arange(len(x)) if rows is None else np.asarray(rows)
        out = np.empty((len(rows), self.n_components_))
        for i in range(0, len(rows), block):
            b = rows[i : i + block]
            out[i : i + len(b)] = (x[b].astype(np.float64) - self.mean_) @ self.components_.T
        return out

    def inverse_transform(self, scores):
        return scores @ self.components_ + self.mean_

    def squared_error(self, x, rows=None, block=BLOCK_ROWS):
        """Sum over ``x[rows]`` of the squared error of the rank-k reconstruction (float64)."""
        rows = np.arange(len(x)) if rows is None else np.asarray(rows)
        total = 0.0
        for i in range(0, len(rows), block):
            b = x[rows[i : i + block]].astype(np.float64)
            d = self.inverse_transform((b - self.mean_) @ self.components_.T) - b
            total += float(np.einsum("ij,ij->", d, d))
        return total


def fit(x, rows, n_components, seed=0):
    """PCA with ``n_components`` of ``x[rows]`` (a float32 matrix, rows = sample indices)."""
    rows = np.asarray(rows)
    n, g = len(rows), x.shape[1]
    k = int(min(n_components, n, g))
    mean, _ = column_moments(x, rows)
    if k < min(n, g) - 1 and n * g > DENSE_ENTRIES:
        from scipy.sparse.linalg import ArpackNoConvergence

        try:
            return RowPCA(mean, *_arpack(x, rows, mean, k, seed))
        except ArpackNoConvergence:  # rare (clustered singular values): the exact SVD, at its memory cost
            import logging

            logging.getLogger(__name__).warning(
                "ARPACK did not converge for %d components of %d x %d; using the full SVD", k, n, g
            )
    centred = x[rows].astype(np.float64) - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return RowPCA(mean, _flip(vt[:k]), s[:k])


def _arpack(x, rows, mean, k, seed):
    from scipy.sparse.linalg import LinearOperator, svds

    n, g = len(rows), x.shape[1]
    mean32 = mean.astype(np.float32)
    x = np.asarray(x, np.float32)

    def matmat(v):  # centred training rows @ v
        v = np.asarray(v, np.float32).reshape(g, -1)
        return (x @ v)[rows] - mean32 @ v

    def rmatmat(u):  # (centred training rows).T @ u
        u = np.asarray(u, np.float32).reshape(n, -1)
        full = np.zeros((len(x), u.shape[1]), np.float32)
        full[rows] = u
        return x.T @ full - np.outer(mean32, u.sum(axis=0))

    op = LinearOperator(
        (n, g),
        matvec=lambda v: matmat(v).ravel(),
        rmatvec=lambda u: rmatmat(u).ravel(),
        matmat=matmat,
        rmatmat=rmatmat,
        dtype=np.float32,
    )
    v0 = np.random.default_rng(seed).uniform(-1, 1, min(n, g)).astype(np.float32)
    _, s, vt = svds(op, k=k, v0=v0, solver="arpack", return_singular_vectors="vh")
    order = np.argsort(s)[::-1]
    return _flip(vt[order].astype(np.float64)), s[order].astype(np.float64)


def _flip(vt):
    """Make the largest absolute loading of every component positive (deterministic signs)."""
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    signs[signs == 0] = 1.0
    return vt * signs[:, None]
