"""Rule loadings: the genes each latent dimension moves (decoder effects per latent SD)."""

from _bootstrap import run_rule

from genovae.apply import model_files
from genovae.loadings import loadings_step


def step(sm, _log):
    loadings_step(
        **model_files(sm),
        genes=sm.input.genes,
        out_table=sm.output.loadings,
        out_plot=sm.output.loadings_plot,
        threads=sm.threads,
        **sm.params.loadings,
    )


run_rule(snakemake, step)  # noqa: F821
