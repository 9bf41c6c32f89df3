"""Rule predict: a classifier of the condition on the latent space, against PCA and the genes."""

from _bootstrap import run_rule

from genovae.predict import predict_job

run_rule(snakemake, predict_job)  # noqa: F821
