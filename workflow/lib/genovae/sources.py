"""Where expression data come from, and how each kind of file is read.

A researcher's data arrive as a plain table, a GEO series matrix, a merged
count table from featureCounts or Salmon/tximport, or an AnnData ``.h5ad``;
local or as an ``http(s)://`` URL (fetched by Snakemake's HTTP storage plugin,
see ``workflow/rules/common.smk``). This module

- names the format of a file (:func:`resolve_format`, :func:`detect_format`),
- builds the NCBI download URL of a GEO series matrix (:func:`geo_series_url`),
- checks downloads against expected sha256 sums (:func:`verify_sha256`),
- parses GEO series matrices, featureCounts and Salmon tables and .h5ad files
  into a :class:`Source`: a samples x genes frame (values still to be checked
  by :mod:`genovae.collect`), and the sample sheet and gene annotation the file
  carries, if any.

Every problem is raised as :class:`~genovae.errors.InputError` (naming the
file) or :class:`~genovae.errors.ConfigError` (naming the config key).
"""

from __future__ import annotations

import gzip
import io as _io
import logging
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import io
from .errors import ConfigError, InputError

log = logging.getLogger(__name__)

FORMATS = ("auto", "table", "geo", "featurecounts", "salmon", "h5ad")
#: formats whose files carry their own sample sheet (data.samples is optional)
WITH_SAMPLE_SHEET = ("geo", "h5ad")
#: formats whose values are always genes x samples
GENES_BY_SAMPLES = ("geo", "featurecounts", "salmon")
GEO_URL = "https://ftp.ncbi.nlm.nih.gov/geo/series/{stub}/{acc}/matrix/{acc}_series_matrix.txt.gz"
FEATURECOUNTS_ANNOTATION = ("Chr", "Start", "End", "Strand", "Length")
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
ALIGNMENT_SUFFIXES = (".sorted.bam", ".bam", ".sam", ".cram")


@dataclass
class Source:
    """One expression file as read, and what it carries besides the values.

    ``values`` is laid out as in the file (``layout``): genes x samples for GEO,
    featureCounts and Salmon tables, samples x genes for AnnData. Its cells may
    still be text; :mod:`genovae.collect` converts and checks them.
    """

    values: pd.DataFrame
    parser: str
    layout: str = "genes_by_samples"
    sheet: pd.DataFrame | None = None  # index = sample id, with a sample_id column
    genes: pd.DataFrame | None = None  # index = gene id
    notes: list = field(default_factory=list)
    round_counts: bool = False  # estimated counts (Salmon): round to integers as counts
    renamed: dict = field(default_factory=dict)  # new sample id -> id as written in the file


def _note(notes, path, text):
    msg = f"{path}: {text}"
    log.info(msg)
    notes.append(msg)


# ----------------------------------------------------------------- locations
def is_url(location):
    return isinstance(location, str) and location.lower().startswith(("http://", "https://"))


def geo_series_url(accession):
    """NCBI's download URL of a GEO series matrix, e.g. GSE1234 ->
    https://ftp.ncbi.nlm.nih.gov/geo/series/GSE1nnn/GSE1234/matrix/GSE1234_series_matrix.txt.gz

    Series with several platforms have one file per platform
    (``GSE1234-GPL96_series_matrix.txt.gz``); give that file's URL as
    ``data.expression`` instead.
    """
    acc = str(accession).strip().upper()
    m = re.fullmatch(r"GSE(\d+)", acc)
    if not m:
        raise ConfigError("data.geo", f"{accession!r} is not a GEO series accession (GSE followed by digits)")
    digits = m.group(1)
    stub = f"GSE{digits[:-3]}nnn"
    return GEO_URL.format(stub=stub, acc=acc)


def expected_sha256(value):
    """``data.sha256`` as {role: lower-case hex}; a plain string is the expression file's."""
    if not value:
        return {}
    if isinstance(value, str):
        value = {"expression": value}
    return {role: str(h).strip().lower() for role, h in value.items() if h}


def verify_sha256(path, expected, origin=None, discard=False):
    """Compare a file's sha256 with the expected one; on a mismatch optionally delete it.

    ``origin`` is where the file came from (a URL), named in the message with
    the local copy. ``discard`` removes the (downloaded) local copy, so that a
    bad download is neither used nor kept: the next run fetches it again.
    """
    actual = io.sha256sum(path)
    if actual == expected.lower():
        return actual
    if discard:
        try:
            os.unlink(path)
            what = f"the downloaded copy {path} is deleted and not used"
        except OSError:
            what = f"the downloaded copy {path} is not used"
    else:
        what = "the file is not used"
    raise InputError(
        origin or path,
        f"sha256 mismatch: expected {expected.lower()}, got {actual}; {what} "
        "(check data.sha256, or whether the file changed at its source)",
    )


