"""Rule loadings: the genes each latent dimension moves (decoder effects per latent SD)."""

from _bootstrap import run_rule

from genovae.loadings import loadings_step


def step(sm, _log):
    loadings_step(
        model=sm.input.model,
        features=sm.input.features,
        split=sm.input.split,
        matrix=sm.input.matrix,
        transform=sm.input.transform,
        genes=sm.input.genes,
        out_table=sm.output.table,
        out_plot=sm.output.plot,
        threads=sm.threads,
        **sm.params.loadings,
    )


run_rule(snakemake, step)  # noqa: F821
