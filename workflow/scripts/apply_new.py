"""Rule apply_new: encode a new cohort with the saved transform and model."""

from _bootstrap import run_rule

from genovae.apply import apply_new_data


def step(sm, _log):
    apply_new_data(
        expression=sm.input.expression,
        samples=sm.input.get("samples"),
        out_latent=sm.output.latent,
        out_errors=sm.output.errors,
        out_manifest=sm.output.manifest,
        out_predictions=sm.output.get("predictions"),
        threads=sm.threads,
        **sm.params.new_data,
    )


run_rule(snakemake, step)  # noqa: F821
