"""The VAE module: MLP encoder/decoder, reparameterisation, likelihoods, ELBO.

Likelihoods (``p(x | z)``):

* ``gaussian``: per-gene Normal with the decoder giving the mean and a learned
  gene-wise log standard deviation (for log / scaled data);
* ``bernoulli``: the classic VAE form for values scaled to [0, 1];
* ``nb``: negative binomial on raw counts; the decoder gives gene proportions
  (softmax) that are multiplied by the sample's library size (an offset, as in
  scVI), with a learned gene-wise inverse dispersion ``theta``.

The loss is the negative ELBO per sample: ``-E[log p(x|z)] + beta * KL(q(z|x) || N(0, I))``.

The model is written the scvi-tools way: :meth:`VAE.inference` gives ``q(z|x)``
(a ``torch.distributions.Normal``), :meth:`VAE.generative` gives ``p(x|z)`` as a
``torch.distributions`` object (:class:`GeneNormal`, :class:`LogitBernoulli` or
:class:`NegativeBinomial`) and :meth:`VAE.loss` a :class:`LossOutput`. Everything
that depends on the likelihood (the clamps of the gene-wise scale and dispersion,
the mean of ``p(x|z)``, draws from it, the space its values live in) is here:
other modules call these methods and never branch on the likelihood's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.distributions import Bernoulli, Distribution, Normal, constraints
from torch.nn import functional as F

LIKELIHOODS = ("gaussian", "bernoulli", "nb")
LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0
#: clamps of the gaussian gene-wise log standard deviation and of the nb log inverse dispersion
LOG_SCALE_MIN, LOG_SCALE_MAX = -7.0, 5.0
LOG_THETA_MIN, LOG_THETA_MAX = -10.0, 12.0


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



# ------------------------------------------------------------ p(x | z)
class GeneNormal(Normal):
    """``Normal(loc, exp(log_scale))`` with a gene-wise ``log_scale``.

    ``log_prob`` is :func:`gaussian_log_likelihood` (the numbers the loss has
    always had; torch's ``Normal.log_prob`` is the same density in another
    floating-point form). Values live in the model's (preprocessed) space.
    """

    space = "model"

    def __init__(self, loc, log_scale, validate_args=False):
        self.log_scale = log_scale
        super().__init__(loc, torch.exp(log_scale), validate_args=validate_args)

    def log_prob(self, value):
        return gaussian_log_likelihood(value, self.loc, self.log_scale)

    def draw(self, rng, noise=True):
        """A numpy draw (float64) from ``rng``: the mean plus Gaussian noise (the mean alone without ``noise``)."""
        mean = self.loc.detach().cpu().numpy().astype(np.float64)
        if not noise:
            return mean
        scale = torch.exp(self.log_scale).detach().cpu().numpy().astype(np.float64)
        return mean + rng.standard_normal(mean.shape) * scale[None, :]


class LogitBernoulli(Bernoulli):
    """``Bernoulli(logits=...)`` for values scaled to [0, 1] (fractional targets allowed, so no validation).

    Its ``log_prob`` is torch's (``-binary_cross_entropy_with_logits``). A
    :meth:`draw` gives the mean: scaled values are fractions, not coin flips.
    """

    space = "model"

    def __init__(self, logits, validate_args=False):
        super().__init__(logits=logits, validate_args=validate_args)

    def draw(self, rng, noise=True):
        """The mean (float64), with or without ``noise``."""
        return self.mean.detach().cpu().numpy().astype(np.float64)


class NegativeBinomial(Distribution):
    """Negative binomial with mean ``mu`` and gene-wise inverse dispersion ``theta`` (``Var = mu + mu^2/theta``).

    The same law as ``torch.distributions.NegativeBinomial(total_count=theta,
    logits=log(mu / theta))``, whose ``log_prob`` agrees to float tolerance but
    not bit for bit: ``log_prob`` here is :func:`nb_log_likelihood`, the loss's
    numbers. Values are raw counts.
    """

    arg_constraints = {"mu": constraints.nonnegative, "theta": constraints.positive}
    support = constraints.nonnegative_integer
    space = "counts"

    def __init__(self, mu, theta, validate_args=False):
        self.mu, self.theta = mu, theta
        super().__init__(batch_shape=mu.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.mu

    @property
    def variance(self):
        return self.mu + self.mu.pow(2) / self.theta

    def log_prob(self, value):
        return nb_log_likelihood(value, self.mu, self.theta)

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()):
        """Gamma-Poisson draws (torch random number generator)."""
        shape = self._extended_shape(sample_shape)
        theta = self.theta.expand(self.mu.shape)
        rate = theta / self.mu.clamp_min(1e-12)
        lam = torch.distributions.Gamma(theta, rate, validate_args=False).sample(sample_shape)
        return torch.poisson(lam.expand(shape))

    def draw(self, rng, noise=True):
        """A numpy draw (float64 counts) from ``rng``; without ``noise`` the mean rounded to integers."""
        mu = self.mu.detach().cpu().numpy()
        if not noise:
            return np.rint(mu)
        theta = self.theta.detach().cpu().numpy()[None, :]
        lam = rng.gamma(shape=np.broadcast_to(theta, mu.shape), scale=np.maximum(mu, 1e-12) / theta)
        return rng.poisson(lam).astype(np.float64)


#: likelihood -> the space the values of p(x|z) live in ("model": preprocessed values; "counts": raw counts)
SPACES = {"gaussian": GeneNormal.space, "bernoulli": LogitBernoulli.space, "nb": NegativeBinomial.space}


def observation_space(likelihood):
    """``counts`` when ``likelihood`` models raw counts (its targets are the counts), else ``model``."""
    if likelihood not in SPACES:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    return SPACES[likelihood]


@dataclass
class Inference:
    """``q(z|x)`` and the latent point the generative model decodes."""

    qz: Normal
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor


@dataclass
class LossOutput:
    """The negative ELBO of a batch: batch means and the per-sample terms."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    reconstruction_per_sample: torch.Tensor
    kl_per_sample: torch.Tensor

    def as_tuple(self):
        """``(loss, reconstruction, kl)``, the batch means."""
        return self.loss, self.reconstruction, self.kl

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


