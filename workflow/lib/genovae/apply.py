"""Apply the selected model: latent means, per-sample reconstruction error, test metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .evaluate import reconstruct, split_metrics


def latent_table(model, cohort, transform):
    """Latent means of every sample plus split/condition, and per-sample errors."""
    mask = np.ones(len(cohort.sample_ids), bool)
    pred, mu = reconstruct(model, cohort, transform, mask)
    err = ((pred - cohort.x) ** 2).mean(axis=1)
    latent = pd.DataFrame(mu, columns=[f"z{i + 1}" for i in range(mu.shape[1])])
    latent.insert(0, "sample_id", cohort.sample_ids)
    latent.insert(1, "split", cohort.split)
    latent.insert(2, "condition", cohort.condition)
    errors = pd.DataFrame(
        {
            "sample_id": cohort.sample_ids,
            "split": cohort.split,
            "condition": cohort.condition,
            "reconstruction_mse": err,
        }
    )
    return latent, errors


def test_metrics(model, cohort, transform):
    """Held-out metrics, computed once, for the selected model only."""
    if not cohort.mask("test").any():
        return {}
    return split_metrics(model, cohort, transform, "test")


def apply_model(
    *,
    model,
    features,
    split,
    matrix,
    transform,
    genes,
    out_latent,
    out_errors,
    out_risk,
    out_dims,
    out_test,
    case=None,
    control=None,
    latent_fdr=0.05,
    threads=1,
):
    import torch

    from . import io
    from .dataset import load_cohort
    from .model import load_model
    from .preprocess import Transform
    from .risk import rank_genes

    torch.set_num_threads(int(threads))
    vae, blob = load_model(model)
    t = Transform.load(transform)
    cohort = load_cohort(features, split, matrix, vae.likelihood)
    latent, errors = latent_table(vae, cohort, t)
    annotation = pd.read_csv(genes, sep="\t", dtype=str, keep_default_na=False).set_index("gene")
    risk, dims = rank_genes(vae, cohort, t, case=case, control=control, latent_fdr=latent_fdr, annotation=annotation)
    test = {
        "round": blob["round"],
        **split_metrics(vae, cohort, t, "val"),
        **test_metrics(vae, cohort, t),
    }
    io.write_tsv(out_latent, latent)
    io.write_tsv(out_errors, errors)
    io.write_tsv(out_risk, risk)
    io.write_tsv(out_dims, dims)
    io.write_json(out_test, test)
