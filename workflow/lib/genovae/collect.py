"""Collect: validate the user's expression matrix and sample sheet.

The result is one canonical samples x genes float32 matrix (Parquet), the
validated sample sheet in the same order, the gene annotation, and a manifest
with the sha256 of every input. Every problem stops with an
:class:`~genovae.errors.InputError` that names the file and the problem; no
output is written until all checks pass.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import io, pseudonym, sources
from .errors import ConfigError, InputError

log = logging.getLogger(__name__)

VALUE_TYPES = ("counts", "intensity", "log")
ORIENTATIONS = ("samples_by_genes", "genes_by_samples")
SPLITS = ("train", "val", "test")
NA_TOKENS = {"na", "nan", "n/a", "#n/a", "null"}


def _preview(items, n=5):
    items = [str(i) for i in items]
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(repr(i) for i in items[:n]) + more


def _header_names(path):
    """Column names as written in a text file's header (pandas renames duplicates)."""
    kind, sep = io.table_format(path)
    if kind != "text":
        return None
    import gzip

    opener = gzip.open if str(path).lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        return fh.readline().rstrip("\r\n").split(sep)


def _check_row_lengths(path, n_header):
    """pandas pads short rows with missing values; name the first short row instead."""
    _, sep = io.table_format(path)
    import gzip

    opener = gzip.open if str(path).lower().endswith(".gz") else open
    expected = None
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        next(fh)
        for lineno, line in enumerate(fh, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            n = len(line.split(sep))
            if expected is None:
                # an R-style header has one name fewer than the rows have fields
                expected = n if n == n_header + 1 else n_header
            if n < expected:
                raise InputError(
                    path,
                    f"rows have different numbers of fields: line {lineno} has {n}, "
                    f"expected {expected} as in the header",
                )


def _duplicates(values):
    s = pd.Series(list(values))
    return list(dict.fromkeys(s[s.duplicated()].tolist()))


def read_expression(path, orientation="samples_by_genes"):
    """Read and check an expression matrix; return samples x genes float64 frame."""
    # read_table checks the file itself (missing, unreadable, gzip, delimiter) first;
    # ids in the first column stay text, so '001' is not read as 1
    fast = _read_numeric_parquet(path) if io.table_format(path)[0] == "parquet" else None
    if fast is not None:
        df, value_problem = fast
    else:
        df = io.read_table(path, index_col=0, dtype={0: str})
    header = _header_names(path)
    if header is not None:
        # an R-style header has no name for the id column
        names = header[1:] if len(header) == df.shape[1] + 1 else header
        dups = _duplicates(names)
        if dups:
            what = "gene" if orientation == "samples_by_genes" else "sample"
            raise InputError(path, f"duplicate {what} ids in the header: {_preview(dups)}")
    if df.shape[1] == 0:
        raise InputError(path, "has only one column: no expression values (is the delimiter right?)")
    if df.shape[0] == 0:
        raise InputError(path, "has a header but no data rows")
    row_what = "sample" if orientation == "samples_by_genes" else "gene"
    if df.index.isna().any() or (df.index.astype(str).str.strip() == "").any():
        raise InputError(path, f"some rows have an empty {row_what} id in the first column")
    df.index = df.index.astype(str)
    df.columns = df.columns.astype(str)
    dups = _duplicates(df.index)
    if dups:
        raise InputError(path, f"duplicate {row_what} ids in the first column: {_preview(dups)}")
    if header is not None and df.isna().to_numpy().any():
        _check_row_lengths(path, len(header))
    if fast is None:
        df = _to_numeric(df, path)
    elif value_problem is not None:
        raise value_problem(df.index, df.columns)
    if orientation == "genes_by_samples":
        df = df.T
    return df


#: columns converted at a time when a wide Parquet matrix is read or checked
COLUMN_BLOCK = 512


def _read_numeric_parquet(path):
    """Read an all-numeric Parquet matrix column-chunked into one float32 array.

    Returns (frame, problem): ``frame`` is a float32 DataFrame (row ids from the
    pandas index or the first column, as :func:`io.read_table` gives them) backed by
    one column-major array, so peak memory is the matrix plus one chunk of
    columns (no float64 copy); ``problem`` is None or a function of (row ids,
    column ids) that makes the missing/infinite-value error of :func:`_to_numeric`,
    raised by the caller after the id checks, in the same order as before. Returns
    None for files that need pandas (non-numeric columns, several index columns,
    duplicate names): those take the general path and its messages.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    io._check_readable(path)
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
    except Exception as exc:  # pyarrow raises many types
        raise InputError(path, f"cannot be read as Parquet ({exc})")
    meta = schema.pandas_metadata or {}
    index_cols = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
    names = schema.names
    if len(index_cols) > 1 or len(names) < 2 or len(set(names)) != len(names):
        return None
    id_col = index_cols[0] if index_cols else names[0]
    value_names = [c for c in names if c != id_col]
    numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)
    if not all(any(f(schema.field(c).type) for f in numeric) for c in value_names):
        return None
    id_name = next((c.get("name") for c in meta.get("columns", []) if c.get("field_name") == id_col), id_col)
    try:
        ids = pf.read(columns=[id_col]).column(0).to_pandas()
        n = len(ids)
        values = np.empty((n, len(value_names)), dtype=np.float32, order="F")
        nan_count = inf_count = 0
        nan_first = inf_first = None
        for j in range(0, len(value_names), COLUMN_BLOCK):
            chunk = pf.read(columns=value_names[j : j + COLUMN_BLOCK], use_threads=False)
            for k, col in enumerate(chunk.columns):
                a = col.to_numpy()
                if a.dtype.kind == "f":
                    nan, inf = np.isnan(a), np.isinf(a)
                    if nan.any():
                        nan_count += int(nan.sum())
                        cell = (int(np.argmax(nan)), j + k)
                        nan_first = cell if nan_first is None else min(nan_first, cell)
                    if inf.any():
                        inf_count += int(inf.sum())
                        cell = (int(np.argmax(inf)), j + k)
                        inf_first = cell if inf_first is None else min(inf_first, cell)
                values[:, j + k] = a
            del chunk
            io.release_arrow_memory()
    except Exception as exc:
        raise InputError(path, f"cannot be read as Parquet ({exc})")
    df = pd.DataFrame(values, index=pd.Index(ids, name=id_name), columns=pd.Index(value_names, dtype=object),
                      copy=False)
    problem = None
    if nan_count:
        def problem(rows, cols, r=nan_first[0], c=nan_first[1], count=nan_count):
            return InputError(
                path,
                f"{count} missing values (empty or NA), first in row {rows[r]!r}, "
                f"column {cols[c]!r}; impute or remove them before running genovae",
            )
    elif inf_count:
        def problem(rows, cols, r=inf_first[0], c=inf_first[1], count=inf_count):
            return InputError(
                path, f"{count} infinite values, first in row {rows[r]!r}, column {cols[c]!r}"
            )
    return df, problem


def _first_cell(values, test, block=COLUMN_BLOCK):
    """First (row, column) in row-major order where ``test`` holds, checked in column blocks; or None."""
    first = None
    for j in range(0, values.shape[1], block):
        hit = test(values[:, j : j + block])
        rows = np.flatnonzero(hit.any(axis=1))
        if len(rows):
            cell = (int(rows[0]), j + int(np.flatnonzero(hit[rows[0]])[0]))
            first = cell if first is None else min(first, cell)
    return first


def _to_numeric(df, path):
    bad_cols = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    for c in bad_cols:
        conv = pd.to_numeric(df[c], errors="coerce")
        # 'NA', 'NaN', ... are missing values, reported as such below
        na_token = df[c].astype(str).str.strip().str.lower().isin(NA_TOKENS)
        bad = conv.isna() & df[c].notna() & ~na_token
        if bad.any():
            row = bad.idxmax()
            raise InputError(
                path,
                f"non-numeric value {df.at[row, c]!r} in row {row!r}, column {c!r}"
                f" ({int(bad.sum())} such cells in that column)",
            )
        df[c] = conv
    values = df.to_numpy(dtype=np.float64, copy=False)
    nan = np.isnan(values)
    if nan.any():
        r, c = np.argwhere(nan)[0]
        raise InputError(
            path,
            f"{int(nan.sum())} missing values (empty or NA), first in row {df.index[r]!r}, "
            f"column {df.columns[c]!r}; impute or remove them before running genovae",
        )
    inf = np.isinf(values)
    if inf.any():
        r, c = np.argwhere(inf)[0]
        raise InputError(
            path,
            f"{int(inf.sum())} infinite values, first in row {df.index[r]!r}, column {df.columns[c]!r}",
        )
    return pd.DataFrame(values, index=df.index, columns=df.columns)


def read_samples(path, id_column="sample_id"):
    """Read a sample sheet (all columns as text)."""
    df = io.read_table(path, dtype=str)
    if df.shape[0] == 0:
        raise InputError(path, "sample sheet has a header but no samples")
    if id_column not in df.columns:
        raise InputError(
            path,
            f"sample sheet has no '{id_column}' column (columns: {_preview(df.columns, 10)})",
        )
    ids = df[id_column]
    if ids.isna().any() or (ids.str.strip() == "").any():
        raise InputError(path, f"some rows have an empty '{id_column}'")
    dups = _duplicates(ids)
    if dups:
        raise InputError(path, f"duplicate sample ids in '{id_column}': {_preview(dups)}")
    return df.set_index(id_column, drop=False)


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
            f"{_preview(missing)}",
        )
    if extra:
        raise InputError(
            expression_path,
            f"{len(extra)} sample(s) of the matrix are not in the sample sheet {samples_path}: "
            f"{_preview(extra)}",
        )
    if matrix.index.equals(sheet.index):
        return matrix  # already in the sheet's order: no copy of a large matrix
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
    values = matrix.to_numpy()
    zero_samples = ~values.any(axis=1)
    if zero_samples.any():
        dropped = matrix.index[zero_samples].tolist()
        msg = f"{path}: dropped {len(dropped)} sample(s) whose values are all zero: {_preview(dropped)}"
        log.warning(msg)
        warnings.append(msg)
        matrix = matrix.loc[~zero_samples]
    if value_type in ("counts", "intensity"):
        zero_genes = ~matrix.to_numpy().any(axis=0)
        if zero_genes.any():
            msg = f"{path}: dropped {int(zero_genes.sum())} gene(s) that are zero in every sample"
            log.warning(msg)
            warnings.append(msg)
            matrix = matrix.loc[:, ~zero_genes]
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise InputError(path, "no samples or no genes are left after dropping all-zero ones")
    return matrix


def check_condition(sheet, condition, case, control, min_per_group, path):
    """The condition column must exist, be complete and have two usable groups."""
    if condition not in sheet.columns:
        raise InputError(
            path,
            f"has no column '{condition}' (analysis.condition); columns: {_preview(sheet.columns, 10)}",
        )
    values = sheet[condition]
    empty = values.isna() | (values.str.strip() == "")
    if empty.any():
        raise InputError(
            path,
            f"column '{condition}' is empty for {int(empty.sum())} sample(s): "
            f"{_preview(sheet.index[empty])}",
        )
    counts = values.value_counts()
    if len(counts) < 2:
        raise InputError(
            path,
            f"column '{condition}' has only one group ({_preview(counts.index)}); "
            f"a contrast needs at least two",
        )
    for key, level in (("analysis.case", case), ("analysis.control", control)):
        if level is not None and level not in counts.index:
            raise ConfigError(
                key, f"{level!r} is not a value of column '{condition}' in {path} "
                f"(values: {_preview(counts.index, 10)})",
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


def read_genes(path, genes):
    """Optional gene annotation: first column = gene id as in the matrix."""
    ann = io.read_table(path, dtype=str)
    if ann.shape[1] < 1 or ann.shape[0] == 0:
        raise InputError(path, "gene annotation has no rows")
    key = ann.columns[0]
    ann = ann.drop_duplicates(subset=key).set_index(key)
    ann.index = ann.index.astype(str)
    covered = ann.index.intersection(genes)
    if len(covered) == 0:
        raise InputError(path, f"none of its ids (first column '{key}') are genes of the matrix")
    out = ann.reindex(genes)
    out.index.name = "gene"
    return out


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
    privacy=None,
):
    """Validate the inputs and write the canonical matrix, sheet, genes and manifest.

    ``expression`` may be a table, a GEO series matrix, a featureCounts or
    Salmon table or an .h5ad file (``format``, detected when 'auto', see
    :mod:`genovae.sources`); ``samples`` is optional for the formats that carry
    a sample sheet (GEO, h5ad). ``sha256`` ({role: hex} or a hex string for the
    expression file) is checked before anything is read. ``origins`` ({role:
    URL or path as configured}) is recorded in the manifest; a downloaded copy
    whose checksum does not match is deleted. ``privacy`` (the config's
    ``privacy`` section) with ``pseudonymize`` replaces every sample id by its
    keyed pseudonym right after the values are checked, before any warning,
    log message or output names a sample (see :mod:`genovae.pseudonym`).
    """
    split = split or {"train": 0.7, "val": 0.15, "test": 0.15}
    warnings = []
    files = {"expression": expression, "samples": samples, "genes": genes}
    raw, sheet, sheet_path, source, fmt, notes, expected = read_inputs(
        files, orientation=orientation, value_type=value_type, sample_id_column=sample_id_column,
        format=format, layer=layer, sha256=sha256, origins=origins,
    )
    shape_before = list(raw.shape)
    if sheet is None:
        raise ConfigError(
            "data.samples",
            f"is required: {expression} (read as '{fmt}') carries no sample sheet",
        )
    raw = _restore_file_names(raw, sheet, source.renamed)
    matrix = match_samples(raw, sheet, expression, sheet_path, orientation)
    check_values(matrix, value_type, expression)
    matrix, sheet, _, scrub, pseudonymized = pseudonym.apply_to_cohort(matrix, sheet.loc[matrix.index], privacy)
    if scrub is not None:
        notes = [scrub(n) for n in notes]
    matrix = drop_empty(matrix, value_type, expression, warnings)
    sheet = sheet.loc[matrix.index]
    check_condition(sheet, condition, case, control, min_group_size(split), sheet_path)
    if genes:
        annotation = read_genes(genes, matrix.columns)
    elif source.genes is not None and source.genes.shape[1]:
        annotation = source.genes.reindex(matrix.columns)
        annotation = annotation.rename(columns={"gene": "gene_annotation"})
        annotation.index.name = "gene"
    else:
        annotation = pd.DataFrame(index=pd.Index(matrix.columns, name="gene"))
    origins = {k: v for k, v in (origins or {}).items() if v}
    inputs = [_describe(expression, "expression", source.parser, origins, expected)]
    if samples:
        inputs.append(_describe(samples, "samples", _parser(samples), origins, expected))
    if genes:
        inputs.append(_describe(genes, "genes", _parser(genes), origins, expected))
    manifest = {
        "inputs": inputs,
        "format": fmt,
        "sample_sheet": "data.samples" if samples else f"carried by {fmt} file",
        "orientation": source.layout,
        "value_type": value_type,
        "shape_before": shape_before,
        "shape_after": list(matrix.shape),
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
    _verify_checksums(files, expected, origins)
    io._check_readable(expression)
    fmt = sources.detect_format(expression, format)
    if layer is not None and fmt != "h5ad":
        raise ConfigError(f"{section}.layer", f"only applies to .h5ad input; {expression} is read as '{fmt}'")
    if fmt == "featurecounts" and value_type != "counts":
        raise ConfigError(
            "data.value_type",
            f"{expression} is a featureCounts table of raw counts: set data.value_type: counts",
        )
    if fmt == "table":
        raw = read_expression(expression, orientation)
        source = sources.Source(values=raw, parser=_parser(expression), layout=orientation)
    else:
        source = sources.read_source(expression, fmt, layer)
        notes.extend(source.notes)
        raw = _to_numeric(source.values, expression)
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
        io._check_readable(path)
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


def _parser(path):
    kind, _ = io.table_format(path)
    return "parquet" if kind == "parquet" else "delimited-text"


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
