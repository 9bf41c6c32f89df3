"""Reading and writing AnnData ``.h5ad`` files with h5py.

genovae reads and writes the AnnData on-disk format (the HDF5 layout that
``anndata.read_h5ad``/``write_h5ad`` use, see
https://anndata.readthedocs.io/en/stable/fileformat-prose.html) directly with
h5py, so that the workflow does not depend on the ``anndata`` package (whose
releases pin ``pandas<3``). Supported elements: dense arrays, CSR/CSC sparse
matrices, dataframes (string, numeric, boolean, categorical and nullable
columns), dicts and scalars. Files written here are read by ``anndata`` and
``scanpy`` as ordinary AnnData objects: numeric and boolean columns are written
as anndata does (``array``, or ``nullable-integer``/``nullable-boolean`` where
values are missing), text columns as categoricals.

Dense matrices (``X``, layers) are written a block of rows at a time, so that
writing one costs a block, not a C-ordered copy of the whole matrix.

Every problem with a file is raised as :class:`~genovae.errors.InputError`
naming the file.
"""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd

from .errors import InputError

ARRAY = ("array", "0.2.0")
STRING_ARRAY = ("string-array", "0.2.0")
DICT = ("dict", "0.1.0")
DATAFRAME = ("dataframe", "0.2.0")
CATEGORICAL = ("categorical", "0.2.0")
NULLABLE_INTEGER = ("nullable-integer", "0.1.0")
NULLABLE_BOOLEAN = ("nullable-boolean", "0.1.0")
NUMERIC_SCALAR = ("numeric-scalar", "0.2.0")
STRING = ("string", "0.2.0")
#: values per block when a dense matrix is written (rows x columns); 4M float32 = 16 MB
BLOCK_VALUES = 1 << 22


# ----------------------------------------------------------------- reading
def _attr(obj, name, default=None):
    value = obj.attrs.get(name, default)
    if isinstance(value, bytes):
        value = value.decode()
    return value


def _strings(values):
    out = np.asarray(values, dtype=object)
    return np.array(
        [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in out.ravel()],
        dtype=object,
    ).reshape(out.shape)


def _read_dataset(ds):
    if ds.dtype.kind in ("S", "O", "U"):
        return _strings(ds[()])
    return ds[()]


def read_matrix(path, element):
    """A 2-D element (dense dataset or CSR/CSC group) as a dense float64 array."""
    if isinstance(element, h5py.Dataset):
        values = element[()]
        if values.ndim != 2:
            raise InputError(path, f"'{element.name}' is not a 2-D matrix (shape {values.shape})")
        if values.dtype.kind not in "biuf":
            raise InputError(path, f"'{element.name}' holds {values.dtype} values, not numbers")
        return values.astype(np.float64, copy=False)
    kind = _attr(element, "encoding-type") or _attr(element, "h5sparse_format", "")
    kind = {"csr": "csr_matrix", "csc": "csc_matrix"}.get(kind, kind)
    if kind not in ("csr_matrix", "csc_matrix"):
        raise InputError(path, f"'{element.name}' is a {kind or 'group'!s}, not a matrix genovae can read")
    from scipy import sparse

    shape = tuple(int(s) for s in element.attrs["shape"])
    cls = sparse.csr_matrix if kind == "csr_matrix" else sparse.csc_matrix
    try:
        mat = cls((element["data"][()], element["indices"][()], element["indptr"][()]), shape=shape)
    except (KeyError, ValueError) as exc:
        raise InputError(path, f"sparse matrix '{element.name}' is malformed ({exc})")
    return mat.toarray().astype(np.float64, copy=False)


def _read_column(path, element):
    kind = _attr(element, "encoding-type", "")
    if isinstance(element, h5py.Dataset):
        return _read_dataset(element)
    if kind == "categorical":
        codes = element["codes"][()]
        categories = _read_dataset(element["categories"])
        return pd.Categorical.from_codes(codes, categories=categories, ordered=bool(_attr(element, "ordered", False)))
    if kind.startswith("nullable-"):
        values = _read_dataset(element["values"])
        mask = element["mask"][()].astype(bool)
        out = values.astype(object)
        out[mask] = None
        return out
    raise InputError(path, f"column '{element.name}' has an unsupported encoding {kind!r}")


