"""The adaptive retrain loop (genovae.loop.diagnose / adapt / adaptive_round) and model.hidden: auto
(genovae.loop.auto_hidden): pure functions, no torch."""

from __future__ import annotations

import json

import pytest

from genovae.loop import adapt, adaptive_round, auto_hidden, diagnose, resolve_hidden
from genovae.settings import load_settings

SIM = {"data": {"source": "simulate"}}


def metrics(train=1.0, val=1.2, pca_train=1.0, pca_val=1.1, active=10, latent=10, kl=5.0, recon=100.0,
            epochs_run=60, epochs=300):
    return {
        "train_recon_mse": train, "val_recon_mse": val,
        "train_pca_recon_mse": pca_train, "val_pca_recon_mse": pca_val,
        "val_active_units": active, "latent_dim": latent, "val_kl": kl, "val_recon_nll": recon,
        "best_epoch": max(1, epochs_run - 30), "epochs_run": epochs_run,
        "settings": {"train": {"epochs": epochs}},
    }


SETTINGS = {"hidden": [256, 128], "dropout": 0.1, "epochs": 300, "lr": 1e-3, "weight_decay": 0.0, "beta": 1.0,
            "kl_warmup_epochs": 20, "patience": 30}


def test_overfitting_when_the_generalisation_gap_dominates():
    # trains better than PCA (0.5x) but generalises much worse (val/train 2.4 vs PCA's 1.1)
    d = diagnose(metrics(train=0.5, val=1.2, pca_train=1.0, pca_val=1.1))
    assert d["diagnosis"] == "overfitting"
    assert d["evidence"]["gap_vs_pca"] == pytest.approx((1.2 / 0.5) / 1.1)
    assert d["evidence"]["train_ratio_pca"] == pytest.approx(0.5)


def test_underfitting_when_the_training_error_dominates():
    d = diagnose(metrics(train=1.4, val=1.6, pca_train=1.0, pca_val=1.1))
    assert d["diagnosis"] == "underfitting" and not d["evidence"]["ran_out_of_epochs"]
    d = diagnose(metrics(train=1.4, val=1.6, epochs_run=300, epochs=300))
    assert d["diagnosis"] == "underfitting" and d["evidence"]["ran_out_of_epochs"]
    assert "all 300 epochs" in d["reason"]


def test_collapse_kl_fits_and_unclear():
    assert diagnose(metrics(active=4))["diagnosis"] == "posterior_collapse"
    assert diagnose(metrics(kl=200.0, recon=100.0))["diagnosis"] == "kl_dominates"
    assert diagnose(metrics(kl=200.0, recon=-100.0))["diagnosis"] != "kl_dominates"  # Gaussian NLL < 0
    assert diagnose(metrics(train=0.9, val=1.0, pca_val=1.1))["diagnosis"] == "fits"
    assert diagnose(metrics(train=1.005, val=1.11, pca_val=1.1))["diagnosis"] == "unclear"
    assert diagnose({"val_recon_mse": float("nan")})["diagnosis"] == "unclear"


def test_adapt_overfitting_regularises_then_shrinks():
    d = diagnose(metrics(train=0.5, val=1.2))
    nxt = adapt(SETTINGS, d)
    s = nxt["settings"]
    assert s["dropout"] == pytest.approx(0.2) and s["weight_decay"] == 1e-4 and s["hidden"] == [256, 128]
    assert s["epochs"] == 300 and s["lr"] == 1e-3 and s["beta"] == 1.0
    assert nxt["change"] == "overfitting: dropout 0.1 -> 0.2, weight_decay 0 -> 0.0001"
    assert set(nxt["changed"]) == {"dropout", "weight_decay"}
    # regularisation at its maximum: the layers shrink, a second layer that cannot is dropped
    strong = {**SETTINGS, "dropout": 0.5, "weight_decay": 0.01}
    assert adapt(strong, d)["settings"]["hidden"] == [128, 64]
    assert adapt({**strong, "hidden": [20, 20]}, d)["settings"]["hidden"] == [20]
    assert adapt({**SETTINGS, "dropout": 0.45, "weight_decay": 0.005}, d)["settings"]["dropout"] == 0.5


