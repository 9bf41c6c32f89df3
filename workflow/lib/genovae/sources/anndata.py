"""AnnData ``.h5ad`` files, read with ``anndata``: X or a layer, obs as the sample sheet, var as genes.

Only the elements genovae uses are read (``anndata.io.read_elem`` on ``obs``, ``var``
and ``X`` or ``layers/<layer>``), not the file's other layers, ``obsm``, ``obsp`` or
``uns``. anndata is imported on first use: ``genovae.sources`` stays light to import.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import io
from ..errors import InputError
from ..sparse import SparseMatrix
from .common import Source, check_ids, note


def _element(path, fh, layer):
    """The h5py element of X, or of ``layers/<layer>``; what the file lacks is an InputError."""
    for key in ("obs", "var"):
        if key not in fh:
            raise InputError(path, f"has no '{key}': not an AnnData .h5ad file")
    layers = sorted(fh["layers"].keys()) if "layers" in fh else []
    if layer is None:
        if "X" not in fh:
            raise InputError(
                path,
                f"has no X matrix; name one of its layers with data.layer (layers: {', '.join(layers) or 'none'})",
            )
        return fh["X"]
    if layer not in layers:
        raise InputError(path, f"has no layer '{layer}' (data.layer); its layers: {', '.join(layers) or 'none'}")
    return fh["layers"][layer]


def _matrix(path, name, values):
    """A matrix anndata read, checked: dense as a float64 array, sparse (CSR/CSC) as scipy sparse (not densified)."""
    from scipy import sparse

    if sparse.issparse(values):
        if values.dtype.kind not in "biuf":
            raise InputError(path, f"'{name}' holds {values.dtype} values, not numbers")
        return values if values.dtype.kind == "f" else values.astype(np.float64)
    if not isinstance(values, np.ndarray):
        raise InputError(path, f"'{name}' is a {type(values).__name__}, not a matrix genovae can read")
    if values.ndim != 2:
        raise InputError(path, f"'{name}' is not a 2-D matrix (shape {values.shape})")
    if values.dtype.kind not in "biuf":
        raise InputError(path, f"'{name}' holds {values.dtype} values, not numbers")
    return values.astype(np.float64, copy=False)


def read_h5ad(path, layer=None):
    """``(values, obs, var)`` of an .h5ad: X (or ``layers[layer]``) as a dense obs x var float64 array
    or, stored sparse, as the scipy sparse matrix (float; never densified), obs and var as anndata
    reads them (index = obs_names / var_names)."""
    import h5py
    from anndata.io import read_elem

    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(path, f"cannot be read as an HDF5/.h5ad file ({exc})")
    with fh:
        element = _element(path, fh, layer)
        name = element.name
        if isinstance(fh["obs"], h5py.Dataset):
            raise InputError(
                path,
                f"'{fh['obs'].name}' is stored in the old (anndata < 0.7) layout; "
                "re-save the file with a recent anndata (adata.write_h5ad)",
            )
        frames = []
        for key in ("obs", "var"):
            try:
                frames.append(read_elem(fh[key]))
            except Exception as exc:  # anndata's errors name the element; keep the file's name in front
                raise InputError(path, f"anndata cannot read '{key}': {exc}") from exc
        obs, var = frames
        try:
            values = read_elem(element)
        except Exception as exc:
            raise InputError(path, f"anndata cannot read '{name}' as a matrix: {exc}") from exc
    values = _matrix(path, name, values)
    if values.shape != (len(obs), len(var)):
        raise InputError(path, f"matrix shape {values.shape} does not match obs ({len(obs)}) x var ({len(var)})")
    return values, obs, var


def _stored(matrix):
    if not isinstance(matrix, SparseMatrix):
        return ""
    return f", sparse ({matrix.nnz / max(np.prod(matrix.shape), 1):.1%} non-zero), kept sparse"


def read_anndata(path, layer=None):
    """An AnnData .h5ad: X (or ``layers[layer]``), obs as the sample sheet, var_names as genes.

    A sparse X (or layer) becomes a :class:`~genovae.sparse.SparseMatrix`, a dense one a DataFrame.
    """
    from scipy import sparse

    io.check_readable(path)
    values, obs, var = read_h5ad(path, layer)
    check_ids(path, obs.index, "sample (obs_names)")
    check_ids(path, var.index, "gene (var_names)")
    ids, names = obs.index.astype(str), var.index.astype(str)
    if sparse.issparse(values):  # a sparse cohort stays sparse (genovae.sparse)
        matrix = SparseMatrix(values, ids, names)
    else:
        matrix = pd.DataFrame(values, index=ids, columns=names, copy=False)
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
        f"{matrix.shape[1]} var{_stored(matrix)}; obs ({obs.shape[1]} columns) is the sample sheet",
    )
    return Source(
        values=matrix,
        parser="h5ad" if layer is None else f"h5ad:{layer}",
        layout="samples_by_genes",
        sheet=sheet,
        genes=genes,
        notes=notes,
    )