class InjectedMLP(nn.Module):
    """An MLP whose every layer also reads covariates ``c`` (scVI's ``deeply_inject_covariates``):
    a batch can shift each layer, the output layer included, so the latent point need not carry it."""

    def __init__(self, sizes, n_covariates, dropout, batch_norm):
        super().__init__()
        self.layers = nn.ModuleList(
            mlp([a + n_covariates, b], dropout, batch_norm) for a, b in zip(sizes[:-1], sizes[1:])
        )

    def forward(self, h, c):
        for layer in self.layers:
            h = layer(torch.cat([h, c], dim=-1))
        return h


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
        n_covariates=0,
        covariate_reference=None,
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
        self.n_genes, self.n_covariates = int(n_genes), int(n_covariates)
        if self.n_covariates:
            # analysis.batch: kept in the config only when set, so plain models are saved as before
            ref = covariate_reference or {"rows": [[0.0] * self.n_covariates], "weights": [1.0]}
            self.config.update(n_covariates=self.n_covariates, covariate_reference=ref)
            self.register_buffer("_ref_rows", torch.tensor(ref["rows"], dtype=torch.float32), persistent=False)
            self.register_buffer("_ref_weights", torch.tensor(ref["weights"], dtype=torch.float32),
                                 persistent=False)
        self.encoder = mlp([n_genes + self.n_covariates] + hidden, dropout, batch_norm)
        last = hidden[-1] if hidden else n_genes + self.n_covariates
        self.z_mean = nn.Linear(last, latent_dim)
        self.z_logvar = nn.Linear(last, latent_dim)
        if self.n_covariates:  # every decoder layer reads the covariates (see InjectedMLP)
            self.decoder = InjectedMLP([latent_dim] + hidden[::-1], self.n_covariates, dropout, batch_norm)
        else:
            self.decoder = mlp([latent_dim] + hidden[::-1], dropout, batch_norm)
        self.out = nn.Linear((hidden[0] if hidden else latent_dim) + self.n_covariates, n_genes)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(n_genes))
        elif likelihood == "nb":
            self.log_theta = nn.Parameter(torch.full((n_genes,), math.log(10.0)))

    @property
    def space(self):
        """The space of the values of ``p(x|z)``: ``model`` (preprocessed values) or ``counts`` (raw counts)."""
        return SPACES[self.likelihood]

    def encode(self, x):
        """Mean and (clamped) log-variance of ``q(z|x)``.

        ``x`` is the model input: the preprocessed genes, followed (with ``n_covariates``,
        analysis.batch) by the samples' covariate one-hot columns, as scVI conditions on batch.
        """
        h = self.encoder(x)
        return self.z_mean(h), self.z_logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX)

    @staticmethod
    def reparameterize(mu, logvar):
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def covariates(self, x):
        """The covariate columns of model inputs ``x`` (None for a model without covariates)."""
        return x[..., self.n_genes :] if self.n_covariates else None

    def decode(self, z, c=None):
        """Decoder output: mean (gaussian), logits (bernoulli) or log proportions (nb).

        A model with covariates decodes ``z`` with the one-hot covariates ``c`` (one row per
        latent point, or one row for all)."""
        if self.n_covariates:
            if c is None:
                raise ValueError("this model is conditioned on covariates: decode(z, c) needs them")
            c = c.to(z.dtype).expand(z.shape[0], -1)
            h = self.decoder(z, c)
            out = self.out(torch.cat([h, c.to(h.dtype)], dim=-1))
        else:
            out = self.out(self.decoder(z))
        if self.likelihood == "nb":
            # float32 under autocast too (no-op in float32): proportions of thousands of genes
            return F.log_softmax(out.float(), dim=-1)
        return out

    # ------------------------------------------------ distributions
    def inference(self, x, sample=True):
        """``q(z|x)`` as an :class:`Inference`; ``z`` is a reparameterised draw, or the mean without ``sample``."""
        mu, logvar = self.encode(x)
        # under bf16/fp16 autocast the layers run in low precision, the loss in float32
        # (.float() returns the tensor itself when it is float32 already)
        mu, logvar = mu.float(), logvar.float()
        z = self.reparameterize(mu, logvar) if sample else mu
        return Inference(qz=Normal(mu, torch.exp(0.5 * logvar), validate_args=False), mu=mu, logvar=logvar, z=z)

    def generative(self, z, library=None, c=None):
        """``p(x|z)`` (float32) for latent points ``z``; ``library``: the samples' library sizes (nb);
        ``c``: their covariates (a model with covariates)."""
        return self.px(self.decode(z, c).float(), library)

    def px(self, dec, library=None):
        """``p(x|z)`` from decoder output ``dec`` (see :meth:`decode`)."""
        if self.likelihood == "gaussian":
            return GeneNormal(dec, self.log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX))
        if self.likelihood == "bernoulli":
            return LogitBernoulli(dec)
        mu = torch.exp(dec) * library.unsqueeze(-1)
        return NegativeBinomial(mu, torch.exp(self.log_theta.clamp(LOG_THETA_MIN, LOG_THETA_MAX)))

    def loss(self, x, target, library=None, beta=1.0, sample=True):
        """The negative ELBO of a batch as a :class:`LossOutput`."""
        q = self.inference(x, sample=sample)
        recon = -self.generative(q.z, library, self.covariates(x)).log_prob(target).sum(-1)
        kl = kl_standard_normal(q.mu, q.logvar).sum(-1)
        return LossOutput(
            loss=(recon + beta * kl).mean(),
            reconstruction=recon.mean(),
            kl=kl.mean(),
            reconstruction_per_sample=recon,
            kl_per_sample=kl,
        )

    def forward(self, x, target, library=None, beta=1.0, sample=True):
        """Return (loss, reconstruction loss, KL), each the mean over the batch (see :meth:`loss`)."""
        return self.loss(x, target, library, beta=beta, sample=sample).as_tuple()

    def log_likelihood(self, target, dec, library=None):
        """Per-sample log p(target | z), summed over genes, from decoder output ``dec``."""
        return self.px(dec, library).log_prob(target).sum(-1)

    def mean(self, dec, library=None):
        """Expected value of p(x|z) from decoder output ``dec``: model-space values, or expected counts for nb."""
        return self.px(dec, library).mean

    # ------------------------------------------ numpy in, numpy out
    @torch.no_grad()
    def px_mean(self, z, library=None, c=None):
        """Mean of ``p(x|z)`` of latent points ``z`` (numpy or tensor) as a numpy array (float32).

        A model with covariates decodes with ``c``; without ``c`` it gives the batch-corrected
        mean: the average of the means decoded at every covariate combination of the training
        cohort, weighted by its frequency (scVI's ``transform_batch`` averaged over batches).
        """
        z, library = _float32(z), _float32(library)
        if not self.n_covariates or c is not None:
            return self.generative(z, library, _float32(c)).mean.numpy()
        total = None
        for row, w in zip(self._ref_rows, self._ref_weights):
            part = self.generative(z, library, row[None, :]).mean * w
            total = part if total is None else total + part
        return total.numpy()

    @torch.no_grad()
    def sample_observations(self, z, library=None, rng=None, noise=True, c=None):
        """Draws from ``p(x|z)`` with the numpy generator ``rng`` (see each distribution's ``draw``):
        model-space values (float64), or counts for nb. ``c``: the covariates (a model with them)."""
        return self.generative(_float32(z), _float32(library), _float32(c)).draw(rng, noise)

    def to_log_space(self, values, transform, library_all):
        """Values of ``p(x|z)`` (e.g. :meth:`px_mean`) -> log space before scaling (``transform``:
        :class:`genovae.preprocess.Transform`; ``library_all``: the samples' library sizes over all genes)."""
        if self.space == "counts":
            return transform.counts_to_log(values, library_all)
        return transform.unscale(values)

    def to_model_space(self, values, transform, library_all):
        """Values of ``p(x|z)`` -> the model's (preprocessed) input space (model-space values as they are)."""
        if self.space == "counts":
            return transform.scale_log(transform.counts_to_log(values, library_all))
        return values


def _float32(a):
    return None if a is None else torch.as_tensor(a, dtype=torch.float32)

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
