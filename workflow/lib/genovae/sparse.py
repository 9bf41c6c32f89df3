"""Sparse cohorts: a sparse samples x genes matrix with its names, and how it is stored.

A single-cell cohort is mostly zeros: 200,000 cells x 20,000 genes at 5 % non-zero is
16 GB dense in float32 but 1.6 GB as CSR. A sparse ``X`` (or layer) of an ``.h5ad``
therefore stays sparse from collect onward (:class:`SparseMatrix`):

* collect checks it a block of genes at a time (:meth:`SparseMatrix.to_numpy` gives the
  column blocks the dense checks read) and writes it with :func:`write` as Parquet in
  *long* form, one row per non-zero, ordered by gene (compressed sparse column);
* preprocess reads it back (:func:`read`), computes library sizes from it and densifies
  only one block of genes, then the selected genes;
* training, evaluation and the risk-gene routes read only the genes they need
  (:meth:`SparseMatrix.column_values`): the selected genes are dense, as in scvi-tools
  (whose batches densify a few thousand highly variable genes);
* export_h5ad writes it as a sparse ``X``.

The long Parquet file (``data/matrix.parquet`` of such a cohort) has three columns,
``gene`` and ``sample`` (int32 positions) and ``value`` (float32), and the sample and gene
names in its schema metadata (key ``genovae``). ``pandas.read_parquet`` reads it as that
long table; :func:`genovae.io.read_matrix` reads either layout.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

#: schema metadata key of the long (sparse) layout
META_KEY = b"genovae"
LAYOUT = "sparse_csc"
#: non-zeros per Parquet row group (written and read a group at a time)
ROW_GROUP = 1 << 22
#: dense values per column block that :class:`ColumnBlocks` hands to the dense checks (float64: 32 MB)
BLOCK_VALUES = 1 << 22


class SparseMatrix:
    """A samples x genes scipy sparse matrix with its sample ids (``index``) and gene names (``columns``).

    It holds one scipy representation at a time: CSC for reading genes (columns), CSR for
    taking samples (rows); each conversion replaces the other, so the matrix is in memory
    once (twice while converting).
    """

    def __init__(self, values, index, columns):
        from scipy import sparse

        if not sparse.issparse(values):
            raise TypeError("SparseMatrix needs a scipy sparse matrix")
        values.eliminate_zeros()  # stored zeros are not "non-zero" (empty samples and genes)
        self.values = values
        self.index = pd.Index(index)
        self.columns = pd.Index(columns)
        if values.shape != (len(self.index), len(self.columns)):
            raise ValueError(f"values {values.shape} do not match {len(self.index)} ids x {len(self.columns)} genes")

    # ------------------------------------------------------------ shape and format
    @property
    def shape(self):
        return self.values.shape

    def __len__(self):
        return self.shape[0]

    @property
    def nnz(self):
        return int(self.values.nnz)

    @property
    def nbytes(self):
        """Bytes of the compressed matrix (data, indices and pointers)."""
        v = self.values
        return int(v.data.nbytes + v.indices.nbytes + v.indptr.nbytes)

    def _as(self, fmt):
        if self.values.format != fmt:
            self.values = self.values.asformat(fmt)
        if not self.values.has_sorted_indices:
            self.values.sort_indices()
        return self.values

    def csc(self):
        return self._as("csc")

    def csr(self):
        return self._as("csr")

    def astype(self, dtype):
        if self.values.dtype != dtype:
            self.values = self.values.astype(dtype)
        return self

    # ------------------------------------------------------------ reading
    def to_numpy(self):
        """Column blocks, read like a dense array: ``m.to_numpy()[:, j:k]`` is a dense block of genes."""
        return ColumnBlocks(self)

    def column_values(self, columns=None, order="F", dtype=np.float32):
        """Dense values of the genes ``columns`` (names; all when None), samples x genes."""
        csc = self.csc()
        if columns is None:
            sel = csc
        else:
            pos = self.columns.get_indexer(pd.Index([str(c) for c in columns]))
            if (pos < 0).any():
                missing = [c for c, p in zip(columns, pos) if p < 0]
                raise KeyError(f"no column(s) {missing[:5]}")
            sel = csc[:, pos]
        return np.asarray(sel.toarray(order=order), dtype=dtype, order=order)

    def row_sums(self):
        """Per-sample float64 sums over all genes."""
        return np.asarray(self.values.sum(axis=1, dtype=np.float64)).ravel()

    def _nonzero(self, axis):
        """Samples (axis 0) or genes (axis 1) with a non-zero, from the format held: no conversion."""
        v = self.values
        if v.format == ("csr" if axis == 0 else "csc"):
            return np.diff(v.indptr) > 0
        return np.bincount(v.indices, minlength=self.shape[axis]) > 0

    def nonzero_rows(self):
        return self._nonzero(0)

    def nonzero_columns(self):
        return self._nonzero(1)

    # ------------------------------------------------------------ selecting
    def take_rows(self, positions):
        """The samples at ``positions`` (integers or a boolean mask), in that order."""
        return SparseMatrix(self.csr()[positions], self.index[positions], self.columns)

    def take_columns(self, positions):
        return SparseMatrix(self.csc()[:, positions], self.index, self.columns[positions])

    def with_index(self, index):
        return SparseMatrix(self.values, index, self.columns)

    def to_frame(self):
        """The dense DataFrame (float32): only for cohorts small enough to be dense."""
        return pd.DataFrame(self.column_values(), index=self.index, columns=self.columns, copy=False)


class ColumnBlocks:
    """What dense code reads from ``matrix.to_numpy()``, for a :class:`SparseMatrix`.

    ``blocks[:, cols]`` (a slice or an index array of genes) is a dense float array of
    those genes and ``blocks[r, c]`` one value; ``shape``, ``size``, ``dtype`` and
    ``block_columns`` (genes per block that keeps a float64 block near ``BLOCK_VALUES``)
    are those of the dense matrix. Nothing else of an array is offered.
    """

    def __init__(self, matrix):
        self.matrix = matrix
        self.shape = matrix.shape
        self.size = int(np.prod(self.shape))
        self.dtype = matrix.values.dtype
        self.block_columns = max(16, BLOCK_VALUES // max(self.shape[0], 1))

    def __getitem__(self, key):
        rows, cols = key
        csc = self.matrix.csc()
        if isinstance(rows, (int, np.integer)) and isinstance(cols, (int, np.integer)):
            return csc.dtype.type(csc[int(rows), int(cols)])
        if not (isinstance(rows, slice) and rows == slice(None)):
            raise IndexError("ColumnBlocks reads whole genes: [:, columns] or [row, column]")
        return csc[:, cols].toarray()


# ---------------------------------------------------------------- storage
def is_sparse_file(path):
    """True when ``path`` is a matrix Parquet file in the long (sparse) layout of :func:`write`."""
    import pyarrow.parquet as pq

    return META_KEY in (pq.read_schema(path).metadata or {})


def _meta(schema, path):
    meta = json.loads(schema.metadata[META_KEY])
    if meta.get("layout") != LAYOUT:
        raise ValueError(f"{path}: unknown genovae matrix layout {meta.get('layout')!r}")
    return meta


def names(path):
    """(sample ids, gene names) of a sparse matrix file, without its values."""
    import pyarrow.parquet as pq

    meta = _meta(pq.read_schema(path), path)
    return pd.Index(meta["samples"], dtype=object), pd.Index(meta["genes"], dtype=object)


def write(path, matrix):
    """Write ``matrix`` (a :class:`SparseMatrix`) to ``path`` in the long layout, ``ROW_GROUP`` non-zeros at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    csc = matrix.csc()
    n, g = csc.shape
    meta = {"layout": LAYOUT, "shape": [int(n), int(g)],
            "samples": [str(s) for s in matrix.index], "genes": [str(c) for c in matrix.columns]}
    schema = pa.schema([("gene", pa.int32()), ("sample", pa.int32()), ("value", pa.float32())],
                       metadata={META_KEY: json.dumps(meta).encode()})
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for k in range(0, max(csc.nnz, 1), ROW_GROUP):
            part = slice(k, min(k + ROW_GROUP, csc.nnz))
            gene = (np.searchsorted(csc.indptr, np.arange(part.start, part.stop), side="right") - 1).astype(np.int32)
            writer.write_table(pa.table(
                [pa.array(gene), pa.array(csc.indices[part].astype(np.int32, copy=False)),
                 pa.array(csc.data[part].astype(np.float32, copy=False))], schema=schema))


