"""Rule train: one round of VAE training."""

from _bootstrap import run_rule

from genovae.rounds import train_round


def step(sm, log_stream):
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


run_rule(snakemake, step)  # noqa: F821
