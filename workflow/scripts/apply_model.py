"""Rule apply_model: every result of the selected model in one process (resources.job_layout merged).

The steps of the per-step layout's jobs (latent, test_metrics, risk_genes of every contrast and
risk_table, predict, loadings), each called as in its own job and logged to its own file.
"""

from _bootstrap import run_steps

from genovae.apply import latent_job, risk_all_job, test_metrics_job
from genovae.loadings import loadings_job
from genovae.predict import predict_job

STEPS = {"latent": latent_job, "test_metrics": test_metrics_job, "risk_genes": risk_all_job,
         "predict": predict_job, "loadings": loadings_job}

sm = snakemake  # noqa: F821
# the steps whose logs the rule declares (predict and loadings only when they are on)
run_steps(sm, [(name, getattr(sm.log, name), STEPS[name]) for name in sm.log.keys()])