def test_adapt_underfitting_collapse_and_kl():
    s = adapt(SETTINGS, diagnose(metrics(train=1.4, val=1.6)))["settings"]
    assert s["hidden"] == [512, 256] and s["dropout"] == 0.1 and s["epochs"] == 300
    wide = {**SETTINGS, "hidden": [1024], "dropout": 0.1, "weight_decay": 1e-3}
    s = adapt(wide, diagnose(metrics(train=1.4, val=1.6)))["settings"]
    assert s["hidden"] == [1024] and s["dropout"] == 0.0 and s["weight_decay"] == pytest.approx(1e-4)
    s = adapt(SETTINGS, diagnose(metrics(train=1.4, val=1.6, epochs_run=300)))["settings"]
    assert s["epochs"] == 600 and s["hidden"] == [256, 128]
    s = adapt(SETTINGS, diagnose(metrics(active=2)))["settings"]
    assert s["beta"] == 0.5 and s["kl_warmup_epochs"] == 40
    s = adapt(SETTINGS, diagnose(metrics(kl=500.0)))["settings"]
    assert s["beta"] == 0.5 and s["kl_warmup_epochs"] == 20
    same = adapt(SETTINGS, diagnose(metrics(train=0.9, val=1.0)))
    assert same["settings"] == SETTINGS and same["change"] == "fits: same settings, new seed"


def test_adapt_is_pure_and_deterministic():
    d = diagnose(metrics(train=0.5, val=1.2))
    before = json.dumps(SETTINGS, sort_keys=True)
    assert adapt(SETTINGS, d) == adapt(json.loads(before), json.loads(json.dumps(d)))
    assert json.dumps(SETTINGS, sort_keys=True) == before


@pytest.mark.parametrize(
    "n_train, n_genes, latent, hidden",
    [
        (40, 2000, 10, [128]),
        (58, 2000, 10, [128]),
        (100, 2000, 10, [128]),
        (500, 2000, 10, [128]),
        (50000, 2000, 10, [128]),  # one layer of 128 (scVI's default) however many samples
        (20, 2000, 10, [64]),  # 4 x training samples below 32 of them...
        (10, 2000, 10, [32]),  # ...and at least 32
        (40, 80, 4, [32]),  # at most half the genes...
        (40, 30, 4, [8]),  # ...but at least 2 x latent_dim
        (300, 2000, 100, [256]),
    ],
)
def test_auto_hidden(n_train, n_genes, latent, hidden):
    assert auto_hidden(n_train, n_genes, latent) == hidden


def test_resolve_hidden():
    assert resolve_hidden("auto", 40, 2000, 10) == [128]
    assert resolve_hidden([7, 3], 40, 2000, 10) == [7, 3]
    with pytest.raises(ValueError):
        resolve_hidden("big", 40, 2000, 10)


def decision_of_round_1(diag_metrics):
    from genovae.rounds import round_diagnosis

    m = {**diag_metrics, "settings": {"model": {"hidden": [64], "latent_dim": 10, "dropout": 0.1,
                                                "batch_norm": True, "likelihood": "gaussian"},
                                      "train": {**{k: SETTINGS[k] for k in SETTINGS if k not in ("hidden", "dropout")},
                                                "seed": 1, "warm_start": False}}}
    return {"round": 1, **round_diagnosis(m, "adaptive")}


def test_settings_round_params_adaptive():
    s = load_settings({**SIM, "train": {"seed": 5}})
    assert s.retrain.strategy == "adaptive" and s.model.hidden == "auto"
    r1 = s.round_params(1)
    assert r1["model"]["hidden"] == "auto" and r1["train"]["seed"] == 5
    dec = decision_of_round_1(metrics(train=0.5, val=1.2))
    assert dec["diagnosis"] == "overfitting" and dec["change"].startswith("overfitting: dropout 0.1 -> 0.2")
    r2 = s.round_params(2, json.loads(json.dumps(dec)))
    assert r2["model"]["hidden"] == [64] and r2["model"]["dropout"] == pytest.approx(0.2)
    assert r2["train"]["weight_decay"] == 1e-4 and r2["train"]["seed"] == 6 and r2["train"]["warm_start"] is False
    assert {k: v for k, v in r2["train"].items() if k not in ("weight_decay", "seed")} == {
        k: v for k, v in s.train_params(2).items() if k not in ("weight_decay", "seed")
    }
    assert r2 == dict(zip(("model", "train"), adaptive_round(s.model_params(), s.train_params(2), dec)))
    with pytest.raises(Exception, match="decision"):
        s.round_params(2, None)
    # a decision written before adaptive rounds existed: the plan's settings (decide reruns and writes one)
    old = {"round": 1, "metric": "val_mse_ratio_pca", "value": 1.2, "passed": False}
    assert s.round_params(2, old) == {"model": s.model_params(), "train": s.train_params(2)}


def test_other_strategies_ignore_the_decision():
    for strategy in ("warm_start", "reseed"):
        s = load_settings({**SIM, "retrain": {"strategy": strategy}, "model": {"hidden": [256, 128]}})
        assert s.round_params(2) == {"model": s.model_params(), "train": s.train_params(2)}
