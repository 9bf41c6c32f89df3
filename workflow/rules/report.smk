rule plots:
    input:
        decisions=loop_decisions,  # makes plots follow the checkpointed loop
        histories=loop_histories,
        selection=f"{R}/model/selection.json",
        latent=f"{R}/latent.tsv",
        errors=f"{R}/reconstruction_error.tsv",
        risk=f"{R}/risk_genes.tsv",
        features=f"{R}/preprocess/features.parquet",
        samples=f"{R}/data/samples.tsv",
    output:
        loss=report(
            f"{R}/plots/loss_curves.png",
            caption="../report/loss_curves.rst",
            category="1. Training",
        ),
        latent=report(
            f"{R}/plots/latent_space.png",
            caption="../report/latent_space.rst",
            category="3. Latent space",
        ),
        errors=report(
            f"{R}/plots/reconstruction_error.png",
            caption="../report/reconstruction_error.rst",
            category="2. Evaluation",
        ),
        volcano=report(
            f"{R}/plots/volcano.png",
            caption="../report/volcano.rst",
            category="4. Risk genes",
        ),
        heatmap=report(
            f"{R}/plots/risk_heatmap.png",
            caption="../report/risk_heatmap.rst",
            category="4. Risk genes",
        ),
    log:
        f"{R}/logs/plots.log",
    benchmark:
        f"{R}/benchmarks/plots.tsv"
    conda:
        "../../envs/report.yaml"
    resources:
        mem_mb=job_mem_mb("plots"),
        runtime=job_runtime("plots"),
    params:
        plots=S.plots.asdict(),
        labels=S.label_params(),
    script:
        "../scripts/plots.py"


rule summarize:
    input:
        manifest=f"{R}/data/manifest.json",
        split=f"{R}/preprocess/split.tsv",
        transform=f"{R}/preprocess/transform.json",
        selection=f"{R}/model/selection.json",
        test=f"{R}/model/test_metrics.json",
        decisions=loop_decisions,  # re-evaluated after each checkpoint, like plots
        round_metrics=loop_metrics,
        risk=f"{R}/risk_genes.tsv",
        routes=f"{R}/risk_routes.json",
        truth=truth_file(),
        synthetic=synthetic_metrics(),
        prediction=prediction_metrics(),
    output:
        summary=report(
            f"{R}/summary.json",
            caption="../report/summary.rst",
            category="2. Evaluation",
        ),
    log:
        f"{R}/logs/summarize.log",
    benchmark:
        f"{R}/benchmarks/summarize.tsv"
    conda:
        "../../envs/model.yaml"
    resources:
        mem_mb=job_mem_mb("summarize"),
        runtime=job_runtime("summarize"),
    params:
        run=S.run,
        latent_dim=S.model.latent_dim,
        condition=S.analysis.condition,
        known_genes=list(S.analysis.known_genes),
    script:
        "../scripts/summarize.py"


rule provenance:
    input:
        manifest=f"{R}/data/manifest.json",
        selection=f"{R}/model/selection.json",
        summary=f"{R}/summary.json",
        plots=f"{R}/plots/loss_curves.png",
    output:
        provenance=report(
            f"{R}/provenance.json",
            caption="../report/provenance.rst",
            category="5. Provenance",
        ),
    log:
        f"{R}/logs/provenance.log",
    benchmark:
        f"{R}/benchmarks/provenance.tsv"
    conda:
        "../../envs/model.yaml"
    resources:
        mem_mb=job_mem_mb("provenance"),
        runtime=job_runtime("provenance"),
    params:
        config=config,
        log_dir=on_disk(f"{R}/logs"),
    script:
        "../scripts/provenance.py"