def read_dataframe(path, group):
    """An AnnData dataframe group (obs or var) as a pandas DataFrame."""
    if isinstance(group, h5py.Dataset):
        raise InputError(
            path,
            f"'{group.name}' is stored in the old (anndata < 0.7) layout; "
            "re-save the file with a recent anndata (adata.write_h5ad)",
        )
    index_key = _attr(group, "_index", "_index")
    if index_key not in group:
        raise InputError(path, f"'{group.name}' has no index ('{index_key}')")
    index = pd.Index(_strings(group[index_key][()]).astype(str), name=None)
    order = group.attrs.get("column-order", [])
    columns = [c.decode() if isinstance(c, bytes) else str(c) for c in np.atleast_1d(order)]
    data = {}
    for col in columns:
        if col not in group:
            raise InputError(path, f"'{group.name}' lists column '{col}' but does not hold it")
        data[col] = _read_column(path, group[col])
    return pd.DataFrame(data, index=index)


def read_h5ad(path, layer=None):
    """Read ``X`` (or ``layers/<layer>``), ``obs`` and ``var`` of an .h5ad file.

    Returns ``(values, obs, var)``: a dense obs x var float64 array and the two
    dataframes (index = obs_names / var_names).
    """
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(path, f"cannot be read as an HDF5/.h5ad file ({exc})")
    with fh:
        for key in ("obs", "var"):
            if key not in fh:
                raise InputError(path, f"has no '{key}': not an AnnData .h5ad file")
        layers = sorted(fh["layers"].keys()) if "layers" in fh else []
        if layer is None:
            if "X" not in fh:
                raise InputError(
                    path,
                    "has no X matrix; name one of its layers with data.layer "
                    f"(layers: {', '.join(layers) or 'none'})",
                )
            element = fh["X"]
        else:
            if layer not in layers:
                raise InputError(
                    path,
                    f"has no layer '{layer}' (data.layer); its layers: {', '.join(layers) or 'none'}",
                )
            element = fh["layers"][layer]
        values = read_matrix(path, element)
        obs = read_dataframe(path, fh["obs"])
        var = read_dataframe(path, fh["var"])
    if values.shape != (len(obs), len(var)):
        raise InputError(
            path,
            f"matrix shape {values.shape} does not match obs ({len(obs)}) x var ({len(var)})",
        )
    return values, obs, var


# ----------------------------------------------------------------- writing
def _encode(obj, kind):
    obj.attrs["encoding-type"], obj.attrs["encoding-version"] = kind


def _write_strings(parent, key, values, kind=STRING_ARRAY):
    arr = np.array(["" if v is None else str(v) for v in values], dtype=object)
    ds = parent.create_dataset(key, data=arr, dtype=h5py.string_dtype())
    _encode(ds, kind)
    return ds


def _block_rows(n_cols):
    return max(1, BLOCK_VALUES // max(1, n_cols))


def _write_array(parent, key, values):
    values = np.asarray(values)
    if values.ndim != 2:
        ds = parent.create_dataset(key, data=values)
    else:  # a block of rows at a time: h5py would copy a column-major matrix to C order whole
        ds = parent.create_dataset(key, shape=values.shape, dtype=values.dtype)
        step = _block_rows(values.shape[1])
        for i in range(0, values.shape[0], step):
            ds[i : i + step] = values[i : i + step]
    _encode(ds, ARRAY)
    return ds


def _is_text(series):
    return not (
        pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)
    ) or isinstance(series.dtype, pd.CategoricalDtype)


def _write_nullable(parent, key, array, kind, dtype):
    """A pandas masked array (Int64, boolean) as anndata writes it: values (missing as 0) and mask."""
    sub = parent.create_group(key)
    _encode(sub, kind)
    _write_array(sub, "values", array.to_numpy(dtype=dtype, na_value=0))
    _write_array(sub, "mask", np.asarray(array.isna(), dtype=bool))


