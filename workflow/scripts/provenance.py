"""Rule provenance: provenance.json (config, inputs, git, versions, device, seeds, job times)."""

from pathlib import Path

from _bootstrap import run_rule

from genovae.provenance import write_provenance


def step(sm, _log):
    write_provenance(
        config=sm.params.config,
        manifest=sm.input.manifest,
        selection=sm.input.selection,
        log_dir=sm.params.log_dir,
        workflow_dir=Path(sm.scriptdir).parent.parent,  # the repository of this workflow
        out=sm.output.provenance,
    )


run_rule(snakemake, step)  # noqa: F821
