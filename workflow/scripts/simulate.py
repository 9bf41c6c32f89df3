"""Rule simulate: generate a synthetic cohort with planted condition genes."""

from _bootstrap import run_rule

from genovae.simulate import simulate


def step(sm, _log):
    simulate(
        out_matrix=sm.output.matrix,
        out_samples=sm.output.samples,
        out_genes=sm.output.genes,
        out_manifest=sm.output.manifest,
        out_truth=sm.output.truth,
        privacy=sm.params.collect.get("privacy"),
        **sm.params.collect["simulate"],
    )


run_rule(snakemake, step)  # noqa: F821
