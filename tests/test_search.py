"""retrain.strategy: search (genovae.search): an Optuna study rebuilt from the rounds' decisions draws
the next round's settings. Pure functions and the decide step on written metrics; no training."""

from __future__ import annotations

import json
import math

import pytest

from genovae.errors import ConfigError
from genovae.rounds import decide_round
from genovae.search import (
    SEARCH_KEYS,
    apply_params,
    declared_space,
    draw_seed,
    history_of,
    next_round,
    study_from_decisions,
    trial_params,
)
from genovae.settings import check, load_settings, validate

SIM = {"data": {"source": "simulate"}}
SETTINGS = {"hidden": [128], "dropout": 0.1, "epochs": 300, "lr": 1e-3, "weight_decay": 0.0, "beta": 1.0,
            "kl_warmup_epochs": 20, "patience": 30}
DEFAULT_SEARCH = validate({**SIM, "retrain": {"strategy": "search"}})["retrain"]["search"]


def test_declared_space_defaults_and_nulls():
    space = declared_space(DEFAULT_SEARCH)
    assert set(space) == set(SEARCH_KEYS) - {"beta"}  # beta only when asked for (its docstring says why)
    assert space["dropout"] == (0.0, 0.5) and space["width"] == (128, 512)
    assert set(declared_space({**DEFAULT_SEARCH, "lr": None})) == {"dropout", "weight_decay", "width"}
    assert declared_space({**DEFAULT_SEARCH, "beta": [0.1, 1.0]})["beta"] == (0.1, 1.0)


@pytest.mark.parametrize(
    "search, key, problem",
    [
        ({"dropout": [0.5, 0.1]}, "retrain.search.dropout", "below the high bound"),
        ({"lr": [0.01, 0.01]}, "retrain.search.lr", "below the high bound"),
        ({"dropout": None, "weight_decay": None, "beta": None, "lr": None, "width": None}, "retrain.search",
         "nothing to draw"),
    ],
)
def test_a_bad_space_is_refused_when_the_config_is_read(search, key, problem):
    cfg = validate({**SIM, "retrain": {"strategy": "search", "search": search}})
    with pytest.raises(ConfigError, match=problem) as err:
        check(cfg)
    assert err.value.key == key


@pytest.mark.parametrize("search", [{"beta": [0.0, 1.0]}, {"width": [32.5, 64]}, {"lr": [0.001]}, {"depth": [1, 2]}])
def test_the_schema_refuses_bounds_a_log_scale_or_a_width_cannot_take(search):
    with pytest.raises(ConfigError, match="retrain.search"):
        validate({**SIM, "retrain": {"strategy": "search", "search": search}})


def test_declared_space_refuses_a_log_scale_from_zero():
    with pytest.raises(ValueError, match="log scale"):
        declared_space({"weight_decay": [0.0, 0.01]})


def test_trial_params_clip_into_the_space():
    p = trial_params(SETTINGS, declared_space(DEFAULT_SEARCH))
    assert p["weight_decay"] == 1e-6  # the default 0 is the space's low bound for the sampler
    assert p["width"] == 128 and isinstance(p["width"], int)
    assert p["dropout"] == 0.1 and p["lr"] == 1e-3 and "beta" not in p
    assert trial_params(SETTINGS, declared_space({"beta": [0.1, 0.5]})) == {"beta": 0.5}
    wide = trial_params({**SETTINGS, "hidden": [2048, 512]}, declared_space(DEFAULT_SEARCH))
    assert wide["width"] == 512


def test_apply_params_scales_further_layers_with_the_first():
    new = apply_params({**SETTINGS, "hidden": [256, 64]}, {"width": 128, "dropout": 0.3})
    assert new["hidden"] == [128, 32] and new["dropout"] == 0.3
    assert {k: new[k] for k in ("epochs", "lr", "beta", "patience")} == {k: SETTINGS[k] for k in
                                                                        ("epochs", "lr", "beta", "patience")}


def test_draw_seed_separates_runs_and_rounds():
    seeds = {draw_seed(s, r) for s in range(1, 6) for r in range(1, 6)}
    assert len(seeds) == 25  # (1, 3) and (3, 1) do not share a draw, as seed + round would
    assert draw_seed(1, 2) == draw_seed(1, 2)


