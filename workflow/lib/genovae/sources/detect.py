"""The format of an expression file: from the configuration, its name, or its first bytes and lines.

Light on purpose (no pandas at import): :func:`resolve_format` and :func:`carries_sample_sheet`
are used when the Snakefile is parsed. :func:`detect_format` looks into the file; it loads the
format modules' header tests when it is called.
"""

from __future__ import annotations

import re
from pathlib import Path

FORMATS = ("auto", "table", "geo", "featurecounts", "salmon", "h5ad")
#: formats whose files carry their own sample sheet (data.samples is optional)
WITH_SAMPLE_SHEET = ("geo", "h5ad")
#: formats whose values are always genes x samples
GENES_BY_SAMPLES = ("geo", "featurecounts", "salmon")


def file_name(path):
    """The lower-case file name of a path or URL (without a URL's query)."""
    return Path(str(path).split("?", 1)[0]).name.lower()


def format_from_name(location):
    """The format a file name implies: 'h5ad', 'geo' or None (undecided)."""
    name = file_name(location)
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


def split_header(line):
    """A header line's fields: tab-separated if it has a tab, else comma-separated; unquoted."""
    sep = "\t" if "\t" in line else ","
    return [c.strip().strip('"') for c in line.split(sep)]


def detect_format(path, fmt="auto"):
    """The format of a local file: the configured one, else from its name and first lines."""
    fmt = resolve_format(fmt, path)
    if fmt != "auto":
        return fmt
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic == b"\x89HDF\r\n\x1a\n":
        return "h5ad"
    if magic[:4] == b"PAR1" or file_name(path).endswith((".parquet", ".pq")):
        return "table"
    from .common import first_lines
    from .featurecounts import is_featurecounts_header
    from .salmon import is_salmon_header

    lines = first_lines(path)
    if not lines:
        return "table"
    first = lines[0]
    if first.startswith(("!Series_", "!Sample_", "!series_matrix_table_begin")):
        return "geo"
    if first.startswith("# Program:featureCounts"):
        return "featurecounts"
    cols = split_header(first)
    if is_featurecounts_header(cols):
        return "featurecounts"
    if is_salmon_header(cols):
        return "salmon"
    return "table"
