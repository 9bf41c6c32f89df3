"""Rule risk_table: the per-contrast risk-gene and latent-dimension tables as one table each."""

from _bootstrap import run_rule

from genovae.apply import risk_table_step


def step(sm, _log):
    risk_table_step(
        risk=sm.input.risk,
        dims=sm.input.dims,
        routes=sm.input.routes,
        out_risk=sm.output.risk,
        out_dims=sm.output.dims,
        out_routes=sm.output.routes,
    )


run_rule(snakemake, step)  # noqa: F821
