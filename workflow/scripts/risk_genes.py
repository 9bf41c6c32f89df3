"""Rule risk_genes: both risk-gene rankings of one contrast (wildcard ``contrast``: its number)."""

from _bootstrap import run_rule

from genovae.apply import risk_job

run_rule(snakemake, risk_job)  # noqa: F821
