"""The verdict: is the selected model good enough, and if not, why and what to try.

One pure function over the run's metrics (no files, no torch). Its result is the
``verdict`` block of ``summary.json``; the end-of-run message and the report's
landing page print its ``headline`` and ``warnings`` as they are, so the three
places a user looks always say the same thing.

What it checks, each against the PCA baseline with as many components as the
latent space (the model a VAE must beat to be worth its cost):

* the retrain threshold (met or not, in how many rounds);
* reconstruction of the held-out **test** samples, which no decision looked at;
* label structure on the test samples (classifiers fitted on train + validation);
* overfitting: the VAE's generalisation gap (validation / training error) against
  PCA's on the same samples;
* inactive latent units (posterior collapse);
* a test split too small for its numbers to mean much.
"""

from __future__ import annotations

import math

from .loop import diagnose

#: test reconstruction may be this much worse than PCA's before it is a warning
RECON_TOLERANCE = 0.05
#: test label accuracy may be this much below PCA's before it is a warning (or 1.5 samples'
#: worth on a small test split, where one sample moves an accuracy by 1/n)
LABEL_TOLERANCE = 0.05
#: VAE generalisation gap (val / train error) this many times PCA's counts as overfitting
OVERFIT_FACTOR = 2.0
#: fewer test samples than this: held-out figures are flagged as uncertain
MIN_TEST = 10
#: another round's latent space separates the condition this much better (5-NN accuracy on the train and
#: validation samples) than the selected round's: a warning (the selection never looks at the labels)
ROUND_LATENT_DROP = 0.1

#: label metrics of label_metrics.tsv compared on the test samples, and their names in sentences
LABEL_METRICS = {
    "knn_accuracy": "5-NN accuracy",
    "logreg_auc": "logistic-regression ROC AUC",
    "logreg_balanced_accuracy": "logistic-regression balanced accuracy",
}
STATUS_TEXT = {
    "pass": "good enough",
    "caution": "usable with caution",
    "fail": "not good enough",
}


def _num(x):
    """A finite float, or None (missing, None or NaN)."""
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _pct(ratio):
    """'12 % worse' / '3 % better' / 'as well as' for an error ratio VAE / PCA."""
    d = (ratio - 1.0) * 100
    if abs(d) < 0.5:
        return "as well as"
    return f"{abs(d):.0f} % {'worse' if d > 0 else 'better'} than"