# ----------------------------------------------------------------- formats
def _name(path):
    return Path(str(path).split("?", 1)[0]).name.lower()


def format_from_name(location):
    """The format a file name implies: 'h5ad', 'geo' or None (undecided)."""
    name = _name(location)
    if name.endswith(".h5ad"):
        return "h5ad"
    if re.search(r"series_matrix\.txt(\.gz)?$", name):
        return "geo"
    return None


def resolve_format(fmt="auto", location=None, geo=None):
    """The format as far as the configuration tells (before the file is read)."""
    if fmt != "auto":
        return fmt
    if geo:
        return "geo"
    return format_from_name(location or "") or "auto"


def carries_sample_sheet(fmt):
    return fmt in WITH_SAMPLE_SHEET


def _open_text(path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _first_lines(path, n=3):
    lines = []
    try:
        with _open_text(path) as fh:
            while len(lines) < n:
                line = fh.readline(1 << 20)  # at most 1 MiB: binary files have no line ends
                if not line:
                    break
                lines.append(line.rstrip("\r\n"))
    except (OSError, EOFError, zlib.error):
        return []
    return lines


def _split(line):
    sep = "\t" if "\t" in line else ","
    return [c.strip().strip('"') for c in line.split(sep)]


def _is_featurecounts_header(cols):
    return tuple(cols[1:6]) == FEATURECOUNTS_ANNOTATION


def detect_format(path, fmt="auto"):
    """The format of a local file: the configured one, else from its name and first lines."""
    fmt = resolve_format(fmt, path)
    if fmt != "auto":
        return fmt
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic == b"\x89HDF\r\n\x1a\n":
        return "h5ad"
    if magic[:4] == b"PAR1" or _name(path).endswith((".parquet", ".pq")):
        return "table"
    lines = _first_lines(path)
    if not lines:
        return "table"
    first = lines[0]
    if first.startswith(("!Series_", "!Sample_", "!series_matrix_table_begin")):
        return "geo"
    if first.startswith("# Program:featureCounts"):
        return "featurecounts"
    cols = _split(first)
    if _is_featurecounts_header(cols):
        return "featurecounts"
    if cols and cols[0].lower() in SALMON_ID_COLUMNS and any(
        c.lower() in SALMON_ANNOTATION for c in cols[1:]
    ):
        return "salmon"
    return "table"


# ----------------------------------------------------------------- helpers
def _duplicates(values):
    s = pd.Series(list(values))
    return list(dict.fromkeys(s[s.duplicated()].tolist()))


def _check_ids(path, ids, what):
    ids = pd.Index(ids)
    if (ids.astype(str).str.strip() == "").any() or ids.isna().any():
        raise InputError(path, f"some {what} ids are empty")
    dups = _duplicates(ids)
    if dups:
        shown = ", ".join(repr(d) for d in dups[:5])
        raise InputError(path, f"duplicate {what} ids: {shown}")


def _read_text_table(path, sep, skiprows=0, text=None):
    try:
        return pd.read_csv(
            path if text is None else _io.StringIO(text),
            sep=sep,
            skiprows=skiprows,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            low_memory=False,
        )
    except pd.errors.ParserError as exc:
        msg = str(exc).strip().splitlines()[-1]
        raise InputError(path, f"rows have different numbers of fields ({msg})")
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"cannot be decompressed ({exc}); is the gzip file truncated?")
    except pd.errors.EmptyDataError:
        raise InputError(path, "has no header line after its comment lines")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"is not UTF-8 text ({exc.reason}); is it a binary file?")


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


