# a checkpoint: the risk_genes jobs (one per condition contrast) follow from its split
checkpoint preprocess:
    input:
        matrix=f"{R}/data/matrix.parquet",
        samples=f"{R}/data/samples.tsv",
    output:
        features=f"{R}/preprocess/features.parquet",
        split=f"{R}/preprocess/split.tsv",
        transform=f"{R}/preprocess/transform.json",
    log:
        f"{R}/logs/preprocess.log",
    benchmark:
        f"{R}/benchmarks/preprocess.tsv"
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=job_mem_mb("preprocess"),
        runtime=job_runtime("preprocess"),
    params:
        preprocess=S.preprocess_params(),
    script:
        "../scripts/preprocess.py"
