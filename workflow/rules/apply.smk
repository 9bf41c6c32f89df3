# The selected model applied to the cohort. Two layouts of the same steps, which write the same
# files with the same code (resources.job_layout; genovae.resources.merged_jobs):
#   merged: one job, apply_model (small cohorts: each job's start-up would cost more than its work)
#   per_step: one job per result: latent (latent means, reconstruction errors) | test_metrics (held-out
#   metrics, labels vs PCA) | risk_genes (one job per contrast) -> risk_table (all contrasts in
#   one table) | predict (analysis.predict: a classifier of the condition on the latent space) |
#   loadings (analysis.loadings: the genes each latent dimension moves)

LATENT_OUTPUTS = {
    "latent": report(
        f"{R}/latent.tsv", caption="../report/latent_table.rst", category="3. Latent space"
    ),
    "errors": f"{R}/reconstruction_error.tsv",
}
TEST_METRICS_OUTPUTS = {
    "test": f"{R}/model/test_metrics.json",
    "labels": report(
        f"{R}/label_metrics.tsv",
        caption="../report/label_metrics.rst",
        category="2. Evaluation",
        labels={"table": "VAE vs PCA"},
    ),
}
RISK_OUTPUTS = {
    "risk": report(
        f"{R}/risk_genes.tsv", caption="../report/risk_genes.rst", category="4. Risk genes"
    ),
    "dims": f"{R}/latent_dims.tsv",
    "routes": f"{R}/risk_routes.json",
}
PREDICT_OUTPUTS = {
    "classifier": f"{R}/model/classifier.joblib",
    "predictions": f"{R}/predictions.tsv",
    "prediction_metrics": report(
        f"{R}/prediction_metrics.tsv",
        caption="../report/prediction_metrics.rst",
        category="2. Evaluation",
        labels={"table": "prediction"},
    ),
    "reliability": report(
        f"{R}/plots/reliability.png",
        caption="../report/reliability.rst",
        category="2. Evaluation",
        labels={"figure": "reliability"},
    ),
}
LOADINGS_OUTPUTS = {
    "loadings": f"{R}/latent_loadings.tsv",
    "loadings_plot": report(
        f"{R}/plots/latent_loadings.png",
        caption="../report/latent_loadings.rst",
        category="3. Latent space",
        labels={"figure": "loadings"},
    ),
}


if MERGED_JOBS:

    rule apply_model:
        input:
            **selected_model_inputs(),
            samples=f"{R}/data/samples.tsv",
            genes=f"{R}/data/genes.tsv",
        output:
            **LATENT_OUTPUTS,
            **TEST_METRICS_OUTPUTS,
            **RISK_OUTPUTS,
            **(PREDICT_OUTPUTS if S.analysis.predict else {}),
            **(LOADINGS_OUTPUTS if S.analysis.loadings else {}),
        log:
            **apply_model_logs(),
        benchmark:
            f"{R}/benchmarks/apply_model.tsv"
        conda:
            "../../envs/model.yaml"
        threads: THREADS
        resources:
            mem_mb=job_mem_mb("apply_model"),
            runtime=job_runtime("apply_model"),
        params:
            **S.apply_model_params(),
        script:
            "../scripts/apply_model.py"

else:

    rule latent:
        input:
            **selected_model_inputs(),
        output:
            **LATENT_OUTPUTS,
        log:
            f"{R}/logs/latent.log",
        benchmark:
            f"{R}/benchmarks/latent.tsv"
        conda:
            "../../envs/model.yaml"
        threads: THREADS
        resources:
            mem_mb=job_mem_mb("latent"),
            runtime=job_runtime("latent"),
        script:
            "../scripts/latent.py"

    rule test_metrics:
        input:
            **selected_model_inputs(),
            samples=f"{R}/data/samples.tsv",
        output:
            **TEST_METRICS_OUTPUTS,
        log:
            f"{R}/logs/test_metrics.log",
        benchmark:
            f"{R}/benchmarks/test_metrics.tsv"
        conda:
            "../../envs/model.yaml"
        threads: THREADS
        resources:
            mem_mb=job_mem_mb("test_metrics"),
            runtime=job_runtime("test_metrics"),
        params:
            labels=S.label_params(),
        script:
            "../scripts/test_metrics.py"

    rule risk_genes:
        input:
            **selected_model_inputs(),
            genes=f"{R}/data/genes.tsv",
        output:
            risk=f"{R}/risk/{{contrast}}/risk_genes.tsv",
            dims=f"{R}/risk/{{contrast}}/latent_dims.tsv",
            route=f"{R}/risk/{{contrast}}/route.json",
        log:
            f"{R}/logs/risk_genes/{{contrast}}.log",
        benchmark:
            f"{R}/benchmarks/risk_genes/{{contrast}}.tsv"
        wildcard_constraints:
            contrast=r"[1-9][0-9]*",
        conda:
            "../../envs/model.yaml"
        threads: THREADS
        resources:
            mem_mb=job_mem_mb("risk_genes"),
            runtime=job_runtime("risk_genes"),
        params:
            risk=S.risk_params(),
        script:
            "../scripts/risk_genes.py"

    rule risk_table:
        input:
            unpack(contrast_tables),
        output:
            **RISK_OUTPUTS,
        log:
            f"{R}/logs/risk_table.log",
        benchmark:
            f"{R}/benchmarks/risk_table.tsv"
        conda:
            "../../envs/data.yaml"
        resources:
            mem_mb=job_mem_mb("risk_table"),
            runtime=job_runtime("risk_table"),
        script:
            "../scripts/risk_table.py"

    rule predict:
        input:
            **selected_model_inputs(),
        output:
            **PREDICT_OUTPUTS,
        log:
            f"{R}/logs/predict.log",
        benchmark:
            f"{R}/benchmarks/predict.tsv"
        conda:
            "../../envs/model.yaml"
        threads: THREADS
        resources:
            mem_mb=job_mem_mb("predict"),
            runtime=job_runtime("predict"),
        params:
            predict=S.predict_params(),
        script:
            "../scripts/predict.py"

    rule loadings:
        input:
            **selected_model_inputs(),
            genes=f"{R}/data/genes.tsv",
        output:
            **LOADINGS_OUTPUTS,
        log:
            f"{R}/logs/loadings.log",
        benchmark:
            f"{R}/benchmarks/loadings.tsv"
        conda:
            "../../envs/model.yaml"
        threads: THREADS
        resources:
            mem_mb=job_mem_mb("loadings"),
            runtime=job_runtime("loadings"),
        params:
            loadings=S.loadings_params(),
        script:
            "../scripts/loadings.py"
