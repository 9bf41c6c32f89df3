"""The VAE module: MLP encoder/decoder, reparameterisation, likelihoods, ELBO.

Likelihoods (``p(x | z)``):

* ``gaussian``: per-gene Normal with the decoder giving the mean and a learned
  gene-wise log standard deviation (for log / scaled data);
* ``bernoulli``: the classic VAE form for values scaled to [0, 1];
* ``nb``: negative binomial on raw counts; the decoder gives gene proportions
  (softmax) that are multiplied by the sample's library size (an offset, as in
  scVI), with a learned gene-wise inverse dispersion ``theta``.

The loss is the negative ELBO per sample: ``-E[log p(x|z)] + beta * KL(q(z|x) || N(0, I))``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LIKELIHOODS = ("gaussian", "bernoulli", "nb")
LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0


def kl_standard_normal(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample and dimension (closed form)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def gaussian_log_likelihood(x, mean, log_scale):
    """log N(x; mean, exp(log_scale)^2), elementwise."""
    return -0.5 * ((x - mean) * torch.exp(-log_scale)).pow(2) - log_scale - 0.5 * math.log(2 * math.pi)


def bernoulli_log_likelihood(x, logits):
    """log Bernoulli(x; sigmoid(logits)), elementwise (x may be fractional in [0, 1])."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none")


def nb_log_likelihood(x, mu, theta, eps=1e-8):
    """log NB(x; mean mu, inverse dispersion theta), elementwise.

    ``Var = mu + mu^2 / theta``; equals scipy's ``nbinom(n=theta, p=theta/(theta+mu))``.
    """
    log_theta_mu = torch.log(theta + mu + eps)
    return (
        theta * (torch.log(theta + eps) - log_theta_mu)
        + x * (torch.log(mu + eps) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
    )


def mlp(sizes, dropout, batch_norm):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers.append(nn.Linear(a, b))
        if batch_norm:
            layers.append(nn.BatchNorm1d(b))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """Variational autoencoder for a samples x genes matrix."""

    def __init__(
        self,
        n_genes,
        hidden=(256, 128),
        latent_dim=10,
        dropout=0.1,
        batch_norm=True,
        likelihood="gaussian",
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        hidden = list(hidden)
        self.config = dict(
            n_genes=int(n_genes),
            hidden=hidden,
            latent_dim=int(latent_dim),
            dropout=float(dropout),
            batch_norm=bool(batch_norm),
            likelihood=likelihood,
        )
        self.likelihood = likelihood
        self.encoder = mlp([n_genes] + hidden, dropout, batch_norm)
        last = hidden[-1] if hidden else n_genes
        self.z_mean = nn.Linear(last, latent_dim)
        self.z_logvar = nn.Linear(last, latent_dim)
        self.decoder = mlp([latent_dim] + hidden[::-1], dropout, batch_norm)
        self.out = nn.Linear(hidden[0] if hidden else latent_dim, n_genes)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(n_genes))
        elif likelihood == "nb":
            self.log_theta = nn.Parameter(torch.full((n_genes,), math.log(10.0)))

    def encode(self, x):
        h = self.encoder(x)
        return self.z_mean(h), self.z_logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX)

    @staticmethod
    def reparameterize(mu, logvar):
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def decode(self, z):
        """Decoder output: mean (gaussian), logits (bernoulli) or log proportions (nb)."""
        out = self.out(self.decoder(z))
        if self.likelihood == "nb":
            # float32 under autocast too (no-op in float32): proportions of thousands of genes
            return F.log_softmax(out.float(), dim=-1)
        return out

    def log_likelihood(self, target, dec, library=None):
        """Per-sample log p(target | z), summed over genes."""
        if self.likelihood == "gaussian":
            ll = gaussian_log_likelihood(target, dec, self.log_scale.clamp(-7.0, 5.0))
        elif self.likelihood == "bernoulli":
            ll = bernoulli_log_likelihood(target, dec)
        else:
            mu = torch.exp(dec) * library.unsqueeze(-1)
            ll = nb_log_likelihood(target, mu, torch.exp(self.log_theta.clamp(-10.0, 12.0)))
        return ll.sum(-1)

    def mean(self, dec, library=None):
        """Expected value of p(x|z): model-space values, or expected counts for nb."""
        if self.likelihood == "gaussian":
            return dec
        if self.likelihood == "bernoulli":
            return torch.sigmoid(dec)
        return torch.exp(dec) * library.unsqueeze(-1)

    def forward(self, x, target, library=None, beta=1.0, sample=True):
        """Return (loss, reconstruction loss, KL), each the mean over the batch."""
        mu, logvar = self.encode(x)
        # under bf16/fp16 autocast the layers run in low precision, the loss in float32
        # (.float() returns the tensor itself when it is float32 already)
        mu, logvar = mu.float(), logvar.float()
        z = self.reparameterize(mu, logvar) if sample else mu
        dec = self.decode(z).float()
        recon = -self.log_likelihood(target, dec, library)
        kl = kl_standard_normal(mu, logvar).sum(-1)
        return (recon + beta * kl).mean(), recon.mean(), kl.mean()


def save_model(path, model, extra):
    from .io import atomic_path

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"config": model.config, "state_dict": state, **extra}, tmp)


def load_model(path, map_location="cpu"):
    blob = torch.load(path, map_location=map_location, weights_only=True)
    model = VAE(**blob["config"])
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, blob
