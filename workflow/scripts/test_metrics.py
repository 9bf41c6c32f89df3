"""Rule test_metrics: the selected model on validation and test samples; label structure vs PCA."""

from _bootstrap import run_rule

from genovae.apply import test_metrics_job

run_rule(snakemake, test_metrics_job)  # noqa: F821
