"""Merged Salmon / tximport / nf-core tables: gene or transcript id, annotation columns, samples."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import io
from ..errors import InputError
from .common import Source, check_ids, note

#: annotation columns of merged Salmon / tximport / nf-core tables (lower case)
SALMON_ANNOTATION = {
    "gene_id",
    "gene_name",
    "gene_symbol",
    "symbol",
    "gene_type",
    "gene_biotype",
    "tx",
    "txid",
    "transcript_id",
    "transcript_name",
    "length",
    "effectivelength",
    "effective_length",
    "description",
}
SALMON_ID_COLUMNS = {"name", "gene_id", "gene", "tx", "transcript_id", "geneid", "id", ""}


def is_salmon_header(cols):
    """An id column Salmon/tximport names, and at least one of their annotation columns."""
    return bool(cols) and cols[0].lower() in SALMON_ID_COLUMNS and any(
        c.lower() in SALMON_ANNOTATION for c in cols[1:]
    )


def read_salmon(path):
    """A merged Salmon / tximport / nf-core table: gene or transcript id, annotation columns, samples."""
    frame = io.read_table(path, dtype=str)
    if frame.shape[1] < 2:
        raise InputError(path, "has only one column: no sample columns (is the delimiter right?)")
    if frame.shape[0] == 0:
        raise InputError(path, "has a header but no genes")
    id_col = frame.columns[0]
    check_ids(path, frame[id_col].fillna(""), "gene/transcript")
    frame = frame.set_index(id_col)
    frame.index = frame.index.astype(str)
    frame.index.name = "gene"
    annotation_cols = []
    for col in frame.columns:
        if str(col).lower() in SALMON_ANNOTATION:
            annotation_cols.append(col)
            continue
        values = frame[col].dropna()
        if len(values) and pd.to_numeric(values, errors="coerce").isna().all():
            annotation_cols.append(col)  # text only, e.g. a gene name column
    samples = [c for c in frame.columns if c not in annotation_cols]
    if not samples:
        raise InputError(path, f"has no sample columns after the annotation columns {annotation_cols}")
    notes = []
    if annotation_cols:
        note(
            notes,
            path,
            f"Salmon/tximport table: dropped the annotation column(s) {', '.join(map(str, annotation_cols))} "
            f"(kept as gene annotation); {len(samples)} sample columns",
        )
    genes = frame[annotation_cols] if annotation_cols else None
    source = Source(values=frame[samples], parser="salmon", genes=genes, notes=notes, round_counts=True)
    check_ids(path, source.values.columns, "sample")
    return source


def round_estimated_counts(matrix, path, notes):
    """Salmon estimated counts are fractional: round them (as tximport/DESeq2 do)."""
    values = matrix.to_numpy()
    frac = np.abs(values - np.round(values)) > 1e-6
    if frac.any():
        note(notes, path, f"rounded {int(frac.sum())} fractional estimated counts to integers")
        return pd.DataFrame(np.round(values), index=matrix.index, columns=matrix.columns)
    return matrix
