"""Export a run's results as an AnnData ``.h5ad`` for the scverse ecosystem.

``results/{run}/latent.h5ad`` holds, for every sample (obs) and gene (var) of
the collected matrix:

- ``X``: the collected matrix (``data/matrix.parquet``, values as given, float32);
- ``obsm["X_genovae"]``: the latent means ``z1..zK`` of the selected model;
- ``obs``: the sample sheet, ``genovae_split`` and ``genovae_reconstruction_mse``;
- ``var``: the gene annotation, ``genovae_used`` (gene among the model's
  features) and, per contrast, the risk-gene scores
  (``vae_score_<contrast>``, ``vae_rank_<contrast>``, ``fdr_<contrast>``, ...);
- ``uns["genovae"]``: the run's summary (``summary``, and losslessly as
  ``summary_json``), the contrasts and the obsm key.

``scanpy`` reads it directly: ``adata = sc.read_h5ad("latent.h5ad");
sc.pp.neighbors(adata, use_rep="X_genovae"); sc.tl.umap(adata)``.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from . import io
from .h5ad import write_h5ad
from .risk import RISK_COLUMNS

log = logging.getLogger(__name__)

OBSM_KEY = "X_genovae"
#: per-gene scores of risk_genes.tsv written to var, one column per contrast
SCORE_COLUMNS = tuple(c for c in RISK_COLUMNS if c not in ("contrast", "gene"))


def _read_tsv(path):
    return pd.read_csv(path, sep="\t", dtype={"sample_id": str, "gene": str}, keep_default_na=False,
                       na_values=[""])


def gene_scores(risk, genes):
    """Risk-gene table (contrast x gene rows) -> one column per score and contrast, indexed by gene."""
    out = pd.DataFrame(index=pd.Index(genes, name="gene"))
    out["genovae_used"] = out.index.isin(set(risk["gene"].astype(str)))
    for contrast, part in risk.groupby("contrast", sort=False):
        part = part.assign(gene=part["gene"].astype(str)).drop_duplicates("gene").set_index("gene")
        for col in SCORE_COLUMNS:
            if col in part.columns:
                values = pd.to_numeric(part[col], errors="coerce")
                out[f"{col}_{contrast}"] = values.reindex(out.index).to_numpy(dtype=np.float64)
    return out


def export_h5ad(*, matrix, samples, genes, latent, errors, risk, summary, out_h5ad, run=None):
    """Write ``out_h5ad`` from the collected data and the run's result tables."""
    X = io.read_matrix(matrix)
    sheet = pd.read_csv(samples, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    sheet = sheet.set_index(sheet["sample_id"].astype(str))
    sheet = sheet.drop(columns="sample_id").reindex(X.index)
    lat = _read_tsv(latent).set_index("sample_id")
    err = _read_tsv(errors).set_index("sample_id")
    missing = [s for s in X.index if s not in lat.index]
    if missing:
        raise ValueError(f"{latent} lacks {len(missing)} samples of {matrix}, e.g. {missing[:3]}")
    zcols = [c for c in lat.columns if c.startswith("z") and c[1:].isdigit()]
    obs = sheet.copy()
    obs["genovae_split"] = lat["split"].reindex(X.index).to_numpy()
    obs["genovae_reconstruction_mse"] = (
        pd.to_numeric(err["reconstruction_mse"], errors="coerce").reindex(X.index).to_numpy()
    )
    annotation = pd.read_csv(genes, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    annotation = annotation.set_index(annotation.columns[0])
    annotation.index = annotation.index.astype(str)
    var = annotation.reindex(X.columns)
    var.index.name = None
    risk_table = _read_tsv(risk)
    scores = gene_scores(risk_table, X.columns)
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
    with io.atomic_path(out_h5ad) as tmp:
        write_h5ad(
            tmp,
            X=X.to_numpy(dtype=np.float32),
            obs=obs,
            var=var,
            obsm={OBSM_KEY: lat.loc[X.index, zcols].to_numpy(dtype=np.float32)},
            uns=uns,
        )
    log.info(
        "wrote %s: %d obs x %d var, obsm['%s'] with %d dimensions",
        out_h5ad, X.shape[0], X.shape[1], OBSM_KEY, len(zcols),
    )
