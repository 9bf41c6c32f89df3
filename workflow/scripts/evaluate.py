"""Rule evaluate: validation metrics of one round."""

from _bootstrap import run_rule

from genovae.rounds import evaluate_job


def step(sm, _log):
    evaluate_job(sm, sm.input.model)


run_rule(snakemake, step)  # noqa: F821