def _write_numeric(parent, key, series):
    """A numeric or boolean column: ``array`` of its own dtype, or a nullable encoding with missing values."""
    array = series.array
    if isinstance(array, pd.arrays.BooleanArray):
        if array.isna().any():
            return _write_nullable(parent, key, array, NULLABLE_BOOLEAN, bool)
        return _write_array(parent, key, array.to_numpy(dtype=bool))
    if isinstance(array, pd.arrays.IntegerArray):
        if array.isna().any():
            return _write_nullable(parent, key, array, NULLABLE_INTEGER, array.dtype.numpy_dtype)
        return _write_array(parent, key, array.to_numpy(dtype=array.dtype.numpy_dtype))
    if pd.api.types.is_bool_dtype(series):
        return _write_array(parent, key, series.to_numpy(dtype=bool))
    dtype = np.dtype(getattr(series.dtype, "numpy_dtype", series.dtype))
    if dtype.kind in "iu":
        return _write_array(parent, key, series.to_numpy(dtype=dtype))
    dtype = dtype if dtype.kind == "f" else np.dtype(np.float64)
    return _write_array(parent, key, series.to_numpy(dtype=dtype, na_value=np.nan))


def write_dataframe(parent, key, df):
    """Write ``df`` as an AnnData dataframe (text columns become categoricals).

    HDF5 names cannot hold '/', so such column names are written with '_'.
    """
    group = parent.create_group(key)
    _encode(group, DATAFRAME)
    group.attrs["_index"] = "_index"
    names = []
    for c in df.columns:
        name = str(c).replace("/", "_") or "_"
        while name in names or name == "_index":
            name += "_"
        names.append(name)
    group.attrs["column-order"] = np.array(names, dtype=object) if names else np.array([], dtype=float)
    _write_strings(group, "_index", df.index.astype(str))
    for name, col in zip(names, df.columns):
        series = df[col]
        if _is_text(series):
            values = series.astype(object).where(series.notna(), None)
            cats = sorted({str(v) for v in values if v is not None})
            lookup = {c: i for i, c in enumerate(cats)}
            codes = np.array([-1 if v is None else lookup[str(v)] for v in values], dtype=np.int32)
            sub = group.create_group(name)
            _encode(sub, CATEGORICAL)
            sub.attrs["ordered"] = False
            _write_array(sub, "codes", codes)
            _write_strings(sub, "categories", cats)
        else:
            _write_numeric(group, name, series)
    return group


def _numbers(values):
    return all(isinstance(v, (int, float, bool, np.generic)) for v in values)


def write_dict(parent, key, mapping):
    """Write a nested dict as AnnData ``uns``-style elements.

    Scalars, strings, lists of numbers and lists of strings map to their AnnData
    encodings; a list of dicts becomes a dict keyed "0", "1", ...; None values
    are left out (AnnData cannot store them).
    """
    group = parent.create_group(key)
    _encode(group, DICT)
    for name, value in mapping.items():
        name = str(name).replace("/", "_")
        if value is None:
            continue
        if isinstance(value, dict):
            write_dict(group, name, value)
        elif isinstance(value, str):
            ds = group.create_dataset(name, data=value, dtype=h5py.string_dtype())
            _encode(ds, STRING)
        elif isinstance(value, (bool, int, float, np.generic)):
            ds = group.create_dataset(name, data=np.asarray(value))
            _encode(ds, NUMERIC_SCALAR)
        elif isinstance(value, (list, tuple, np.ndarray)):
            values = list(value)
            if values and all(isinstance(v, str) for v in values):
                _write_strings(group, name, values)
            elif values and all(isinstance(v, dict) for v in values):
                write_dict(group, name, {str(i): v for i, v in enumerate(values)})
            elif not values:
                _write_array(group, name, np.array([], dtype=np.float64))
            elif _numbers(values):
                _write_array(group, name, np.asarray(values))
            else:
                write_dict(group, name, {str(i): v for i, v in enumerate(values)})
        else:
            ds = group.create_dataset(name, data=str(value), dtype=h5py.string_dtype())
            _encode(ds, STRING)
    return group


