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
3. the ``n_top_genes`` most variable genes by median absolute deviation (MAD).
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

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def stratified_split(labels, fractions, seed):
    """Assign each sample to train/val/test, stratified by ``labels``.

    Every group contributes at least one sample to each split with a non-zero
    fraction; rounding favours train.
    """
    total = sum(fractions.get(s, 0.0) for s in SPLITS)
    if not np.isclose(total, 1.0, atol=1e-6):
        raise ConfigError("preprocess.split", f"train + val + test must sum to 1, got {total:g}")
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
            raise InputError(
                "sample sheet", f"group {level!r} has {n} samples: too few for the split {fractions}"
            )
        out.loc[idx[: take["val"]]] = "val"
        out.loc[idx[take["val"] : take["val"] + take["test"]]] = "test"
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
        center = np.asarray(self.center)
        scale = np.asarray(self.scale)
        z = (logx - center) / scale
        if self.scaling == "minmax":
            z = np.clip(z, 0.0, 1.0)
        return z.astype(np.float32)

    def unscale(self, z):
        """Inverse of :meth:`scale_log` (model space -> log space)."""
        return np.asarray(z, np.float64) * np.asarray(self.scale) + np.asarray(self.center)

    def apply(self, raw):
        """Transform a raw samples x genes frame (with at least the selected genes)."""
        missing = [g for g in self.genes if g not in raw.columns]
        if missing:
            raise InputError(
                "expression matrix",
                f"{len(missing)} of the model's {len(self.genes)} genes are missing, "
                f"e.g. {missing[:5]}",
            )
        lib = raw.to_numpy(dtype=np.float64).sum(axis=1) if self.value_type == "counts" else None
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


def log_base_value(value_type, log_base):
    if value_type == "counts":
        return float(np.e)
    if value_type == "intensity":
        return 2.0
    return {"e": float(np.e), "2": 2.0, "10": 10.0}[str(log_base)]


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
):
    """Fit the transform on the train rows of ``matrix``; return (transform, log matrix)."""
    train_mask = np.asarray(train_mask, bool)
    raw = matrix.to_numpy(dtype=np.float64)
    t = Transform(
        value_type=value_type,
        log_base=log_base_value(value_type, log_base),
        genes=[],
        center=[],
        scale=[],
        scaling=scaling,
        n_genes_input=matrix.shape[1],
    )
    if value_type == "counts":
        lib = raw[train_mask].sum(axis=1)
        t.library_size_target = float(library_size_target or np.median(lib))
    elif value_type == "intensity":
        if intensity_floor is None or intensity_floor <= 0:
            raise ConfigError("preprocess.intensity_floor", "must be > 0 for log2 of intensities")
        t.intensity_floor = float(intensity_floor)
        t.intensity_ceiling = None if intensity_ceiling is None else float(intensity_ceiling)
    logx = t.to_log(raw)
    tr = logx[train_mask]
    keep = np.ones(raw.shape[1], bool)
    report = {"input": int(raw.shape[1])}
    if min_expression is not None:
        need = min_samples if min_samples >= 1 else int(np.ceil(min_samples * tr.shape[0]))
        keep &= (tr > min_expression).sum(axis=0) >= max(need, 1)
        report["after_min_expression"] = int(keep.sum())
    sd = tr.std(axis=0)
    keep &= sd > 1e-8
    report["after_constant_filter"] = int(keep.sum())
    if not keep.any():
        raise InputError("expression matrix", "no gene passes the expression filter; relax preprocess.min_expression")
    idx = np.flatnonzero(keep)
    if n_top_genes and n_top_genes < len(idx):
        sub = tr[:, idx]
        mad = np.median(np.abs(sub - np.median(sub, axis=0)), axis=0)
        # ties (e.g. MAD 0 for sparse counts) are broken by the standard deviation
        order = np.lexsort((-sd[idx], -mad))
        idx = np.sort(idx[order[:n_top_genes]])
    report["selected"] = int(len(idx))
    t.genes = [str(g) for g in matrix.columns[idx]]
    sel = tr[:, idx]
    if scaling == "zscore":
        center, scale = sel.mean(axis=0), sel.std(axis=0)
    elif scaling == "minmax":
        center = sel.min(axis=0)
        scale = sel.max(axis=0) - center
    elif scaling == "none":
        center, scale = np.zeros(len(idx)), np.ones(len(idx))
    else:
        raise ConfigError("preprocess.scaling", f"unknown scaling {scaling!r}")
    scale = np.where(scale > 1e-8, scale, 1.0)
    t.center = center.tolist()
    t.scale = scale.tolist()
    t.filter_report = report
    log.info("gene selection: %s", report)
    return t, logx[:, idx]


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
    **transform_kwargs,
):
    matrix = io.read_matrix(matrix_path)
    sheet = pd.read_csv(samples_path, sep="\t", dtype=str, keep_default_na=False).set_index(
        "sample_id", drop=False
    )
    sheet = sheet.loc[matrix.index]
    assignment = stratified_split(sheet[condition], split, seed)
    train_mask = (assignment == "train").to_numpy()
    t, logx = fit_transform(matrix, train_mask, value_type, **transform_kwargs)
    features = pd.DataFrame(t.scale_log(logx), index=matrix.index, columns=t.genes)
    split_df = pd.DataFrame(
        {
            "sample_id": matrix.index,
            "split": assignment.to_numpy(),
            "condition": sheet[condition].to_numpy(),
            "library_size": matrix.to_numpy(dtype=np.float64).sum(axis=1),
        }
    )
    io.write_matrix(out_features, features)
    io.write_tsv(out_split, split_df, float_format="%.10g")
    t.save(out_transform)
    counts = split_df["split"].value_counts().to_dict()
    log.info("split: %s; %d genes selected of %d", counts, len(t.genes), matrix.shape[1])
    return t
