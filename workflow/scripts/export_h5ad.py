"""Rule export_h5ad: results as an AnnData .h5ad for scanpy/scverse."""

from _bootstrap import run_rule

from genovae.export import export_h5ad


def step(sm, _log):
    export_h5ad(
        matrix=sm.input.matrix,
        samples=sm.input.samples,
        genes=sm.input.genes,
        features=sm.input.features,
        latent=sm.input.latent,
        errors=sm.input.errors,
        risk=sm.input.risk,
        summary=sm.input.summary,
        out_h5ad=sm.output.h5ad,
        run=sm.params.run,
        condition=sm.params.condition,
        labels=list(sm.params.labels),
        predictions=sm.input.get("predictions") or None,
        loadings=sm.input.get("loadings") or None,
    )


run_rule(snakemake, step)  # noqa: F821
