"""featureCounts tables: Geneid, Chr, Start, End, Strand, Length, then one column of raw counts per sample."""

from __future__ import annotations

import pandas as pd

from .. import io
from ..errors import InputError
from .common import Source, check_ids, first_lines, note, read_text_table

FEATURECOUNTS_ANNOTATION = ("Chr", "Start", "End", "Strand", "Length")
ALIGNMENT_SUFFIXES = (".sorted.bam", ".bam", ".sam", ".cram")


def is_featurecounts_header(cols):
    return tuple(cols[1:6]) == FEATURECOUNTS_ANNOTATION


def read_featurecounts(path):
    """A featureCounts table: Geneid, Chr, Start, End, Strand, Length, then one column per sample."""
    io.check_readable(path)
    lines = first_lines(path, 50)
    skip = 0
    while skip < len(lines) and lines[skip].startswith("#"):
        skip += 1
    if skip == len(lines):
        raise InputError(path, "has only comment lines: no featureCounts table")
    header = lines[skip].split("\t")
    if not is_featurecounts_header(header):
        raise InputError(
            path,
            "is not a featureCounts table: expected the columns Geneid, Chr, Start, End, Strand, "
            f"Length before the samples (tab-separated), found {', '.join(header[:6])}",
        )
    frame = read_text_table(path, "\t", skiprows=skip)
    if frame.shape[0] == 0:
        raise InputError(path, "has a header but no genes")
    if frame.shape[1] < 7:
        raise InputError(path, "has the annotation columns but no sample columns")
    id_col = frame.columns[0]
    check_ids(path, frame[id_col].fillna(""), "gene (Geneid)")
    frame = frame.set_index(id_col)
    frame.index = frame.index.astype(str)
    annotation = frame[list(FEATURECOUNTS_ANNOTATION)]
    counts = frame.drop(columns=list(FEATURECOUNTS_ANNOTATION))
    notes = []
    note(
        notes,
        path,
        f"featureCounts table: dropped the annotation columns {', '.join(FEATURECOUNTS_ANNOTATION)} "
        f"(kept as gene annotation); {counts.shape[1]} sample columns",
    )
    genes = _featurecounts_annotation(annotation)
    source = Source(values=counts, parser="featurecounts", genes=genes, notes=notes)
    _rename_alignment_columns(path, source)
    return source


def _collapse(values):
    return ";".join(dict.fromkeys(str(values).split(";")))


def _featurecounts_annotation(ann):
    out = pd.DataFrame(index=ann.index)
    out["chr"] = ann["Chr"].fillna("").map(_collapse)
    starts = ann["Start"].fillna("").str.split(";")
    ends = ann["End"].fillna("").str.split(";")
    out["start"] = starts.map(lambda v: min((int(x) for x in v if x.strip().isdigit()), default=None))
    out["end"] = ends.map(lambda v: max((int(x) for x in v if x.strip().isdigit()), default=None))
    out["strand"] = ann["Strand"].fillna("").map(_collapse)
    out["length"] = ann["Length"]
    out.index.name = "gene"
    return out.astype(object).where(out.notna(), None)


def _short_sample_names(columns):
    """Alignment paths as featureCounts writes them -> sample names (dir and .bam cut)."""
    out = []
    for c in columns:
        name = str(c).replace("\\", "/").rsplit("/", 1)[-1]
        for suffix in ALIGNMENT_SUFFIXES:
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        out.append(name)
    return out


def _rename_alignment_columns(path, source):
    original = [str(c) for c in source.values.columns]
    short = _short_sample_names(original)
    if short != original and len(set(short)) == len(short) and all(short):
        source.renamed = dict(zip(short, original))
        source.values.columns = short
        changed = sum(a != b for a, b in zip(short, original))
        note(
            source.notes,
            path,
            f"named {changed} sample column(s) after their alignment files without folder and "
            f"extension (e.g. {original[0]!r} -> {short[0]!r})",
        )
    check_ids(path, source.values.columns, "sample")