def _write_arrays(fh, name, arrays, leading, of, exact=False):
    """Write the dict group ``name`` of dense arrays whose shapes begin with (or, ``exact``, are) ``leading``."""
    group = fh.create_group(name)
    _encode(group, DICT)
    for key, values in (arrays or {}).items():
        values = np.asarray(values)
        if (values.shape if exact else values.shape[: len(leading)]) != tuple(leading):
            need = "be" if exact else "begin with"
            raise ValueError(f"{name}['{key}'] has shape {values.shape}; it must {need} {of}'s {tuple(leading)}")
        _write_array(group, key, values)


def write_h5ad(path, *, X, obs, var, obsm=None, layers=None, uns=None, varm=None):
    """Write an AnnData file: dense ``X`` (obs x var), obs/var dataframes, obsm/varm arrays, layers, uns dict.

    ``layers`` maps names to dense arrays of X's shape; :func:`add_layer` adds one
    to a written file from a subset of the genes.
    """
    X = np.asarray(X)
    if X.shape != (len(obs), len(var)):
        raise ValueError(f"X has shape {X.shape}, obs x var is {len(obs)} x {len(var)}")
    with h5py.File(path, "w") as fh:
        _encode(fh, ("anndata", "0.1.0"))
        _write_array(fh, "X", X)
        write_dataframe(fh, "obs", obs)
        write_dataframe(fh, "var", var)
        _write_arrays(fh, "obsm", obsm, (len(obs),), "obs")
        _write_arrays(fh, "layers", layers, X.shape, "X", exact=True)
        _write_arrays(fh, "varm", varm, (len(var),), "var")
        for key in ("obsp", "varp"):
            _encode(fh.create_group(key), DICT)
        write_dict(fh, "uns", uns or {})


def add_layer(path, key, values, rows=None, columns=None, fill=np.nan):
    """Add ``layers/<key>`` to a written .h5ad from the values of some of its genes.

    ``values`` is a (samples x genes) array; ``rows[i]`` is the row of ``values``
    holding obs ``i`` (default: the same order) and ``columns[j]`` the var
    position of column ``j`` of ``values`` (default: all genes, in order). Genes
    not among ``columns`` get ``fill`` (NaN). The layer has ``values``' float
    dtype and is written a block of rows at a time: it costs a block of memory,
    not a second matrix.
    """
    values = np.asarray(values)
    dtype = values.dtype if values.dtype.kind == "f" else np.dtype(np.float64)
    with h5py.File(path, "r+") as fh:
        n_obs, n_var = len(fh["obs/_index"]), len(fh["var/_index"])
        rows = np.arange(n_obs) if rows is None else np.asarray(rows, dtype=np.intp)
        columns = np.arange(n_var) if columns is None else np.asarray(columns, dtype=np.intp)
        if len(rows) != n_obs or (len(rows) and (rows.min() < 0 or rows.max() >= values.shape[0])):
            raise ValueError(f"layers['{key}']: rows must give one row of values (of {values.shape[0]}) "
                             f"for each of the {n_obs} obs")
        if len(columns) != values.shape[1] or (len(columns) and (columns.min() < 0 or columns.max() >= n_var)):
            raise ValueError(f"layers['{key}']: columns must give a var position (< {n_var}) "
                             f"for each of the {values.shape[1]} columns of values")
        group = fh.require_group("layers")
        _encode(group, DICT)
        ds = group.create_dataset(key, shape=(n_obs, n_var), dtype=dtype)
        _encode(ds, ARRAY)
        step = _block_rows(n_var)
        for i in range(0, n_obs, step):
            block = np.full((len(rows[i : i + step]), n_var), fill, dtype=dtype)
            block[:, columns] = values[rows[i : i + step]]
            ds[i : i + step] = block
