"""Where expression data come from, and how each kind of file is read.

A researcher's data arrive as a plain table (TSV/CSV/TXT, optionally gzip-compressed, or
Parquet), a GEO series matrix, a merged count table from featureCounts or Salmon/tximport,
or an AnnData ``.h5ad``; local or as an ``http(s)://`` URL (fetched by Snakemake's HTTP
storage plugin, see ``workflow/rules/common.smk``). This package

- names the format of a file (:func:`resolve_format`, :func:`detect_format`; module ``detect``),
- builds the NCBI download URL of a GEO series matrix (:func:`geo_series_url`) and checks
  files against expected sha256 sums (:func:`verify_sha256`; module ``remote``),
- reads every format through one entry point, :func:`read_source` (module ``read``), into a
  :class:`Source`: the numeric values as laid out in the file, and the sample sheet and gene
  annotation the file carries, if any. One module per format: ``table`` (plain tables and
  Parquet, and the user's sample sheet and gene annotation), ``geo``, ``featurecounts``,
  ``salmon``, ``anndata``; shared helpers in ``common``.

Every problem is raised as :class:`~genovae.errors.InputError` (naming the file) or
:class:`~genovae.errors.ConfigError` (naming the config key).

``import genovae.sources`` is light (the Snakefile imports it at every start): the names
from ``detect`` and ``remote`` are imported at once, the readers (pandas, numpy) on first use.
"""

from __future__ import annotations

import importlib

from .detect import (
    FORMATS,
    GENES_BY_SAMPLES,
    WITH_SAMPLE_SHEET,
    carries_sample_sheet,
    detect_format,
    format_from_name,
    resolve_format,
)
from .remote import (
    GEO_URL,
    check_download_size,
    download_sizes,
    expected_sha256,
    geo_series_url,
    is_url,
    probe,
    verify_sha256,
)

#: names imported from their module on first use: name -> module of this package
_LAZY = {
    "Source": "common",
    "read_source": "read",
    "read_expression_table": "table",
    "read_samples": "table",
    "read_genes": "table",
    "read_geo_series_matrix": "geo",
    "FEATURECOUNTS_ANNOTATION": "featurecounts",
    "ALIGNMENT_SUFFIXES": "featurecounts",
    "read_featurecounts": "featurecounts",
    "SALMON_ANNOTATION": "salmon",
    "SALMON_ID_COLUMNS": "salmon",
    "read_salmon": "salmon",
    "round_estimated_counts": "salmon",
    "read_anndata": "anndata",
}

__all__ = [
    "FORMATS",
    "GENES_BY_SAMPLES",
    "WITH_SAMPLE_SHEET",
    "carries_sample_sheet",
    "detect_format",
    "format_from_name",
    "resolve_format",
    "GEO_URL",
    "expected_sha256",
    "geo_series_url",
    "is_url",
    "verify_sha256",
    "probe",
    "download_sizes",
    "check_download_size",
    *_LAZY,
]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
