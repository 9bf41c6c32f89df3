"""What every format's reader shares: the :class:`Source` it returns and the helpers to build it.

- :class:`Source`: one expression file as read, and the sample sheet and gene annotation it carries;
- :func:`duplicates`, :func:`check_ids`, :func:`preview`: id checks and how their messages list ids;
- :func:`first_lines`, :func:`read_text_table`: reading text (plain or gzip, through
  :func:`genovae.io.open_text`; pandas' failures mapped by :func:`genovae.io.read_errors`);
- :func:`to_numeric`: a frame of text or numbers -> float64, naming the first bad, missing or
  infinite cell.
"""

from __future__ import annotations

import io as _io
import logging
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import io
from ..errors import InputError
from ..sparse import SparseMatrix

log = logging.getLogger(__name__)

#: cells read as missing values (compared stripped and lower-case), not as non-numeric text
NA_TOKENS = {"na", "nan", "n/a", "#n/a", "null"}


@dataclass
class Source:
    """One expression file as read, and what it carries besides the values.

    ``values`` is laid out as in the file (``layout``): genes x samples for GEO,
    featureCounts and Salmon tables, samples x genes for AnnData, as
    data.orientation says for plain tables. The format modules' readers may
    leave text cells; :func:`genovae.sources.read_source` returns numeric values
    (:func:`to_numeric`).
    """

    values: pd.DataFrame
    parser: str
    layout: str = "genes_by_samples"
    sheet: pd.DataFrame | None = None  # index = sample id, with a sample_id column
    genes: pd.DataFrame | None = None  # index = gene id
    notes: list = field(default_factory=list)
    round_counts: bool = False  # estimated counts (Salmon): round to integers as counts
    renamed: dict = field(default_factory=dict)  # new sample id -> id as written in the file


def note(notes, path, text):
    """Log ``path: text`` and keep it for the manifest's notes."""
    msg = f"{path}: {text}"
    log.info(msg)
    notes.append(msg)


def preview(items, n=5):
    """The first ``n`` items quoted, and how many more there are."""
    items = [str(i) for i in items]
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(repr(i) for i in items[:n]) + more


def duplicates(values):
    """The values that occur more than once, each once, in order of their second occurrence."""
    s = pd.Series(list(values))
    return list(dict.fromkeys(s[s.duplicated()].tolist()))


def check_ids(path, ids, what):
    """Ids must be non-empty and unique."""
    ids = pd.Index(ids)
    if (ids.astype(str).str.strip() == "").any() or ids.isna().any():
        raise InputError(path, f"some {what} ids are empty")
    dups = duplicates(ids)
    if dups:
        shown = ", ".join(repr(d) for d in dups[:5])
        raise InputError(path, f"duplicate {what} ids: {shown}")


def first_lines(path, n=3):
    """The first ``n`` lines of a (gzip-compressed) text file; [] if it cannot be read as text."""
    lines = []
    try:
        with io.open_text(path) as fh:
            while len(lines) < n:
                line = fh.readline(1 << 20)  # at most 1 MiB: binary files have no line ends
                if not line:
                    break
                lines.append(line.rstrip("\r\n"))
    except (OSError, EOFError, zlib.error):
        return []
    return lines


def read_text_table(path, sep, skiprows=0, text=None):
    """A delimited table (of ``path``, or ``text`` read from it) with every cell as text; empty = missing."""
    with io.read_errors(path, empty="has no header line after its comment lines"):
        return pd.read_csv(
            path if text is None else _io.StringIO(text),
            sep=sep,
            skiprows=skiprows,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            low_memory=False,
        )


def _check_sparse_finite(matrix, path):
    """A sparse matrix's stored values: the first missing or infinite one (row-major order) stops."""
    csr = matrix.csr()
    for bad, what in ((np.isnan(csr.data), "missing values (NaN)"), (np.isinf(csr.data), "infinite values")):
        if bad.any():
            k = int(np.argmax(bad))
            r = int(np.searchsorted(csr.indptr, k, side="right") - 1)
            raise InputError(
                path, f"{int(bad.sum())} {what}, first in row {matrix.index[r]!r}, column "
                f"{matrix.columns[csr.indices[k]]!r}; impute or remove them before running genovae",
            )
    return matrix


def to_numeric(df, path):
    """Cells as float64 (row and column ids kept); the first non-numeric, missing or infinite cell stops.

    A :class:`~genovae.sparse.SparseMatrix` (numbers already) has its stored values checked.
    """
    if isinstance(df, SparseMatrix):
        return _check_sparse_finite(df, path)
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
