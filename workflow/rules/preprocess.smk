rule preprocess:
    input:
        matrix=f"{R}/data/matrix.parquet",
        samples=f"{R}/data/samples.tsv",
    output:
        features=f"{R}/preprocess/features.parquet",
        split=f"{R}/preprocess/split.tsv",
        transform=f"{R}/preprocess/transform.json",
    params:
        preprocess=preprocess_params(),
    log:
        f"{R}/logs/preprocess.log",
    benchmark:
        f"{R}/benchmarks/preprocess.tsv"
    script:
        "../scripts/preprocess.py"
