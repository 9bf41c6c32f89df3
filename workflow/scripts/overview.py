"""Rule overview: overview.html, the verdict and headline tables of the run."""

from _bootstrap import run_rule

from genovae.overview import render_overview


def step(sm, _log):
    render_overview(
        summary=sm.input.summary,
        rounds=sm.input.rounds,
        risk=sm.input.risk,
        labels=sm.input.labels,
        out_html=sm.output.html,
        out_landing=sm.output.landing,
    )


run_rule(snakemake, step)  # noqa: F821