def test_next_round_is_deterministic_and_stays_in_the_space():
    history = [(SETTINGS, 1.2)]
    a = next_round(history, DEFAULT_SEARCH, metric="val_mse_ratio_pca", seed=draw_seed(1, 1))
    b = next_round(history, DEFAULT_SEARCH, metric="val_mse_ratio_pca", seed=draw_seed(1, 1))
    c = next_round(history, DEFAULT_SEARCH, metric="val_mse_ratio_pca", seed=draw_seed(2, 1))
    assert a == b and a["settings"] != c["settings"]
    s = a["settings"]
    assert 0.0 <= s["dropout"] <= 0.5 and 1e-6 <= s["weight_decay"] <= 1e-2 and s["beta"] == SETTINGS["beta"]
    assert 3e-4 <= s["lr"] <= 3e-3 and 128 <= s["hidden"][0] <= 512 and len(s["hidden"]) == 1
    # what is not searched stays; the change names every key that moved, as adapt's does
    assert {k: s[k] for k in ("epochs", "kl_warmup_epochs", "patience")} == {k: SETTINGS[k] for k in
                                                                            ("epochs", "kl_warmup_epochs", "patience")}
    assert a["change"].startswith("search (random draw): ")
    assert all(k in a["change"] for k in a["changed"]) and a["changed"]
    assert a["search"]["trial"] == 1 and a["search"]["params"]["width"] == s["hidden"][0]


def test_a_key_set_to_null_is_not_searched():
    out = next_round([(SETTINGS, 1.2)], {**DEFAULT_SEARCH, "lr": None, "width": None}, metric="val_mse_ratio_pca",
                     seed=3)
    assert out["settings"]["lr"] == SETTINGS["lr"] and out["settings"]["hidden"] == SETTINGS["hidden"]
    assert "lr" not in out["changed"] and "hidden" not in out["changed"]


def test_a_failed_round_is_a_failed_trial():
    out = next_round([(SETTINGS, math.nan), (SETTINGS, 1.1)], DEFAULT_SEARCH, metric="val_mse_ratio_pca", seed=3)
    assert out["search"]["trial"] == 2


def _search_on(objective, metric, seed, rounds=24):
    """Drive the study as the loop does (rebuilt for every draw) on a known objective of dropout;
    returns the dropout of every round."""
    search = {**DEFAULT_SEARCH, "weight_decay": None, "beta": None, "lr": None, "width": None}
    settings, history = dict(SETTINGS), []
    for r in range(1, rounds + 1):
        history.append((settings, objective(settings["dropout"])))
        settings = next_round(history, search, metric=metric, seed=draw_seed(seed, r))["settings"]
    return [s["dropout"] for s, _ in history]


@pytest.mark.parametrize("metric, sign", [("val_mse_ratio_pca", 1.0), ("val_r2", -1.0)])
def test_after_the_random_start_the_draws_close_in_on_the_optimum(metric, sign):
    """TPE after the 5 random rounds: the last 10 draws lie near the best dropout (0.37), at about half
    the mean distance of uniform draws on [0, 0.5] (0.154), for a lower-is-better and a higher-is-better
    metric. With the direction wrong they would head for the worst end (0: distance 0.37)."""
    for seed in (1, 2, 3):
        drawn = _search_on(lambda d: sign * (d - 0.37) ** 2, metric, seed)
        near = sum(abs(d - 0.37) for d in drawn[-10:]) / 10
        assert near < 0.08, (seed, drawn)


def _metrics_file(tmp_path, r, val, settings=SETTINGS):
    m = {
        "train_recon_mse": 0.5, "val_recon_mse": val, "train_pca_recon_mse": 1.0, "val_pca_recon_mse": 1.0,
        "val_mse_ratio_pca": val, "val_active_units": 10, "latent_dim": 10, "val_kl": 5.0, "val_recon_nll": 100.0,
        "best_epoch": 50, "epochs_run": 80, "seed": r,
        "settings": {"model": {"hidden": settings["hidden"], "dropout": settings["dropout"], "latent_dim": 10},
                     "train": {k: settings[k] for k in ("epochs", "lr", "weight_decay", "beta", "kl_warmup_epochs",
                                                         "patience")}},
    }
    path = tmp_path / f"metrics_{r}.json"
    path.write_text(json.dumps(m))
    return path


