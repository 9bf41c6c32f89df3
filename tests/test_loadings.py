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
