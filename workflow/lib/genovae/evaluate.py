"""Per-round evaluation and the retrain decision.

Metrics are computed in the preprocessed (model-input) space so they are
comparable across likelihoods:

* ``recon_mse``: mean squared error between inputs and the decoded latent means;
* ``r2``: 1 - SSE / SST, SST around the train gene means (variance explained);
* ``loss``: negative ELBO per sample (reconstruction + KL, full beta);
* ``kl``: KL per sample, and ``kl_per_dim``;
* ``active_units``: latent dimensions whose posterior means vary across
  samples with variance above 0.01 (Burda et al. 2016);
* ``pca_recon_mse``: the same error for PCA with as many components as latent
  dimensions, fitted on train: the baseline any useful model should approach;
* ``mse_ratio_pca``: ``recon_mse / pca_recon_mse``.
"""

from __future__ import annotations

import numpy as np


# torch and scikit-learn are imported inside the functions that use them: the decide and
# select_model steps need only METRICS/decide/better and start without them

ACTIVE_UNIT_VARIANCE = 0.01


#: samples per block in the passes below: temporaries stay a few MB whatever the cohort size
BATCH = 256


def row_blocks(mask_or_rows, batch_size=BATCH):
    """Blocks of sample indices (from a boolean mask or an index array)."""
    rows = np.asarray(mask_or_rows)
    rows = np.flatnonzero(rows) if rows.dtype == bool else rows
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


def encode(model, x, rows=None, batch_size=1024):
    """Latent means and log-variances of ``x[rows]`` (all rows by default), as numpy arrays."""
    import torch

    model.eval()
    rows = np.arange(len(x)) if rows is None else rows
    mus, lvs = [], []
    for b in row_blocks(rows, batch_size):
        with torch.no_grad():
            mu, lv = model.encode(torch.from_numpy(np.ascontiguousarray(x[b], dtype=np.float32)))
        mus.append(mu)
        lvs.append(lv)
    k = model.config["latent_dim"]
    if not mus:
        return np.empty((0, k), np.float32), np.empty((0, k), np.float32)
    return torch.cat(mus).numpy(), torch.cat(lvs).numpy()


def reconstruct_blocks(model, cohort, transform, mask_or_rows, batch_size=BATCH):
    """Per block of samples: (rows, inputs, decoded latent means in the preprocessed space,
    latent means, latent log-variances). Nothing of the cohort's size is allocated."""
    import torch

    model.eval()
    for rows in row_blocks(mask_or_rows, batch_size):
        x = np.ascontiguousarray(cohort.x[rows])
        inputs = x if not cohort.n_covariates else np.ascontiguousarray(cohort.inputs()[rows])
        c = None if not cohort.n_covariates else cohort.covariates[rows]  # each sample decoded in its own batch
        with torch.no_grad():
            mu, logvar = model.encode(torch.from_numpy(inputs))
        mean = model.px_mean(mu, np.ascontiguousarray(cohort.library[rows]), c)  # the mean of p(x|z), z the latent mean
        mean = model.to_model_space(mean, transform, cohort.library_all[rows])
        yield rows, x, mean.astype(np.float32, copy=False), mu.numpy(), logvar.numpy()


def split_metrics(model, cohort, transform, name, pca=None):
    """Metrics of one split (see the module doc), accumulated over blocks of samples."""
    import torch

    from .train import evaluate_loss

    mask = cohort.mask(name)
    n, g = int(mask.sum()), cohort.x.shape[1]
    if pca is None:
        pca = fit_pca(cohort, model.config["latent_dim"])
    train_mean = pca.mean_  # PCA is fitted on the train split: its mean is the train gene means (for R²)
    sse = sst = 0.0
    sums = torch.zeros(3)
    mus, lvs = [], []
    for rows, x, pred, mu, logvar in reconstruct_blocks(model, cohort, transform, mask):
        d = pred - x
        sse += float(np.einsum("ij,ij->", d, d, dtype=np.float64))
        c = x - train_mean
        sst += float(np.einsum("ij,ij->", c, c))
        xt, tt, lt = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
                      for a in (cohort.inputs()[rows], cohort.target_rows(rows), cohort.library[rows]))
        sums += evaluate_loss(model, xt, tt, lt, beta=1.0) * len(rows)
        mus.append(mu)
        lvs.append(logvar)
    loss, recon, kl = (float(v) / n if n else float("nan") for v in sums)
    mu = np.concatenate(mus) if mus else np.zeros((0, model.config["latent_dim"]), np.float32)
    logvar = np.concatenate(lvs) if lvs else mu
    kl_dim = (0.5 * (mu**2 + np.exp(logvar) - 1.0 - logvar)).mean(axis=0)
    var = mu.var(axis=0) if len(mu) > 1 else np.zeros(mu.shape[1])
    cells = n * g
    pca_mse = pca.squared_error(cohort.x, np.flatnonzero(mask)) / cells if cells else float("nan")
    mse = sse / cells if cells else float("nan")
    return {
        f"{name}_recon_mse": mse,
        f"{name}_r2": 1.0 - sse / sst if sst > 0 else float("nan"),
        f"{name}_loss": loss,
        f"{name}_recon_nll": recon,
        f"{name}_kl": kl,
        f"{name}_active_units": int((var > ACTIVE_UNIT_VARIANCE).sum()),
        f"{name}_kl_per_dim": kl_dim.tolist(),
        f"{name}_pca_recon_mse": pca_mse,
        f"{name}_mse_ratio_pca": mse / pca_mse if pca_mse > 0 else float("nan"),
        f"{name}_n": n,
    }


def fit_pca(cohort, n_components):
    """PCA with as many components as latent dimensions, fitted on the training samples
    (see :mod:`genovae.pca`: no copy of the training rows)."""
    from . import pca

    return pca.fit(cohort.x, np.flatnonzero(cohort.mask("train")), n_components)
