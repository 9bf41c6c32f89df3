"""Rule predict: a classifier of the condition on the latent space, against PCA and the genes."""

from _bootstrap import run_rule

from genovae.apply import model_files
from genovae.predict import predict_step


def step(sm, _log):
    predict_step(
        **model_files(sm),
        out_classifier=sm.output.classifier,
        out_metrics=sm.output.prediction_metrics,
        out_predictions=sm.output.predictions,
        out_plot=sm.output.reliability,
        threads=sm.threads,
        **sm.params.predict,
    )


run_rule(snakemake, step)  # noqa: F821