def test_decide_rebuilds_the_study_from_the_decisions_before(tmp_path):
    """Three rounds through decide_round as the workflow runs them: each decision records its settings,
    value and the next round's draw; round r+1 trains what round r drew; the study rebuilt from the
    decision files holds every round, and deciding again (e.g. a new threshold) draws the same."""
    s = load_settings({**SIM, "retrain": {"strategy": "search", "max_rounds": 3}, "train": {"seed": 4},
                       "model": {"hidden": [128]}})
    params = {**s.decide_params(), **s.search_decide_params()}
    assert params["search"]["seed"] == 4 and params["search"]["config"] == DEFAULT_SEARCH
    decisions, values = [], [1.2, 1.1, 1.15]
    for r, val in enumerate(values, start=1):
        rp = s.round_params(r, json.loads(decisions[-1].read_text()) if decisions else None)
        settings = {**{k: rp["model"][k] for k in ("hidden", "dropout")},
                    **{k: rp["train"][k] for k in ("epochs", "lr", "weight_decay", "beta", "kl_warmup_epochs",
                                                   "patience")}}
        if r > 1:
            assert settings == json.loads(decisions[-1].read_text())["next_settings"]
            assert rp["train"]["seed"] == 4 + r - 1 and rp["train"]["warm_start"] is False
        out = tmp_path / f"decision_{r}.json"
        decide_round(metrics=str(_metrics_file(tmp_path, r, val, settings)), out_decision=str(out), round_=r,
                     strategy="search", previous=[str(p) for p in decisions], **params)
        decisions.append(out)
    d3 = json.loads(decisions[-1].read_text())
    assert d3["search"]["trial"] == 3 and d3["search"]["seed"] == draw_seed(4, 3)
    assert d3["change"].startswith("search (random draw)") and d3["diagnosis"] == "overfitting"
    again = tmp_path / "again.json"
    decide_round(metrics=str(tmp_path / "metrics_3.json"), out_decision=str(again), round_=3, strategy="search",
                 previous=[str(p) for p in decisions[:2]], **{**params, "threshold": 1.01})
    assert json.loads(again.read_text())["next_settings"] == d3["next_settings"]
    study = study_from_decisions([str(p) for p in decisions])
    assert [t.value for t in study.trials] == values and study.best_value == 1.1
    assert history_of([json.loads(p.read_text()) for p in reversed(decisions)])[0][1] == 1.2


def test_search_without_its_space_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="retrain.search"):
        decide_round(metrics=str(_metrics_file(tmp_path, 1, 1.2)), out_decision=str(tmp_path / "d.json"),
                     round_=1, strategy="search", metric="val_mse_ratio_pca", threshold=1.1)
    assert not (tmp_path / "d.json").exists()


def test_round_params_of_a_search_round():
    s = load_settings({**SIM, "retrain": {"strategy": "search"}})
    with pytest.raises(ConfigError, match="decision"):
        s.round_params(2, None)
    # a decision without a draw (written under another strategy): the plan's settings until decide reruns
    old = {"round": 1, "metric": "val_mse_ratio_pca", "value": 1.2, "passed": False, "settings": SETTINGS}
    assert s.round_params(2, old) == {"model": s.model_params(), "train": s.train_params(2)}
    assert load_settings(SIM).search_decide_params() == {}


def test_a_search_runs_its_budget_unless_told_to_stop():
    """retrain.stop_without_improvement: null (the default) is true, except for search (a worse draw is
    no reason to stop); an explicit value is kept."""
    def stop(**retrain):
        return load_settings({**SIM, "retrain": retrain}).retrain.stop_without_improvement

    assert stop() is True and stop(strategy="reseed") is True and stop(strategy="warm_start") is True
    assert stop(strategy="search") is False
    assert stop(strategy="search", stop_without_improvement=True) is True
    assert stop(strategy="adaptive", stop_without_improvement=False) is False


def test_a_decision_without_settings_cannot_join_the_study():
    with pytest.raises(ConfigError, match="round 1's decision records no settings"):
        history_of([{"round": 1, "metric": "val_mse_ratio_pca", "value": 1.2}])
