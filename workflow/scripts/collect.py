"""Rule collect: validate the expression matrix and sample sheet."""

from _bootstrap import run_rule

from genovae.collect import collect


def step(sm, _log):
    p = sm.params.collect
    collect(
        sm.input.expression,
        sm.input.get("samples"),
        genes=sm.input.get("genes"),
        out_matrix=sm.output.matrix,
        out_samples=sm.output.samples,
        out_genes=sm.output.genes,
        out_manifest=sm.output.manifest,
        orientation=p["orientation"],
        value_type=p["value_type"],
        condition=p["condition"],
        case=p["case"],
        control=p["control"],
        split=p["split"],
        format=p["format"],
        layer=p["layer"],
        sha256=p["sha256"],
        origins=p["origins"],
        download_sizes=p.get("download_sizes"),
        privacy=p.get("privacy"),
        intensity_floor=p["intensity_floor"],
        intensity_ceiling=p["intensity_ceiling"],
    )


run_rule(snakemake, step)  # noqa: F821
