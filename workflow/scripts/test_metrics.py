"""Rule test_metrics: the selected model on validation and test samples; label structure vs PCA."""

from _bootstrap import run_rule

from genovae.apply import model_files, test_metrics_step


def step(sm, _log):
    test_metrics_step(
        **model_files(sm),
        samples=sm.input.samples,
        out_test=sm.output.test,
        out_labels=sm.output.labels,
        threads=sm.threads,
        **sm.params.labels,
    )


run_rule(snakemake, step)  # noqa: F821
