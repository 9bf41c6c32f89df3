"""The retrain loop's logic: settings of round r, metric directions, decision, selection.

Pure and torch-free (no numpy either): the Snakefile imports it at every start to walk
the checkpointed rounds, and decide/select_model need nothing else. The rule steps that
read and write the rounds' files are in :mod:`genovae.rounds`.

Strategies for round r > 1:

* ``warm_start``: start from round r-1's weights, train
  ``epochs * epochs_factor^(r-1)`` epochs at ``lr * lr_factor^(r-1)``;
* ``reseed``: train from scratch with seed ``seed + (r-1)`` (a new
  initialisation and batch order), same epochs and learning rate.

The loop ends at the first round whose decision passes, or at
``retrain.max_rounds``; the selected model is the best round by the metric
(ties: the earliest), which is the passing round when one passed.
"""

from __future__ import annotations

import math

#: metric name -> "min" (lower is better) or "max"
METRICS = {
    "val_recon_mse": "min",
    "val_r2": "max",
    "val_loss": "min",
    "val_kl": "min",
    "val_active_units": "max",
    "val_mse_ratio_pca": "min",
}

STRATEGIES = ("warm_start", "reseed")


#: the retrain plan's keys: what round_settings needs (the settings and decide's DP params carry them)
PLAN_KEYS = ("epochs", "lr", "seed", "strategy", "epochs_factor", "lr_factor")


def plan_round(round_, plan):
    """round_settings of ``round_`` from a plan dict holding (at least) :data:`PLAN_KEYS`."""
    return round_settings(round_, **{k: plan[k] for k in PLAN_KEYS})


def round_settings(round_, *, epochs, lr, seed, strategy="warm_start", epochs_factor=1.5, lr_factor=0.5):
    r = int(round_)
    if r < 1:
        raise ValueError(f"rounds start at 1, got {r}")
    if r == 1:
        return {"epochs": int(epochs), "lr": float(lr), "seed": int(seed), "warm_start": False}
    if strategy == "warm_start":
        return {
            "epochs": int(math.ceil(epochs * epochs_factor ** (r - 1))),
            "lr": float(lr * lr_factor ** (r - 1)),
            "seed": int(seed) + r - 1,
            "warm_start": True,
        }
    return {"epochs": int(epochs), "lr": float(lr), "seed": int(seed) + r - 1, "warm_start": False}


def loop_continues(decision, round_, max_rounds, best_before=None):
    """Whether another round follows ``round_`` given its decision.

    A decision whose privacy block says stop (the next round would exceed
    ``privacy.dp.total_epsilon``) ends the loop too; so does, with ``best_before``
    (the best value of the rounds before, when ``retrain.stop_without_improvement``),
    a round that is not better than it: another round of the same recipe rarely helps.
    """
    if (decision.get("privacy") or {}).get("stop"):
        return False
    if best_before is not None and not better(decision["value"], best_before, decision["metric"]):
        return False
    return (not decision["passed"]) and int(round_) < int(max_rounds)


def continues_after(decisions, max_rounds, stop_without_improvement=True):
    """Whether another round follows the last of ``decisions`` (rounds 1..k, in order).

    The one rule of the loop, for the Snakefile's walk over the checkpoints and for
    :func:`walk_rounds`: with ``stop_without_improvement`` the last round must beat the
    best of the rounds before it.
    """
    *before, last = decisions
    best = None
    if stop_without_improvement:
        for d in before:
            best = d["value"] if best is None or better(d["value"], best, d["metric"]) else best
    return loop_continues(last, len(decisions), max_rounds, best)


def walk_rounds(decisions, max_rounds, stop_without_improvement=True):
    """(rounds that run, why the loop stopped) for decisions of rounds 1, 2, ... in order.

    The loop ends at a passing round, at ``max_rounds``, when the privacy budget says stop,
    or (``stop_without_improvement``) at a round no better than the best before it.
    """
    for r, d in enumerate(decisions, start=1):
        if not continues_after(decisions[:r], max_rounds, stop_without_improvement):
            if d["passed"]:
                reason = "passed"
            elif (d.get("privacy") or {}).get("stop"):
                reason = "privacy budget"
            elif r >= int(max_rounds):
                reason = "max_rounds"
            else:
                reason = f"round {r} did not improve on the best round before it"
            return r, reason
    return len(decisions), None


def select_round(decisions):
    """Pick the best round from a list of decision dicts (each with 'round')."""
    if not decisions:
        raise ValueError("no rounds to select from")
    metric = decisions[0]["metric"]
    best = decisions[0]
    for d in decisions[1:]:
        if better(d["value"], best["value"], metric):
            best = d
    return int(best["round"])


def _finite(x):
    return x is not None and math.isfinite(x)


def decide(metrics, metric, threshold):
    """Whether ``metrics[metric]`` meets ``threshold`` in the metric's direction."""
    value = metrics[metric]
    if not _finite(value):
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
    if not _finite(b):
        return _finite(a)
    if not _finite(a):
        return False
    return a < b if METRICS[metric] == "min" else a > b
