"""One entry point for every format: :func:`read_source`."""

from __future__ import annotations

from ..errors import ConfigError
from .anndata import read_anndata
from .common import to_numeric
from .featurecounts import read_featurecounts
from .geo import read_geo_series_matrix
from .salmon import read_salmon
from .table import read_expression_table


def read_source(path, fmt, layer=None, orientation="samples_by_genes"):
    """Read an expression file of format ``fmt`` (as :func:`~genovae.sources.detect_format` names it).

    Returns a :class:`~genovae.sources.Source` whose values are numeric (float64; float32 for an
    all-numeric Parquet table) and laid out as in the file (``source.layout``; for a plain table
    ``orientation``, i.e. data.orientation). ``layer`` is the .h5ad layer (None: X).
    """
    if fmt == "table":
        return read_expression_table(path, orientation)
    if fmt == "geo":
        source = read_geo_series_matrix(path)
    elif fmt == "featurecounts":
        source = read_featurecounts(path)
    elif fmt == "salmon":
        source = read_salmon(path)
    elif fmt == "h5ad":
        source = read_anndata(path, layer)
    else:
        raise ConfigError("data.format", f"no parser for {fmt!r}")
    # the format readers leave text cells: one conversion and check for all
    source.values = to_numeric(source.values, path)
    return source
