"""Rule latent: every sample's latent means and reconstruction error under the selected model."""

from _bootstrap import run_rule

from genovae.apply import latent_job

run_rule(snakemake, latent_job)  # noqa: F821
