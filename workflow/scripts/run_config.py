"""Rule run_config: results/{run}/config.yaml, the config the run used."""

from _bootstrap import run_rule

from genovae.config import write_run_config


def step(sm, _log):
    write_run_config(sm.params.config, sm.output.config)


run_rule(snakemake, step)  # noqa: F821
