"""The retrain loop's rule steps: train, evaluate and decide round r, select the model.

Each step reads and writes the round's files; the logic (round settings, metric
directions, decision, selection) is :mod:`genovae.loop`, which is torch-free.
"""

from __future__ import annotations

from .errors import ConfigError
from .loop import select_round, walk_rounds

# torch and scikit-learn are imported inside the functions that need them

def train_round(
    *,
    features,
    split,
    matrix,
    previous,
    out_model,
    out_history,
    out_info,
    round_,
    model_config,
    train_config,
    threads=1,
    progress=None,
):
    """Train round ``round_`` (optionally warm-started) and write model, history, info."""
    import logging
    import os

    import torch

    from . import io
    from .dataset import load_cohort
    from .model import save_model
    from .plausible import check_latent_dim
    from .train import train_vae

    log = logging.getLogger(__name__)
    cfg = dict(train_config)
    warm = cfg.pop("warm_start", False)
    dp = cfg.pop("dp", None)  # privacy.dp.enabled: DP-SGD (genovae.privacy)
    init_state = None
    if warm and previous:
        blob = torch.load(previous, map_location="cpu", weights_only=True)
        init_state = blob["state_dict"]
        # the weights are trained already: annealing the KL term from zero again would undo the
        # regularisation the previous round reached (its rounds stopped early 20-47 epochs in)
        cfg["kl_warmup_epochs"] = 0
        log.info("round %d warm-starts from %s (no KL warm-up)", round_, previous)
    cohort = load_cohort(features, split, matrix, model_config["likelihood"])
    # checked here, not in preprocess: a model setting must not rerun preprocessing
    check_latent_dim(len(cohort.genes), model_config.get("latent_dim"), features)
    # kept beside the outputs (not an output itself, so Snakemake leaves it after a
    # killed job): a rerun with --rerun-incomplete resumes from it
    checkpoint = os.path.join(os.path.dirname(out_model), "train_checkpoint.pt")
    plan = None  # the plan of train.precision
    if dp:
        from .privacy import DPPlan

        plan = DPPlan(dp)
    # one trainer per round: a job orphaned by a killed Snakemake must not race a rerun's job
    with io.exclusive_lock(os.path.join(os.path.dirname(out_model), ".train.lock"), f"training round {round_}"):
        model, history, info = train_vae(
            cohort,
            plan=plan,
            model_config=model_config,
            init_state=init_state,
            threads=threads,
            progress=progress,
            checkpoint=checkpoint,
            **cfg,
        )
    info.update(round=int(round_), warm_start=bool(warm and previous), settings=train_config)
    history.insert(0, "round", int(round_))
    io.write_tsv(out_history, history)
    io.write_json(out_info, info)
    extra = {"round": int(round_), "genes": cohort.genes, "info": io.to_jsonable(info)}
    if cohort.covariate_spec:  # analysis.batch: the levels apply_new must map new samples to
        extra["covariates"] = cohort.covariate_spec
    save_model(out_model, model, extra)
    if os.path.exists(checkpoint):
        os.unlink(checkpoint)
    log.info(
        "round %d: %d epochs, best epoch %d, best val loss %.4g, device %s",
        round_,
        info["epochs_run"],
        info["best_epoch"],
        info["best_val_loss"],
        info["device"]["used"],
    )
    return info


def evaluate_job(sm, model):
    """Rule evaluate's step, from a job's ``snakemake`` object: round ``sm.wildcards.round``'s
    ``model`` (rule evaluate's input; in the merged job layout, rule train's output)."""
    evaluate_round(
        model=model,
        features=sm.input.features,
        split=sm.input.split,
        matrix=sm.input.matrix,
        transform=sm.input.transform,
        samples=sm.input.samples,
        out_metrics=sm.output.metrics,
        round_=int(sm.wildcards.round),
        **sm.params.labels,
    )


