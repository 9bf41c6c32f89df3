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
        samples=sm.input.samples,
        out_labels=sm.output.labels,
        threads=sm.threads,
        **sm.params.risk,
        **sm.params.labels,
    )


run_rule(snakemake, step)  # noqa: F821
