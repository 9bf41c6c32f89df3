"""AnnData ``.h5ad`` files (read with :mod:`genovae.h5ad`): X or a layer, obs as the sample sheet."""

from __future__ import annotations

import pandas as pd

from .. import io
from .common import Source, check_ids, note


def read_anndata(path, layer=None):
    """An AnnData .h5ad: X (or ``layers[layer]``), obs as the sample sheet, var_names as genes."""
    from ..h5ad import read_h5ad

    io.check_readable(path)
    values, obs, var = read_h5ad(path, layer)
    check_ids(path, obs.index, "sample (obs_names)")
    check_ids(path, var.index, "gene (var_names)")
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
    note(
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
