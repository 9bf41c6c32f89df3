"""The preprocessed cohort as tensors: model inputs, likelihood targets, library sizes.

Every split is held as one preloaded tensor (on the training device); batches
are slices by index, never a per-sample Dataset/DataLoader.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import io
from .model import observation_space


@dataclass
class Cohort:
    sample_ids: np.ndarray
    split: np.ndarray  # "train" / "val" / "test" per sample
    condition: np.ndarray
    x: np.ndarray  # model inputs (preprocessed), float32
    target: np.ndarray  # likelihood targets: x, or raw counts for nb
    library: np.ndarray  # library size over the modelled genes (nb offset)
    library_all: np.ndarray  # library size over all genes (normalisation)
    genes: list

    def mask(self, name):
        return self.split == name

    def tensors(self, name, device):
        m = self.split == name if name != "all" else np.ones(len(self.split), bool)
        as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a[m]), dtype=torch.float32, device=device)  # noqa: E731
        x = as_t(self.x)
        # gaussian/bernoulli targets are the inputs: one tensor, not two copies of the split
        target = x if self.target is self.x else as_t(self.target)
        return x, target, as_t(self.library)


def load_cohort(features_path, split_path, matrix_path, likelihood):
    # row-major arrays (one sample contiguous): training slices the train split out of
    # them by row index without copying it (see genovae.train)
    index, columns, x = io.read_matrix_values(features_path, order="C")
    split = io.read_split(split_path)
    split = split.set_index("sample_id").loc[index]
    genes = list(columns)
    counts = observation_space(likelihood) == "counts"  # the likelihood models the raw counts (nb)
    target = io.read_matrix_values(matrix_path, columns=genes, order="C")[2] if counts else x
    library = _library_sizes(target) if counts else np.ones(len(x), np.float32)
    return Cohort(
        sample_ids=index.to_numpy(),
        split=split["split"].to_numpy(),
        condition=split["condition"].to_numpy(),
        x=x,
        target=target,
        library=library,
        library_all=split["library_size"].to_numpy(dtype=np.float64),
        genes=genes,
    )


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
