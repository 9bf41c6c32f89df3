"""Plausibility checks of a cohort before anything is trained (issue 16, item 3).

Collect calls these after the file-level checks (:mod:`genovae.sources`). Each check either stops with an
:class:`~genovae.errors.InputError` naming the file, the cell or label and the config key to change, or
appends a warning (a sentence beginning with the file) to the manifest's ``warnings``, which the summary
(``summary.json``'s ``warnings``), the overview page and the report show. Where the data are ambiguous the
check refuses rather than guesses:

- :func:`check_range`: values beyond the float32 range (the canonical matrix is float32) are refused;
- :func:`check_scale`: values that do not fit ``data.value_type``: counts or absurd values (|x| > 100) under
  ``log``; log values or log ratios under ``intensity``; the share clipped by the intensity floor/ceiling;
- :func:`check_outliers`: single values far beyond the rest of their gene (warning);
- :func:`check_labels`: condition labels that are missing in disguise ("NA", "None", ...) or differ only by
  case or surrounding white space;
- :func:`split_sizes` / :func:`check_split_sizes`: validation, test or training sets too small to mean much;
- :func:`check_downloads`: http(s) inputs without a ``data.sha256``.
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import InputError
from .sources.common import preview
from .sources.remote import is_url

log = logging.getLogger(__name__)

#: the largest magnitude the float32 canonical matrix holds
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: |x| above this is not a log-scale expression value (2^100, e^100, 10^100)
LOG_ABSURD = 100.0
#: intensities on a linear scale reach thousands; all below this look logged
INTENSITY_LOGGED_MAX = 100.0
#: a warning when more than this share of intensities is clipped by the floor or ceiling
CLIP_WARN_SHARE = 0.05
#: a value is an outlier when it lies this many robust SDs beyond the next value of its gene ...
OUTLIER_ROBUST_SDS = 10.0
#: ... where the robust SD (1.4826 MAD, log scale) counts as at least this (log2 units for counts/intensity)
OUTLIER_MIN_SD = 1.0
#: condition labels that mean "unknown": refused like empty cells
NA_LABELS = {"", "na", "nan", "n/a", "#n/a", "none", "null", "<na>"}
#: fewer training samples than this, or fewer than this in validation/test, get a warning
MIN_TRAIN, MIN_HELD_OUT = 10, 2
BLOCK = 512


def _blocks(values):
    width = getattr(values, "block_columns", BLOCK)  # a sparse matrix's blocks: genovae.sparse.ColumnBlocks
    for j in range(0, values.shape[1], width):
        yield j, np.asarray(values[:, j : j + width], dtype=np.float64)


def _cell(matrix, r, c):
    return f"sample {matrix.index[r]!r}, gene {matrix.columns[c]!r}"


def _warn(warnings, msg):
    log.warning(msg)
    warnings.append(msg)


def check_range(matrix, path):
    """Every value fits float32 (else it would become infinite and its gene be dropped)."""
    values = matrix.to_numpy()
    if values.dtype == np.float32:
        return
    for j, block in _blocks(values):
        big = np.abs(block) > FLOAT32_MAX
        if big.any():
            r, c = np.argwhere(big)[0]
            raise InputError(
                path,
                f"value {block[r, c]:g} ({_cell(matrix, r, j + c)}) is beyond the float32 range "
                f"(±{FLOAT32_MAX:.3g}) that genovae stores; {int(big.sum())} such value(s) in this block of genes. "
                "Is it a unit or typing error?",
            )


def check_scale(matrix, value_type, path, warnings, intensity_floor=1.0, intensity_ceiling=None):
    """The values must look like ``data.value_type`` says (counts are checked by collect.check_values)."""
    values = matrix.to_numpy()
    n = values.size
    vmin = vmax = None
    first_absurd = None
    neg = below = above = nonzero = integer = 0
    for j, block in _blocks(values):
        bmin, bmax = float(block.min()), float(block.max())
        vmin = bmin if vmin is None else min(vmin, bmin)
        vmax = bmax if vmax is None else max(vmax, bmax)
        if value_type == "log":
            absurd = np.abs(block) > LOG_ABSURD
            if absurd.any() and first_absurd is None:
                r, c = np.argwhere(absurd)[0]
                first_absurd = (block[r, c], r, j + c, int(absurd.sum()))
            nz = block != 0
            nonzero += int(nz.sum())
            integer += int((nz & (block == np.round(block))).sum())
        elif value_type == "intensity":
            neg += int((block < 0).sum())
            below += int((block < intensity_floor).sum())
            if intensity_ceiling is not None:
                above += int((block > intensity_ceiling).sum())
    if value_type == "log":
        if first_absurd is not None:
            v, r, c, _ = first_absurd
            raise InputError(
                path,
                f"value {v:g} ({_cell(matrix, r, c)}) is not plausible on a log scale (|x| > {LOG_ABSURD:g}) but "
                "data.value_type is 'log'; if the values are counts or intensities, set data.value_type: counts "
                "or intensity, else correct the value",
            )
        if vmin >= 0 and vmax >= 10 and nonzero and integer >= 0.99 * nonzero:
            raise InputError(
                path,
                f"the values look like counts (all ≥ 0, {integer / nonzero:.1%} of the non-zero ones whole "
                f"numbers, up to {vmax:g}) but data.value_type is 'log'; set data.value_type: counts "
                "(or log-transform them first)",
            )
    elif value_type == "intensity":
        if vmax < INTENSITY_LOGGED_MAX:
            what = "log ratios" if neg else "log values"
            raise InputError(
                path,
                f"the values look like {what} (from {vmin:g} to {vmax:g}; intensities on a linear scale reach "
                f"thousands) but data.value_type is 'intensity', which takes log2 of them; set "
                "data.value_type: log",
            )
        clipped = below + above
        if clipped > CLIP_WARN_SHARE * n:
            parts = [f"{below} below preprocess.intensity_floor ({intensity_floor:g}"
                     + (f"; {neg} of them negative)" if neg else ")")]
            if above:
                parts.append(f"{above} above preprocess.intensity_ceiling ({intensity_ceiling:g})")
            _warn(
                warnings,
                f"{path}: {clipped} of {n} intensities ({clipped / n:.1%}) are clipped before log2: "
                + " and ".join(parts) + "; check the floor and ceiling (or data.value_type)",
            )


def _log_scale(block, value_type, intensity_floor):
    if value_type == "counts":
        return np.log2(1.0 + np.maximum(block, 0.0))
    if value_type == "intensity":
        return np.log2(np.maximum(block, max(intensity_floor or 1.0, 1e-12)))
    return block


def check_outliers(matrix, value_type, path, warnings, intensity_floor=1.0, limit=5):
    """Warn about single values far beyond the rest of their gene (on the log scale the model sees).

    A gene's largest (smallest) value is an outlier when it lies more than ``OUTLIER_ROBUST_SDS`` robust
    SDs (1.4826 MAD, at least ``OUTLIER_MIN_SD``) beyond the gene's second largest (smallest) value: one
    sample alone far away, not a group of samples that differs. Returns the outliers found.
    """
    values = matrix.to_numpy()
    if values.shape[0] < 3:
        return []
    found = []  # (gap in SDs, row, column, value)
    for j, block in _blocks(values):
        y = _log_scale(block, value_type, intensity_floor)
        med = np.median(y, axis=0)
        sd = np.maximum(1.4826 * np.median(np.abs(y - med), axis=0), OUTLIER_MIN_SD)
        part = np.partition(y, (0, 1, y.shape[0] - 2, y.shape[0] - 1), axis=0)
        hi_gap = (part[-1] - part[-2]) / sd
        lo_gap = (part[1] - part[0]) / sd
        for gap, pick in ((hi_gap, np.argmax), (lo_gap, np.argmin)):
            for c in np.flatnonzero(gap > OUTLIER_ROBUST_SDS):
                r = int(pick(y[:, c]))
                found.append((float(gap[c]), r, j + int(c), float(block[r, c]), float(np.median(block[:, c]))))
    if found:
        found.sort(key=lambda f: -f[0])
        genes = {f[2] for f in found}
        shown = "; ".join(
            f"gene {matrix.columns[c]!r} in sample {matrix.index[r]!r}: {v:g} (gene median {m:g})"
            for _, r, c, v, m in found[:limit]
        )
        _warn(
            warnings,
            f"{path}: {len(found)} value(s) in {len(genes)} gene(s) lie more than {OUTLIER_ROBUST_SDS:g} robust SDs "
            f"beyond every other value of their gene: {shown}"
            + (f" and {len(found) - limit} more" if len(found) > limit else "")
            + "; check these cells (a unit or typing error?)",
        )
    return found


def check_labels(sheet, condition, path):
    """Condition labels: none missing in disguise, none differing from another only by case or white space."""
    values = sheet[condition]
    text = values.astype("string")
    missing = values.isna() | text.str.strip().str.lower().isin(NA_LABELS)
    if missing.any():
        shown = sorted({repr(v) if isinstance(v, str) else "(empty)" for v in values[missing]})
        raise InputError(
            path,
            f"column '{condition}' is empty or NA-like ({', '.join(shown)}) for {int(missing.sum())} sample(s): "
            f"{preview(sheet.index[missing])}; a missing group is not guessed: give them a group, or remove "
            "them from the sample sheet and the matrix",
        )
    keys = text.str.strip().str.casefold()
    variants = {}
    for raw, key in zip(values, keys):
        variants.setdefault(key, set()).add(raw)
    clashes = [sorted(v) for v in variants.values() if len(v) > 1]
    if clashes:
        shown = "; ".join(", ".join(repr(x) for x in group) for group in clashes[:5])
        raise InputError(
            path,
            f"column '{condition}' has labels that differ only by case or surrounding white space ({shown}): "
            "are they the same group? Write each group one way",
        )


def split_sizes(counts, split):
    """Samples per split as preprocess.stratified_split assigns them (the counts do not depend on the seed)."""
    sizes = {"train": 0, "val": 0, "test": 0}
    for n in counts:
        take = {s: (max(1, int(round(split.get(s, 0) * n))) if split.get(s, 0) > 0 else 0) for s in ("val", "test")}
        sizes["val"] += take["val"]
        sizes["test"] += take["test"]
        sizes["train"] += n - take["val"] - take["test"]
    return sizes


def check_split_sizes(counts, split, path, warnings):
    sizes = split_sizes(list(counts), split)
    small = []
    if sizes["train"] < MIN_TRAIN:
        small.append(f"{sizes['train']} training samples (fewer than {MIN_TRAIN})")
    for s, name in (("val", "validation"), ("test", "test")):
        if split.get(s, 0) > 0 and sizes[s] < MIN_HELD_OUT:
            small.append(f"{sizes[s]} {name} sample(s) (fewer than {MIN_HELD_OUT})")
    if small:
        _warn(
            warnings,
            f"{path}: the cohort is small for preprocess.split ({sizes['train']} train / {sizes['val']} validation "
            f"/ {sizes['test']} test): " + ", ".join(small) + "; metrics on so few samples are mostly noise",
        )
    return sizes


def check_downloads(origins, expected, warnings):
    """An http(s) input without a sha256 cannot be told from a changed or corrupted copy: warn."""
    for role, origin in origins.items():
        if is_url(origin) and role not in expected:
            _warn(
                warnings,
                f"{origin}: downloaded without a checksum; set data.sha256.{role} so that a changed or corrupted "
                "download is refused",
            )


def check_latent_dim(n_genes, latent_dim, path="expression matrix"):
    """Fewer modelled genes than latent dimensions: the model cannot compress anything."""
    from .errors import ConfigError

    if latent_dim is not None and n_genes < latent_dim:
        raise ConfigError(
            "model.latent_dim",
            f"{latent_dim} latent dimensions but only {n_genes} gene(s) of {path} are left after filtering; "
            "lower model.latent_dim or relax the gene filter (preprocess.min_expression, n_top_genes)",
        )


__all__ = [
    "check_range", "check_scale", "check_outliers", "check_labels", "split_sizes", "check_split_sizes",
    "check_downloads", "check_latent_dim",
]
