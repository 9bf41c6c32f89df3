"""Export a run's results as an AnnData ``.h5ad`` for the scverse ecosystem.

``results/{run}/latent.h5ad`` holds, for every sample (obs) and gene (var) of
the collected matrix:

- ``X``: the collected matrix (``data/matrix.parquet``, values as given, float32);
- ``layers["genovae_input"]``: the preprocessed values the model saw
  (``preprocess/features.parquet``: normalised, log, scaled; float32) for the
  modelled genes, NaN for the genes preprocessing left out. For a sparse cohort
  (:mod:`genovae.sparse`) ``X`` is sparse (CSR) and these values are
  ``obsm["genovae_input"]`` instead, one column per gene of
  ``uns["genovae"]["input_genes"]`` (a dense layer would be the dense cohort);
- ``obsm["X_genovae"]``: the latent means ``z1..zK`` of the selected model;
- ``obs``: the sample sheet, ``genovae_split`` and ``genovae_reconstruction_mse``.
  Sheet columns are typed (:func:`typed_sheet`): a column whose every
  non-empty value is a number becomes numeric (integers with gaps: float with
  NaN), ``true``/``false`` columns boolean, the rest (and the condition and
  label columns, whatever their values) categorical text;
- ``var``: the gene annotation, ``genovae_modelled`` (gene in the model's input,
  the ``genovae_input`` layer), ``genovae_used`` (gene scored in
  ``risk_genes.tsv``) and, per contrast, the risk-gene scores
  (``vae_score_<contrast>``, ``vae_rank_<contrast>``, ``fdr_<contrast>``, ...);
- ``uns["genovae"]``: the run's summary (``summary``, and losslessly as
  ``summary_json``), the contrasts and the obsm key.

The file is written by ``anndata`` (``AnnData.write_h5ad``, then the layer with
``anndata.io.write_elem``, into a temporary file renamed into place), so ``scanpy``
reads it directly: ``adata = sc.read_h5ad("latent.h5ad");
sc.pp.neighbors(adata, use_rep="X_genovae"); sc.tl.umap(adata)``.
"""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pandas as pd

from . import io, sparse
from .risk import RISK_COLUMNS

log = logging.getLogger(__name__)

OBSM_KEY = "X_genovae"
LOADINGS_KEY = "genovae_loadings"
INPUT_LAYER = "genovae_input"
MODELLED = "genovae_modelled"
#: rows of a features chunk copied into the layer at a time (_add_input_layer)
LAYER_ROWS = 1024
#: per-gene scores of risk_genes.tsv written to var, one column per contrast
SCORE_COLUMNS = tuple(c for c in RISK_COLUMNS if c not in ("contrast", "gene", "in_model", "vae_status"))


_INTEGER = re.compile(r"[+-]?\d+")
_LEADING_ZERO = re.compile(r"[+-]?0\d")


def typed_column(values):
    """A sample-sheet column read as text, typed: numbers, booleans, or unchanged (text).

    Numeric only if every non-empty value parses as a number and none has a
    leading zero (``007`` is an identifier): integers stay int64, or become
    float64 with NaN where values are missing; decimals become float64.
    ``true``/``false`` (any case) become bool (pandas ``boolean`` with gaps).
    """
    present = values.dropna().astype(str).str.strip()
    if present.empty:
        return values
    missing = values.isna().any()
    lower = present.str.lower()
    if lower.isin(("true", "false")).all():
        flags = values.map(lambda v: None if pd.isna(v) else str(v).strip().lower() == "true")
        return flags.astype("boolean" if missing else bool)
    if present.str.match(_LEADING_ZERO).any():
        return values
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.isna().any():
        return values
    if not missing and present.str.fullmatch(_INTEGER).all() and numbers.dtype.kind in "iu":
        return pd.Series(numbers.to_numpy(dtype=np.int64), index=values.index, name=values.name)
    out = np.full(len(values), np.nan)
    out[values.notna().to_numpy()] = numbers.to_numpy(dtype=np.float64)
    return pd.Series(out, index=values.index, name=values.name)