def read(path, columns=None):
    """The :class:`SparseMatrix` of a file written by :func:`write` (CSC, float32).

    ``columns`` (gene names) reads only those genes, in that order (training reads the selected
    genes' counts this way, without the rest of the cohort). Two passes, a row group at a time:
    the non-zeros per gene (the ``gene`` column alone), then each kept non-zero straight to its
    place (the file is ordered by gene, then sample). Memory: the result and one row group.
    """
    import pyarrow.parquet as pq
    from scipy import sparse

    pf = pq.ParquetFile(path)
    meta = _meta(pf.schema_arrow, path)
    n, g = meta["shape"]
    genes = pd.Index(meta["genes"], dtype=object)
    per_gene = np.zeros(g, dtype=np.int64)
    for i in range(pf.num_row_groups):
        per_gene += np.bincount(pf.read_row_group(i, columns=["gene"]).column(0).to_numpy(), minlength=g)
    first_in_file = np.concatenate([[0], np.cumsum(per_gene)[:-1]])
    pick = np.arange(g)
    if columns is not None:
        names = pd.Index([str(c) for c in columns], dtype=object)
        pick = genes.get_indexer(names)
        if (pick < 0).any():
            raise KeyError(f"{path}: no column(s) {list(names[pick < 0][:5])}")
        if not names.is_unique:
            raise ValueError(f"{path}: genes asked for twice: {list(names[names.duplicated()][:5])}")
        genes = names
    nnz = int(per_gene[pick].sum())
    index_dtype = np.int32 if max(nnz, n) < 2**31 else np.int64
    indptr = np.concatenate([[0], np.cumsum(per_gene[pick])]).astype(index_dtype)
    first_out = np.full(g, -1, dtype=np.int64)  # file gene -> where its non-zeros start in the result
    first_out[pick] = indptr[:-1]
    rows = np.empty(nnz, dtype=index_dtype)
    data = np.empty(nnz, dtype=np.float32)
    in_order = bool(np.all(np.diff(pick) > 0))  # genes in file order: the kept non-zeros are appended
    at = filled = 0  # position in the file of the row group's first non-zero; non-zeros placed
    for i in range(pf.num_row_groups):
        part = pf.read_row_group(i, use_threads=False)
        gene = part.column("gene").to_numpy()
        keep = first_out[gene] >= 0 if columns is not None else slice(None)
        sample, value = part.column("sample").to_numpy()[keep], part.column("value").to_numpy()[keep]
        if in_order:
            rows[filled : filled + len(sample)], data[filled : filled + len(sample)] = sample, value
        else:
            out = first_out[gene[keep]] + (np.arange(at, at + len(gene))[keep] - first_in_file[gene[keep]])
            rows[out], data[out] = sample, value
        at += len(gene)
        filled += len(sample)
        del part, gene, keep, sample, value
    values = sparse.csc_matrix((data, rows, indptr), shape=(n, len(genes)), copy=False)
    return SparseMatrix(values, pd.Index(meta["samples"], dtype=object), genes)


