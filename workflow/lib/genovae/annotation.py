"""Gene names for people: a symbol from the gene table where it has one, else the id.

One definition for every table and figure that names genes (plots, overview.html).
"""

from __future__ import annotations

import math

#: annotation columns that hold a gene symbol, in order of preference (matched case-insensitively)
SYMBOL_COLUMNS = ("symbol", "gene_symbol", "gene_name", "hgnc_symbol", "name")
#: annotation columns that describe a gene in words
DESCRIPTION_COLUMNS = ("description", "gene_description", "definition")


def symbol_column(columns):
    """The annotation column (as spelled in ``columns``) holding gene symbols, or None."""
    lower = {str(c).lower(): c for c in columns}
    return next((lower[c] for c in SYMBOL_COLUMNS if c in lower), None)


def gene_label(gene, annotation=None, max_len=24, describe=True):
    """Display label of ``gene``: a symbol-like annotation column if the row has one, else the id.

    ``annotation`` is the gene's row of the gene table (a Series or dict; any columns). Without a
    symbol, a description column adds at most ``max_len`` characters of the description to the id
    (unless ``describe`` is False: then the id alone, for compact lists).
    """

    def clean(value):
        text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()
        return "" if text.lower() in {"", "nan", "na", "none", "-", "---"} else text

    def short(text, n):
        return text if len(text) <= n else text[: max(1, n - 1)].rstrip(" ,;(") + "…"

    ann = {str(k).strip().lower(): v for k, v in (dict(annotation) if annotation is not None else {}).items()}
    for col in SYMBOL_COLUMNS:
        symbol = clean(ann.get(col)).split(" /// ")[0].strip()  # Affymetrix: "A /// B"
        if symbol:
            return short(symbol, max_len)
    for col in DESCRIPTION_COLUMNS if describe else ():
        desc = clean(ann.get(col))
        if desc:
            return f"{gene} {short(desc, max_len)}"
    return str(gene)