def evaluate_round(
    *, model, features, split, matrix, transform, samples, out_metrics, round_, condition, labels=(), batch=()
):
    from . import io
    from .dataset import load_cohort, load_labels
    from .evaluate import encode, fit_pca, split_metrics
    from .labels import compare
    from .model import load_model
    from .preprocess import Transform

    vae, blob = load_model(model)
    t = Transform.load(transform)
    cohort = load_cohort(features, split, matrix, vae.likelihood)
    pca = fit_pca(cohort, vae.config["latent_dim"])
    metrics = {"round": int(round_)}
    metrics.update(split_metrics(vae, cohort, t, "train", pca=pca))
    metrics.update(split_metrics(vae, cohort, t, "val", pca=pca))
    # label structure on the samples the loop may look at (train + validation, never test)
    reps = {"vae": encode(vae, cohort.inputs())[0], "pca": pca.transform(cohort.x)}
    lab = load_labels(samples, cohort.sample_ids, condition, labels)
    metrics["labels"] = compare(reps, lab, mask=~cohort.mask("test"), batch=batch, groups=lab[condition])
    metrics["condition"] = condition
    metrics["best_epoch"] = blob["info"]["best_epoch"]
    metrics["epochs_run"] = blob["info"]["epochs_run"]
    metrics["seed"] = blob["info"]["seed"]
    metrics["latent_dim"] = int(vae.config["latent_dim"])
    # what the round trained with (model.hidden resolved): the diagnosis and the next adaptive round read it
    train_settings = blob["info"].get("settings") or {}
    metrics["settings"] = {
        # the covariates follow from the data (analysis.batch), not from the round's settings
        "model": {k: v for k, v in vae.config.items() if k not in ("n_genes", "n_covariates", "covariate_reference")},
        "train": {k: v for k, v in train_settings.items() if k != "dp"},
    }
    io.write_json(out_metrics, metrics)
    return metrics


def round_diagnosis(m, strategy="adaptive", search=None):
    """The decision's diagnosis block from a round's metrics: why it falls short
    (genovae.loop.diagnose), the settings it trained with and, with ``adaptive``, what the
    next round changes (genovae.loop.adapt). None of it depends on the threshold.

    With ``search`` (``{"history": (settings, value) of the rounds before, "config":
    retrain.search, "metric", "seed"}``) the next round's settings are the study's draw
    (genovae.search.next_round) from those rounds and this one."""
    from .loop import ADAPT_TRAIN_KEYS, adapt, diagnose, round_adapt_settings

    d = diagnose(m)
    block = {"diagnosis": d["diagnosis"], "diagnosis_reason": d["reason"], "evidence": d["evidence"]}
    st = m.get("settings") or {}
    if st.get("model") and all(k in (st.get("train") or {}) for k in ADAPT_TRAIN_KEYS):
        block["settings"] = round_adapt_settings(st["model"], st["train"])
        if strategy == "adaptive":
            nxt = adapt(block["settings"], d)
            block["change"] = nxt["change"]
            block["next_settings"] = nxt["settings"]
        elif strategy == "search":
            from .search import next_round

            history = [*search["history"], (block["settings"], search["value"])]
            nxt = next_round(history, search["config"], metric=search["metric"], seed=search["seed"])
            block["change"] = nxt["change"]
            block["next_settings"] = nxt["settings"]
            block["search"] = nxt["search"]
        elif strategy == "warm_start":
            block["change"] = "warm_start: continue from this round's weights, more epochs at a lower lr"
        else:
            block["change"] = "reseed: the same settings from a new initialisation"
    return block


def latent_knn(m):
    """The condition's leave-one-out 5-NN accuracy on the train + validation samples in the round's
    latent space and in PCA's (its metrics.json ``labels``), as ``{"latent_knn": {...}}``; never used
    to decide or select, recorded so that the rounds table shows what each round's latent space keeps."""
    rows = m.get("labels") or []
    label = m.get("condition") or (rows[0].get("label") if rows else None)
    mine = [r for r in rows if r.get("label") == label]
    if not mine:
        return {}
    per = {r.get("representation"): r.get("knn_accuracy") for r in mine}
    return {"latent_knn": {"label": label, "vae": per.get("vae"), "pca": per.get("pca"), "n": mine[0].get("n")}}


