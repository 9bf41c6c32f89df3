"""Rule preprocess: stratified split and the train-fitted transform."""

from _bootstrap import run_rule

from genovae.preprocess import preprocess


def step(sm, _log):
    preprocess(
        sm.input.matrix,
        sm.input.samples,
        out_features=sm.output.features,
        out_split=sm.output.split,
        out_transform=sm.output.transform,
        **sm.params.preprocess,
    )


run_rule(snakemake, step)  # noqa: F821