# ---------------------------------------------------------------- training batches
class SparseRows:
    """A CSR matrix as torch tensors on the training device, whose rows come out dense.

    ``rows[idx]`` (an index tensor or a slice) is the dense ``len(idx) x n_cols`` float32 batch:
    each row's non-zeros are gathered into a ``len(idx) x width`` block (``width``: the most
    non-zeros of any row, known when the matrix is built) and scattered into zeros, with no host
    synchronisation. The negative-binomial counts of a single-cell cohort are held this way, so a
    batch, never the cohort, is densified.
    """

    def __init__(self, csr, device):
        import torch

        csr = csr.tocsr()
        if not csr.has_sorted_indices:
            csr.sort_indices()
        self.shape = csr.shape
        self.width = max(int(np.diff(csr.indptr).max(initial=0)), 1)
        self.crow = torch.as_tensor(csr.indptr.astype(np.int64), device=device)
        # one zero at the end: the padding of short rows reads it and writes to a spare column
        self.col = torch.as_tensor(np.append(csr.indices, self.shape[1]).astype(np.int64), device=device)
        self.val = torch.as_tensor(np.append(csr.data, 0).astype(np.float32), device=device)
        self.steps = torch.arange(self.width, device=device)
        self.device = self.crow.device

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, idx):
        import torch

        if isinstance(idx, slice):
            idx = torch.arange(*idx.indices(self.shape[0]), device=self.device)
        start = self.crow[idx]
        length = self.crow[idx + 1] - start
        pos = start[:, None] + self.steps[None, :]
        pos = torch.where(self.steps[None, :] < length[:, None], pos, len(self.val) - 1)
        out = torch.zeros((len(idx), self.shape[1] + 1), dtype=torch.float32, device=self.device)
        out.scatter_(1, self.col[pos], self.val[pos])  # padding: zeros into the spare last column
        return out[:, : self.shape[1]]
