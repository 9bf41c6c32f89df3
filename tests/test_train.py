"""Unit tests of genovae.train: seeds, early stopping, KL warm-up, devices, divergence."""

import io

import numpy as np
import pytest
import torch

from genovae.dataset import Cohort
from genovae.errors import ConfigError, TrainingError
from genovae.train import evaluate_loss, resolve_device, train_vae

MODEL = dict(hidden=[16], latent_dim=3, dropout=0.0, batch_norm=True, likelihood="gaussian")


def make_cohort(n=60, g=30, rank=3, noise=0.1, seed=0, scale=1.0):
    """A z-scored low-rank gaussian cohort with a 40/10/10 split."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, g)) + noise * rng.normal(size=(n, g))
    x = (x - x.mean(0)) / x.std(0)
    x = (x * scale).astype(np.float32)
    split = np.array(["train"] * 40 + ["val"] * 10 + ["test"] * (n - 50))
    rng.shuffle(split)
    return Cohort(
        sample_ids=np.array([f"s{i}" for i in range(n)]),
        split=split,
        condition=np.array(["a", "b"] * (n // 2)),
        x=x,
        target=x,
        library=np.ones(n, np.float32),
        library_all=np.ones(n),
        genes=[f"g{j}" for j in range(g)],
    )


def train(cohort, **kw):
    args = dict(
        model_config=MODEL,
        epochs=15,
        batch_size=16,
        lr=1e-2,
        kl_warmup_epochs=3,
        patience=50,
        seed=3,
        device="cpu",
        progress=io.StringIO(),
    )
    args.update(kw)
    return train_vae(cohort, **args)


@pytest.fixture(scope="module")
def cohort():
    return make_cohort()


# ------------------------------------------------------------ determinism
def test_same_seed_same_result(cohort):
    m1, h1, i1 = train(cohort, seed=5)
    m2, h2, i2 = train(cohort, seed=5)
    assert h1.equals(h2)
    assert i1["best_epoch"] == i2["best_epoch"]
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k


def test_different_seed_different_weights(cohort):
    m1, h1, _ = train(cohort, seed=5)
    m2, h2, _ = train(cohort, seed=6)
    w1, w2 = m1.state_dict(), m2.state_dict()
    assert not torch.equal(w1["encoder.0.weight"], w2["encoder.0.weight"])
    assert not np.array_equal(h1["val_loss"].to_numpy(), h2["val_loss"].to_numpy())


def test_cohort_not_mutated(cohort):
    before = cohort.x.copy()
    train(cohort, epochs=2)
    assert np.array_equal(before, cohort.x)


# --------------------------------------------------------- early stopping
def test_early_stopping_restores_best_epoch(cohort):
    warm = 4
    model, hist, info = train(
        cohort, epochs=30, lr=3e-2, kl_warmup_epochs=warm, patience=3, beta=1.0
    )
    assert list(hist["epoch"]) == list(range(1, len(hist) + 1))
    assert info["epochs_run"] == len(hist)
    eligible = hist[hist["epoch"] >= warm]
    best_epoch = int(eligible.loc[eligible["val_loss"].idxmin(), "epoch"])
    assert info["best_epoch"] == best_epoch
    best_val = float(hist.loc[hist["epoch"] == best_epoch, "val_loss"].iloc[0])
    assert info["best_val_loss"] == pytest.approx(best_val, rel=1e-6)
    # stopped because of patience (or ran out of epochs)
    if info["epochs_run"] < 30:
        assert info["epochs_run"] - best_epoch == 3
    # the returned model is the best epoch's, not the last one
    assert not model.training
    x, t, lib = cohort.tensors("val", "cpu")
    loss, recon, kl = (float(v) for v in evaluate_loss(model, x, t, lib, beta=1.0))
    row = hist.loc[hist["epoch"] == best_epoch].iloc[0]
    assert loss == pytest.approx(row["val_loss"], rel=1e-4)
    assert recon == pytest.approx(row["val_recon"], rel=1e-4, abs=1e-4)
    assert kl == pytest.approx(row["val_kl"], rel=1e-4, abs=1e-4)


def test_early_stopping_actually_stops_and_restores_earlier_weights(cohort):
    # a tiny patience on a noisy high-lr run: it stops before the epoch limit
    model, hist, info = train(cohort, epochs=200, lr=5e-2, kl_warmup_epochs=1, patience=2)
    assert info["epochs_run"] < 200
    assert info["best_epoch"] == info["epochs_run"] - 2
    x, t, lib = cohort.tensors("val", "cpu")
    loss = float(evaluate_loss(model, x, t, lib)[0])
    assert loss == pytest.approx(hist["val_loss"].iloc[info["best_epoch"] - 1], rel=1e-4)
    assert loss < hist["val_loss"].iloc[-1]


def test_warmup_longer_than_training_keeps_last_epoch(cohort):
    _, hist, info = train(cohort, epochs=5, kl_warmup_epochs=10)
    assert info["best_epoch"] == 5
    assert info["best_val_loss"] == pytest.approx(hist["val_loss"].iloc[-1])


# ---------------------------------------------------------- KL warm-up
def test_kl_warmup_linear(cohort):
    _, hist, _ = train(cohort, epochs=8, kl_warmup_epochs=4, beta=0.5)
    np.testing.assert_allclose(
        hist["beta"].to_numpy(), [0.125, 0.25, 0.375, 0.5, 0.5, 0.5, 0.5, 0.5]
    )


def test_no_warmup_constant_beta(cohort):
    _, hist, _ = train(cohort, epochs=3, kl_warmup_epochs=0, beta=2.0)
    assert (hist["beta"] == 2.0).all()


# -------------------------------------------------------------- devices
def test_resolve_device_auto_cpu():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    dev, info = resolve_device("auto")
    assert dev == torch.device("cpu")
    assert info["used"] == "cpu" and info["requested"] == "auto"
    assert "CPU" in info["fallback"]


def test_resolve_device_cpu():
    dev, info = resolve_device("cpu")
    assert dev.type == "cpu" and info["used"] == "cpu"
    assert "fallback" not in info


def test_resolve_device_none_means_auto():
    dev, info = resolve_device(None)
    assert info["requested"] == "auto"
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0"])
def test_resolve_device_cuda_unavailable(spec):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError) as err:
        resolve_device(spec)
    assert err.value.key == "train.device"


@pytest.mark.parametrize("spec", ["gpu", "tpu", "CPU0", "mps"])
def test_resolve_device_bad_spec(spec):
    with pytest.raises(ConfigError, match="auto, cpu, cuda"):
        resolve_device(spec)


# ----------------------------------------------------------- divergence
def test_divergence_huge_lr_raises(cohort):
    with pytest.raises(TrainingError, match=r"epoch \d+"):
        train(cohort, epochs=30, lr=1e6)


def test_divergence_huge_input_raises():
    bad = make_cohort(scale=1e25)
    with pytest.raises(TrainingError, match="epoch 1"):
        train(bad, epochs=3)


def test_too_few_train_samples():
    c = make_cohort()
    c.split = np.where(np.arange(60) == 0, "train", "val")
    with pytest.raises(TrainingError, match="fewer than 2"):
        train(c, epochs=2)


# ------------------------------------------------------------- learning
def test_training_learns_low_rank_structure():
    c = make_cohort(n=60, g=30, rank=2, noise=0.05, seed=1)
    model, hist, info = train(c, epochs=120, lr=1e-2, kl_warmup_epochs=10, patience=200, beta=0.1)
    first = hist["val_recon"].iloc[0]
    best = hist.loc[hist["epoch"] == info["best_epoch"], "val_recon"].iloc[0]
    assert best < first - 15  # nats per sample over 30 genes
    # reconstruction MSE of val samples through the latent means is far below the data variance
    x = torch.as_tensor(c.x[c.mask("val")])
    with torch.no_grad():
        pred = model.decode(model.encode(x)[0]).numpy()
    mse = float(((pred - x.numpy()) ** 2).mean())
    assert mse < 0.25 * float(x.numpy().var())