def typed_sheet(sheet, text=()):
    """The sample sheet (read as text) with numeric/boolean columns typed; ``text`` columns stay text."""
    keep = set(text)
    return pd.DataFrame({c: sheet[c] if c in keep else typed_column(sheet[c]) for c in sheet.columns},
                        index=sheet.index)


def _as_text(values):
    values = pd.Series(values, dtype=object)
    return values.where(values.notna(), "").astype(str).to_numpy()


def _condition_columns(sheet, condition_values):
    """Sheet columns whose values are latent.tsv's condition (when analysis.condition is not given)."""
    target = _as_text(np.asarray(condition_values, dtype=object))
    if not any(target):
        return []
    return [c for c in sheet.columns if np.array_equal(_as_text(sheet[c].to_numpy(dtype=object)), target)]


def gene_scores(risk, genes):
    """Risk-gene table (contrast x gene rows) -> one column per score and contrast, indexed by gene."""
    out = pd.DataFrame(index=pd.Index(genes, name="gene"))
    used = risk if "in_model" not in risk.columns else risk[risk["in_model"].astype(str).str.lower() == "true"]
    out["genovae_used"] = out.index.isin(set(used["gene"].astype(str)))
    for contrast, part in risk.groupby("contrast", sort=False):
        part = part.assign(gene=part["gene"].astype(str)).drop_duplicates("gene").set_index("gene")
        for col in SCORE_COLUMNS:
            if col in part.columns:
                values = pd.to_numeric(part[col], errors="coerce")
                out[f"{col}_{contrast}"] = values.reindex(out.index).to_numpy(dtype=np.float64)
    return out


