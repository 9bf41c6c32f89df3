"""Make the Seurat v3 gene-selection fixtures (tests/test_preprocess.py, tests/test_science.py).

Run once with scanpy and scikit-misc installed in a throwaway venv (they are no dependency of genovae):

    python3 -m venv /tmp/scv && /tmp/scv/bin/pip install scanpy scikit-misc
    /tmp/scv/bin/python tests/data/make_seurat_v3_fixture.py [path/to/pbmc68k_reduced/counts.tsv]

Writes ``seurat_v3_counts.npz`` (a fixed 300 cells x 800 genes negative-binomial count matrix with sparse
"marker" genes, and scanpy's ranking of its genes) and, when the PBMC counts are given,
``seurat_v3_pbmc68k_top.txt`` (scanpy's top 300 genes of that matrix, in rank order).
"""

import sys
from importlib.metadata import version
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import scanpy as sc

HERE = Path(__file__).parent


def ranking(counts, genes):
    ad = anndata.AnnData(np.asarray(counts, dtype=np.float32), var=pd.DataFrame(index=genes))
    df = sc.pp.highly_variable_genes(ad, flavor="seurat_v3", n_top_genes=len(genes) - 1, inplace=False)
    df.index = genes
    # rank 0 = most variable; genes without a rank (constant) last
    return df["highly_variable_rank"].fillna(np.inf).sort_values(kind="stable").index.to_list()


def synthetic():
    rng = np.random.default_rng(20261129)
    n, g = 300, 800
    mean = rng.lognormal(-0.5, 1.6, size=g)
    dispersion = rng.uniform(0.05, 0.6, size=g)  # NB: var = mu + dispersion mu^2
    mean[:40] = rng.uniform(0.02, 0.2, size=40)  # sparse genes ...
    size = rng.lognormal(0, 0.3, size=(n, 1))
    mu = mean * size
    group = rng.integers(0, 4, size=n)
    for k in range(4):  # ... 10 per cell type, high in one type only
        mu[group == k, 10 * k : 10 * (k + 1)] *= 25
    p = 1 / (1 + dispersion * mu)
    counts = rng.negative_binomial(1 / dispersion, p).astype(np.int32)
    genes = [f"g{j:03d}" for j in range(g)]
    return counts, genes


def main():
    counts, genes = synthetic()
    order = ranking(counts, genes)
    meta = f"scanpy {version('scanpy')}, scikit-misc {version('scikit-misc')}"
    np.savez_compressed(HERE / "seurat_v3_counts.npz", counts=counts.astype(np.uint16), genes=genes, ranking=order, made_with=meta)
    if len(sys.argv) > 1:
        m = pd.read_csv(sys.argv[1], sep="\t", index_col=0)
        top = ranking(m.to_numpy(), list(m.columns))[:300]
        (HERE / "seurat_v3_pbmc68k_top.txt").write_text(f"# {meta}, flavor seurat_v3, rank order\n" + "\n".join(top) + "\n")
    print(meta)


if __name__ == "__main__":
    main()
