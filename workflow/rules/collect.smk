if SIMULATE:

    rule simulate:
        output:
            matrix=f"{R}/data/matrix.parquet",
            samples=f"{R}/data/samples.tsv",
            genes=f"{R}/data/genes.tsv",
            manifest=f"{R}/data/manifest.json",
            truth=f"{R}/data/truth.tsv",
        params:
            collect=collect_params(),
        log:
            f"{R}/logs/simulate.log",
        benchmark:
            f"{R}/benchmarks/simulate.tsv"
        script:
            "../scripts/simulate.py"

else:

    rule collect:
        input:
            **collect_inputs(),
        output:
            matrix=f"{R}/data/matrix.parquet",
            samples=f"{R}/data/samples.tsv",
            genes=f"{R}/data/genes.tsv",
            manifest=f"{R}/data/manifest.json",
        params:
            collect=collect_params(),
        log:
            f"{R}/logs/collect.log",
        benchmark:
            f"{R}/benchmarks/collect.tsv"
        script:
            "../scripts/collect.py"
