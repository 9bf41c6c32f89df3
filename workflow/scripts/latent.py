"""Rule latent: every sample's latent means and reconstruction error under the selected model."""

from _bootstrap import run_rule

from genovae.apply import latent_step, model_files


def step(sm, _log):
    latent_step(
        **model_files(sm),
        out_latent=sm.output.latent,
        out_errors=sm.output.errors,
        threads=sm.threads,
    )


run_rule(snakemake, step)  # noqa: F821
