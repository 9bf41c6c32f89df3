"""Rule apply_model: latent space, reconstruction errors, risk genes, test metrics."""

from _bootstrap import run_rule

from genovae.apply import apply_model


def step(sm, _log):
    apply_model(
        model=sm.input.model,
        features=sm.input.features,
        split=sm.input.split,
        matrix=sm.input.matrix,
        transform=sm.input.transform,
        genes=sm.input.genes,
        out_latent=sm.output.latent,
        out_errors=sm.output.errors,
        out_risk=sm.output.risk,
        out_dims=sm.output.dims,
        out_test=sm.output.test,
        threads=sm.threads,
        **sm.params.risk,
    )


run_rule(snakemake, step)  # noqa: F821
