"""Interpretable latent factors: the genes each latent dimension moves."""

from __future__ import annotations

import numpy as np
import pytest

from genovae.evaluate import encode
from genovae.loadings import latent_loadings, loadings_table
from genovae.risk import welch
from test_risk_calibration import cohort_and_model


@pytest.mark.parametrize("likelihood", ["gaussian", "nb"])
def test_the_dimension_that_carries_the_condition_loads_on_the_planted_genes(likelihood):
    # a condition strong enough that the latent space carries it (10 genes at log2 FC 3)
    cohort, t, model, truth = cohort_and_model(likelihood, n_planted=10, lfc=3.0, seed=5)
    mu = encode(model, cohort.x)[0]
    load = latent_loadings(model, cohort, t, mu=mu, seed=0)
    assert load.shape == (len(cohort.genes), mu.shape[1]) and np.isfinite(load).all()
    # the loadings linearise the decoder: moving along the case-control shift of the latent means
    # (in latent SD units) moves the planted genes most
    case = cohort.condition == "case"
    shift = (mu[case].mean(axis=0) - mu[~case].mean(axis=0)) / mu.std(axis=0)
    combined = load @ shift
    top = [cohort.genes[i] for i in np.argsort(-np.abs(combined))[:10]]
    assert len(set(top) & set(truth)) >= 8, (top, truth)
    tstat, _ = welch(mu[case], mu[~case])
    j = int(np.argmax(np.abs(tstat)))
    # deterministic for a seed, and the table ranks genes by |loading| within each dimension
    np.testing.assert_array_equal(load, latent_loadings(model, cohort, t, mu=mu, seed=0))
    table = loadings_table(load, cohort.genes)
    assert len(table) == load.size and list(table["dimension"].unique()) == [f"z{k + 1}" for k in range(load.shape[1])]
    first = table[table["dimension"] == f"z{j + 1}"]
    assert first["rank"].tolist() == list(range(1, len(cohort.genes) + 1))
    assert np.all(np.diff(first["loading"].abs().to_numpy()) <= 1e-12)


#: cell-type programmes of PBMCs (PROVENANCE.md of pbmc68k_reduced; Zheng et al. 2017, the scanpy/Seurat tutorials)
PBMC_PROGRAMMES = {
    "B cell": {"CD79A", "CD79B", "MS4A1"},
    "NK / cytotoxic": {"GNLY", "NKG7", "CCL5"},
    "monocyte": {"FCN1", "LYZ", "S100A9", "S100A8", "CST3", "TYROBP", "LST1", "AIF1"},
}


@pytest.mark.realdata
def test_pbmc_latent_dimensions_are_cell_type_programmes(tmp_path):
    """On pbmc68k_reduced (700 cells, 10 cell types) with the schema's defaults, each programme's
    markers are among the 12 top genes of some latent dimension, moving together (one sign), for
    at least two of three training seeds: which genes lead a dimension varies with the seed (on
    seed 1 the B-cell dimension is led by IGLL5, MZB1 and IGJ with CD79A alone of the markers)
    (benchmarks/bench_loadings.py prints every dimension; docs/science.md records what was found)."""
    import sys
    from pathlib import Path

    from conftest import shared_dataset

    shared_dataset("pbmc68k_reduced")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_loadings import pbmc_loadings

    found_in = {programme: [] for programme in PBMC_PROGRAMMES}
    for seed in (1, 2, 3):
        found = pbmc_loadings(seed=seed, tmp=tmp_path)
        for programme, markers in PBMC_PROGRAMMES.items():
            hits = [
                (dim, [g for g, sign in top if g in markers], {sign for g, sign in top if g in markers})
                for dim, top in found["top"].items()
            ]
            best = max(hits, key=lambda h: len(h[1]))
            if len(best[1]) >= 2 and len(best[2]) == 1:
                found_in[programme].append(seed)
    assert all(len(seeds) >= 2 for seeds in found_in.values()), found_in
