"""The retrain loop's logic: settings of round r, metric directions, decision, selection.

Pure and torch-free (no numpy either): the Snakefile imports it at every start to walk
the checkpointed rounds, and decide/select_model need nothing else. The rule steps that
read and write the rounds' files are in :mod:`genovae.rounds`.

Strategies for round r > 1:

* ``warm_start``: start from round r-1's weights, train
  ``epochs * epochs_factor^(r-1)`` epochs at ``lr * lr_factor^(r-1)``;
* ``reseed``: train from scratch with seed ``seed + (r-1)`` (a new
  initialisation and batch order), same epochs and learning rate;
* ``adaptive`` (default): :func:`diagnose` says why round r-1 fell short
  (overfitting, underfitting, posterior collapse, KL dominating) and
  :func:`adapt` changes what the diagnosis points to; round r trains from
  scratch with seed ``seed + (r-1)`` and the adapted settings
  (:func:`adaptive_round`, from round r-1's decision alone);
* ``search``: round r trains from scratch (seed + r - 1) with the settings an Optuna
  study drew from ``retrain.search`` given rounds 1..r-1 (:mod:`genovae.search`).

Model size: ``model.hidden: auto`` is resolved by :func:`auto_hidden` from the
number of training samples and genes (where the split is known: the train step).

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

STRATEGIES = ("adaptive", "search", "warm_start", "reseed")


#: the retrain plan's keys: what round_settings needs (the settings and decide's DP params carry them)
PLAN_KEYS = ("epochs", "lr", "seed", "strategy", "epochs_factor", "lr_factor")


def plan_round(round_, plan):
    """round_settings of ``round_`` from a plan dict holding (at least) :data:`PLAN_KEYS`."""
    return round_settings(round_, **{k: plan[k] for k in PLAN_KEYS})


def round_settings(round_, *, epochs, lr, seed, strategy="warm_start", epochs_factor=1.5, lr_factor=0.5):
    """Epochs, lr, seed and warm start of round ``round_`` by the plan alone.

    ``adaptive`` rounds start from these (those of ``reseed``); :func:`adaptive_round`
    then applies what round r-1's diagnosis asks for.
    """
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


# ------------------------------------------------------------------ model size
#: model.hidden: auto -- one hidden layer of 4 x the training samples, as a power of two in
#: [AUTO_MIN_WIDTH, AUTO_MAX_WIDTH], at most half the genes and at least twice the latent size
AUTO_MIN_WIDTH, AUTO_MAX_WIDTH = 32, 128


def _pow2_floor(x):
    return 1 << max(0, int(math.floor(math.log2(max(1.0, x)))))


def _pow2_ceil(x):
    return 1 << max(0, int(math.ceil(math.log2(max(1.0, x)))))


def auto_hidden(n_train, n_genes, latent_dim):
    """The encoder's hidden sizes of ``model.hidden: auto`` (the decoder mirrors them).

    One hidden layer (scVI's default: ``n_layers=1``, ``n_hidden=128``). Rule: ``width`` = the
    power of two at or below ``4 x n_train``, clipped to [32, 128], at most half the genes
    (rounded down to a power of two) and at least ``2 x latent_dim`` (rounded up). Examples
    (2,000 genes, 10 latent dimensions): 10 training samples -> [32]; 20 -> [64]; 32 or more ->
    [128]. Measured (docs/science.md, 2026-12-06): on 41-492 training samples one layer of 128
    reconstructs held-out samples better than [64] and keeps the condition in the latent space,
    where a second, narrower layer ([128, 32], [256, 64]) loses it on the simulated source.
    """
    n_train, n_genes, latent_dim = int(n_train), int(n_genes), int(latent_dim)
    floor = _pow2_ceil(2 * latent_dim)
    width = _pow2_floor(min(max(4 * n_train, AUTO_MIN_WIDTH), AUTO_MAX_WIDTH))
    return [max(min(width, _pow2_floor(max(n_genes / 2, 1))), floor)]


def resolve_hidden(hidden, n_train, n_genes, latent_dim):
    """``model.hidden`` as a list of sizes (``auto``: :func:`auto_hidden`)."""
    if isinstance(hidden, str):
        if hidden != "auto":
            raise ValueError(f"model.hidden must be a list of sizes or 'auto', got {hidden!r}")
        return auto_hidden(n_train, n_genes, latent_dim)
    return [int(h) for h in hidden]


# ------------------------------------------------------------------ diagnosis and adaptation
#: the round generalises this much worse than PCA (validation / training error, relative to PCA's)
#: or trains this much worse than PCA before either counts; below both: no clear cause
DIAGNOSIS_TOLERANCE = 1.02
DIAGNOSES = ("posterior_collapse", "kl_dominates", "overfitting", "underfitting", "fits", "unclear")

#: the settings a round's diagnosis may change: model keys, then train keys
ADAPT_MODEL_KEYS = ("hidden", "dropout")
ADAPT_TRAIN_KEYS = ("epochs", "lr", "weight_decay", "beta", "kl_warmup_epochs", "patience")
#: bounds of the adaptation (so that a long loop stays within sensible settings)
MAX_DROPOUT, MIN_WEIGHT_DECAY, MAX_WEIGHT_DECAY = 0.5, 1e-4, 1e-2
MIN_WIDTH, MAX_WIDTH, MAX_EPOCHS = 8, 1024, 5000


def _ratio(a, b):
    return a / b if _finite(a) and _finite(b) and b > 0 else None


def diagnose(metrics, epochs=None):
    """Why a round is not better: one diagnosis from its metrics (metrics.json of evaluate).

    Uses the training and validation reconstruction errors of the VAE and of PCA with as
    many components (fitted on train), the active latent units, the KL and reconstruction
    terms, and the history's ``epochs_run`` against ``epochs`` (the round's maximum;
    ``metrics["settings"]["train"]["epochs"]`` when not given). In order:

    * ``posterior_collapse``: fewer than half the latent dimensions are active;
    * ``kl_dominates``: the KL term exceeds the reconstruction term (both positive);
    * ``fits``: the VAE reconstructs validation samples at least as well as PCA;
    * otherwise the VAE's excess validation error over PCA's, ``val_ratio``, is the product of
      ``train_ratio`` (training error against PCA's: underfitting) and ``gap_vs_pca`` (the
      generalisation gap val / train against PCA's: overfitting); the larger factor names
      the diagnosis, ``overfitting`` or ``underfitting`` (``unclear`` when both are within
      :data:`DIAGNOSIS_TOLERANCE`).

    Returns ``{"diagnosis": ..., "evidence": {...}}``; pure and deterministic.
    """
    m = metrics
    tr, va = m.get("train_recon_mse"), m.get("val_recon_mse")
    ptr, pva = m.get("train_pca_recon_mse"), m.get("val_pca_recon_mse")
    train_ratio, val_ratio = _ratio(tr, ptr), _ratio(va, pva)
    gap, pca_gap = _ratio(va, tr), _ratio(pva, ptr)
    gap_vs_pca = _ratio(gap, pca_gap)
    latent_dim = m.get("latent_dim") or len(m.get("val_kl_per_dim") or []) or None
    active = m.get("val_active_units")
    if epochs is None:
        epochs = ((m.get("settings") or {}).get("train") or {}).get("epochs")
    epochs_run = m.get("epochs_run")
    kl, recon = m.get("val_kl"), m.get("val_recon_nll")
    ev = {
        "val_ratio_pca": val_ratio,
        "train_ratio_pca": train_ratio,
        "gap": gap,
        "pca_gap": pca_gap,
        "gap_vs_pca": gap_vs_pca,
        "active_units": active,
        "latent_dim": latent_dim,
        "val_kl": kl,
        "val_recon_nll": recon,
        "best_epoch": m.get("best_epoch"),
        "epochs_run": epochs_run,
        "epochs": epochs,
        "ran_out_of_epochs": bool(epochs and epochs_run and int(epochs_run) >= int(epochs)),
    }

    def out(name, why):
        return {"diagnosis": name, "reason": why, "evidence": ev}

    if latent_dim and active is not None and int(active) < max(1, math.ceil(latent_dim / 2)):
        return out("posterior_collapse", f"only {active} of {latent_dim} latent dimensions are active")
    if _finite(kl) and _finite(recon) and recon > 0 and kl > recon:
        return out("kl_dominates", f"the KL term ({kl:.3g}) exceeds the reconstruction term ({recon:.3g})")
    if val_ratio is None or train_ratio is None or gap_vs_pca is None:
        return out("unclear", "reconstruction errors are missing or not finite")
    if val_ratio <= 1.0:
        return out("fits", f"validation error {val_ratio:.3g}x PCA's: no shortfall against PCA")
    over, under = math.log(gap_vs_pca), math.log(train_ratio)
    if max(over, under) <= math.log(DIAGNOSIS_TOLERANCE):
        return out("unclear", f"validation error {val_ratio:.3g}x PCA's with no dominant cause")
    if over >= under:
        return out(
            "overfitting",
            f"validation/training error {gap:.3g}x against PCA's {pca_gap:.3g}x "
            f"(training error {train_ratio:.3g}x PCA's)",
        )
    why = f"training error {train_ratio:.3g}x PCA's (generalisation gap {gap_vs_pca:.3g}x PCA's)"
    if ev["ran_out_of_epochs"]:
        why += f"; it used all {epochs} epochs"
    return out("underfitting", why)


def _fmt_value(v):
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def adapt(settings, diagnosis):
    """The next round's settings from this round's (``settings``: the keys of
    :data:`ADAPT_MODEL_KEYS` and :data:`ADAPT_TRAIN_KEYS`) and its :func:`diagnose` result.

    * ``overfitting``: dropout + 0.1 (at most 0.5) and weight decay x 10 (at least 1e-4, at
      most 1e-2); once both are at their maximum, hidden layers half as wide (at least 8 and
      2 x latent dimensions; a second layer that cannot shrink is dropped);
    * ``underfitting``: when the round used all its epochs, twice the epochs; else hidden layers
      twice as wide (at most 1024); once they cannot grow, dropout - 0.1 and weight decay / 10
      (0 below 1e-5);

    One lever per round (regularisation before capacity: ``model.hidden: auto`` has sized the
    capacity already): two changes at once overshoot (a model half as wide *and* more
    regularised underfits what the first one overfitted).
    * ``posterior_collapse``: half the beta and a KL warm-up twice as long (at least 20 epochs);
    * ``kl_dominates``: half the beta;
    * ``fits`` / ``unclear``: the same settings (the next round differs by its seed only).

    Returns ``{"settings": new settings, "change": one sentence, "changed": {key: [old, new]}}``.
    Pure and deterministic.
    """
    s = dict(settings)
    d = diagnosis["diagnosis"]
    ev = diagnosis.get("evidence") or {}
    latent = int(ev.get("latent_dim") or 1)
    new = dict(s)
    if d == "overfitting":
        # one lever at a time: regularisation first (model.hidden: auto sized the capacity to the
        # samples already), smaller layers once dropout and weight decay are at their maximum
        dropout = round(min(MAX_DROPOUT, float(s["dropout"]) + 0.1), 6)
        wd = float(min(MAX_WEIGHT_DECAY, max(MIN_WEIGHT_DECAY, float(s["weight_decay"]) * 10)))
        if (dropout, wd) != (float(s["dropout"]), float(s["weight_decay"])):
            new["dropout"], new["weight_decay"] = dropout, wd
        else:
            floor = max(MIN_WIDTH, 2 * latent)
            old_hidden = [int(h) for h in s["hidden"]]
            hidden = [max(floor, h // 2) for h in old_hidden]
            if hidden == old_hidden and len(hidden) > 1:
                hidden = hidden[:-1]
            new["hidden"] = hidden
    elif d == "underfitting":
        old_hidden = [int(h) for h in s["hidden"]]
        hidden = [min(MAX_WIDTH, 2 * h) for h in old_hidden]
        if ev.get("ran_out_of_epochs"):
            new["epochs"] = int(min(MAX_EPOCHS, 2 * int(s["epochs"])))
        elif hidden != old_hidden:
            new["hidden"] = hidden
        else:
            new["dropout"] = round(max(0.0, float(s["dropout"]) - 0.1), 6)
            wd = float(s["weight_decay"]) / 10
            new["weight_decay"] = wd if wd >= 1e-5 else 0.0
    elif d == "posterior_collapse":
        new["beta"] = float(s["beta"]) / 2
        new["kl_warmup_epochs"] = int(max(20, 2 * int(s["kl_warmup_epochs"])))
    elif d == "kl_dominates":
        new["beta"] = float(s["beta"]) / 2
    changed = {k: [s[k], new[k]] for k in (*ADAPT_MODEL_KEYS, *ADAPT_TRAIN_KEYS) if k in s and new[k] != s[k]}
    if changed:
        change = f"{d}: " + ", ".join(f"{k} {_fmt_value(a)} -> {_fmt_value(b)}" for k, (a, b) in changed.items())
    else:
        change = f"{d}: same settings, new seed"
    return {"settings": new, "change": change, "changed": changed}


def round_adapt_settings(model_config, train_config):
    """The adaptable settings of a round, from its (resolved) model config and train params."""
    return {
        **{k: model_config[k] for k in ADAPT_MODEL_KEYS},
        **{k: train_config[k] for k in ADAPT_TRAIN_KEYS},
    }


def adaptive_round(model_config, train_config, previous_decision):
    """Model config and train params of an adaptive round r > 1.

    ``model_config``/``train_config``: round r's by the plan (``reseed``'s: from scratch,
    seed + r - 1); ``previous_decision``: round r-1's decision.json, holding its settings and
    diagnosis. The adapted keys replace the plan's; the rest (seed, batch size, ...) stay.
    """
    prev = previous_decision
    nxt = adapt(prev["settings"], {"diagnosis": prev["diagnosis"], "evidence": prev.get("evidence") or {}})
    return with_round_settings(model_config, train_config, nxt["settings"])


def with_round_settings(model_config, train_config, settings):
    """Model config and train params with ``settings`` (the keys of :data:`ADAPT_MODEL_KEYS` and
    :data:`ADAPT_TRAIN_KEYS`, e.g. a decision's ``next_settings``) in place of the plan's; the rest
    (seed, batch size, ...) stay, and the round trains from scratch."""
    model = {**model_config, **{k: settings[k] for k in ADAPT_MODEL_KEYS}}
    train = {**train_config, **{k: settings[k] for k in ADAPT_TRAIN_KEYS}, "warm_start": False}
    return model, train
