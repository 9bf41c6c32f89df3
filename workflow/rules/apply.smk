rule apply_model:
    input:
        model=f"{R}/model/model.pt",
        features=f"{R}/preprocess/features.parquet",
        split=f"{R}/preprocess/split.tsv",
        matrix=f"{R}/data/matrix.parquet",
        transform=f"{R}/preprocess/transform.json",
        genes=f"{R}/data/genes.tsv",
        samples=f"{R}/data/samples.tsv",
    output:
        latent=report(
            f"{R}/latent.tsv",
            caption="../report/latent_table.rst",
            category="3. Latent space",
        ),
        errors=f"{R}/reconstruction_error.tsv",
        risk=report(
            f"{R}/risk_genes.tsv",
            caption="../report/risk_genes.rst",
            category="4. Risk genes",
        ),
        dims=f"{R}/latent_dims.tsv",
        test=f"{R}/model/test_metrics.json",
        labels=report(
            f"{R}/label_metrics.tsv",
            caption="../report/label_metrics.rst",
            category="2. Evaluation",
            labels={"table": "VAE vs PCA"},
        ),
    log:
        f"{R}/logs/apply_model.log",
    benchmark:
        f"{R}/benchmarks/apply_model.tsv"
    conda:
        "../../envs/model.yaml"
    threads: S.train.threads
    params:
        risk=S.risk_params(),
        labels=S.label_params(),
    script:
        "../scripts/apply_model.py"