def decide_round(
    *, metrics, out_decision, round_, metric, threshold, privacy=None, infos=(), strategy="adaptive",
    previous=(), search=None,
):
    """Write round ``round_``'s decision with its diagnosis (and, with ``adaptive`` or ``search``,
    the next round's change); with DP (``privacy``) also its privacy budget block.

    ``search`` (strategy ``search``): the run's ``{"config": retrain.search, "seed": train.seed}``;
    ``previous``: the decisions of rounds 1..round_-1, the study's earlier trials. The draw is
    seeded by ``seed`` and ``round_`` (genovae.search.draw_seed)."""
    import logging

    from . import io
    from .loop import decide

    m = io.read_json(metrics)
    decision = {"round": int(round_), **decide(m, metric, threshold), "seed": m.get("seed")}
    ctx = None
    if strategy == "search":
        from .search import draw_seed, history_of

        if search is None:
            raise ConfigError("retrain.search", "strategy 'search' needs the search space (retrain.search)")
        ctx = {
            "history": history_of([io.read_json(p) for p in previous]),
            "config": search["config"],
            "metric": metric,
            "seed": draw_seed(search["seed"], round_),
            "value": decision["value"],
        }
    decision.update(round_diagnosis(m, strategy, ctx))
    decision.update(latent_knn(m))
    if privacy:
        from .privacy import budget_decision

        if decision.get("next_settings"):
            # adaptive and search rounds: the next round's epochs are its own (they do not compound factors)
            privacy = {**privacy, "epochs": decision["next_settings"]["epochs"]}
        decision["privacy"] = budget_decision(
            list(infos),
            round_=round_,
            passed=decision["passed"],
            max_rounds=privacy["max_rounds"],
            settings=privacy,
        )
    io.write_json(out_decision, decision)
    logging.getLogger(__name__).info(
        "round %d: %s = %.4g (%s), threshold %g: %s; diagnosis %s (%s)%s",
        round_,
        metric,
        decision["value"],
        decision["direction"],
        threshold,
        "passed" if decision["passed"] else "not met",
        decision["diagnosis"],
        decision["diagnosis_reason"],
        f"; a next round would change {decision['change']}" if decision.get("change") else "",
    )
    return decision


def select_model(
    *, decisions, models, infos, out_model, out_selection, out_rounds, metric, threshold, max_rounds,
    stop_without_improvement=True,
):
    """Copy the selected round's model to ``out_model``; its training info comes from the round's
    ``train_info.json`` (``infos``, in round order), so this job never imports torch."""
    import shutil

    import pandas as pd

    from . import io

    ds = [io.read_json(p) for p in decisions]
    for d in ds:
        if d["metric"] != metric or d["threshold"] != threshold:
            raise ConfigError("retrain", "a round decision is stale (metric or threshold changed); rerun")
    selected = select_round(ds)
    by_round = {int(d["round"]): (m, i) for d, m, i in zip(ds, models, infos)}
    src, info_path = by_round[selected]
    with io.atomic_path(out_model) as tmp:
        shutil.copyfile(src, tmp)
    info = io.read_json(info_path)
    met = any(d["passed"] for d in ds)
    _, stop = walk_rounds(ds, max_rounds, stop_without_improvement)
    selection = {
        "metric": metric,
        "threshold": threshold,
        "max_rounds": int(max_rounds),
        "rounds_run": len(ds),
        "selected_round": selected,
        "threshold_met": met,
        # why the loop ended before max_rounds without passing (None: it passed or ran them all)
        "loop_stop_reason": None if stop in (None, "passed", "max_rounds") else stop,
        "rounds": [
            {
                **{k: d.get(k) for k in ("round", "metric", "value", "passed", "seed", "diagnosis", "diagnosis_reason", "change")},
                **({"epsilon": d["privacy"]["epsilon"]} if d.get("privacy") else {}),
                **(
                    {"knn_vae": d["latent_knn"]["vae"], "knn_pca": d["latent_knn"]["pca"]}
                    if d.get("latent_knn") else {}
                ),
            }
            for d in ds
        ],
        **({"privacy": ds[-1]["privacy"]} if ds[-1].get("privacy") else {}),
        "device": info["device"],
        "train_info": info,
    }
    last = selection["rounds"][-1]
    if last.get("change"):  # decided, never applied: no round followed (it passed, or the loop ended)
        last["change"] += " (not run: no further round)"
    io.write_json(out_selection, selection)
    table = pd.DataFrame(selection["rounds"])
    table["selected"] = table["round"] == selected
    io.write_tsv(out_rounds, table)
    return selection