def export_h5ad(*, matrix, samples, genes, latent, errors, risk, summary, out_h5ad, run=None,
                features=None, condition=None, labels=(), predictions=None, loadings=None):
    """Write ``out_h5ad`` from the collected data and the run's result tables.

    ``features`` (preprocess/features.parquet) adds ``layers["genovae_input"]``
    and ``var["genovae_modelled"]``. ``condition`` and ``labels`` name sheet
    columns that stay categorical labels even when their values look numeric
    (without ``condition``: the sheet columns that hold latent.tsv's condition).
    ``predictions`` (analysis.predict) adds ``obs["genovae_predicted"]`` and one
    ``obs["genovae_probability_<group>"]`` per group; ``loadings`` (analysis.loadings) adds
    ``varm["genovae_loadings"]`` (genes x latent dimensions, NaN for genes not modelled).
    Peak memory: the matrix once (row-major float32, which h5py writes without a copy), then
    the layer once plus a chunk of the features (read after X is written and freed).
    """
    is_sparse = sparse.is_sparse_file(matrix)
    if is_sparse:  # a sparse cohort: X is written sparse (CSR), as scanpy expects single-cell counts
        cohort = sparse.read(matrix)
        samples_index, genes_index, X = cohort.index.astype(str), cohort.columns.astype(str), cohort.csr()
        del cohort
    else:
        samples_index, genes_index, X = io.read_matrix_values(matrix, order="C")
    lat = io.read_latent(latent).set_index("sample_id")
    err = io.read_reconstruction_errors(errors).set_index("sample_id")
    missing = [s for s in samples_index if s not in lat.index]
    if missing:
        raise ValueError(f"{latent} lacks {len(missing)} samples of {matrix}, e.g. {missing[:3]}")
    sheet = io.read_sample_sheet(samples)
    sheet = sheet.set_index(sheet["sample_id"].astype(str))
    sheet = sheet.drop(columns="sample_id").reindex(samples_index)
    if condition is not None:
        label_columns = [condition, *labels]
    elif "condition" in lat.columns:
        label_columns = [*_condition_columns(sheet, lat["condition"].reindex(samples_index)), *labels]
    else:
        label_columns = list(labels)
    obs = typed_sheet(sheet, text=label_columns)
    zcols = [c for c in lat.columns if c.startswith("z") and c[1:].isdigit()]
    obs["genovae_split"] = lat["split"].reindex(samples_index).to_numpy()
    obs["genovae_reconstruction_mse"] = (
        pd.to_numeric(err["reconstruction_mse"], errors="coerce").reindex(samples_index).to_numpy()
    )
    if predictions is not None:
        pred = pd.read_csv(predictions, sep="\t", dtype={"sample_id": str, "predicted": str}).set_index("sample_id")
        obs["genovae_predicted"] = pred["predicted"].reindex(samples_index).to_numpy()
        for col in [c for c in pred.columns if c.startswith("probability_")]:
            obs[f"genovae_{col}"] = pred[col].reindex(samples_index).to_numpy(dtype=np.float64)
    annotation = io.read_gene_table(genes)
    annotation = annotation.set_index(annotation.columns[0])
    annotation.index = annotation.index.astype(str)
    var = annotation.reindex(genes_index)
    var.index.name = None
    modelled = None
    if features is not None:
        modelled = io.matrix_genes(features)  # the values are read after X is written
        unknown = modelled[~modelled.isin(genes_index)]
        if len(unknown):
            raise ValueError(f"{features} has {len(unknown)} genes that {matrix} lacks, e.g. {list(unknown[:3])}")
        var[MODELLED] = genes_index.isin(modelled)
    risk_table = io.read_risk(risk)
    scores = gene_scores(risk_table, genes_index)
    var = pd.concat([var, scores.set_axis(var.index)], axis=1)
    summ = io.read_json(summary)
    uns = {
        "genovae": {
            "run": run or summ.get("run", ""),
            "obsm_key": OBSM_KEY,
            "X": "collected matrix (data/matrix.parquet), values as given",
            "latent": "latent means of the selected model",
            "contrasts": list(dict.fromkeys(risk_table["contrast"].astype(str))),
            "summary": summ,
            "summary_json": json.dumps(summ),
        }
    }
    if features is not None and is_sparse:  # a dense all-genes layer would be the dense cohort
        uns["genovae"]["obsm"] = {
            INPUT_LAYER: "preprocessed values the model saw (preprocess/features.parquet), one column per "
            f"gene of uns['genovae']['input_genes'] (var['{MODELLED}'] True)"
        }
        uns["genovae"]["input_genes"] = [str(g) for g in modelled]
    elif features is not None:
        uns["genovae"]["layers"] = {
            INPUT_LAYER: "preprocessed values the model saw (preprocess/features.parquet); "
            f"NaN for genes not modelled (var['{MODELLED}'] False)"
        }
    varm = {}
    if loadings is not None:
        table = pd.read_csv(loadings, sep="\t", dtype={"gene": str, "dimension": str})
        wide = table.pivot(index="gene", columns="dimension", values="loading")
        wide = wide[sorted(wide.columns, key=lambda d: int(d[1:]))]
        varm[LOADINGS_KEY] = wide.reindex(genes_index).to_numpy(dtype=np.float32)
        uns["genovae"]["varm"] = {LOADINGS_KEY: "change of decoded log2 expression per latent SD, columns "
                                                + ", ".join(wide.columns) + "; NaN for genes not modelled"}
    obsm = {OBSM_KEY: lat.loc[samples_index, zcols].to_numpy(dtype=np.float32)}
    if features is not None and is_sparse:
        index, _, values = io.read_matrix_values(features, columns=modelled, order="C")
        rows = _rows_of(index, samples_index, features)
        # preprocess writes the matrix's order: no reordered copy of the features then
        obsm[INPUT_LAYER] = values if np.array_equal(rows, np.arange(len(values))) else values[rows]
        del values
    with io.atomic_path(out_h5ad) as tmp:
        _write_h5ad(tmp, X, obs=obs, var=var, obsm=obsm, varm=varm, uns=uns)
        del X
        if features is not None and not is_sparse:
            _add_input_layer(tmp, features, modelled, samples_index, genes_index)
    log.info(
        "wrote %s: %d obs x %d var, obsm['%s'] with %d dimensions%s",
        out_h5ad, len(samples_index), len(genes_index), OBSM_KEY, len(zcols),
        "" if modelled is None else
        f", {'obsm' if is_sparse else 'layers'}['{INPUT_LAYER}'] with {len(modelled)} modelled genes",
    )


