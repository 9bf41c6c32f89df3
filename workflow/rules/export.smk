# Results for the scverse ecosystem: latent.h5ad (AnnData) with the latent means
# in obsm["X_genovae"], reconstruction errors in obs, gene scores in var and the
# run's summary in uns.


rule export_h5ad:
    input:
        matrix=f"{R}/data/matrix.parquet",
        samples=f"{R}/data/samples.tsv",
        genes=f"{R}/data/genes.tsv",
        latent=f"{R}/latent.tsv",
        errors=f"{R}/reconstruction_error.tsv",
        risk=f"{R}/risk_genes.tsv",
        summary=f"{R}/summary.json",
    output:
        h5ad=f"{R}/latent.h5ad",
    log:
        f"{R}/logs/export_h5ad.log",
    benchmark:
        f"{R}/benchmarks/export_h5ad.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        run=config["run"],
    script:
        "../scripts/export_h5ad.py"
