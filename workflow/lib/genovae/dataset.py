"""The preprocessed cohort as tensors: model inputs, likelihood targets, library sizes.

Every split is held as one preloaded tensor (on the training device); batches
are slices by index, never a per-sample Dataset/DataLoader.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy import sparse

from . import io
from . import sparse as gsparse
from .model import observation_space
from .sparse import SparseRows


@dataclass
class Cohort:
    sample_ids: np.ndarray
    split: np.ndarray  # "train" / "val" / "test" per sample
    condition: np.ndarray
    x: np.ndarray  # model inputs (preprocessed), float32
    target: np.ndarray  # likelihood targets: x, or raw counts for nb (scipy CSR for a sparse cohort)
    library: np.ndarray  # library size over the modelled genes (nb offset)
    library_all: np.ndarray  # library size over all genes (normalisation)
    genes: list
    #: analysis.batch: one-hot covariates (samples x levels, float32) and their spec (see :func:`covariate_spec`)
    covariates: np.ndarray | None = None
    covariate_spec: list = field(default_factory=list)
    _inputs: np.ndarray | None = field(default=None, repr=False)

    def mask(self, name):
        return self.split == name

    @property
    def n_covariates(self):
        return 0 if self.covariates is None else int(self.covariates.shape[1])

    def inputs(self):
        """The model inputs: ``x``, followed by the covariate columns when there are any
        (built once; without covariates ``x`` itself, not a copy)."""
        if not self.n_covariates:
            return self.x
        if self._inputs is None:
            self._inputs = np.ascontiguousarray(np.hstack([self.x, self.covariates]), dtype=np.float32)
        return self._inputs

    def target_rows(self, rows):
        """The likelihood targets of ``rows`` as a dense float32 array (a sparse target densified)."""
        part = self.target[rows]
        return part.toarray() if sparse.issparse(part) else np.asarray(part, dtype=np.float32)

    def target_tensor(self, device, rows=slice(None)):
        """The targets of ``rows`` on ``device``: a tensor, or for sparse counts a
        :class:`genovae.sparse.SparseRows` whose batches come out dense."""
        part = self.target[rows]
        if sparse.issparse(part):
            return SparseRows(part, device)
        return torch.as_tensor(np.ascontiguousarray(part), dtype=torch.float32, device=device)

    def tensors(self, name, device):
        m = self.split == name if name != "all" else np.ones(len(self.split), bool)
        as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a[m]), dtype=torch.float32, device=device)  # noqa: E731
        x = as_t(self.inputs())
        # gaussian/bernoulli targets are the inputs: one tensor, not two copies of the split
        if self.target is self.x:
            target = x if not self.n_covariates else x[:, : self.x.shape[1]]
        else:
            target = self.target_tensor(device, m)
        return x, target, as_t(self.library)


COVARIATE_PREFIX = "covariate:"


def covariate_spec(frame, columns):
    """``[{"column": c, "levels": [...]}, ...]``: the sorted levels of each covariate column."""
    return [{"column": c, "levels": sorted(pd.Series(frame[c]).astype(str).unique().tolist())} for c in columns]


def one_hot(frame, spec, where):
    """The one-hot covariates (float32, samples x levels) of ``frame``'s columns as ``spec`` lists them.

    A column missing from ``frame``, a missing value or a level the spec does not know is an
    InputError naming ``where`` (a model cannot condition on a batch it never saw).
    """
    from .errors import InputError
    from .preprocess import covariate_values

    blocks = []
    for item in spec:
        col, levels = item["column"], item["levels"]
        values = covariate_values(frame, col, where)
        unknown = sorted(set(values) - set(levels))
        if unknown:
            raise InputError(
                where, f"column {col!r} (analysis.batch) has level(s) {unknown[:5]} the model was not trained on "
                f"(known: {levels[:10]}); a batch-conditioned model cannot place a new batch: retrain with "
                "these samples in the cohort"
            )
        codes = pd.Categorical(values, categories=levels).codes
        block = np.zeros((len(values), len(levels)), np.float32)
        block[np.arange(len(values)), codes] = 1.0
        blocks.append(block)
    return np.hstack(blocks) if blocks else np.zeros((len(frame), 0), np.float32)


def covariate_reference(covariates, rows):
    """The distinct covariate rows of ``covariates[rows]`` and their frequencies (the model's batch mixture)."""
    uniq, counts = np.unique(covariates[rows], axis=0, return_counts=True)
    return {"rows": uniq.astype(float).tolist(), "weights": (counts / counts.sum()).astype(float).tolist()}


def load_cohort(features_path, split_path, matrix_path, likelihood):
    # row-major arrays (one sample contiguous): training slices the train split out of
    # them by row index without copying it (see genovae.train)
    index, columns, x = io.read_matrix_values(features_path, order="C")
    split = io.read_split(split_path)
    split = split.set_index("sample_id").loc[index]
    genes = list(columns)
    counts = observation_space(likelihood) == "counts"  # the likelihood models the raw counts (nb)
    if counts and gsparse.is_sparse_file(matrix_path):  # sparse counts stay sparse: batches are densified
        target, library = _sparse_counts(matrix_path, genes, index)
    elif counts:
        target = io.read_matrix_values(matrix_path, columns=genes, order="C")[2]
        library = _library_sizes(target)
    else:
        target, library = x, np.ones(len(x), np.float32)
    # analysis.batch: preprocess writes each covariate column as "covariate:<column>" in the split
    names = [c[len(COVARIATE_PREFIX) :] for c in split.columns if c.startswith(COVARIATE_PREFIX)]
    spec, covariates = [], None
    if names:
        frame = split[[COVARIATE_PREFIX + n for n in names]].set_axis(names, axis=1).astype(str)
        spec = covariate_spec(frame, names)
        covariates = one_hot(frame, spec, split_path)
    return Cohort(
        sample_ids=index.to_numpy(),
        split=split["split"].to_numpy(),
        condition=split["condition"].to_numpy(),
        x=x,
        target=target,
        library=library,
        library_all=split["library_size"].to_numpy(dtype=np.float64),
        genes=genes,
        covariates=covariates,
        covariate_spec=spec,
    )


def _sparse_counts(matrix_path, genes, index):
    """(CSR float32 counts of ``genes`` in the rows of ``index``, float32 library sizes over them) of a
    sparse cohort; the sizes are summed gene after gene, as :func:`_library_sizes` does (same numbers)."""
    m = gsparse.read(matrix_path, genes)
    if not m.index.equals(index):
        pos = m.index.get_indexer(index)
        if (pos < 0).any():
            raise ValueError(f"{matrix_path} lacks {int((pos < 0).sum())} samples of the features")
        m = m.take_rows(pos)
    csc = m.csc()
    total = np.zeros(csc.shape[0], np.float32)
    for k in range(csc.shape[1]):
        lo, hi = csc.indptr[k], csc.indptr[k + 1]
        total[csc.indices[lo:hi]] += csc.data[lo:hi]
    return m.csr(), total


def _library_sizes(counts, block=512):
    """float32 row sums, genes added in order: the numbers NumPy gives for a column-major matrix
    (the layout genovae read matrices in before), whatever the layout of ``counts``."""
    total = np.zeros(counts.shape[0], np.float32)
    for j in range(0, counts.shape[1], block):
        part = np.asfortranarray(counts[:, j : j + block])
        for k in range(part.shape[1]):
            total += part[:, k]
    return total


def load_labels(samples_path, sample_ids, condition, extra=()):
    """Label columns of the sample sheet for ``sample_ids``: {column: values}."""
    sheet = io.read_sample_sheet(samples_path)
    sheet = sheet.set_index("sample_id").loc[list(sample_ids)]
    out = {}
    for col in [condition, *extra]:
        if col not in sheet.columns:
            from .errors import ConfigError

            raise ConfigError("analysis.labels", f"column {col!r} is not in the sample sheet {samples_path}")
        out[col] = sheet[col].to_numpy(dtype=object)
    return out
