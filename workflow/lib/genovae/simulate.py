"""Synthetic cohorts: negative-binomial counts with planted condition genes.

The generative model (all seeded):

* gene baseline means ``m_j ~ LogNormal(mean_log, sd_log)``;
* sample size factors ``s_i ~ LogNormal(0, 0.25)``;
* ``n_programs`` latent gene programmes: each gene loads on one programme with
  a random weight, each sample has a standard-normal programme activity, so
  genes are correlated as in real tissue (the part a VAE should learn);
* condition: half the samples are ``case``; the ``n_planted`` planted genes get
  ``log2_fold_change`` (random sign) in case samples;
* optional batch effect: each of ``n_batches`` batches multiplies every gene by
  ``exp(N(0, batch_effect))``;
* counts ``x_ij ~ NB(mean = s_i m_j exp(...), inverse dispersion theta)``
  drawn as a gamma-Poisson mixture.

The planted genes are written as ground truth, so rankings can be scored.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import io


def simulate_cohort(
    n_samples=200,
    n_genes=1000,
    n_planted=20,
    log2_fold_change=1.5,
    n_programs=3,
    programme_strength=0.5,
    n_batches=1,
    batch_effect=0.0,
    theta=10.0,
    mean_log=4.0,
    sd_log=1.5,
    seed=1,
):
    if n_planted > n_genes:
        raise ValueError("n_planted must not exceed n_genes")
    rng = np.random.default_rng(seed)
    base = rng.lognormal(mean_log, sd_log, size=n_genes)
    size = rng.lognormal(0.0, 0.25, size=n_samples)
    condition = np.array(["control"] * (n_samples - n_samples // 2) + ["case"] * (n_samples // 2))
    rng.shuffle(condition)
    log_mu = np.log(base)[None, :] + np.log(size)[:, None]
    if n_programs > 0:
        member = rng.integers(0, n_programs, size=n_genes)
        weight = rng.normal(0.0, programme_strength, size=n_genes)
        activity = rng.normal(0.0, 1.0, size=(n_samples, n_programs))
        log_mu += activity[:, member] * weight[None, :]
    planted = rng.choice(n_genes, size=n_planted, replace=False)
    signs = rng.choice([-1.0, 1.0], size=n_planted)
    is_case = condition == "case"
    log_mu[np.ix_(is_case, planted)] += signs * log2_fold_change * np.log(2.0)
    batch = rng.integers(0, max(n_batches, 1), size=n_samples)
    if n_batches > 1 and batch_effect > 0:
        shifts = rng.normal(0.0, batch_effect, size=(n_batches, n_genes))
        log_mu += shifts[batch]
    mu = np.exp(log_mu)
    lam = rng.gamma(shape=theta, scale=mu / theta)
    counts = rng.poisson(lam).astype(np.float64)

    width = len(str(n_samples))
    samples = [f"sim_{i + 1:0{width}d}" for i in range(n_samples)]
    gwidth = len(str(n_genes))
    genes = [f"gene_{j + 1:0{gwidth}d}" for j in range(n_genes)]
    matrix = pd.DataFrame(counts, index=samples, columns=genes)
    sheet = pd.DataFrame(
        {"sample_id": samples, "condition": condition, "batch": [f"b{b + 1}" for b in batch]},
        index=samples,
    )
    truth = pd.DataFrame(
        {
            "gene": [genes[j] for j in planted],
            "log2_fold_change": signs * log2_fold_change,
            "direction": np.where(signs > 0, "up", "down"),
        }
    ).sort_values("gene", ignore_index=True)
    return matrix, sheet, truth


def simulate(*, out_matrix, out_samples, out_genes, out_manifest, out_truth, privacy=None, **params):
    """Generate a cohort and write it in the canonical collect layout.

    ``privacy`` with ``pseudonymize`` replaces the sample ids by keyed pseudonyms
    as collect does (see :mod:`genovae.pseudonym`).
    """
    from .collect import write_outputs
    from .pseudonym import apply_to_cohort

    matrix, sheet, truth = simulate_cohort(**params)
    matrix, sheet, _, _, pseudonymized = apply_to_cohort(matrix, sheet, privacy)
    # all-zero genes are possible for tiny means: drop them as collect would
    keep = matrix.to_numpy().any(axis=0)
    matrix = matrix.loc[:, keep]
    truth = truth[truth["gene"].isin(matrix.columns)]
    annotation = pd.DataFrame(index=pd.Index(matrix.columns, name="gene"))
    annotation["planted"] = annotation.index.isin(truth["gene"])
    manifest = {
        "inputs": [],
        "source": "simulate",
        "parameters": params,
        "value_type": "counts",
        "orientation": "samples_by_genes",
        "shape_before": [len(sheet), len(keep)],
        "shape_after": list(matrix.shape),
        "warnings": [] if keep.all() else [f"dropped {int((~keep).sum())} all-zero simulated genes"],
        "privacy": pseudonymized,
    }
    write_outputs(matrix, sheet, annotation, manifest, out_matrix, out_samples, out_genes, out_manifest)
    io.write_tsv(out_truth, truth)
    return manifest