def _fmt(x):
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def build_verdict(
    *, selection, test_metrics, round_metrics, latent_dim, condition, direction="min", stop_reason=None,
    batch=(),
):
    """The verdict block from the selection, the test metrics and the selected round's metrics.

    ``selection``: selection.json (metric, threshold, threshold_met, rounds, selected_round,
    rounds_run, max_rounds); ``test_metrics``: test_metrics.json (val_*/test_* metrics and
    ``labels`` rows); ``round_metrics``: the selected round's metrics.json (train_* and val_*);
    ``direction``: "min" when lower values of the metric are better; ``stop_reason``: why the
    loop ended before max_rounds without passing (e.g. the privacy budget), if it did. ``batch``:
    the batch columns (analysis.batch), whose separation is not a goal: the summary's batch block
    judges them.
    """
    warnings, advice = [], []
    pca_name = f"PCA-{latent_dim}"
    metric, threshold = selection["metric"], selection["threshold"]
    selected = int(selection["selected_round"])
    value = next((r["value"] for r in selection["rounds"] if int(r["round"]) == selected), None)
    rounds_run, max_rounds = int(selection["rounds_run"]), int(selection["max_rounds"])
    met = bool(selection["threshold_met"])
    cmp = "≤" if direction == "min" else "≥"
    threshold_block = {
        "metric": metric,
        "threshold": threshold,
        "direction": "lower is better" if direction == "min" else "higher is better",
        "met": met,
        "selected_round": selected,
        "selected_value": value,
        "rounds_run": rounds_run,
        "max_rounds": max_rounds,
    }
    stop = stop_reason
    if met:
        threshold_text = (
            f"reached the threshold ({metric} {_fmt(value)} {cmp} {_fmt(threshold)}) in round {selected} "
            f"of {max_rounds}"
        )
    else:
        threshold_text = (
            f"did not reach the threshold ({metric} {cmp} {_fmt(threshold)}) in {rounds_run} "
            f"round{'s' if rounds_run != 1 else ''}; the best, round {selected}, has {_fmt(value)}"
        )
        warnings.append(f"The model {threshold_text}.")
        # why: the retrain loop's diagnosis of each round (genovae.loop.diagnose) and what the next one changed
        tried = [r for r in selection["rounds"] if r.get("diagnosis")]
        if tried:
            steps = "; ".join(
                f"round {r['round']}: {r['diagnosis']}"
                + (f" ({r['diagnosis_reason']})" if r.get("diagnosis_reason") else "")
                + (f", next round: {r['change'].split(': ', 1)[-1]}"
                   if r.get("change") and int(r["round"]) < rounds_run else "")
                for r in tried
            )
            warnings.append(f"Why the rounds fell short of the threshold: {steps}.")

    # -- held-out reconstruction against PCA
    test = {
        "n": test_metrics.get("test_n"),
        "recon_mse": _num(test_metrics.get("test_recon_mse")),
        "pca_recon_mse": _num(test_metrics.get("test_pca_recon_mse")),
        "mse_ratio_pca": _num(test_metrics.get("test_mse_ratio_pca")),
        "r2": _num(test_metrics.get("test_r2")),
    }
    ratio = test["mse_ratio_pca"]
    recon_text = None
    if ratio is not None:
        recon_text = f"on held-out test samples it reconstructs {_pct(ratio)} {pca_name}"
        if ratio > 1 + RECON_TOLERANCE:
            warnings.append(
                f"On the {test['n']} held-out test samples the VAE reconstructs {_pct(ratio)} {pca_name} "
                f"(mean squared error {test['recon_mse']:.3g} vs {test['pca_recon_mse']:.3g})."
            )
    n_test = int(test["n"] or 0)
    if n_test == 0:
        warnings.append(
            "No test samples (preprocess.split.test is 0): nothing measures the model on samples "
            "that no decision looked at."
        )
    elif n_test < MIN_TEST:
        warnings.append(
            f"Only {n_test} test samples: the held-out figures are uncertain "
            "(a larger cohort or preprocess.split.test gives firmer ones)."
        )

    # -- label structure on the test samples
    labels = {}
    for row in test_metrics.get("labels", []):
        if row.get("scope") != "test" or row.get("label") in batch:
            continue
        for key in LABEL_METRICS:
            v = _num(row.get(key))
            if v is not None:
                labels.setdefault(row["label"], {}).setdefault(key, {})[row["representation"]] = v
    label_worse = []
    tolerance = max(LABEL_TOLERANCE, 1.5 / n_test) if n_test else LABEL_TOLERANCE
    for label, per in labels.items():
        for key, reps in per.items():
            if "vae" in reps and "pca" in reps and reps["vae"] < reps["pca"] - tolerance:
                label_worse.append((label, key, reps["vae"], reps["pca"]))
    for label, key, v, p in label_worse:
        what = LABEL_METRICS[key]
        warnings.append(
            f"The latent space separates '{label}' worse than {pca_name} on the test samples "
            f"({what} {v:.2f} vs {p:.2f})."
        )

    # -- the rounds' latent spaces: rounds are selected by retrain.metric (reconstruction), which can pick one
    # that lost the condition's structure (docs/science.md, "Search")
    knn = {int(r["round"]): _num(r.get("knn_vae")) for r in selection["rounds"]}
    knn = {k: v for k, v in knn.items() if v is not None}
    if selected in knn and len(knn) > 1:
        best = max(knn, key=lambda k: (knn[k], -k))
        if knn[best] - knn[selected] >= ROUND_LATENT_DROP:
            warnings.append(
                f"Round {best}'s latent space separates '{condition}' better than the selected round {selected}'s "
                f"(5-NN accuracy on the train and validation samples {knn[best]:.2f} vs {knn[selected]:.2f}): "
                f"rounds are selected by {metric}, which does not look at the latent space; compare the rounds "
                "(model/rounds.tsv) before relying on it."
            )

    # -- overfitting: generalisation gap against PCA's on the same samples
    tr, va = _num(round_metrics.get("train_recon_mse")), _num(round_metrics.get("val_recon_mse"))
    ptr, pva = _num(round_metrics.get("train_pca_recon_mse")), _num(round_metrics.get("val_pca_recon_mse"))
    overfit = {"train_recon_mse": tr, "val_recon_mse": va, "pca_train_recon_mse": ptr, "pca_val_recon_mse": pva}
    # the ratios and the diagnosis the retrain loop acts on (genovae.loop.diagnose)
    diagnosis = diagnose(round_metrics)
    gap, pca_gap = diagnosis["evidence"]["gap"], diagnosis["evidence"]["pca_gap"]
    overfit.update(gap=gap, pca_gap=pca_gap, flag=False)
    if gap is not None and pca_gap is not None:
        overfit["gap_vs_pca"] = diagnosis["evidence"]["gap_vs_pca"]
        overfit["flag"] = bool(gap > OVERFIT_FACTOR * pca_gap)
    if overfit["flag"]:
        warnings.append(
            f"The model overfits: its validation error is {gap:.1f}× its training error "
            f"({pca_name}: {pca_gap:.1f}×)."
        )
        advice.append("a smaller model (model.hidden, model.latent_dim), more model.dropout or train.weight_decay")

    # -- posterior collapse
    active = round_metrics.get("val_active_units")
    active = int(active) if _num(active) is not None else None
    latent = {"latent_dim": int(latent_dim), "active_units": active}
    latent["inactive_units"] = None if active is None else int(latent_dim) - active
    latent["flag"] = bool(active is not None and active < max(1, math.ceil(latent_dim / 2)))
    if latent["flag"]:
        warnings.append(
            f"Only {active} of {latent_dim} latent dimensions are active (posterior collapse): "
            "the KL term switched the others off."
        )
        advice.append("a lower train.beta or a longer train.kl_warmup_epochs, or a smaller model.latent_dim")

    if ratio is not None and ratio > 1 + RECON_TOLERANCE and not overfit["flag"] and not latent["flag"]:
        # the advice follows the selected round's own diagnosis (the one the retrain loop acts on), so
        # that a model whose generalisation gap is the larger shortfall is not told to grow
        if diagnosis["diagnosis"] == "overfitting":
            advice.append("more regularisation (model.dropout, train.weight_decay) or a smaller model.hidden")
        else:
            advice.append("more training (train.epochs, train.patience) or a larger model")
    if not met or (ratio is not None and ratio > 1 + RECON_TOLERANCE):
        advice.append(f"for this cohort {pca_name} may simply be the better tool")
    if stop:
        warnings.append(f"The retrain loop stopped early: {stop}.")

    # -- status and one sentence
    poor_recon = ratio is not None and ratio > 1 + RECON_TOLERANCE
    if not met:
        status = "fail"
    elif warnings:
        status = "caution"
    else:
        status = "pass"
    parts = [f"The model {threshold_text}"]
    if recon_text:
        parts.append(recon_text)
    if overfit["flag"]:
        parts.append("it overfits")
    if latent["flag"]:
        parts.append(f"only {active} of {latent_dim} latent dimensions are active")
    if label_worse:
        parts.append(f"its latent space separates {', '.join(sorted({w[0] for w in label_worse}))} worse than {pca_name}")
    diag = next((r.get("diagnosis") for r in selection["rounds"] if int(r["round"]) == selected), None)
    if not met and diag in ("overfitting", "underfitting", "posterior_collapse", "kl_dominates"):
        parts.append(f"the selected round's diagnosis is {diag.replace('_', ' ')}")
    headline = "; ".join(parts)
    if advice and (status != "pass" or poor_recon):
        headline += "; consider " + "; or ".join(dict.fromkeys(advice))
    headline += "."
    return {
        "status": status,
        "status_text": STATUS_TEXT[status],
        "headline": headline,
        "threshold": threshold_block,
        "test": test,
        "test_labels": labels,
        "overfitting": overfit,
        "latent": latent,
        "condition": condition,
        "warnings": warnings,
        "advice": list(dict.fromkeys(advice)),
    }


def end_of_run_text(summary, run_dir, config_file):
    """The lines printed when a run finishes: the verdict, its warnings and the next commands.

    ``config_file``: the config to pass back to Snakemake (the run's saved config), so that a
    hint never silently builds another run's results.
    """
    v = summary.get("verdict") or {}
    lines = [f"genovae: run '{summary['run']}' finished. Verdict: {v.get('status_text', 'unknown')}."]
    if v.get("headline"):
        lines.append(v["headline"])
    warnings = summary.get("warnings") or []
    if warnings:
        lines.append(f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}:")
        lines.extend(f"  - {w}" for w in warnings)
    lines += [
        f"Results: {run_dir}/ (start with {run_dir}/summary.json). HTML report:",
        f"  snakemake --configfile {config_file} --report {run_dir}/report.html",
    ]
    return "\n".join(lines)
