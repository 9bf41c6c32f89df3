"""Rule apply_model: every result of the selected model in one process (resources.job_layout merged).

The steps of the per-step layout's jobs (latent, test_metrics, risk_genes of every contrast and
risk_table, predict, loadings), called the same way, each with its own log.
"""

from _bootstrap import run_steps

from genovae.apply import latent_step, model_files, risk_all_step, test_metrics_step


def steps(sm):
    files, out, threads = model_files(sm), sm.output, sm.threads

    def latent(_sm, _log):
        latent_step(**files, out_latent=out.latent, out_errors=out.errors, threads=threads)

    def test_metrics(_sm, _log):
        test_metrics_step(**files, samples=sm.input.samples, out_test=out.test, out_labels=out.labels,
                          threads=threads, **sm.params.labels)

    def risk_genes(_sm, _log):
        risk_all_step(**files, genes=sm.input.genes, out_risk=out.risk, out_dims=out.dims, out_routes=out.routes,
                      threads=threads, **sm.params.risk)

    def predict(_sm, _log):
        from genovae.predict import predict_step

        predict_step(**files, out_classifier=out.classifier, out_metrics=out.prediction_metrics,
                     out_predictions=out.predictions, out_plot=out.reliability, threads=threads,
                     **sm.params.predict)

    def loadings(_sm, _log):
        from genovae.loadings import loadings_step

        loadings_step(**files, genes=sm.input.genes, out_table=out.loadings, out_plot=out.loadings_plot,
                      threads=threads, **sm.params.loadings)

    every = {"latent": latent, "test_metrics": test_metrics, "risk_genes": risk_genes, "predict": predict,
             "loadings": loadings}
    # the steps whose logs the rule declares (predict and loadings only when they are on)
    return [(name, getattr(sm.log, name), every[name]) for name in sm.log.keys()]


run_steps(snakemake, steps(snakemake))  # noqa: F821
