"""Checkpoint decide: does this round meet the retrain threshold?"""

from _bootstrap import run_rule

from genovae.rounds import decide_round


def step(sm, _log):
    decide_round(
        metrics=sm.input.metrics,
        out_decision=sm.output.decision,
        round_=int(sm.wildcards.round),
        privacy=sm.params.get("privacy"),
        infos=list(sm.input.infos),
        strategy=sm.params.get("strategy", "adaptive"),
        previous=list(sm.input.previous),
        search=sm.params.get("search"),
        **sm.params.decide,
    )


run_rule(snakemake, step)  # noqa: F821
