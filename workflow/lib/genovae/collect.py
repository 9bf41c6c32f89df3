"""Collect: validate the user's expression matrix and sample sheet.

The result is one canonical samples x genes float32 matrix (Parquet; a sparse
``.h5ad`` matrix stays sparse, see :mod:`genovae.sparse`), the
validated sample sheet in the same order, the gene annotation, and a manifest
with the sha256 of every input. Every problem stops with an
:class:`~genovae.errors.InputError` that names the file and the problem; no
output is written until all checks pass.

Files are read by :mod:`genovae.sources` (every format, one entry point:
:func:`~genovae.sources.read_source`); this module checks checksums, matches
the matrix to the sample sheet, checks the values and the condition, and
writes the outputs and the manifest.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import io, plausible, pseudonym, sources
from .errors import ConfigError, InputError
from .sparse import SparseMatrix
from .sources.common import preview
from .sources.table import COLUMN_BLOCK, parser_name, read_genes, read_samples

log = logging.getLogger(__name__)

VALUE_TYPES = ("counts", "intensity", "log")
ORIENTATIONS = ("samples_by_genes", "genes_by_samples")
SPLITS = ("train", "val", "test")


def _first_cell(values, test, block=COLUMN_BLOCK):
    """First (row, column) in row-major order where ``test`` holds, checked in column blocks; or None."""
    block = getattr(values, "block_columns", block)  # a sparse matrix's blocks: genovae.sparse.ColumnBlocks
    first = None
    for j in range(0, values.shape[1], block):
        hit = test(values[:, j : j + block])
        rows = np.flatnonzero(hit.any(axis=1))
        if len(rows):
            cell = (int(rows[0]), j + int(np.flatnonzero(hit[rows[0]])[0]))
            first = cell if first is None else min(first, cell)
    return first


def match_samples(matrix, sheet, expression_path, samples_path, orientation):
    """Check that matrix and sheet list the same samples; order the matrix as the sheet."""
    in_rows = set(matrix.index)
    sheet_ids = set(sheet.index)
    if not in_rows & sheet_ids and set(matrix.columns) & sheet_ids:
        other = "genes_by_samples" if orientation == "samples_by_genes" else "samples_by_genes"
        raise InputError(
            expression_path,
            f"the sample ids of {samples_path} are column names of this matrix, not row names: "
            f"the matrix looks transposed; set data.orientation: {other}",
        )
    missing = [s for s in sheet.index if s not in in_rows]
    extra = [s for s in matrix.index if s not in sheet_ids]
    if missing:
        raise InputError(
            samples_path,
            f"{len(missing)} sample(s) of the sample sheet are not in {expression_path}: "
            f"{preview(missing)}",
        )
    if extra:
        raise InputError(
            expression_path,
            f"{len(extra)} sample(s) of the matrix are not in the sample sheet {samples_path}: "
            f"{preview(extra)}",
        )
    if matrix.index.equals(sheet.index):
        return matrix  # already in the sheet's order: no copy of a large matrix
    if isinstance(matrix, SparseMatrix):
        return matrix.take_rows(matrix.index.get_indexer(sheet.index))
    return matrix.loc[sheet.index]


def check_values(matrix, value_type, path):
    values = matrix.to_numpy()
    if value_type == "counts":
        # checked in column blocks: temporaries of a block, not of the whole matrix
        neg = _first_cell(values, lambda v: v < 0)
        if neg is not None:
            r, c = neg
            raise InputError(
                path,
                f"negative value {values[r, c]:g} (row {matrix.index[r]!r}, column "
                f"{matrix.columns[c]!r}) but data.value_type is 'counts'; counts cannot be negative",
            )
        frac = _first_cell(values, lambda v: np.abs(v - np.round(v)) > 1e-6)
        if frac is not None:
            r, c = frac
            raise InputError(
                path,
                f"non-integer value {values[r, c]:g} (row {matrix.index[r]!r}, column "
                f"{matrix.columns[c]!r}) but data.value_type is 'counts'; for normalised "
                f"values use value_type 'intensity' (not logged) or 'log'",
            )


def drop_empty(matrix, value_type, path, warnings):
    """Drop all-zero samples and (for counts/intensity) all-zero genes, with warnings."""
    is_sparse = isinstance(matrix, SparseMatrix)
    zero_samples = ~(matrix.nonzero_rows() if is_sparse else matrix.to_numpy().any(axis=1))
    if zero_samples.any():
        dropped = matrix.index[zero_samples].tolist()
        msg = f"{path}: dropped {len(dropped)} sample(s) whose values are all zero: {preview(dropped)}"
        log.warning(msg)
        warnings.append(msg)
        matrix = matrix.take_rows(~zero_samples) if is_sparse else matrix.loc[~zero_samples]
    if value_type in ("counts", "intensity"):
        zero_genes = ~(matrix.nonzero_columns() if is_sparse else matrix.to_numpy().any(axis=0))
        if zero_genes.any():
            msg = f"{path}: dropped {int(zero_genes.sum())} gene(s) that are zero in every sample"
            log.warning(msg)
            warnings.append(msg)
            matrix = matrix.take_columns(~zero_genes) if is_sparse else matrix.loc[:, ~zero_genes]
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise InputError(path, "no samples or no genes are left after dropping all-zero ones")
    return matrix


def check_condition(sheet, condition, case, control, min_per_group, path):
    """The condition column must exist, be complete and have two usable groups."""
    if condition not in sheet.columns:
        raise InputError(
            path,
            f"has no column '{condition}' (analysis.condition); columns: {preview(sheet.columns, 10)}",
        )
    plausible.check_labels(sheet, condition, path)  # no empty or NA-like labels, no case/space variants
    values = sheet[condition]
    counts = values.value_counts()
    if len(counts) < 2:
        raise InputError(
            path,
            f"column '{condition}' has only one group ({preview(counts.index)}); "
            f"a contrast needs at least two",
        )
    for key, level in (("analysis.case", case), ("analysis.control", control)):
        if level is not None and level not in counts.index:
            raise ConfigError(
                key, f"{level!r} is not a value of column '{condition}' in {path} "
                f"(values: {preview(counts.index, 10)})",
            )
    small = counts[counts < min_per_group]
    if len(small):
        raise InputError(
            path,
            f"group(s) of column '{condition}' too small to split into train/validation/test "
            f"(need at least {min_per_group} samples each): "
            + ", ".join(f"{k!r} has {v}" for k, v in small.items()),
        )
    return counts


def min_group_size(split_fractions):
    """Each group needs one sample for every split with a non-zero fraction."""
    return max(2, sum(1 for s in SPLITS if split_fractions.get(s, 0) > 0))


def collect(
    expression,
    samples=None,
    *,
    out_matrix,
    out_samples,
    out_genes,
    out_manifest,
    orientation="samples_by_genes",
    value_type="log",
    condition="condition",
    case=None,
    control=None,
    split=None,
    genes=None,
    sample_id_column="sample_id",
    format="auto",
    layer=None,
    sha256=None,
    origins=None,
    download_sizes=None,
    privacy=None,
    intensity_floor=1.0,
    intensity_ceiling=None,
):
    """Validate the inputs and write the canonical matrix, sheet, genes and manifest.

    ``expression`` may be a table, a GEO series matrix, a featureCounts or
    Salmon table or an .h5ad file (``format``, detected when 'auto', see
    :mod:`genovae.sources`); ``samples`` is optional for the formats that carry
    a sample sheet (GEO, h5ad). ``sha256`` ({role: hex} or a hex string for the
    expression file) is checked before anything is read. ``origins`` ({role:
    URL or path as configured}) is recorded in the manifest; a downloaded copy
    whose checksum, or whose size against ``download_sizes`` ({role: bytes its
    server declared}), does not match is deleted. ``privacy`` (the config's
    ``privacy`` section) with ``pseudonymize`` replaces every sample id by its
    keyed pseudonym right after the values are checked, before any warning,
    log message or output names a sample (see :mod:`genovae.pseudonym`).
    """
    split = split or {"train": 0.7, "val": 0.15, "test": 0.15}
    warnings = []
    files = {"expression": expression, "samples": samples, "genes": genes}
    raw, sheet, sheet_path, source, fmt, notes, expected = read_inputs(
        files, orientation=orientation, value_type=value_type, sample_id_column=sample_id_column,
        format=format, layer=layer, sha256=sha256, origins=origins, download_sizes=download_sizes,
    )
    shape_before = list(raw.shape)
    if sheet is None:
        raise ConfigError(
            "data.samples",
            f"is required: {expression} (read as '{fmt}') carries no sample sheet",
        )
    raw = _restore_file_names(raw, sheet, source.renamed)
    matrix = match_samples(raw, sheet, expression, sheet_path, orientation)
    plausible.check_range(matrix, expression)
    check_values(matrix, value_type, expression)
    plausible.check_scale(matrix, value_type, expression, warnings, intensity_floor, intensity_ceiling)
    matrix, sheet, _, scrub, pseudonymized = pseudonym.apply_to_cohort(matrix, sheet.loc[matrix.index], privacy)
    if scrub is not None:
        notes = [scrub(n) for n in notes]
    matrix = drop_empty(matrix, value_type, expression, warnings)
    sheet = sheet.loc[matrix.index]
    counts = check_condition(sheet, condition, case, control, min_group_size(split), sheet_path)
    plausible.check_split_sizes(counts.to_numpy(), split, sheet_path, warnings)
    plausible.check_outliers(matrix, value_type, expression, warnings, intensity_floor)
    if genes:
        annotation = read_genes(genes, matrix.columns)
    elif source.genes is not None and source.genes.shape[1]:
        annotation = source.genes.reindex(matrix.columns)
        annotation = annotation.rename(columns={"gene": "gene_annotation"})
        annotation.index.name = "gene"
    else:
        annotation = pd.DataFrame(index=pd.Index(matrix.columns, name="gene"))
    origins = {k: v for k, v in (origins or {}).items() if v}
    plausible.check_downloads(origins, expected, warnings)
    inputs = [_describe(expression, "expression", source.parser, origins, expected)]
    if samples:
        inputs.append(_describe(samples, "samples", parser_name(samples), origins, expected))
    if genes:
        inputs.append(_describe(genes, "genes", parser_name(genes), origins, expected))
    manifest = {
        "inputs": inputs,
        "format": fmt,
        "sample_sheet": "data.samples" if samples else f"carried by {fmt} file",
        "orientation": source.layout,
        "value_type": value_type,
        "shape_before": shape_before,
        "shape_after": list(matrix.shape),
        # a sparse cohort's size in memory (its CSR), what genovae.resources sizes the data rules by
        **({"sparse": {"nnz": matrix.nnz, "csr_mb": round(matrix.nbytes / 1e6, 1)}}
           if isinstance(matrix, SparseMatrix) else {}),
        "notes": notes,
        "warnings": warnings,
        "privacy": pseudonymized,
    }
    write_outputs(matrix, sheet, annotation, manifest, out_matrix, out_samples, out_genes, out_manifest)
    log.info("collected %d samples x %d genes from %s (%s)", *matrix.shape, expression, source.parser)
    return manifest


def read_inputs(
    files,
    *,
    orientation="samples_by_genes",
    value_type="log",
    sample_id_column="sample_id",
    format="auto",
    layer=None,
    sha256=None,
    origins=None,
    download_sizes=None,
    section="data",
):
    """Read an expression file (any format) and its sample sheet: what collect and apply_new share.

    ``files``: {"expression": path, "samples": path or None, ...}; every file named there is
    checked against ``sha256`` before anything is read. Returns ``(raw, sheet, sheet_path,
    source, fmt, notes, expected)``: ``raw`` the samples x genes numeric matrix (not yet
    matched to the sheet), ``sheet`` the sample sheet (``files["samples"]``, else the one the
    file carries, else None). Config errors name keys of ``section`` (data or new_data).
    """
    expression, samples = files["expression"], files.get("samples")
    origins = {k: v for k, v in (origins or {}).items() if v}
    notes = []
    expected = sources.expected_sha256(sha256)
    for role, declared in (download_sizes or {}).items():  # a download cut short, before anything is read
        if files.get(role):
            sources.check_download_size(files[role], declared, origins.get(role, files[role]))
    _verify_checksums(files, expected, origins)
    io.check_readable(expression)
    fmt = sources.detect_format(expression, format)
    if layer is not None and fmt != "h5ad":
        raise ConfigError(f"{section}.layer", f"only applies to .h5ad input; {expression} is read as '{fmt}'")
    if fmt == "featurecounts" and value_type != "counts":
        raise ConfigError(
            "data.value_type",
            f"{expression} is a featureCounts table of raw counts: set data.value_type: counts",
        )
    source = sources.read_source(expression, fmt, layer, orientation)
    notes.extend(source.notes)
    raw = source.values
    if source.layout == "genes_by_samples":
        raw = raw.T
    if source.round_counts and value_type == "counts":
        raw = sources.round_estimated_counts(raw, expression, notes)
    if samples:
        sheet, sheet_path = read_samples(samples, sample_id_column), samples
    elif source.sheet is not None:
        sheet, sheet_path = source.sheet, expression
    else:
        sheet, sheet_path = None, None
    if sheet is not None:
        raw = _restore_file_names(raw, sheet, source.renamed)
    return raw, sheet, sheet_path, source, fmt, notes, expected


def _verify_checksums(files, expected, origins):
    """Check data.sha256 before any file is parsed."""
    for role, digest in expected.items():
        if role not in files:
            raise ConfigError(
                "data.sha256", f"unknown file '{role}'; name expression, samples or genes"
            )
        path = files[role]
        if not path:
            raise ConfigError("data.sha256", f"has a sum for '{role}' but data.{role} is not set")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConfigError("data.sha256", f"'{role}': {digest!r} is not a sha256 (64 hex digits)")
        io.check_readable(path)
        origin = origins.get(role)
        sources.verify_sha256(path, digest, origin=origin, discard=sources.is_url(origin))
        log.info("%s: sha256 %s as expected", origin or path, digest)


def _restore_file_names(raw, sheet, renamed):
    """featureCounts columns were shortened to sample names; keep the long ones if the sheet uses them."""
    if not renamed:
        return raw
    ids = set(sheet.index)
    if not ids & set(raw.index) and ids & set(renamed.values()):
        raw = raw.rename(index=renamed)
    return raw


def _describe(path, role, parser, origins=None, expected=None):
    origins, expected = origins or {}, expected or {}
    entry = {
        "role": role,
        "path": str(path),
        "source": str(origins.get(role) or path),
        "sha256": io.sha256sum(path),
        "bytes": Path(path).stat().st_size,
        "parser": parser,
    }
    if role in expected:
        entry["sha256_expected"] = expected[role]
    return entry


def write_outputs(matrix, sheet, annotation, manifest, out_matrix, out_samples, out_genes, out_manifest):
    io.write_matrix(out_matrix, matrix)
    io.write_tsv(out_samples, sheet.reset_index(drop=True))
    io.write_tsv(out_genes, annotation.reset_index())
    io.write_json(out_manifest, manifest)
