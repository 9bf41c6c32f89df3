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


# ------------------------------------------------- the model as distributions
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_inference_is_the_posterior_normal(likelihood):
    model = _model(likelihood).eval()
    x, _, _ = _data(likelihood)
    q = model.inference(x, sample=False)
    mu, logvar = model.encode(x)
    assert isinstance(q.qz, Normal)
    assert torch.equal(q.qz.loc, mu) and torch.equal(q.z, mu)
    torch.testing.assert_close(q.qz.scale, torch.exp(0.5 * logvar))
    # the closed-form KL of the loss is torch's KL(q(z|x) || N(0, I))
    prior = Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(kl_standard_normal(q.mu, q.logvar), kl_divergence(q.qz, prior), rtol=1e-5, atol=1e-6)
    torch.manual_seed(3)
    assert q.qz.rsample().shape == model.inference(x).z.shape == (N, LATENT)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_generative_log_prob_is_the_loss_reconstruction_term(likelihood):
    model = _model(likelihood).eval()
    x, target, lib = _data(likelihood)
    out = model.loss(x, target, lib, beta=0.7, sample=False)
    px = model.generative(model.inference(x, sample=False).z, lib)
    assert isinstance(px, torch.distributions.Distribution)
    assert torch.equal(-px.log_prob(target).sum(-1), out.reconstruction_per_sample)
    assert out.reconstruction_per_sample.shape == out.kl_per_sample.shape == (N,)
    assert torch.equal(out.reconstruction, out.reconstruction_per_sample.mean())
    assert torch.equal(out.kl, out.kl_per_sample.mean())
    assert torch.equal(out.loss, (out.reconstruction_per_sample + 0.7 * out.kl_per_sample).mean())
    # forward() is the same numbers as a tuple
    assert all(torch.equal(a, b) for a, b in zip(model(x, target, lib, beta=0.7, sample=False), out.as_tuple()))


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_px_mean_is_what_evaluate_and_risk_used_before(likelihood):
    """The mean of p(x|z): the decoder's value (gaussian), its sigmoid (bernoulli), proportions x library (nb)."""
    model = _model(likelihood).eval()
    x, _, lib = _data(likelihood)
    with torch.no_grad():
        z = model.encode(x)[0]
        dec = model.decode(z)
        before = {"gaussian": dec, "bernoulli": torch.sigmoid(dec), "nb": torch.exp(dec) * lib.unsqueeze(-1)}
        assert torch.equal(model.generative(z, lib).mean, before[likelihood])
    assert np.array_equal(model.px_mean(z.numpy(), lib.numpy()), before[likelihood].numpy())


def test_torch_distributions_agree_with_the_hand_written_likelihoods():
    """GeneNormal and NegativeBinomial keep the loss's log-likelihoods; torch's own give the same densities."""
    model = _model("nb").eval()
    x, target, lib = _data("nb")
    with torch.no_grad():
        px = model.generative(model.encode(x)[0], lib)
        ref = torch.distributions.NegativeBinomial(total_count=px.theta.expand_as(px.mu),
                                                   logits=torch.log(px.mu) - torch.log(px.theta))
        torch.testing.assert_close(px.log_prob(target), ref.log_prob(target), rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(px.variance, ref.variance, rtol=1e-4, atol=1e-4)
        gauss = _model("gaussian").eval()
        xg, tg, lg = _data("gaussian")
        pg = gauss.generative(gauss.encode(xg)[0], lg)
        torch.testing.assert_close(pg.log_prob(tg), Normal(pg.loc, pg.scale).log_prob(tg), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_sampling_shapes_and_support(likelihood):
    model = _model(likelihood).eval()
    x, _, lib = _data(likelihood)
    torch.manual_seed(0)
    with torch.no_grad():
        z = model.encode(x)[0]
        px = model.generative(z, lib)
        one, three = px.sample(), px.sample((3,))
    assert one.shape == (N, G) and three.shape == (3, N, G)
    if likelihood != "gaussian":  # counts (nb) or 0/1 (bernoulli)
        assert (one >= 0).all() and torch.equal(one, one.round())
    rng = np.random.default_rng(0)
    for noise in (True, False):
        obs = model.sample_observations(z.numpy(), lib.numpy(), rng, noise=noise)
        assert obs.shape == (N, G)
    mean = model.px_mean(z, lib)
    if likelihood == "bernoulli":  # scaled values: the mean, not coin flips
        assert np.array_equal(model.sample_observations(z, lib, rng), mean.astype(np.float64))
    if likelihood == "nb":
        assert np.array_equal(model.sample_observations(z, lib, rng, noise=False), np.rint(mean))
        assert (model.sample_observations(z, lib, rng) >= 0).all()
    if likelihood == "gaussian":
        assert np.array_equal(model.sample_observations(z, lib, rng, noise=False), mean.astype(np.float64))


def test_values_of_p_x_go_back_to_model_and_log_space():
    from genovae.preprocess import Transform

    t = Transform(value_type="counts", log_base=float(np.e), genes=[f"g{j}" for j in range(G)],
                  center=[0.5] * G, scale=[2.0] * G, library_size_target=1e4)
    lib_all = np.full(N, 2e4)
    values = np.random.default_rng(1).poisson(5.0, size=(N, G)).astype(np.float32)
    nb, gauss = _model("nb"), _model("gaussian")
    assert nb.space == "counts" and gauss.space == "model" == _model("bernoulli").space
    np.testing.assert_array_equal(nb.to_model_space(values, t, lib_all),
                                  t.scale_log(t.counts_to_log(values, lib_all)))
    np.testing.assert_array_equal(nb.to_log_space(values, t, lib_all), t.counts_to_log(values, lib_all))
    assert gauss.to_model_space(values, t, lib_all) is values
    np.testing.assert_array_equal(gauss.to_log_space(values, t, lib_all), t.unscale(values))


def test_no_module_but_model_branches_on_the_likelihood():
    """The likelihood's maths lives in genovae.model (in addition to the behavioural tests above)."""
    import re
    from pathlib import Path

    import genovae

    lib = Path(genovae.__file__).parent
    branch = re.compile(r"likelihood\s*(==|!=|\bin\b|\bnot in\b)|\blog_theta\b|\blog_scale\b|clamp\(-(7|10)\.0")
    # the modules that compute with models (they use torch); settings may still be checked by the likelihood's name
    maths = [p for p in sorted(lib.glob("*.py")) if p.name != "model.py" and "torch" in p.read_text()]
    assert {"synthetic.py", "evaluate.py", "risk.py", "dataset.py", "train.py"} <= {p.name for p in maths}
    offenders = [f"{p.name}:{i}" for p in maths
                 for i, line in enumerate(p.read_text().splitlines(), 1) if branch.search(line)]
    assert not offenders, offenders
