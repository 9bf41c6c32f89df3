"""Rule evaluate: validation metrics of one round."""

from _bootstrap import run_rule

from genovae.rounds import evaluate_round


def step(sm, _log):
    evaluate_round(
        model=sm.input.model,
        features=sm.input.features,
        split=sm.input.split,
        matrix=sm.input.matrix,
        transform=sm.input.transform,
        samples=sm.input.samples,
        out_metrics=sm.output.metrics,
        round_=int(sm.wildcards.round),
        **sm.params.labels,
    )


run_rule(snakemake, step)  # noqa: F821
