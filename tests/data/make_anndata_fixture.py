"""Regenerate anndata_0.12.19_cohort.h5ad with the real anndata package.

Run with anndata==0.12.19 (pinned in requirements.txt):

    python tests/data/make_anndata_fixture.py

40 donors x 50 genes: X = log1p-normalised values stored as CSR sparse,
layers["counts"] = integer counts (genes 1-5 up in AML), obs with a
categorical 'disease' (20 healthy, 20 AML), a numeric 'age' and a 'batch';
var with 'gene_symbols'; obsm['X_pca'] and uns entries that genovae ignores.
"""

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

rng = np.random.default_rng(7)
n_obs, n_var = 40, 50
disease = np.array(["healthy"] * 20 + ["AML"] * 20)
mean = rng.lognormal(3, 1, size=n_var)
effect = np.ones(n_var)
effect[:5] = 4.0
mu = np.where((disease == "AML")[:, None], mean * effect, mean)
counts = rng.poisson(mu)
counts[:, 0] = np.maximum(counts[:, 0], 1)
obs = pd.DataFrame(
    {
        "disease": pd.Categorical(disease),
        "age": np.arange(n_obs, dtype=float) + 30,
        "batch": ["b1", "b2"] * (n_obs // 2),
    },
    index=[f"donor{i:02d}" for i in range(1, n_obs + 1)],
)
var = pd.DataFrame(
    {"gene_symbols": [f"SYM{i}" for i in range(1, n_var + 1)]},
    index=[f"ENSG{i:011d}" for i in range(1, n_var + 1)],
)
X = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4).astype(np.float32)
adata = ad.AnnData(sp.csr_matrix(X), obs=obs, var=var, layers={"counts": counts})
adata.obsm["X_pca"] = rng.normal(size=(n_obs, 2))
adata.uns["source"] = "genovae test fixture"
adata.write_h5ad(Path(__file__).with_name("anndata_0.12.19_cohort.h5ad"))
