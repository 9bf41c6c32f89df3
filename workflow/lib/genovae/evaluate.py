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
import torch
from sklearn.decomposition import PCA

from .errors import ConfigError
from .train import evaluate_loss

#: metric name -> "min" (lower is better) or "max"
METRICS = {
    "val_recon_mse": "min",
    "val_r2": "max",
    "val_loss": "min",
    "val_kl": "min",
    "val_active_units": "max",
    "val_mse_ratio_pca": "min",
}
ACTIVE_UNIT_VARIANCE = 0.01


@torch.no_grad()
def encode(model, x, batch_size=4096):
    """Latent means and log-variances for a float32 numpy array."""
    model.eval()
    mus, lvs = [], []
    for i in range(0, len(x), batch_size):
        mu, lv = model.encode(torch.tensor(x[i : i + batch_size]))
        mus.append(mu)
        lvs.append(lv)
    return torch.cat(mus).numpy(), torch.cat(lvs).numpy()


@torch.no_grad()
def reconstruct(model, cohort, transform, mask):
    """Decoded latent means mapped to the preprocessed space, for rows in ``mask``."""
    x = cohort.x[mask]
    mu, _ = encode(model, x)
    dec = model.decode(torch.as_tensor(mu))
    mean = model.mean(dec, torch.as_tensor(cohort.library[mask])).numpy()
    if model.likelihood == "nb":
        mean = transform.scale_log(transform.counts_to_log(mean, cohort.library_all[mask]))
    return mean.astype(np.float32), mu


def split_metrics(model, cohort, transform, name, pca=None):
    mask = cohort.mask(name)
    x = cohort.x[mask]
    pred, mu = reconstruct(model, cohort, transform, mask)
    err = (pred - x) ** 2
    train_mean = cohort.x[cohort.mask("train")].mean(axis=0)
    sst = float(((x - train_mean) ** 2).sum())
    xt, tt, lt = cohort.tensors(name, "cpu")
    loss, recon, kl = (float(v) for v in evaluate_loss(model, xt, tt, lt, beta=1.0))
    _, logvar = encode(model, x)
    kl_dim = (0.5 * (mu**2 + np.exp(logvar) - 1.0 - logvar)).mean(axis=0)
    var = mu.var(axis=0) if len(mu) > 1 else np.zeros(mu.shape[1])
    if pca is None:
        pca = fit_pca(cohort, model.config["latent_dim"])
    pca_pred = pca.inverse_transform(pca.transform(x))
    pca_mse = float(((pca_pred - x) ** 2).mean())
    mse = float(err.mean())
    return {
        f"{name}_recon_mse": mse,
        f"{name}_r2": 1.0 - float(err.sum()) / sst if sst > 0 else float("nan"),
        f"{name}_loss": loss,
        f"{name}_recon_nll": recon,
        f"{name}_kl": kl,
        f"{name}_active_units": int((var > ACTIVE_UNIT_VARIANCE).sum()),
        f"{name}_kl_per_dim": kl_dim.tolist(),
        f"{name}_pca_recon_mse": pca_mse,
        f"{name}_mse_ratio_pca": mse / pca_mse if pca_mse > 0 else float("nan"),
        f"{name}_n": int(mask.sum()),
    }


def fit_pca(cohort, n_components):
    x = cohort.x[cohort.mask("train")]
    k = int(min(n_components, x.shape[0], x.shape[1]))
    return PCA(n_components=k, svd_solver="full", random_state=0).fit(x)


def decide(metrics, metric, threshold):
    """Whether ``metrics[metric]`` meets ``threshold`` in the metric's direction."""
    if metric not in METRICS:
        raise ConfigError("retrain.metric", f"unknown metric {metric!r}; choose one of {sorted(METRICS)}")
    value = metrics[metric]
    if value is None or not np.isfinite(value):
        passed = False
    elif METRICS[metric] == "min":
        passed = value <= threshold
    else:
        passed = value >= threshold
    return {
        "metric": metric,
        "direction": "lower is better" if METRICS[metric] == "min" else "higher is better",
        "value": value,
        "threshold": threshold,
        "passed": bool(passed),
    }


def better(a, b, metric):
    """True if value ``a`` is strictly better than ``b`` for ``metric``."""
    if b is None or not np.isfinite(b):
        return a is not None and np.isfinite(a)
    if a is None or not np.isfinite(a):
        return False
    return a < b if METRICS[metric] == "min" else a > b
