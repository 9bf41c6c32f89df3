# Results for the scverse ecosystem: latent.h5ad (AnnData) with the collected
# matrix as X, the preprocessed values the model saw (features.parquet) in
# layers["genovae_input"] (NaN for genes not modelled; var["genovae_modelled"]
# says which were), the latent means in obsm["X_genovae"], the sample sheet in
# obs (numeric columns as numbers; the condition and label columns as categories)
# with split and reconstruction error, gene scores in var and the run's summary
# in uns.


rule export_h5ad:
    input:
        matrix=f"{R}/data/matrix.parquet",
        samples=f"{R}/data/samples.tsv",
        genes=f"{R}/data/genes.tsv",
        features=f"{R}/preprocess/features.parquet",
        latent=f"{R}/latent.tsv",
        errors=f"{R}/reconstruction_error.tsv",
        risk=f"{R}/risk_genes.tsv",
        summary=f"{R}/summary.json",
        predictions=optional_result("predictions.tsv", S.analysis.predict),
        loadings=optional_result("latent_loadings.tsv", S.analysis.loadings),
    output:
        h5ad=f"{R}/latent.h5ad",
    log:
        f"{R}/logs/export_h5ad.log",
    benchmark:
        f"{R}/benchmarks/export_h5ad.tsv"
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=job_mem_mb("export_h5ad"),
        runtime=job_runtime("export_h5ad"),
    params:
        run=S.run,
        condition=S.analysis.condition,
        labels=S.label_params()["labels"],
    script:
        "../scripts/export_h5ad.py"