# ----------------------------------------------------------------- GEO
def read_geo_series_matrix(path):
    """A GEO series matrix: the expression table and the ``!Sample_*`` sample sheet.

    Returns a :class:`Source` whose values are probes/genes (ID_REF) x samples
    (GSM ids; text, checked later) and whose sheet has ``sample_id`` (=
    geo_accession), ``title``, ``geo_accession``, the other single-valued
    ``!Sample_*`` fields, and one column per ``characteristics_ch1`` key
    ("disease state: AML" -> column ``disease state``).
    """
    io._check_readable(path)
    sample_lines, series = [], {}
    table, begun, ended = [], False, False
    try:
        with _open_text(path) as fh:
            for line in fh:
                line = line.rstrip("\r\n")
                low = line.lower()
                if low.startswith("!series_matrix_table_begin"):
                    begun = True
                    continue
                if low.startswith("!series_matrix_table_end"):
                    ended = True
                    break
                if begun:
                    if line.strip():
                        table.append(line)
                elif line.startswith("!Sample_"):
                    fields = line.split("\t")
                    sample_lines.append((fields[0][len("!Sample_"):], [_unquote(f) for f in fields[1:]]))
                elif line.startswith("!Series_"):
                    fields = line.split("\t")
                    series.setdefault(fields[0][len("!Series_"):], _unquote(fields[1]) if len(fields) > 1 else "")
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(path, f"cannot be decompressed ({exc}); is the gzip file truncated?")
    if not begun:
        raise InputError(
            path,
            "has no '!series_matrix_table_begin' line: not a GEO series matrix file "
            "(or a truncated one); set data.format if this is another kind of table",
        )
    if not ended:
        raise InputError(path, "has no '!series_matrix_table_end' line: the file is truncated")
    if len(table) < 2:
        raise InputError(
            path,
            "the series matrix table has no data rows; GEO leaves it empty for most RNA-seq series, "
            "whose counts are in the series' supplementary files: download those and use them as "
            "data.expression with data.samples",
        )
    frame = _read_text_table(path, "\t", text="\n".join(table) + "\n")
    frame.columns = [str(c).strip().strip('"') for c in frame.columns]
    id_col = frame.columns[0]
    frame[id_col] = frame[id_col].astype(str).str.strip('"')
    frame = frame.set_index(id_col)
    _check_ids(path, frame.index, "probe/gene (ID_REF)")
    _check_ids(path, frame.columns, "sample")
    sheet = _geo_sheet(path, sample_lines, list(frame.columns))
    notes = []
    _note(
        notes,
        path,
        f"GEO series matrix {series.get('geo_accession', '')}: {frame.shape[0]} rows (ID_REF) x "
        f"{frame.shape[1]} samples; sample sheet from {len(sample_lines)} !Sample_ lines "
        f"({sheet.shape[1]} columns)",
    )
    frame.index.name = None
    return Source(values=frame, parser="geo-series-matrix", sheet=sheet, notes=notes)


def _unquote(text):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text


def _geo_sheet(path, sample_lines, columns):
    lines = dict()
    for key, values in sample_lines:
        lines.setdefault(key, []).append(values)
    if "geo_accession" not in lines:
        raise InputError(path, "has no '!Sample_geo_accession' line: cannot name the samples")
    ids = lines["geo_accession"][0]
    n = len(ids)
    for key, rows in lines.items():
        for values in rows:
            if len(values) != n:
                raise InputError(
                    path,
                    f"'!Sample_{key}' has {len(values)} values but there are {n} samples "
                    "(!Sample_geo_accession)",
                )
    sheet = {"sample_id": ids}
    for key in ("title", "geo_accession"):
        if key in lines:
            sheet[key] = lines[key][0]
    characteristics = {}
    for key, rows in lines.items():
        if key in sheet:
            continue
        if key.startswith("characteristics_ch"):
            channel = key[len("characteristics_"):]
            for values in rows:
                for i, cell in enumerate(values):
                    if not cell.strip():
                        continue
                    if ":" in cell:
                        name, value = (s.strip() for s in cell.split(":", 1))
                    else:
                        name, value = key, cell.strip()
                    if channel != "ch1":
                        name = f"{name} ({channel})"
                    column = characteristics.setdefault(name, [None] * n)
                    column[i] = value if column[i] is None else f"{column[i]}; {value}"
        elif len(rows) == 1:
            sheet[key] = rows[0]
        else:
            sheet[key] = ["; ".join(v for v in parts if v) for parts in zip(*rows)]
    for name, values in characteristics.items():
        key = name if name not in sheet else f"characteristics: {name}"
        sheet[key] = values
    df = pd.DataFrame(sheet, dtype=object)
    _check_ids(path, df["sample_id"], "sample (!Sample_geo_accession)")
    return df.set_index("sample_id", drop=False)


