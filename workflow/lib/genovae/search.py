"""``retrain.strategy: search``: the next round's settings drawn by Optuna from a declared space.

Each round is one trial of an Optuna study (ask/tell): its parameters are the settings the round
trained with (:data:`SPACE`: dropout, weight decay, learning rate, width of the hidden layers and,
when ``retrain.search.beta`` is set, the KL weight β) and its value is the round's ``retrain.metric``. The decide step of round r
rebuilds the study from the decisions of rounds 1..r-1 and round r's own (each holds its
settings and value) and asks a seeded sampler for round r+1's settings, which the decision
records (``next_settings``) and round r+1 trains with from scratch. So the study lives in the
rounds' ``decision.json`` files, one immutable file per checkpoint, and rebuilding it is
deterministic: the same rounds and seed give the same suggestion (a threshold change retrains
nothing). :func:`study_from_decisions` rebuilds it for a user (``optuna.visualization``).

The sampler is Optuna's TPE, seeded by ``train.seed`` and r (:func:`draw_seed`); its first
``retrain.search.startup_rounds`` trials are drawn at random from the space (round 1 is the
configured settings, not a draw). ``model.latent_dim`` is not searched: the PCA baseline of
``val_mse_ratio_pca`` and the run's latent outputs have its size.

Optuna is imported only by the functions that need it (the decide step): planning a round needs
only its decision's ``next_settings`` (genovae.loop.with_round_settings).
"""

from __future__ import annotations

import math

from .errors import ConfigError
from .loop import ADAPT_MODEL_KEYS, ADAPT_TRAIN_KEYS, METRICS, _finite, _fmt_value

#: searchable settings: name -> (log scale, integer); ``width`` is the first hidden layer's width
#: (further layers keep their ratio to it)
SPACE = {
    "dropout": (False, False),
    "weight_decay": (True, False),
    "beta": (True, False),
    "lr": (True, False),
    "width": (True, True),
}
SEARCH_KEYS = tuple(SPACE)


def declared_space(search):
    """{name: (low, high)} of the keys of ``retrain.search`` that are set (null: not searched)."""
    space = {}
    for name in SEARCH_KEYS:
        bounds = (search or {}).get(name)
        if bounds is None:
            continue
        low, high = (float(b) for b in bounds)
        log, integer = SPACE[name]
        if not low < high:
            raise ValueError(f"retrain.search.{name}: the low bound {low:g} must be below the high bound {high:g}")
        if log and low <= 0:
            raise ValueError(f"retrain.search.{name}: searched on a log scale, so its bounds must be above 0")
        if integer and (low != int(low) or high != int(high)):
            raise ValueError(f"retrain.search.{name}: widths are whole numbers")
        space[name] = (low, high)
    return space


def distributions(space):
    """Optuna distributions of a :func:`declared_space`."""
    from optuna.distributions import FloatDistribution, IntDistribution

    out = {}
    for name, (low, high) in space.items():
        log, integer = SPACE[name]
        out[name] = IntDistribution(int(low), int(high), log=log) if integer else FloatDistribution(low, high, log=log)
    return out


def trial_params(settings, space):
    """A round's settings as the study's parameters, clipped into the space.

    Clipping maps e.g. weight decay 0 (the default) to the space's low bound (1e-6 by
    default): for the sampler that is the same setting.
    """
    values = {
        "dropout": float(settings["dropout"]),
        "weight_decay": float(settings["weight_decay"]),
        "beta": float(settings["beta"]),
        "lr": float(settings["lr"]),
        "width": int(settings["hidden"][0]),
    }
    out = {}
    for name, (low, high) in space.items():
        v = min(max(values[name], low), high)
        out[name] = int(round(v)) if SPACE[name][1] else v
    return out


def apply_params(settings, params):
    """``settings`` (the keys of ADAPT_MODEL_KEYS and ADAPT_TRAIN_KEYS) with the drawn ``params``."""
    new = dict(settings)
    for name in ("dropout", "weight_decay", "beta", "lr"):
        if name in params:
            new[name] = float(params[name])
    if "width" in params:
        old = [int(h) for h in settings["hidden"]]
        width = int(params["width"])
        new["hidden"] = [width] + [max(1, int(round(h * width / old[0]))) for h in old[1:]]
    return new


