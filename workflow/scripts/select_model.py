"""Rule select_model: pick the best round and publish its model."""

from _bootstrap import run_rule

from genovae.rounds import select_model


def step(sm, _log):
    select_model(
        decisions=list(sm.input.decisions),
        models=list(sm.input.models),
        infos=list(sm.input.infos),
        out_model=sm.output.model,
        out_selection=sm.output.selection,
        out_rounds=sm.output.rounds,
        max_rounds=sm.params.max_rounds,
        stop_without_improvement=sm.params.stop_without_improvement,
        **sm.params.decide,
    )


run_rule(snakemake, step)  # noqa: F821
