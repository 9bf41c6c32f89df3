"""Rule risk_genes: both risk-gene rankings of one contrast (wildcard ``contrast``: its number)."""

from _bootstrap import run_rule

from genovae.apply import model_files, risk_step


def step(sm, _log):
    risk_step(
        **model_files(sm),
        genes=sm.input.genes,
        contrast=int(sm.wildcards.contrast),
        out_risk=sm.output.risk,
        out_dims=sm.output.dims,
        out_route=sm.output.route,
        threads=sm.threads,
        **sm.params.risk,
    )


run_rule(snakemake, step)  # noqa: F821
