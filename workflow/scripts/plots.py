"""Rule plots: figures for the report."""

from _bootstrap import run_rule

from genovae.plots import make_plots


def step(sm, _log):
    make_plots(
        histories=list(sm.input.histories),
        selection=sm.input.selection,
        latent=sm.input.latent,
        errors=sm.input.errors,
        risk=sm.input.risk,
        features=sm.input.features,
        samples=sm.input.samples,
        out=dict(sm.output),
        **sm.params.labels,
        **sm.params.plots,
    )


run_rule(snakemake, step)  # noqa: F821