def draw_seed(seed, round_):
    """The sampler's seed for the draw after round ``round_`` of a run with ``train.seed`` ``seed``.

    The study is rebuilt for every draw, so each draw needs its own seed; mixing both numbers
    (numpy's SeedSequence) keeps runs of different ``train.seed`` from sharing draws (a plain
    ``seed + round_`` would give run 1's third draw to run 3's second).
    """
    import numpy as np

    return int(np.random.SeedSequence([int(seed), int(round_)]).generate_state(1)[0])


def build_study(history, space, *, metric, seed, startup_rounds):
    """An in-memory Optuna study holding ``history``: (settings, value) of the rounds so far, in order.

    A round whose value is not finite is a failed trial. The TPE sampler is seeded with ``seed``.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=int(seed), n_startup_trials=int(startup_rounds))
    direction = "minimize" if METRICS[metric] == "min" else "maximize"
    study = optuna.create_study(direction=direction, sampler=sampler, study_name="genovae_retrain")
    dists = distributions(space)
    for settings, value in history:
        finite = _finite(value)
        study.add_trial(
            optuna.trial.create_trial(
                params=trial_params(settings, space),
                distributions=dists,
                value=float(value) if finite else None,
                state=optuna.trial.TrialState.COMPLETE if finite else optuna.trial.TrialState.FAIL,
            )
        )
    return study


def next_round(history, search, *, metric, seed):
    """Round r+1's settings from ``history`` (rounds 1..r: (settings, value)) and ``retrain.search``.

    Returns ``{"settings", "change", "changed", "search"}``, as :func:`genovae.loop.adapt` does,
    plus the draw's record (sampler, seed, trial number, parameters).
    """
    space = declared_space(search)
    if not space:
        raise ValueError("retrain.search declares no setting to search (every key is null)")
    startup = int(search.get("startup_rounds", 5))
    study = build_study(history, space, metric=metric, seed=seed, startup_rounds=startup)
    trial = study.ask(distributions(space))
    params = dict(trial.params)
    # drawn values onto round 1's settings (so further layers keep round 1's ratios, without rounding drift);
    # the change is told against the last round
    new = apply_params(history[0][0], params)
    last = history[-1][0]
    changed = {k: [last[k], new[k]] for k in (*ADAPT_MODEL_KEYS, *ADAPT_TRAIN_KEYS) if k in last and new[k] != last[k]}
    n_done = sum(_finite(v) for _, v in history)  # Optuna's TPE counts completed trials only
    how = "random draw" if n_done < startup else "TPE"
    if changed:
        change = f"search ({how}): " + ", ".join(f"{k} {_fmt_value(a)} -> {_fmt_value(b)}" for k, (a, b) in changed.items())
    else:
        change = f"search ({how}): same settings, new seed"
    record = {
        "sampler": "optuna.samplers.TPESampler",
        "seed": int(seed),
        "startup_rounds": startup,
        "trial": trial.number,
        "params": params,
        "space": {k: list(v) for k, v in space.items()},
    }
    return {"settings": new, "change": change, "changed": changed, "search": record}


def history_of(decisions):
    """(settings, value) of decisions that carry their settings, in round order."""
    out = []
    for d in sorted(decisions, key=lambda d: int(d["round"])):
        if "settings" not in d:
            raise ConfigError(
                "retrain.strategy",
                f"round {d['round']}'s decision records no settings for the search's study (it was written by an "
                "older genovae); rerun the loop (snakemake --forcerun train)",
            )
        out.append((d["settings"], d["value"] if d.get("value") is not None else math.nan))
    return out


def study_from_decisions(paths, search=None, seed=1):
    """The run's study, rebuilt from its rounds' ``decision.json`` files (e.g. for
    ``optuna.visualization.plot_slice``). ``search``: the run's ``retrain.search`` (the space;
    default: the one the decisions recorded)."""
    import json

    decisions = []
    for p in paths:
        with open(p) as fh:
            decisions.append(json.load(fh))
    if search is None:
        recorded = next((d["search"] for d in decisions if d.get("search")), None)
        if recorded is None:
            raise ValueError("no decision records a search space: pass the run's retrain.search")
        search = {**recorded["space"], "startup_rounds": recorded["startup_rounds"]}
    space = declared_space(search)
    return build_study(
        history_of(decisions),
        space,
        metric=decisions[0]["metric"],
        seed=seed,
        startup_rounds=int(search.get("startup_rounds", 5)),
    )