# ----------------------------------------------------------------- count tables
def read_featurecounts(path):
    """A featureCounts table: Geneid, Chr, Start, End, Strand, Length, then one column per sample."""
    io._check_readable(path)
    lines = _first_lines(path, 50)
    skip = 0
    while skip < len(lines) and lines[skip].startswith("#"):
        skip += 1
    if skip == len(lines):
        raise InputError(path, "has only comment lines: no featureCounts table")
    header = lines[skip].split("\t")
    if not _is_featurecounts_header(header):
        raise InputError(
            path,
            "is not a featureCounts table: expected the columns Geneid, Chr, Start, End, Strand, "
            f"Length before the samples (tab-separated), found {', '.join(header[:6])}",
        )
    frame = _read_text_table(path, "\t", skiprows=skip)
    if frame.shape[0] == 0:
        raise InputError(path, "has a header but no genes")
    if frame.shape[1] < 7:
        raise InputError(path, "has the annotation columns but no sample columns")
    id_col = frame.columns[0]
    _check_ids(path, frame[id_col].fillna(""), "gene (Geneid)")
    frame = frame.set_index(id_col)
    frame.index = frame.index.astype(str)
    annotation = frame[list(FEATURECOUNTS_ANNOTATION)]
    counts = frame.drop(columns=list(FEATURECOUNTS_ANNOTATION))
    notes = []
    _note(
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


def _rename_alignment_columns(path, source):
    original = [str(c) for c in source.values.columns]
    short = _short_sample_names(original)
    if short != original and len(set(short)) == len(short) and all(short):
        source.renamed = dict(zip(short, original))
        source.values.columns = short
        changed = sum(a != b for a, b in zip(short, original))
        _note(
            source.notes,
            path,
            f"named {changed} sample column(s) after their alignment files without folder and "
            f"extension (e.g. {original[0]!r} -> {short[0]!r})",
        )
    _check_ids(path, source.values.columns, "sample")


def read_salmon(path):
    """A merged Salmon / tximport / nf-core table: gene or transcript id, annotation columns, samples."""
    frame = io.read_table(path, dtype=str)
    if frame.shape[1] < 2:
        raise InputError(path, "has only one column: no sample columns (is the delimiter right?)")
    if frame.shape[0] == 0:
        raise InputError(path, "has a header but no genes")
    id_col = frame.columns[0]
    _check_ids(path, frame[id_col].fillna(""), "gene/transcript")
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
        _note(
            notes,
            path,
            f"Salmon/tximport table: dropped the annotation column(s) {', '.join(map(str, annotation_cols))} "
            f"(kept as gene annotation); {len(samples)} sample columns",
        )
    genes = frame[annotation_cols] if annotation_cols else None
    source = Source(values=frame[samples], parser="salmon", genes=genes, notes=notes, round_counts=True)
    _check_ids(path, source.values.columns, "sample")
    return source


# ----------------------------------------------------------------- AnnData
def read_anndata(path, layer=None):
    """An AnnData .h5ad: X (or ``layers[layer]``), obs as the sample sheet, var_names as genes."""
    from .h5ad import read_h5ad

    io._check_readable(path)
    values, obs, var = read_h5ad(path, layer)
    _check_ids(path, obs.index, "sample (obs_names)")
    _check_ids(path, var.index, "gene (var_names)")
    matrix = pd.DataFrame(values, index=obs.index.astype(str), columns=var.index.astype(str))
    sheet = obs.copy()
    for col in sheet.columns:
        s = sheet[col]
        sheet[col] = s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v))
    if "sample_id" in sheet.columns:
        sheet = sheet.rename(columns={"sample_id": "obs_sample_id"})
    sheet.insert(0, "sample_id", list(obs.index.astype(str)))
    sheet.index = obs.index.astype(str)
    genes = var.copy() if var.shape[1] else None
    if genes is not None:
        genes.index = var.index.astype(str)
        genes.index.name = "gene"
    notes = []
    _note(
        notes,
        path,
        f"AnnData: {'X' if layer is None else f'layer {layer!r}'} of {matrix.shape[0]} obs x "
        f"{matrix.shape[1]} var; obs ({obs.shape[1]} columns) is the sample sheet",
    )
    return Source(
        values=matrix,
        parser="h5ad" if layer is None else f"h5ad:{layer}",
        layout="samples_by_genes",
        sheet=sheet,
        genes=genes,
        notes=notes,
    )


def read_source(path, fmt, layer=None):
    """Dispatch to the parser of a non-table format."""
    if fmt == "geo":
        return read_geo_series_matrix(path)
    if fmt == "featurecounts":
        return read_featurecounts(path)
    if fmt == "salmon":
        return read_salmon(path)
    if fmt == "h5ad":
        return read_anndata(path, layer)
    raise ConfigError("data.format", f"no parser for {fmt!r}")


def round_estimated_counts(matrix, path, notes):
    """Salmon estimated counts are fractional: round them (as tximport/DESeq2 do)."""
    values = matrix.to_numpy()
    frac = np.abs(values - np.round(values)) > 1e-6
    if frac.any():
        _note(notes, path, f"rounded {int(frac.sum())} fractional estimated counts to integers")
        return pd.DataFrame(np.round(values), index=matrix.index, columns=matrix.columns)
    return matrix
