"""Plain tables: TSV/CSV/TXT (optionally gzip-compressed) and Parquet.

- :func:`read_expression_table`: an expression matrix, laid out as data.orientation says; an
  all-numeric Parquet file is read column-chunked into float32 (:func:`read_numeric_parquet`);
- :func:`read_samples`: the user's sample sheet (data.samples), every column as text;
- :func:`read_genes`: the user's gene annotation (data.genes) for the matrix's genes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import io
from ..errors import InputError
from .common import Source, duplicates, preview, to_numeric

#: columns converted at a time when a wide Parquet matrix is read or checked
COLUMN_BLOCK = 512


def parser_name(path):
    """How a plain table is parsed, as the manifest names it."""
    kind, _ = io.table_format(path)
    return "parquet" if kind == "parquet" else "delimited-text"


def header_names(path):
    """Column names as written in a text file's header (pandas renames duplicates); None for Parquet."""
    kind, sep = io.table_format(path)
    if kind != "text":
        return None
    with io.open_text(path, gzipped=io.compressed_by_name(path)) as fh:
        return fh.readline().rstrip("\r\n").split(sep)


def check_row_lengths(path, n_header):
    """pandas pads short rows with missing values; name the first short row instead."""
    _, sep = io.table_format(path)
    expected = None
    with io.open_text(path, gzipped=io.compressed_by_name(path)) as fh:
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


def read_expression_table(path, orientation="samples_by_genes"):
    """Read and check an expression matrix; a :class:`Source` of its numeric values as in the file.

    The values are float64, or float32 for an all-numeric Parquet file; rows are samples or
    genes as ``orientation`` (data.orientation) says, which is the Source's layout.
    """
    # read_table checks the file itself (missing, unreadable, gzip, delimiter) first;
    # ids in the first column stay text, so '001' is not read as 1
    fast = read_numeric_parquet(path) if io.table_format(path)[0] == "parquet" else None
    if fast is not None:
        df, value_problem = fast
    else:
        df = io.read_table(path, index_col=0, dtype={0: str})
    header = header_names(path)
    if header is not None:
        # an R-style header has no name for the id column
        names = header[1:] if len(header) == df.shape[1] + 1 else header
        dups = duplicates(names)
        if dups:
            what = "gene" if orientation == "samples_by_genes" else "sample"
            raise InputError(path, f"duplicate {what} ids in the header: {preview(dups)}")
    if df.shape[1] == 0:
        raise InputError(path, "has only one column: no expression values (is the delimiter right?)")
    if df.shape[0] == 0:
        raise InputError(path, "has a header but no data rows")
    row_what = "sample" if orientation == "samples_by_genes" else "gene"
    if df.index.isna().any() or (df.index.astype(str).str.strip() == "").any():
        raise InputError(path, f"some rows have an empty {row_what} id in the first column")
    df.index = df.index.astype(str)
    df.columns = df.columns.astype(str)
    dups = duplicates(df.index)
    if dups:
        raise InputError(path, f"duplicate {row_what} ids in the first column: {preview(dups)}")
    if header is not None and df.isna().to_numpy().any():
        check_row_lengths(path, len(header))
    if fast is None:
        df = to_numeric(df, path)
    elif value_problem is not None:
        raise value_problem(df.index, df.columns)
    return Source(values=df, parser=parser_name(path), layout=orientation)


def read_numeric_parquet(path):
    """Read an all-numeric Parquet matrix column-chunked into one float32 array.

    Returns (frame, problem): ``frame`` is a float32 DataFrame (row ids from the
    pandas index or the first column, as :func:`io.read_table` gives them) backed by
    one column-major array, so peak memory is the matrix plus one chunk of
    columns (no float64 copy); ``problem`` is None or a function of (row ids,
    column ids) that makes the missing/infinite-value error of :func:`to_numeric`,
    raised by the caller after the id checks, in the same order as before. Returns
    None for files that need pandas (non-numeric columns, several index columns,
    duplicate names): those take the general path and its messages.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    io.check_readable(path)
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
        nan_count = inf_count = big_count = 0
        nan_first = inf_first = big_first = None
        f32_max = float(np.finfo(np.float32).max)
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
                    big = ~inf & (np.abs(a) > f32_max) if a.dtype.itemsize > 4 else None
                    if big is not None and big.any():  # would become infinite as float32
                        big_count += int(big.sum())
                        cell = (int(np.argmax(big)), j + k)
                        big_first = cell if big_first is None else min(big_first, cell)
                values[:, j + k] = a
            del chunk
            io.release_arrow_memory()
    except Exception as exc:
        raise InputError(path, f"cannot be read as Parquet ({exc})")
    df = pd.DataFrame(values, index=pd.Index(ids, name=id_name), columns=pd.Index(value_names, dtype=object),
                      copy=False)

    def problem(rows, cols):
        if nan_count:
            r, c = nan_first
            return InputError(
                path,
                f"{nan_count} missing values (empty or NA), first in row {rows[r]!r}, "
                f"column {cols[c]!r}; impute or remove them before running genovae",
            )
        if inf_count:
            r, c = inf_first
            return InputError(path, f"{inf_count} infinite values, first in row {rows[r]!r}, column {cols[c]!r}")
        r, c = big_first
        return InputError(
            path,
            f"{big_count} value(s) beyond the float32 range (±{f32_max:.3g}) that genovae stores, first in row "
            f"{rows[r]!r}, column {cols[c]!r}; is it a unit or typing error?",
        )

    return df, (problem if nan_count or inf_count or big_count else None)


def read_samples(path, id_column="sample_id"):
    """Read a sample sheet (all columns as text), indexed by its ``id_column``."""
    df = io.read_table(path, dtype=str)
    if df.shape[0] == 0:
        raise InputError(path, "sample sheet has a header but no samples")
    if id_column not in df.columns:
        raise InputError(
            path,
            f"sample sheet has no '{id_column}' column (columns: {preview(df.columns, 10)})",
        )
    ids = df[id_column]
    if ids.isna().any() or (ids.str.strip() == "").any():
        raise InputError(path, f"some rows have an empty '{id_column}'")
    dups = duplicates(ids)
    if dups:
        raise InputError(path, f"duplicate sample ids in '{id_column}': {preview(dups)}")
    return df.set_index(id_column, drop=False)


def read_genes(path, genes):
    """Optional gene annotation: first column = gene id as in the matrix; rows for ``genes``, in order."""
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
