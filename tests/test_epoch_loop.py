"""End-of-epoch bookkeeping shared by the plain and the DP-SGD training loops
(genovae.train.EpochHistory): history columns, divergence errors, early stopping."""

from __future__ import annotations

import io

import pytest

import genovae.train as gtrain
from genovae import privacy
from genovae.errors import TrainingError

from conftest import noise_cohort

MODEL = {"hidden": [16], "latent_dim": 3, "dropout": 0.1, "batch_norm": False, "likelihood": "gaussian"}
DP = {"epsilon": 1.5, "delta": 1e-5, "max_grad_norm": 1.0, "seed": 5}
COLUMNS = ["epoch", "beta", "train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl"]
SETTINGS = dict(model_config=MODEL, epochs=4, batch_size=8, kl_warmup_epochs=2, patience=50, seed=3,
                threads=1, device="cpu")


def dp_train(**kw):
    return privacy.train_vae_dp(noise_cohort(), dp=DP, progress=io.StringIO(), **{**SETTINGS, **kw})


def nan_validation(monkeypatch):
    real = gtrain.evaluate_loss
    monkeypatch.setattr(gtrain, "evaluate_loss", lambda *a, **k: real(*a, **k) * float("nan"))


def test_both_loops_write_the_same_history():
    _, plain, plain_info = gtrain.train_vae(noise_cohort(), progress=io.StringIO(), **SETTINGS)
    _, dp, dp_info = dp_train()
    assert list(plain.columns) == list(dp.columns) == COLUMNS
    assert plain["epoch"].tolist() == dp["epoch"].tolist() == [1, 2, 3, 4]
    assert plain["beta"].tolist() == dp["beta"].tolist() == [0.5, 1.0, 1.0, 1.0]
    for info, hist in ((plain_info, plain), (dp_info, dp)):
        assert info["epochs_run"] == len(hist)
        assert info["best_val_loss"] == pytest.approx(hist["val_loss"].iloc[info["best_epoch"] - 1], rel=0, abs=0)


@pytest.mark.parametrize("dp", [False, True])
def test_divergence_names_the_epoch_and_the_loop_s_advice(monkeypatch, dp):
    nan_validation(monkeypatch)
    with pytest.raises(TrainingError, match="training diverged at epoch 1") as err:
        dp_train() if dp else gtrain.train_vae(noise_cohort(), progress=io.StringIO(), **SETTINGS)
    assert str(err.value).endswith(
        "lower train.lr (now 0.001), raise privacy.dp.epsilon or check the input scaling"
        if dp
        else "lower train.lr (now 0.001) or check the input scaling"
    )


def test_dp_warmup_longer_than_training_keeps_last_epoch():
    _, hist, info = dp_train(epochs=3, kl_warmup_epochs=10)
    assert info["best_epoch"] == info["epochs_run"] == 3
    assert info["best_val_loss"] == pytest.approx(hist["val_loss"].iloc[-1], rel=0, abs=0)


def test_dp_early_stopping_restores_the_best_epoch():
    _, hist, info = dp_train(epochs=6, kl_warmup_epochs=1, patience=1, min_delta=1e9)
    assert len(hist) == info["epochs_run"] == 2 and info["best_epoch"] == 1
    assert info["dp"]["steps"] == 2 * info["dp"]["steps_per_epoch"]
