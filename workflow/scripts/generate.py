"""Rule generate: a synthetic cohort from the selected model, and its evaluation."""

from _bootstrap import run_rule

from genovae.synthetic import generate


def step(sm, _log):
    generate(
        model=sm.input.model,
        features=sm.input.features,
        split=sm.input.split,
        matrix=sm.input.matrix,
        transform=sm.input.transform,
        out_expression=sm.output.expression,
        out_samples=sm.output.samples,
        out_metrics=sm.output.metrics,
        out_table=sm.output.table,
        threads=sm.threads,
        **sm.params.generate,
    )


run_rule(snakemake, step)  # noqa: F821
