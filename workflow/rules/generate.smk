# Synthetic cohort from the selected model: per condition, latent points drawn
# from that condition's training samples' latent distribution, decoded, mapped
# back to the input's space, and evaluated (fidelity, utility, privacy).
#   snakemake generate --cores 1           (on demand; in every run with generate.enabled)


rule generate:
    input:
        model=f"{R}/model/model.pt",
        features=f"{R}/preprocess/features.parquet",
        split=f"{R}/preprocess/split.tsv",
        matrix=f"{R}/data/matrix.parquet",
        transform=f"{R}/preprocess/transform.json",
    output:
        expression=f"{R}/synthetic/expression.tsv",
        samples=f"{R}/synthetic/samples.tsv",
        metrics=f"{R}/synthetic/metrics.json",
        table=report(
            f"{R}/synthetic/metrics.tsv",
            caption="../report/synthetic.rst",
            category="6. Synthetic cohort",
            labels={"table": "synthetic cohort"},
        ),
    log:
        f"{R}/logs/generate.log",
    benchmark:
        f"{R}/benchmarks/generate.tsv"
    conda:
        "../../envs/model.yaml"
    threads: THREADS
    resources:
        mem_mb=job_mem_mb("generate"),
        runtime=job_runtime("generate"),
    params:
        generate=S.generate_params(),
    script:
        "../scripts/generate.py"
