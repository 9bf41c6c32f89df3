"""Unit tests of genovae.model: KL, likelihoods, VAE shapes, sampling, save/load."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import Normal, kl_divergence

from genovae.model import (
    LIKELIHOODS,
    VAE,
    bernoulli_log_likelihood,
    gaussian_log_likelihood,
    kl_standard_normal,
    load_model,
    nb_log_likelihood,
    save_model,
)

N, G, LATENT = 12, 30, 3


def _model(likelihood, **kw):
    torch.manual_seed(0)
    return VAE(n_genes=G, hidden=[16], latent_dim=LATENT, dropout=0.0, likelihood=likelihood, **kw)


def _data(likelihood, n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    if likelihood == "gaussian":
        x = torch.randn(n, G, generator=g)
        return x, x, torch.ones(n)
    if likelihood == "bernoulli":
        x = torch.rand(n, G, generator=g)
        return x, x, torch.ones(n)
    counts = torch.poisson(torch.full((n, G), 5.0), generator=g)
    return torch.log1p(counts), counts, counts.sum(1)


# ------------------------------------------------------------------ KL
def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(50, 4, generator=g, dtype=torch.float64) * 2
    logvar = torch.randn(50, 4, generator=g, dtype=torch.float64) * 1.5
    ours = kl_standard_normal(mu, logvar)
    ref = kl_divergence(
        Normal(mu, torch.exp(0.5 * logvar)), Normal(torch.zeros_like(mu), torch.ones_like(mu))
    )
    assert ours.shape == mu.shape
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    assert (ours >= 0).all()


def test_kl_zero_at_standard_normal():
    z = torch.zeros(3, 5)
    assert torch.equal(kl_standard_normal(z, z), torch.zeros(3, 5))
    # any deviation makes it positive
    assert (kl_standard_normal(z + 0.1, z) > 0).all()
    assert (kl_standard_normal(z, z + 0.1) > 0).all()


# ---------------------------------------------------------- likelihoods
def test_nb_log_likelihood_matches_scipy():
    x = np.array([0, 1, 2, 5, 10, 37, 200], float)
    mu = np.array([0.1, 1.0, 4.5, 50.0, 300.0])
    theta = np.array([0.5, 1.0, 10.0, 100.0])
    X, M, T = np.meshgrid(x, mu, theta, indexing="ij")
    ref = stats.nbinom.logpmf(X, n=T, p=T / (T + M))
    # float64: essentially exact (eps=1e-8 inside the logs)
    got64 = nb_log_likelihood(*(torch.as_tensor(a) for a in (X, M, T))).numpy()
    np.testing.assert_allclose(got64, ref, rtol=1e-6, atol=1e-5)
    # float32, as in training
    got32 = nb_log_likelihood(*(torch.as_tensor(a, dtype=torch.float32) for a in (X, M, T))).numpy()
    np.testing.assert_allclose(got32, ref, rtol=1e-4, atol=2e-3)


def test_gaussian_log_likelihood_matches_scipy():
    rng = np.random.default_rng(2)
    x, mean = rng.normal(size=(2, 40))
    log_scale = rng.normal(0, 0.7, size=40)
    got = gaussian_log_likelihood(*(torch.as_tensor(a) for a in (x, mean, log_scale))).numpy()
    np.testing.assert_allclose(
        got, stats.norm.logpdf(x, loc=mean, scale=np.exp(log_scale)), rtol=1e-10
    )


def test_bernoulli_log_likelihood_matches_formula():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(size=30), [0.0, 1.0, 0.0, 1.0]])
    logits = rng.normal(0, 2, size=len(x))
    p = 1 / (1 + np.exp(-logits))
    ref = x * np.log(p) + (1 - x) * np.log(1 - p)
    got = bernoulli_log_likelihood(torch.as_tensor(x), torch.as_tensor(logits)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ VAE
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_vae_shapes_and_loss(likelihood):
    model = _model(likelihood).eval()
    x, target, lib = _data(likelihood)
    mu, logvar = model.encode(x)
    assert mu.shape == (N, LATENT) and logvar.shape == (N, LATENT)
    dec = model.decode(mu)
    assert dec.shape == (N, G)
    loss, recon, kl = model(x, target, lib, beta=0.5, sample=False)
    for v in (loss, recon, kl):
        assert v.dim() == 0 and torch.isfinite(v)
    torch.testing.assert_close(loss, recon + 0.5 * kl)
    # recon / kl are the batch means of the per-sample terms
    torch.testing.assert_close(recon, -model.log_likelihood(target, dec, lib).mean())
    torch.testing.assert_close(kl, kl_standard_normal(mu, logvar).sum(-1).mean())
    # beta=0: loss is the reconstruction term
    loss0, recon0, _ = model(x, target, lib, beta=0.0, sample=False)
    torch.testing.assert_close(loss0, recon0)
    mean = model.mean(dec, lib)
    assert mean.shape == (N, G)
    if likelihood == "bernoulli":
        assert ((mean > 0) & (mean < 1)).all()
    if likelihood == "gaussian":
        assert torch.equal(mean, dec)


def test_nb_mean_positive_and_sums_to_library():
    model = _model("nb").eval()
    x, target, lib = _data("nb")
    dec = model.decode(model.encode(x)[0])
    torch.testing.assert_close(dec.exp().sum(-1), torch.ones(N))  # log proportions
    mean = model.mean(dec, lib)
    assert (mean > 0).all()
    torch.testing.assert_close(mean.sum(-1), lib, rtol=1e-5, atol=1e-3)


def test_unknown_likelihood_rejected():
    with pytest.raises(ValueError, match="likelihood"):
        VAE(n_genes=G, hidden=[16], latent_dim=LATENT, likelihood="poisson")


def test_logvar_is_clamped():
    model = _model("gaussian").eval()
    with torch.no_grad():
        model.z_logvar.bias.fill_(1e4)
    with torch.no_grad():
        _, logvar = model.encode(torch.randn(4, G))
    assert float(logvar.max()) == 8.0


# ------------------------------------------------------- reparameterize
def test_reparameterize_deterministic_when_variance_vanishes():
    mu = torch.randn(6, LATENT)
    z = VAE.reparameterize(mu, torch.full_like(mu, -100.0))
    torch.testing.assert_close(z, mu, rtol=0, atol=1e-12)


def test_reparameterize_moments():
    torch.manual_seed(4)
    mu = torch.tensor([-2.0, 0.0, 3.0])
    logvar = torch.tensor([-1.0, 0.0, 1.5])
    draws = VAE.reparameterize(mu.expand(200_000, 3), logvar.expand(200_000, 3))
    torch.testing.assert_close(draws.mean(0), mu, rtol=0, atol=0.03)
    torch.testing.assert_close(draws.var(0), logvar.exp(), rtol=0.03, atol=0)


def test_sampling_changes_forward_only_when_asked():
    model = _model("gaussian").eval()
    x, target, lib = _data("gaussian")
    a = model(x, target, lib, sample=False)[0]
    b = model(x, target, lib, sample=False)[0]
    assert torch.equal(a, b)
    torch.manual_seed(1)
    c = model(x, target, lib, sample=True)[1]
    torch.manual_seed(2)
    d = model(x, target, lib, sample=True)[1]
    assert not torch.equal(c, d)


# ------------------------------------------------------------ save/load
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_save_load_roundtrip(tmp_path, likelihood):
    model = _model(likelihood, batch_norm=True)
    x, target, lib = _data(likelihood)
    # a few training steps so that BatchNorm running stats and extra params move
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(3):
        loss = model(x, target, lib)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path = tmp_path / "sub" / "model.pt"
    path.parent.mkdir()
    save_model(path, model, {"round": 2, "genes": [f"g{i}" for i in range(G)]})
    loaded, blob = load_model(path)
    assert not loaded.training
    assert blob["round"] == 2 and blob["genes"][0] == "g0"
    assert loaded.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with torch.no_grad():
        for a, b in zip(model.encode(x), loaded.encode(x)):
            assert torch.equal(a, b)
        assert torch.equal(model.decode(model.encode(x)[0]), loaded.decode(loaded.encode(x)[0]))
        assert torch.equal(
            model(x, target, lib, sample=False)[0], loaded(x, target, lib, sample=False)[0]
        )
        assert math.isfinite(float(loaded(x, target, lib, sample=False)[0]))
