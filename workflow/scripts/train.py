"""Rule train: one round of VAE training (in the merged job layout, then its evaluation)."""

from _bootstrap import run_rule, run_steps

from genovae.rounds import evaluate_job, train_round


def train(sm, log_stream):
    train_round(
        features=sm.input.features,
        split=sm.input.split,
        matrix=sm.input.matrix,
        previous=sm.input.previous or None,
        out_model=sm.output.model,
        out_history=sm.output.history,
        out_info=sm.output.info,
        round_=int(sm.wildcards.round),
        model_config=sm.params.model,
        train_config=sm.params.train,
        threads=sm.threads,
        progress=log_stream,
    )


def evaluate(sm, _log):
    """Rule evaluate's step (scripts/evaluate.py), on the model just trained."""
    evaluate_job(sm, sm.output.model)


sm = snakemake  # noqa: F821
if "metrics" in sm.output.keys():  # the merged job layout: the round's evaluation follows
    run_steps(sm, [("train", sm.log.train, train), ("evaluate", sm.log.evaluate, evaluate)])
else:
    run_rule(sm, train)