def anndata_frame(df):
    """``df`` as genovae writes obs and var: text columns as categoricals, names an .h5ad can hold.

    Text (non-numeric, non-boolean) columns become categoricals of their values as strings,
    categories sorted, missing values missing; numeric and boolean columns keep their dtype.
    HDF5 names cannot hold '/' (anndata would nest them), so such column names get '_'.
    """
    out, names = {}, []
    for col in df.columns:
        name = str(col).replace("/", "_") or "_"
        while name in names or name == "_index":
            name += "_"
        names.append(name)
        series = df[col]
        text = isinstance(series.dtype, pd.CategoricalDtype) or not (
            pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)
        )
        if text:
            values = series.astype(object).where(series.notna(), None).map(lambda v: v if v is None else str(v))
            categories = sorted({v for v in values if v is not None})
            series = pd.Series(pd.Categorical(values, categories=pd.Index(categories, dtype=object)), index=df.index)
        out[name] = series
    frame = pd.DataFrame(out, index=pd.Index(df.index.astype(str), dtype=object))
    frame.index.name = None
    return frame


def uns_value(value):
    """A JSON-like value (the run's summary) as anndata can store it in ``uns``.

    Dicts keep their structure (keys with '/' get '_', None values are left out); a list
    of strings or of numbers becomes an array; any other list (of dicts, mixed) a dict
    keyed "0", "1", ...; other objects their text.
    """
    if isinstance(value, dict):
        return {str(k).replace("/", "_"): uns_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, (str, bool, int, float, np.generic)):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        values = list(value)
        if not values:
            return np.array([], dtype=np.float64)
        if all(isinstance(v, str) for v in values):
            return np.array(values, dtype=object)
        if all(isinstance(v, (bool, int, float, np.generic)) for v in values):
            return np.asarray(values)
        return uns_value({str(i): v for i, v in enumerate(values)})
    return str(value)


def _write_h5ad(path, X, *, obs, var, obsm, varm, uns):
    """Write ``path`` with anndata: ``X`` (obs x var; C-ordered, h5py writes it without a copy),
    obs and var (:func:`anndata_frame`), obsm, varm and uns (:func:`uns_value`)."""
    import anndata

    adata = anndata.AnnData(
        X=X,
        obs=anndata_frame(obs),
        var=anndata_frame(var),
        obsm=obsm,
        varm=varm,
        uns=uns_value(uns),
    )
    adata.write_h5ad(path)


def _rows_of(index, samples_index, features):
    """Positions of the matrix's samples among the rows of ``features``."""
    rows = index.get_indexer(samples_index)
    if (rows < 0).any():
        lacking = list(samples_index[rows < 0][:3])
        raise ValueError(f"{features} lacks {int((rows < 0).sum())} samples of the matrix, e.g. {lacking}")
    return rows


def _add_input_layer(path, features, modelled, samples_index, genes_index):
    """layers["genovae_input"]: features.parquet's values at their genes' positions, NaN elsewhere.

    The layer (float32, obs x var) is filled from features.parquet a chunk of genes
    (``io.COLUMN_CHUNK``) at a time and written with ``anndata.io.write_elem``: the layer
    and a chunk in memory, not the features beside it.
    """
    import h5py
    from anndata.io import write_elem

    layer = np.full((len(samples_index), len(genes_index)), np.nan, dtype=np.float32)
    positions = genes_index.get_indexer(modelled)
    rows = None
    for j in range(0, len(modelled), io.COLUMN_CHUNK):
        index, _, values = io.read_matrix_values(features, columns=modelled[j : j + io.COLUMN_CHUNK])
        if rows is None:
            rows = _rows_of(index, samples_index, features)
        columns = positions[j : j + io.COLUMN_CHUNK]
        for i in range(0, len(rows), LAYER_ROWS):  # a block of rows: no copy of the whole chunk
            layer[i : i + LAYER_ROWS, columns] = values[rows[i : i + LAYER_ROWS]]
        del values
    with h5py.File(path, "r+") as fh:
        write_elem(fh["layers"], INPUT_LAYER, layer)
