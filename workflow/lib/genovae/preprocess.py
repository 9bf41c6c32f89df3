"""Preprocess: stratified split and a transform fitted on the training split only.

Steps, in order (each fitted on TRAIN samples, then applied to all samples):

1. value-type specific normalisation
   * ``counts``: divide by the sample's library size (sum over all genes),
     multiply by ``library_size_target`` (default: median train library size),
     then ``log1p`` (natural log);
   * ``intensity``: clip to ``[intensity_floor, intensity_ceiling]``, ``log2``;
   * ``log``: used as is (``log_base`` says which logarithm, for fold changes).
2. gene filter: keep genes whose value exceeds ``min_expression`` in at least
   ``min_samples`` train samples (a fraction if < 1), and drop genes that are
   constant on train.
3. the ``n_top_genes`` most variable genes, ranked by ``gene_selection``:
   * ``seurat_v3`` (the default for counts): the mean-variance method of Seurat v3
     as scanpy implements it (``highly_variable_genes(flavor="seurat_v3")``) on the
     raw train counts: a loess fit of log10(variance) on log10(mean), counts
     standardised by the fitted sd and clipped at sqrt(n), genes ranked by the
     variance of the standardised values. Sparse genes (cell-type markers detected
     in a few percent of cells) rank high when they vary more than their mean predicts;
   * ``mad`` (the default for log values and intensities): median absolute deviation
     of the log values, ties broken by the sd. A gene at its floor in half the train
     samples has MAD 0 and ranks last;
   * ``variance``: sd of the log values (keeps such sparse genes).
4. scaling: ``zscore`` (train mean/sd), ``minmax`` (train min/max to [0, 1],
   clipped) or ``none``.

The fitted :class:`Transform` is saved as JSON so that new samples can be
transformed identically (``Transform.load(path).apply(raw)``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from . import io
from .errors import ConfigError, InputError
from .sparse import ColumnBlocks, SparseMatrix

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def stratified_split(labels, fractions, seed, small_to_train=False):
    """Assign each sample to train/val/test, stratified by ``labels``.

    Every group contributes at least one sample to each split with a non-zero
    fraction; rounding favours train. A group too small for that is an error,
    or with ``small_to_train`` goes to train whole (the condition x batch cells
    of :func:`split_with_batches`).
    """
    rng = np.random.default_rng(seed)
    labels = pd.Series(labels)
    out = pd.Series("train", index=labels.index, dtype=object)
    for level in sorted(labels.unique()):
        idx = labels.index[labels == level].to_numpy()
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        take = {}
        for s in ("val", "test"):
            f = fractions.get(s, 0.0)
            take[s] = max(1, int(round(f * n))) if f > 0 else 0
        if n - take["val"] - take["test"] < 1:
            if small_to_train:
                continue
            raise InputError(
                "sample sheet", f"group {level!r} has {n} samples: too few for the split {fractions}"
            )
        out.loc[idx[: take["val"]]] = "val"
        out.loc[idx[take["val"] : take["val"] + take["test"]]] = "test"
    return out


def covariate_values(frame, col, where):
    """Column ``col`` (analysis.batch) of ``frame`` as text; a missing column or a blank value is an
    InputError naming ``where`` (the split here; the model's one-hot columns in genovae.dataset)."""
    if col not in frame.columns:
        raise InputError(where, f"has no column {col!r} (analysis.batch); columns: {list(frame.columns)[:10]}")
    values = pd.Series(frame[col], dtype=object)
    blank = values.isna() | (values.astype(str).str.strip() == "")
    if blank.any():
        raise InputError(
            where, f"column {col!r} (analysis.batch) is empty for {int(blank.sum())} sample(s), "
            f"e.g. {list(frame.index[blank.to_numpy()][:5])}: give every sample its batch"
        )
    return values.astype(str)


def split_with_batches(sheet, condition, batch, fractions, seed, where):
    """The split of :func:`stratified_split`, stratified by condition, and with ``batch`` columns
    (analysis.batch) by condition x batch: every batch is in train, so the model learns each
    batch's covariate. A condition x batch cell too small to split goes to train whole; each
    condition must still reach every split (checked on the result)."""
    if not batch:
        return stratified_split(sheet[condition], fractions, seed)
    cells = sheet[condition].astype(str)
    for col in batch:
        cells = cells + "\x1f" + covariate_values(sheet, col, where)
    out = stratified_split(cells, fractions, seed, small_to_train=True)
    for level, part in out.groupby(sheet[condition].astype(str).to_numpy()):
        for s in ("val", "test"):
            if fractions.get(s, 0.0) > 0 and not (part == s).any():
                raise InputError(
                    where,
                    f"group {level!r} has no {s} sample once split by condition x batch ({', '.join(batch)}): "
                    "each condition needs more samples per batch, or drop analysis.batch",
                )
    return out


@dataclass
class Transform:
    """Everything needed to map raw values of the selected genes to model inputs."""

    value_type: str
    log_base: float
    genes: list
    center: list
    scale: list
    scaling: str = "zscore"
    library_size_target: float | None = None
    intensity_floor: float | None = None
    intensity_ceiling: float | None = None
    n_genes_input: int = 0
    filter_report: dict = field(default_factory=dict)

    # -- the log-space step (before gene selection: library size uses all genes)
    def to_log(self, raw, library_size=None):
        x = raw.to_numpy(dtype=np.float64) if isinstance(raw, pd.DataFrame) else np.asarray(raw, float)
        if self.value_type == "counts":
            lib = x.sum(axis=1) if library_size is None else np.asarray(library_size, float)
            lib = np.where(lib > 0, lib, 1.0)
            return np.log1p(x / lib[:, None] * self.library_size_target)
        if self.value_type == "intensity":
            x = np.clip(x, self.intensity_floor, self.intensity_ceiling)
            return np.log2(x)
        return x

    def scale_log(self, logx):
        return _scale(logx, np.asarray(self.center), np.asarray(self.scale), self.scaling)

    def unscale(self, z, cols=slice(None)):
        """Inverse of :meth:`scale_log` (model space -> log space); ``cols``: the genes ``z`` holds."""
        return np.asarray(z, np.float64) * np.asarray(self.scale)[cols] + np.asarray(self.center)[cols]

    def apply(self, raw, library_size=None):
        """Transform a raw samples x genes frame (with at least the selected genes).

        Counts are divided by ``library_size`` (by default the sum over all of ``raw``'s genes).
        """
        missing = [g for g in self.genes if g not in raw.columns]
        if missing:
            raise InputError(
                "expression matrix",
                f"{len(missing)} of the model's {len(self.genes)} genes are missing, "
                f"e.g. {missing[:5]}",
            )
        lib = None
        if self.value_type == "counts":
            lib = raw.to_numpy(dtype=np.float64).sum(axis=1) if library_size is None else library_size
        logx = self.to_log(raw[self.genes], library_size=lib)
        return pd.DataFrame(self.scale_log(logx), index=raw.index, columns=self.genes)

    def counts_to_log(self, counts_sel, library_size):
        """Expected counts of the selected genes -> log space, given full library sizes."""
        lib = np.where(library_size > 0, library_size, 1.0)
        return np.log1p(counts_sel / lib[:, None] * self.library_size_target)

    def save(self, path):
        io.write_json(path, asdict(self))

    @classmethod
    def load(cls, path):
        with open(path) as fh:
            return cls(**json.load(fh))


def _scale(logx, center, scale, scaling):
    """The model input (float32) of log values: (logx - center) / scale, clipped to [0, 1] for minmax."""
    z = logx - center  # in place from here: one temporary of the matrix's size, not three
    z /= scale
    if scaling == "minmax":
        np.clip(z, 0.0, 1.0, out=z)
    return z.astype(np.float32)


def log_base_value(value_type, log_base):
    if value_type == "counts":
        return float(np.e)
    if value_type == "intensity":
        return 2.0
    return {"e": float(np.e), "2": 2.0, "10": 10.0}[str(log_base)]


#: genes per block: the float64 temporaries of the transform are n_samples x GENE_BLOCK ...
GENE_BLOCK = 512
#: ... and at most about BLOCK_VALUES values (2**24: 128 MB as float64), however many samples
BLOCK_VALUES = 1 << 24


def _values(matrix):
    """The samples x genes values without a copy (float32 for the canonical matrix); a sparse
    cohort's column blocks (:class:`genovae.sparse.ColumnBlocks`)."""
    if isinstance(matrix, (pd.DataFrame, SparseMatrix)):
        return matrix.to_numpy()
    return np.asarray(matrix)


def _block_width(values):
    return max(16, min(GENE_BLOCK, BLOCK_VALUES // max(values.shape[0], 1)))


def _gene_block(values, cols):
    """float64 copy of some genes (a slice or index array), samples x genes, column-major."""
    return np.asfortranarray(values[:, cols], dtype=np.float64)


def row_sums(values):
    """Per-sample float64 sums over all genes, without a float64 copy of the matrix.

    The genes are added one after another, as NumPy sums the rows of a
    column-major float64 matrix (the layout pandas gives): the same numbers.
    A sparse cohort sums its non-zeros.
    """
    if isinstance(values, ColumnBlocks):
        return values.matrix.row_sums()
    total = np.zeros(values.shape[0])
    width = _block_width(values)
    for j in range(0, values.shape[1], width):
        block = _gene_block(values, slice(j, j + width))
        for k in range(block.shape[1]):
            total += block[:, k]
    return total


def fit_transform(
    matrix,
    train_mask,
    value_type,
    *,
    log_base="2",
    library_size_target=None,
    intensity_floor=1.0,
    intensity_ceiling=None,
    min_expression=None,
    min_samples=0.0,
    n_top_genes=2000,
    scaling="zscore",
    gene_selection="auto",
    scaled=False,
):
    """Fit the transform on the train rows of ``matrix``; return (transform, log matrix).

    The matrix (a DataFrame, an array or a :class:`~genovae.sparse.SparseMatrix`) is
    read in blocks of ``GENE_BLOCK`` genes, fewer for many samples (float64 within a
    block): memory beyond the matrix itself is a few blocks plus the selected genes'
    log values, never a float64 copy of the whole matrix. Every statistic is per
    gene, so the result equals that of the whole-matrix computation. With ``scaled``
    the second value is the model input instead, ``transform.scale_log(log matrix)``
    (float32), computed a block at a time: no float64 copy of the selected genes either.
    """
    train_mask = np.asarray(train_mask, bool)
    values = _values(matrix)
    n_genes = values.shape[1]
    t = Transform(
        value_type=value_type,
        log_base=log_base_value(value_type, log_base),
        genes=[],
        center=[],
        scale=[],
        scaling=scaling,
        n_genes_input=n_genes,
    )
    lib = None
    if value_type == "counts":
        lib = row_sums(values)
        t.library_size_target = float(library_size_target or np.median(lib[train_mask]))
    elif value_type == "intensity":
        if intensity_floor is None or intensity_floor <= 0:
            raise ConfigError("preprocess.intensity_floor", "must be > 0 for log2 of intensities")
        t.intensity_floor = float(intensity_floor)
        t.intensity_ceiling = None if intensity_ceiling is None else float(intensity_ceiling)
    n_train = int(train_mask.sum())
    keep = np.ones(n_genes, bool)
    sd = np.empty(n_genes)
    mad = np.zeros(n_genes)
    report = {"input": int(n_genes)}
    need = None
    if min_expression is not None:
        need = min_samples if min_samples >= 1 else int(np.ceil(min_samples * n_train))
    method = resolve_gene_selection(gene_selection, value_type)
    ranked = bool(n_top_genes) and n_top_genes < n_genes
    with_mad = ranked and method == "mad"
    with_raw = ranked and method == "seurat_v3"
    raw_mean, raw_var = (np.zeros(n_genes), np.zeros(n_genes)) if with_raw else (None, None)
    width = _block_width(values)
    for j in range(0, n_genes, width):
        cols = slice(j, min(j + width, n_genes))
        block = _gene_block(values, cols)
        if with_raw:
            raw_tr = block[train_mask]
            raw_mean[cols] = raw_tr.mean(axis=0)
            raw_var[cols] = raw_tr.var(axis=0, ddof=1) if n_train > 1 else 0.0
            del raw_tr
        tr = t.to_log(block, library_size=lib)[train_mask]
        del block
        if need is not None:
            keep[cols] &= (tr > min_expression).sum(axis=0) >= max(need, 1)
        sd[cols] = tr.std(axis=0)
        if with_mad:
            ok = np.flatnonzero(keep[cols] & (sd[cols] > 1e-8))
            sub = tr[:, ok]
            mad[j + ok] = np.median(np.abs(sub - np.median(sub, axis=0)), axis=0)
    if need is not None:
        report["after_min_expression"] = int(keep.sum())
    keep &= sd > 1e-8
    report["after_constant_filter"] = int(keep.sum())
    if not keep.any():
        raise InputError("expression matrix", "no gene passes the expression filter; relax preprocess.min_expression")
    idx = np.flatnonzero(keep)
    if n_top_genes and n_top_genes < len(idx):
        if method == "seurat_v3":
            score = seurat_v3_variance(values, train_mask, idx, raw_mean[idx], raw_var[idx])
            order = np.argsort(-score, kind="stable")
        elif method == "variance":
            order = np.argsort(-sd[idx], kind="stable")
        else:
            # ties (e.g. MAD 0 for sparse counts) are broken by the standard deviation
            order = np.lexsort((-sd[idx], -mad[idx]))
        idx = np.sort(idx[order[:n_top_genes]])
    report["gene_selection"] = method
    report["selected"] = int(len(idx))
    t.genes = [str(g) for g in _columns(matrix, idx)]
    width = _block_width(values)
    out = np.empty((values.shape[0], len(idx)), dtype=np.float32 if scaled else np.float64, order="F")
    center, scale = np.empty(len(idx)), np.empty(len(idx))
    for j in range(0, len(idx), width):
        cols = slice(j, j + width)
        block = t.to_log(_gene_block(values, idx[cols]), library_size=lib)
        sel = np.asfortranarray(block[train_mask])
        if scaling == "zscore":
            center[cols], scale[cols] = sel.mean(axis=0), sel.std(axis=0)
        elif scaling == "minmax":
            center[cols] = sel.min(axis=0)
            scale[cols] = sel.max(axis=0) - center[cols]
        else:  # "none" (the schema allows no other value)
            center[cols], scale[cols] = 0.0, 1.0
        scale[cols] = np.where(scale[cols] > 1e-8, scale[cols], 1.0)
        out[:, cols] = _scale(block, center[cols], scale[cols], scaling) if scaled else block
        del block, sel
    t.center = center.tolist()
    t.scale = scale.tolist()
    t.filter_report = report
    log.info("gene selection: %s", report)
    return t, out


def resolve_gene_selection(gene_selection, value_type):
    """``auto`` -> ``seurat_v3`` for counts, ``mad`` for log values and intensities."""
    if gene_selection in (None, "auto"):
        return "seurat_v3" if value_type == "counts" else "mad"
    return gene_selection


#: loess vertices: above this many genes the fit is evaluated at this many points and interpolated
LOESS_VERTICES = 400


def loess(x, y, span=0.3, degree=2, vertices=LOESS_VERTICES):
    """Fitted values at ``x`` of a loess of ``y`` on one predictor (Cleveland 1979).

    At each vertex, a polynomial of ``degree`` is fitted by least squares weighted with
    the tricube of the distance over the ``floor(span * n)``-th nearest distance, as in
    ``skmisc.loess`` (family gaussian). Up to ``vertices`` distinct x it is evaluated at
    every x; otherwise at ``vertices`` points (half at quantiles of x, half evenly spaced)
    and interpolated by cubic Hermite splines with the local slopes, as loess's default
    ``surface="interpolate"`` does. Memory: O(n) per vertex; time O(n * vertices).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = len(x)
    q = min(n, max(degree + 1, int(np.floor(n * span))))
    ux = np.unique(x)
    if len(ux) <= vertices:
        at = ux
    else:
        half = vertices // 2
        at = np.unique(np.concatenate([np.quantile(x, np.linspace(0, 1, half)), np.linspace(x.min(), x.max(), half)]))
    value, slope = np.empty(len(at)), np.empty(len(at))
    for i, x0 in enumerate(at):
        d = np.abs(x - x0)
        h = np.partition(d, q - 1)[q - 1]
        h = max(h, 1e-12) * (1 + 1e-10)  # the q-th neighbour itself gets a (tiny) weight, as in loess
        near = d < h
        u = (x[near] - x0) / h
        w = (1 - (np.abs(u)) ** 3) ** 3
        design = np.vander(u, degree + 1, increasing=True) * np.sqrt(w)[:, None]
        beta = np.linalg.lstsq(design, y[near] * np.sqrt(w), rcond=None)[0]
        value[i] = beta[0]
        slope[i] = beta[1] / h if degree >= 1 else 0.0
    if len(at) == len(ux) and np.array_equal(at, ux):
        return value[np.searchsorted(at, x)]
    k = np.clip(np.searchsorted(at, x, side="right") - 1, 0, len(at) - 2)
    dx = at[k + 1] - at[k]
    t = (x - at[k]) / dx
    h00, h10 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t
    h01, h11 = -2 * t**3 + 3 * t**2, t**3 - t**2
    return h00 * value[k] + h10 * dx * slope[k] + h01 * value[k + 1] + h11 * dx * slope[k + 1]


def seurat_v3_variance(values, train_mask, idx, mean, var, span=0.3):
    """Seurat v3 standardised variance of genes ``idx`` on the train rows of raw ``values``.

    ``mean``/``var`` (ddof 1): the genes' raw train means and variances. As
    ``scanpy.pp.highly_variable_genes(flavor="seurat_v3")`` (one batch): the expected
    variance comes from a loess of log10(var) on log10(mean) over genes with var > 0;
    counts are clipped at mean + sd * sqrt(n) and the variance of (count - mean) / sd
    of the clipped counts is the score (0 for genes with var 0).
    """
    n = int(np.sum(train_mask))
    ok = var > 0
    fitted = np.zeros(len(idx))
    if ok.sum() > 2:
        fitted[ok] = loess(np.log10(mean[ok]), np.log10(var[ok]), span=span)
    reg_sd = np.sqrt(10.0**fitted)
    clip = mean + reg_sd * np.sqrt(n)
    score = np.zeros(len(idx))
    width = _block_width(values)
    for j in range(0, len(idx), width):
        cols = slice(j, j + width)
        block = np.minimum(_gene_block(values, idx[cols])[train_mask], clip[cols])
        s1, s2 = block.sum(axis=0), np.square(block).sum(axis=0)
        m = mean[cols]
        score[cols] = (n * m**2 + s2 - 2 * s1 * m) / (max(n - 1, 1) * reg_sd[cols] ** 2)
    score[~ok] = 0.0
    return score


def _columns(matrix, idx):
    if isinstance(matrix, (pd.DataFrame, SparseMatrix)):
        return matrix.columns[idx]
    return [str(i) for i in idx]


def preprocess(
    matrix_path,
    samples_path,
    *,
    out_features,
    out_split,
    out_transform,
    condition,
    value_type,
    split,
    seed,
    latent_dim=None,
    batch=(),
    **transform_kwargs,
):
    from .plausible import check_latent_dim

    matrix = io.read_matrix(matrix_path)
    sheet = io.read_sample_sheet(samples_path, na="none").set_index("sample_id", drop=False)
    sheet = sheet.loc[matrix.index]
    batch = list(batch or ())
    assignment = split_with_batches(sheet, condition, batch, split, seed, samples_path)
    train_mask = (assignment == "train").to_numpy()
    t, features = fit_transform(matrix, train_mask, value_type, scaled=True, **transform_kwargs)
    check_latent_dim(len(t.genes), latent_dim, matrix_path)
    split_df = pd.DataFrame(
        {
            "sample_id": matrix.index,
            "split": assignment.to_numpy(),
            "condition": sheet[condition].to_numpy(),
            "library_size": row_sums(_values(matrix)),
            **{f"covariate:{col}": sheet[col].astype(str).to_numpy() for col in batch},
        }
    )
    n_input = matrix.shape[1]
    index = matrix.index
    del matrix  # the full matrix is not needed any more
    features = pd.DataFrame(features, index=index, columns=t.genes, copy=False)
    io.write_matrix(out_features, features)
    io.write_tsv(out_split, split_df, float_format="%.10g")
    t.save(out_transform)
    counts = split_df["split"].value_counts().to_dict()
    log.info("split: %s; %d genes selected of %d", counts, len(t.genes), n_input)
    return t
