"""Rule loadings: the genes each latent dimension moves (decoder effects per latent SD)."""

from _bootstrap import run_rule

from genovae.loadings import loadings_job

run_rule(snakemake, loadings_job)  # noqa: F821
