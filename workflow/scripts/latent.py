"""Rule latent: every sample's latent means and reconstruction error under the selected model."""

from _bootstrap import run_rule

from genovae.apply import latent_step


def step(sm, _log):
    latent_step(
        model=sm.input.model,
        features=sm.input.features,
        split=sm.input.split,
        matrix=sm.input.matrix,
        transform=sm.input.transform,
        out_latent=sm.output.latent,
        out_errors=sm.output.errors,
        threads=sm.threads,
    )


run_rule(snakemake, step)  # noqa: F821
