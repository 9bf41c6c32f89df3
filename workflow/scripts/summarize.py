"""Rule summarize: summary.json of the run."""

from _bootstrap import run_rule

from genovae.summary import summarize


def step(sm, _log):
    summarize(
        run=sm.params.run,
        manifest=sm.input.manifest,
        split=sm.input.split,
        transform=sm.input.transform,
        selection=sm.input.selection,
        test=sm.input.test,
        round_metrics=list(sm.input.round_metrics),
        latent_dim=sm.params.latent_dim,
        condition=sm.params.condition,
        risk=sm.input.risk,
        routes=sm.input.routes,
        known_genes=sm.params.known_genes,
        truth=sm.input.get("truth") or None,
        synthetic=sm.input.get("synthetic") or None,
        prediction=sm.input.get("prediction") or None,
        out_summary=sm.output.summary,
    )


run_rule(snakemake, step)  # noqa: F821
